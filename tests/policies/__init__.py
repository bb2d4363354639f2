"""Tests of :mod:`dynasim.policies`."""
