"""Fidelity against real vLLM runs: replay each run's arrivals and lengths through the
simulator and compare per-request latencies with what was measured.

Ground truth: DistServe's alignment runs of vLLM serving OPT-13B on one A100-80GB with a
ShareGPT workload at Poisson 1, 2 and 3 req/s (``distserve-vllm-*`` in
:mod:`dynasim.datasets`). Each ``.exp`` file's first line is a Python literal list of
per-request dicts (``prompt_len, output_len, issue_time, first_token_time,
complete_time`` in seconds of ``time.perf_counter``), parsed with ``ast.literal_eval``.

Recorded vLLM runs (:mod:`dynasim.runs`: residency, BLIS training, LLMServingSim) join
them in one table (:func:`fidelity_table`, :func:`print_fidelity_table`), each simulated
whole with the shipped profile fitted on it or holding it out
(:data:`dynasim.profiles.builders.RUN_PROFILES`), beside the source's own simulator
error where published; the error of the mean E2E is reported too (LLMServingSim's
metric).

Error metric: per request, ``|sim - real| / real`` of E2E latency and of TTFT; a run is
summarised by the median (and p90) of those errors. Targets: median E2E <= 10%,
TTFT <= 25% (issue #2); median E2E <= 5%, TTFT <= 15% (issue #5, met for TTFT only:
see ``notebooks/fidelity.py``, which prints the tables).
"""

from __future__ import annotations

import ast
from functools import cache
from pathlib import Path

import numpy as np
import pandas as pd

from dynasim import datasets
from dynasim.errors import InputError
from dynasim.policies import make_policy
from dynasim.profiles import Profile
from dynasim.simulation import simulate
from dynasim.trace import Trace

RUNS = ("distserve-vllm-100-1", "distserve-vllm-200-2", "distserve-vllm-300-3")
FIELDS = ("prompt_len", "output_len", "issue_time", "first_token_time", "complete_time")


def read_exp(path: str | Path) -> pd.DataFrame:
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


@cache
def _real(name: str) -> pd.DataFrame:
    """The :func:`read_exp` frame of a registered run, read once per process
    (:func:`refit` simulates every run hundreds of times). Callers must not modify it."""
    return read_exp(datasets.fetch(name))


def validate_run(name: str, profile: Profile, policy: str = "fcfs") -> dict:
    """Simulate one ground-truth run; return its error summary (fractions, not %)."""
    real = _real(name)
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
            "mean_e2e_error": float(abs(sim["e2e_latency"].mean()
                                        / real["e2e_latency"].mean() - 1)),
            "real_median_e2e_s": float(real["e2e_latency"].median()),
            "sim_median_e2e_s": float(sim["e2e_latency"].median()),
            "real_median_ttft_s": float(real["ttft"].median()),
            "sim_median_ttft_s": float(sim["ttft"].median())}


def decode_windows(real: pd.DataFrame) -> pd.DataFrame:
    """Per request of one ground-truth run (a :func:`read_exp` frame), what happened
    during its decode (first token -> last token), from the timestamps alone.

    Columns: ``decode_ms`` (window length, ms), ``tokens`` (output tokens - 1: the steps
    in the window), ``batch`` (mean number of requests decoding during the window,
    itself included: the sum of overlaps / window), ``context_k`` (their mean summed
    context, thousands of tokens, each growing linearly from prompt to prompt + output
    over its own decode), ``prefills`` and ``prefill_k`` (other requests whose first
    token fell in the window, and their prompt tokens in thousands: in vLLM 0.2 every
    prefill step stalls all decodes). Requests with fewer than 3 output tokens are left
    out (a window of 0 or 1 step says nothing about the step time).
    """
    f = real["first_token_time"].to_numpy()
    c = real["complete_time"].to_numpy()
    p = real["prompt_len"].to_numpy(dtype=float)
    o = real["output_len"].to_numpy(dtype=float)
    rows = []
    for i in np.flatnonzero(o >= 3):
        a, b = f[i], c[i]
        lo, hi = np.maximum(f, a), np.minimum(c, b)
        overlap = np.clip(hi - lo, 0.0, None)
        mid = np.where(c > f, ((lo + hi) / 2 - f) / np.where(c > f, c - f, 1.0), 0.0)
        ctx = (overlap * (p + o * np.clip(mid, 0.0, 1.0))).sum() / (b - a)
        inside = (f > a) & (f < b)
        rows.append({"decode_ms": (b - a) * 1e3, "tokens": o[i] - 1,
                     "batch": overlap.sum() / (b - a), "context_k": ctx / 1e3,
                     "prefills": int(inside.sum()), "prefill_k": p[inside].sum() / 1e3})
    return pd.DataFrame(rows)


#: batch-size bins of :func:`consistency_table`
BATCH_BINS = (0, 5, 10, 15, 20, 25, 30, 40, 60, 1e9)


