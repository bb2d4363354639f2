"""Tests of :mod:`replay.proxy`."""
