"""Tests of :mod:`dynasim.experiments`."""
