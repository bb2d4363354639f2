"""Calibration of a profile from a running vLLM through its API: the measurement steps
(:mod:`~replay.calibrate.steps`), the fit (:mod:`~replay.calibrate.run`) and the HTML
report of measured against fitted step times (:mod:`~replay.calibrate.report`).
"""
