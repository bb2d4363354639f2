"""Tests of :mod:`replay`."""