def consistency_table(frames: dict[str, pd.DataFrame] | None = None
                      ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Are the ground-truth runs one machine? A model-light check from the timestamps
    alone (no simulation): one least-squares fit over all runs of each request's decode
    time (:func:`decode_windows`),

        decode_ms = tokens x (t0 + t1 x batch + t2 x context_k) + p0 x prefills
                    + p1 x prefill_k

    (vLLM 0.2: a decode step grows with the batch and its context, and every prefill
    step stalls the decodes), weighted so that each request counts by relative error.

    Args:
        frames: run name -> :func:`read_exp` frame (default: the three :data:`RUNS`).

    Returns:
        ``(bias, per_token)``: ``bias`` has per run the median of (fit - real) / real
        (a run the common fit finds faster than it was has a negative bias) and the
        median absolute error; ``per_token`` has the decode time per token after the
        fitted prefill stalls are taken out (ms), by run and bin of ``batch``
        (:data:`BATCH_BINS`), with the request count per cell. Runs of one setup
        should agree cell by cell.
    """
    if frames is None:
        frames = {name: _real(name) for name in RUNS}
    parts = [decode_windows(real).assign(run=name.removeprefix("distserve-"))
             for name, real in frames.items()]
    d = pd.concat(parts, ignore_index=True)
    x = np.column_stack([d.tokens, d.tokens * d.batch, d.tokens * d.context_k,
                         d.prefills, d.prefill_k])
    y = d.decode_ms.to_numpy()
    coef, *_ = np.linalg.lstsq(x / y[:, None], np.ones_like(y), rcond=None)
    d["rel"] = (x @ coef - y) / y
    bias = d.groupby("run").agg(requests=("rel", "size"), median_bias=("rel", "median"),
                                median_abs_error=("rel", lambda r: r.abs().median()))
    d["per_token_ms"] = (y - coef[3] * d.prefills - coef[4] * d.prefill_k) / d.tokens
    labels = [f"{lo:g}-{hi:g}" if hi < 1e9 else f"> {lo:g}"
              for lo, hi in zip(BATCH_BINS, BATCH_BINS[1:])]
    d["batch_bin"] = pd.cut(d.batch, list(BATCH_BINS), labels=labels).astype(str)
    per_token = d.pivot_table(index="batch_bin", columns="run", values="per_token_ms",
                              aggfunc=["median", "size"], sort=False)
    bias.attrs["coefficients"] = dict(zip(("t0_ms", "t1_ms_per_seq",
                                           "t2_ms_per_k_context", "p0_ms", "p1_ms_per_k"),
                                          (float(v) for v in coef)))
    return bias, per_token


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


def print_consistency(bias: pd.DataFrame, per_token: pd.DataFrame) -> None:
    """Print :func:`consistency_table` as rich tables."""
    from rich.console import Console
    from rich.table import Table

    runs = list(bias.index)
    table = Table(title="Ground truth alone: decode ms per token at equal batch, prefill "
                        "stalls taken out (requests in the cell)")
    table.add_column("requests decoding", justify="right")
    for run in runs:
        table.add_column(run, justify="right")
    for bin_, row in per_token.iterrows():
        cells = [f"{row[('median', r)]:.1f} ({int(row[('size', r)])})"
                 if row[("size", r)] > 0 else "" for r in runs]
        if any(cells):
            table.add_row(bin_, *cells)
    console = Console(width=max(Console().width, 130))
    console.print(table)
    console.print("one fit of every run's decode times (dynasim.experiments.validate."
                  "consistency_table), median (fit - real) / real: "
                  + ", ".join(f"{run} {b:+.1%}" for run, b in bias["median_bias"].items()))


def _objective(rows: list[dict]) -> float:
    """What :func:`refit` minimises: worst median E2E error + 0.3 x worst median TTFT
    error (E2E is the headline; TTFT is noisier and weighs less)."""
    return (max(r["median_e2e_error"] for r in rows)
            + 0.3 * max(r["median_ttft_error"] for r in rows))


def refit(runs: tuple[str, ...] = RUNS, max_evals: int = 150,
          start: dict[str, float] | None = None) -> tuple[dict[str, float], float]:
    """Fit the five calibration numbers of ``distserve-opt13b-a100``
    (:data:`dynasim.profiles.distserve.CALIBRATION`) on ``runs`` by simulating them
    (:func:`scipy.optimize.minimize`, Nelder-Mead, ``max_evals`` evaluations of all
    runs; about 0.3 s each).

    Returns:
        ``(calibration, objective)``; see :func:`_objective`.
    """
    from scipy.optimize import minimize

    from dynasim.profiles.distserve import CALIBRATION, distserve_opt13b_a100

    keys = tuple(CALIBRATION)
    x0 = [(start or CALIBRATION)[k] for k in keys]

    def cost(x: np.ndarray) -> float:
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
    from dynasim.profiles.distserve import distserve_opt13b_a100

    rows = []
    for held in RUNS:
        cal, _ = refit(tuple(r for r in RUNS if r != held), max_evals)
        rows.append({**validate_run(held, distserve_opt13b_a100(cal)), "calibration": cal})
    return rows


# ------------------------------------------------------- one fidelity table (issue 16)
def run_profile(run: str) -> tuple[str, bool]:
    """``(profile name, fitted on this run)`` of a recorded run: the shipped profile of
    :data:`dynasim.profiles.builders.RUN_PROFILES` that fits or holds it out.

    Raises:
        InputError: a run no shipped profile covers.
    """
    from dynasim.profiles.builders import RUN_PROFILES

    for name, (fit_on, held_out) in RUN_PROFILES.items():
        if run in fit_on or run in held_out:
            return name, run in fit_on
    raise InputError("no shipped profile covers this run", source=run, field="runs")


def recorded_row(run_name: str, profile: Profile | None = None) -> dict:
    """Simulate the recorded run ``run_name`` (:mod:`dynasim.runs`) whole with its
    profile (default :func:`run_profile`'s) and return its row of the fidelity table:
    :func:`dynasim.profiles.run_windows.errors` plus ``run``, ``source``, ``profile``,
    ``fitted``, ``requests`` and ``published`` (the source's own simulator error)."""
    from dynasim.profiles import load_profile
    from dynasim.profiles.run_windows import window_errors, windows
    from dynasim.runs import load_run

    run = load_run(run_name)
    fitted = False
    if profile is None:
        name, fitted = run_profile(run_name)
        profile = load_profile(name)
    row = window_errors(profile, windows(run, None))
    return {"run": run_name, "source": run_name.split("-")[0], "profile": profile.name,
            "fitted": fitted, "requests": len(run.trace), **row,
            "published": dict(run.published)}


def fidelity_table(runs: list[str] | None = None,
                   distserve_profile: Profile | None = None) -> list[dict]:
    """Rows of the one fidelity table: every DistServe run (with
    ``distserve_profile``, default ``distserve-opt13b-a100``, whose calibration used all
    three) and every recorded run (:data:`dynasim.runs.RUNS`, each with its shipped
    profile), or only ``runs``.

    Raises:
        InputError: an unknown run name.
    """
    from dynasim.profiles import load_profile
    from dynasim.runs import RUNS as RECORDED

    names = list(runs) if runs else [*RUNS, *RECORDED]
    unknown = [n for n in names if n not in RUNS and n not in RECORDED]
    if unknown:
        raise InputError(f"unknown run (known: {', '.join([*RUNS, *RECORDED])})",
                         source=unknown[0], field="runs")
    rows = []
    for n in names:
        if n in RUNS:
            prof = distserve_profile or load_profile("distserve-opt13b-a100")
            r = validate_run(n, prof)
            rows.append({**r, "source": "distserve", "profile": prof.name, "fitted": True,
                         "published": {}})
        else:
            rows.append(recorded_row(n))
    return rows


def print_fidelity_table(rows: list[dict]) -> None:
    """Print :func:`fidelity_table` rows: per run the median and p90 per-request E2E and
    TTFT error, the error of the mean E2E, whether the profile was fitted on the run,
    and the source's own simulator error where published."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title="dynasim fidelity against recorded vLLM runs: |sim - real| / real "
                        "per request (fit = run used to fit its profile)")
    for col in ("run", "profile", "fit", "reqs", "E2E med", "E2E p90", "TTFT med",
                "TTFT p90", "mean E2E", "published sim error"):
        table.add_column(col, justify="right" if col not in ("run", "profile") else "left")
    for r in rows:
        pub = r.get("published") or {}
        pub_text = "; ".join(
            f"{metric.upper()} " + " ".join(
                f"{stat[:3] if stat == 'median' else stat} "
                f"{pub[f'{metric}_{stat}']:{'+' if stat == 'mean' else ''}.1%}"
                for stat in ("mean", "median") if f"{metric}_{stat}" in pub)
            for metric in ("e2e", "ttft") if any(k.startswith(metric) for k in pub))
        if pub and r["source"] == "blis":
            pub_text = f"BLIS, all held-out runs: {pub_text}"
        table.add_row(r["run"].removeprefix("distserve-"), r["profile"],
                      "fit" if r["fitted"] else "held", str(r["requests"]),
                      f"{r['median_e2e_error']:.1%}", f"{r['p90_e2e_error']:.1%}",
                      f"{r['median_ttft_error']:.1%}", f"{r['p90_ttft_error']:.1%}",
                      f"{r['mean_e2e_error']:.1%}", pub_text)
    Console(width=max(Console().width, 200)).print(table)
    held = [r for r in rows if not r["fitted"]]
    if held:
        ok = [r["median_e2e_error"] <= 0.05 and r["median_ttft_error"] <= 0.15 for r in held]
        print(f"held-out runs meeting median E2E <= 5% and TTFT <= 15%: {sum(ok)} of "
              f"{len(held)}")
    lss = [r for r in rows if r["source"] == "llmservingsim"]
    if lss:
        print("LLMServingSim runs, mean E2E error (target <= 2%): " + ", ".join(
            f"{r['run']} {r['mean_e2e_error']:.1%} (theirs {abs(r['published'].get('e2e_mean', float('nan'))):.1%})"
            for r in lss))

