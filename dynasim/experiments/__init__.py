"""Experiments built on the simulator: sweeps (config, runner, Dask), batch-mode
token-to-accuracy and threshold calibration, the scheduler ablation, fidelity against
real vLLM runs (validate), the speed benchmark, and the plotly figures of their results.
"""
