"""Tests of :mod:`dynasim.workloads` (and batch mode on real programs)."""
