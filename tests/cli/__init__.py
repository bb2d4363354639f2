"""Tests of :mod:`dynasim.cli` and its one-line errors."""
