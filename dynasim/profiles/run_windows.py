"""Windows of a recorded run and a profile's per-request error on them: the measure
every run fit (:mod:`dynasim.profiles.fit_runs`), ``dynasim validate`` and the roofline's
leave-one-model-out check (:mod:`dynasim.profiles.roofline_validate`) score by.

A window is a slice of a run simulated on its own (:func:`windows`), FCFS as vLLM, open
loop on the recorded sends or, where the run's client capped its requests in flight, in
a closed loop from its schedule (:mod:`dynasim.runs.client`); the error of a request is
``|sim - real| / real`` of its E2E latency and TTFT (:func:`errors`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dynasim.profiles.profile import Profile
from dynasim.runs import RecordedRun
from dynasim.runs.client import CAP, SCHEDULE, client_cap, simulate_capped
from dynasim.trace import Trace


@dataclass
class Window:
    """A slice of a recorded run simulated on its own: ``trace`` (arrivals shifted to
    start at 0), ``real`` (its measured records, same ``request_id``), ``scored``
    (bool per row: served in the recording and past the warm-up)."""

    trace: Trace
    real: pd.DataFrame
    scored: np.ndarray


def windows(run: RecordedRun, max_requests: int | None = 3000, k: int = 2,
            warmup_s: float = 20.0) -> list[Window]:
    """Up to ``k`` windows of ``run`` of at most ``max_requests`` requests each, starting
    at the requests nearest ``i / k`` of its duration (``i = 0..k-1``); one window of the
    whole run when it has at most ``k * max_requests`` requests or ``max_requests`` is
    None. Windows do not overlap."""
    f = run.trace.frame
    n = len(f)
    if max_requests is None or n <= k * max_requests:
        starts, size = [0], n
    else:
        t = f["arrival_time"].to_numpy()
        starts = sorted({int(np.searchsorted(t, t[-1] * i / k)) for i in range(k)})
        size = max_requests
    out, end_prev = [], 0
    for s in starts:
        s = max(s, end_prev)
        e = min(s + size, n)
        if e <= s:
            continue
        end_prev = e
        cols = ["arrival_time", "prompt_tokens", "output_tokens"]
        # the client's timeouts (profile switch) and concurrency cap (runs.client), and
        # shared prompt blocks where the trace names them
        cols += [c for c in ("client_timeout_s", SCHEDULE, CAP, "hash_ids") if c in f.columns]
        sub = f.iloc[s:e][cols].copy()
        t0 = float(sub["arrival_time"].iloc[0])
        sub["arrival_time"] -= t0
        if SCHEDULE in sub.columns:  # the schedule from the window's first send
            sub[SCHEDULE] = (sub[SCHEDULE] - float(sub[SCHEDULE].iloc[0])).clip(lower=0.0)
        sub = sub.reset_index(drop=True)  # request ids 0.. in the window, as in ``real``
        sub.index.name = "request_id"
        real = run.measured.iloc[s:e].copy()
        for col in ("arrival_time", "first_token_time", "finish_time"):
            real[col] -= t0
        scored = (real["error"] == "").to_numpy().copy()
        if s > 0:
            scored &= sub["arrival_time"].to_numpy() >= warmup_s
        out.append(Window(Trace(run.trace.source, sub), real.reset_index(drop=True), scored))
    return out


def errors(sim: pd.DataFrame, real: pd.DataFrame, scored: np.ndarray | None = None) -> dict:
    """Per-request errors of ``sim`` against ``real`` (record tables, rows matched by
    ``request_id``) over ``scored`` rows (default: served in ``real``): medians and p90
    of ``|sim - real| / real`` for E2E and TTFT, and the error of the mean E2E and TTFT
    (fractions). Requests failed in ``sim`` count as missing (not scored)."""
    s = sim.set_index("request_id").reindex(real["request_id"])
    ok = (real["error"] == "").to_numpy().copy() if scored is None else scored.copy()
    ok &= (s["error"] == "").to_numpy() & (real["e2e_latency"].to_numpy() > 0)
    out = {"scored": int(ok.sum())}
    for key, col in (("e2e", "e2e_latency"), ("ttft", "ttft")):
        a, b = s[col].to_numpy(float)[ok], real[col].to_numpy(float)[ok]
        good = b > 0
        err = np.abs(a[good] - b[good]) / b[good]
        out[f"median_{key}_error"] = float(np.median(err)) if len(err) else math.nan
        out[f"p90_{key}_error"] = float(np.percentile(err, 90)) if len(err) else math.nan
        out[f"mean_{key}_error"] = float(abs(a.mean() / b.mean() - 1)) if len(a) else math.nan
        out[f"real_mean_{key}_s"] = float(b.mean()) if len(b) else math.nan
        out[f"sim_mean_{key}_s"] = float(a.mean()) if len(a) else math.nan
    return out


def simulate_window(profile: Profile, w: Window) -> pd.DataFrame:
    """The simulated records of window ``w`` under ``profile`` (FCFS, as vLLM): open
    loop on the recorded sends, or, where the run's client capped its requests in flight
    (:func:`~dynasim.runs.client.client_cap`), closed loop from its schedule
    (:func:`~dynasim.runs.client.simulate_capped`)."""
    from dynasim.policies import make_policy
    from dynasim.simulation import simulate

    cap = client_cap(w.trace)
    if cap is not None:
        return simulate_capped(w.trace, profile, make_policy("fcfs"), cap)
    sim, _ = simulate(w.trace, profile, make_policy("fcfs"))
    return sim


def window_errors(profile: Profile, wins: list[Window]) -> dict:
    """:func:`errors` over the scored requests of all ``wins`` pooled."""
    sims, reals, scored = [], [], []
    offset = 0
    for w in wins:
        s = simulate_window(profile, w)
        r = w.real.copy()
        s["request_id"] += offset
        r["request_id"] = np.arange(len(r)) + offset
        offset += len(r)
        sims.append(s)
        reals.append(r)
        scored.append(w.scored)
    return errors(pd.concat(sims, ignore_index=True), pd.concat(reals, ignore_index=True),
                  np.concatenate(scored))
