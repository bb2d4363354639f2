"""Fidelity against real vLLM runs: replay each run's arrivals and lengths through the
simulator and compare per-request latencies with what was measured.

Ground truth: DistServe's alignment runs of vLLM serving OPT-13B on one A100-80GB with a
ShareGPT workload at Poisson 1, 2 and 3 req/s (``distserve-vllm-*`` in
:mod:`dynasim.datasets`). Each ``.exp`` file's first line is a Python literal list of
per-request dicts (``prompt_len, output_len, issue_time, first_token_time,
complete_time`` in seconds of ``time.perf_counter``), parsed with ``ast.literal_eval``.

Error metric: per request, ``|sim - real| / real`` of E2E latency and of TTFT; a run is
summarised by the median (and p90) of those errors. Targets: median E2E <= 10%,
TTFT <= 25% (issue #2).
"""

from __future__ import annotations

import ast

import numpy as np
import pandas as pd

from dynasim import datasets
from dynasim.errors import InputError
from dynasim.policy import make_policy
from dynasim.profile import Profile
from dynasim.simulation import simulate
from dynasim.trace import Trace

RUNS = ("distserve-vllm-100-1", "distserve-vllm-200-2", "distserve-vllm-300-3")
FIELDS = ("prompt_len", "output_len", "issue_time", "first_token_time", "complete_time")


def read_exp(path) -> pd.DataFrame:
    """Read a DistServe ``.exp`` ground-truth file into a frame sorted by issue time,
    with ``arrival_time`` (s since the first issue), ``ttft`` and ``e2e_latency`` (s).

    Raises:
        InputError: the first line is not a literal list of dicts with :data:`FIELDS`.
    """
    with open(path, encoding="utf-8") as f:
        first = f.readline()
    try:
        rows = ast.literal_eval(first)
    except (ValueError, SyntaxError) as exc:
        raise InputError(f"first line is not a Python literal ({exc})", source=str(path),
                         line=1) from None
    if not isinstance(rows, list) or not rows:
        raise InputError("first line must be a non-empty list of dicts", source=str(path),
                         line=1)
    for i, row in enumerate(rows):
        for key in FIELDS:
            if not isinstance(row, dict) or key not in row:
                raise InputError(f"item {i} lacks this key", source=str(path), line=1,
                                 field=key)
    df = pd.DataFrame(rows)[list(FIELDS)].sort_values("issue_time", kind="stable")
    df = df.reset_index(drop=True)
    t0 = df["issue_time"].iloc[0]
    df["arrival_time"] = df["issue_time"] - t0
    df["ttft"] = df["first_token_time"] - df["issue_time"]
    df["e2e_latency"] = df["complete_time"] - df["issue_time"]
    return df


def validate_run(name: str, profile: Profile, policy: str = "fcfs") -> dict:
    """Simulate one ground-truth run; return its error summary (fractions, not %)."""
    real = read_exp(datasets.fetch(name))
    frame = pd.DataFrame({"arrival_time": real["arrival_time"],
                          "prompt_tokens": real["prompt_len"].astype(int),
                          "output_tokens": real["output_len"].astype(int)})
    frame.index.name = "request_id"
    sim, _ = simulate(Trace(name, frame), profile, make_policy(policy))
    sim = sim.set_index("request_id").loc[frame.index]
    e2e_err = np.abs(sim["e2e_latency"].to_numpy() - real["e2e_latency"].to_numpy()) \
        / real["e2e_latency"].to_numpy()
    ttft_err = np.abs(sim["ttft"].to_numpy() - real["ttft"].to_numpy()) \
        / real["ttft"].to_numpy()
    return {"run": name, "requests": len(real),
            "median_e2e_error": float(np.median(e2e_err)),
            "p90_e2e_error": float(np.percentile(e2e_err, 90)),
            "median_ttft_error": float(np.median(ttft_err)),
            "p90_ttft_error": float(np.percentile(ttft_err, 90)),
            "real_median_e2e_s": float(real["e2e_latency"].median()),
            "sim_median_e2e_s": float(sim["e2e_latency"].median()),
            "real_median_ttft_s": float(real["ttft"].median()),
            "sim_median_ttft_s": float(sim["ttft"].median())}
