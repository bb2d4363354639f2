"""Tests of :mod:`replay.calibrate`."""
