"""Tests of :mod:`dynasim.profiles`."""
