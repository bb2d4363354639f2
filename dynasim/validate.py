"""Fidelity against real vLLM runs: replay each run's arrivals and lengths through the
simulator and compare per-request latencies with what was measured.

Ground truth: DistServe's alignment runs of vLLM serving OPT-13B on one A100-80GB with a
ShareGPT workload at Poisson 1, 2 and 3 req/s (``distserve-vllm-*`` in
:mod:`dynasim.datasets`). Each ``.exp`` file's first line is a Python literal list of
per-request dicts (``prompt_len, output_len, issue_time, first_token_time,
complete_time`` in seconds of ``time.perf_counter``), parsed with ``ast.literal_eval``.

Error metric: per request, ``|sim - real| / real`` of E2E latency and of TTFT; a run is
summarised by the median (and p90) of those errors. Targets: median E2E <= 10%,
TTFT <= 25% (issue #2); median E2E <= 5%, TTFT <= 15% (issue #5, met for TTFT only:
see the README's fidelity section).
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


def print_table(rows: list[dict], title: str) -> None:
    """Print :func:`validate_run`-style rows as a rich table."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for col in ("run", "reqs", "median E2E err", "p90 E2E err", "median TTFT err",
                "p90 TTFT err", "median E2E s real/sim", "median TTFT ms real/sim"):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(r["run"].removeprefix("distserve-"), str(r["requests"]),
                      f"{r['median_e2e_error']:.1%}", f"{r['p90_e2e_error']:.1%}",
                      f"{r['median_ttft_error']:.1%}", f"{r['p90_ttft_error']:.1%}",
                      f"{r['real_median_e2e_s']:.2f} / {r['sim_median_e2e_s']:.2f}",
                      f"{r['real_median_ttft_s'] * 1e3:.0f} / "
                      f"{r['sim_median_ttft_s'] * 1e3:.0f}")
    Console(width=max(Console().width, 130)).print(table)


def _objective(rows: list[dict]) -> float:
    """What :func:`refit` minimises: worst median E2E error + 0.3 x worst median TTFT
    error (E2E is the headline; TTFT is noisier and weighs less)."""
    return (max(r["median_e2e_error"] for r in rows)
            + 0.3 * max(r["median_ttft_error"] for r in rows))


def refit(runs: tuple[str, ...] = RUNS, max_evals: int = 150,
          start: dict[str, float] | None = None) -> tuple[dict[str, float], float]:
    """Fit the five calibration numbers of ``distserve-opt13b-a100``
    (:data:`dynasim.published.CALIBRATION`) on ``runs`` by simulating them
    (:func:`scipy.optimize.minimize`, Nelder-Mead, ``max_evals`` evaluations of all
    runs; about 0.3 s each).

    Returns:
        ``(calibration, objective)``; see :func:`_objective`.
    """
    from scipy.optimize import minimize

    from dynasim.published import CALIBRATION, distserve_opt13b_a100

    keys = tuple(CALIBRATION)
    x0 = [(start or CALIBRATION)[k] for k in keys]

    def cost(x) -> float:
        if min(x) <= 0:
            return 10.0
        prof = distserve_opt13b_a100(dict(zip(keys, x)))
        return _objective([validate_run(name, prof) for name in runs])

    res = minimize(cost, x0, method="Nelder-Mead",
                   options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-4})
    return {k: round(float(v), 3) for k, v in zip(keys, res.x)}, float(res.fun)


def leave_one_out(max_evals: int = 100) -> list[dict]:
    """For each run: refit on the other runs, then validate the held-out one.

    Returns: rows of :func:`validate_run` for each held-out run, with its
    ``calibration``."""
    from dynasim.published import distserve_opt13b_a100

    rows = []
    for held in RUNS:
        cal, _ = refit(tuple(r for r in RUNS if r != held), max_evals)
        rows.append({**validate_run(held, distserve_opt13b_a100(cal)), "calibration": cal})
    return rows
