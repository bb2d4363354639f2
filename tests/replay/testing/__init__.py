"""Tests of :mod:`replay.testing`."""
