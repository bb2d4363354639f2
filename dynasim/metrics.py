"""Summary metrics with ``vllm bench serve``'s keys and definitions.

Source: vLLM ``vllm/benchmarks/serve.py`` (``calculate_metrics``, ``parse_goodput``):

* ``completed`` / ``failed``: requests served / rejected; ``aborted`` and
  ``aborted_output_tokens``: requests the client cancelled (eager dispatch) and the
  tokens they had generated (present only when some were);
* ``duration`` (s): from t = 0 of the arrival schedule to the last finish;
* ``request_throughput`` (req/s), ``output_throughput`` and ``total_token_throughput``
  (tok/s) over ``duration``; token totals count completed requests only;
* ``{mean,median,std,p90,p99}_{ttft,tpot,e2el}_ms``; TPOT only over requests with more
  than one output token;
* ``request_goodput`` (req/s), when SLOs are given: completed requests meeting every
  given SLO (``ttft``, ``tpot``, ``e2el`` in ms; a one-token output has TPOT 0), over
  ``duration``.

Per-replica load (dynasim's own, for a fleet behind a router, :mod:`dynasim.cluster`),
when the records have a ``replica`` column: ``num_replicas``; ``replica_requests`` (requests
routed to each replica, served or rejected) and ``replica_tokens`` (prompt + output
tokens of each replica's completed requests), lists by replica index; and their
imbalance ``replica_request_imbalance`` / ``replica_token_imbalance`` = max / mean over
the replicas (1.0: perfectly even; N: all on one of N; 0.0 when nothing was served),
the load-imbalance figure of Vidur's and BLIS's cluster reports.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

from dynasim.errors import InputError

GOODPUT_KEYS = ("ttft", "tpot", "e2el")
PERCENTILES = (90, 99)


def parse_goodput(items: list[str] | None) -> dict[str, float] | None:
    """Parse ``["ttft:MS", "tpot:MS", "e2el:MS"]`` into ``{key: seconds}``.

    Raises:
        InputError: unknown key, missing colon, or a value that is not a number > 0.
    """
    if not items:
        return None
    slos: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition(":")
        if not sep or key not in GOODPUT_KEYS:
            raise InputError(f"expected KEY:MS with KEY in {', '.join(GOODPUT_KEYS)}, got "
                             f"{item!r}", field="goodput")
        try:
            ms = float(value)
        except ValueError:
            ms = float("nan")
        if not ms > 0:
            raise InputError(f"SLO must be a number of milliseconds > 0, got {value!r}",
                             field="goodput")
        slos[key] = ms / 1000.0
    return slos


def _stats(values: np.ndarray, name: str, out: dict) -> None:
    ms = values * 1000.0
    empty = len(ms) == 0
    out[f"mean_{name}_ms"] = float(np.mean(ms)) if not empty else 0.0
    out[f"median_{name}_ms"] = float(np.median(ms)) if not empty else 0.0
    out[f"std_{name}_ms"] = float(np.std(ms)) if not empty else 0.0
    for p in PERCENTILES:
        out[f"p{p}_{name}_ms"] = float(np.percentile(ms, p)) if not empty else 0.0


def imbalance(loads: Sequence[float] | np.ndarray) -> float:
    """max / mean of per-replica ``loads`` (1.0 when even; 0.0 when all are zero)."""
    a = np.asarray(loads, dtype=float)
    mean = float(a.mean()) if len(a) else 0.0
    return float(a.max()) / mean if mean > 0 else 0.0


def replica_load(records: pd.DataFrame, num_replicas: int | None = None) -> dict:
    """The per-replica keys of the summary (module docstring) of a record table with a
    ``replica`` column; ``num_replicas`` (default: highest index + 1) counts replicas
    that got nothing too.

    Raises:
        ValueError: a replica index outside ``0..num_replicas-1``.
    """
    rep = records["replica"].to_numpy(np.int64)
    n = int(num_replicas if num_replicas is not None else (rep.max() + 1 if len(rep) else 1))
    if len(rep) and (rep.min() < 0 or rep.max() >= n):
        raise ValueError(f"replica index outside 0..{n - 1}")
    ok = (records["error"] == "").to_numpy()
    tokens = (records["prompt_tokens"] + records["output_tokens"]).to_numpy(np.int64)
    reqs = np.bincount(rep, minlength=n)
    toks = np.bincount(rep[ok], weights=tokens[ok], minlength=n).astype(np.int64)
    return {"num_replicas": n, "replica_requests": [int(x) for x in reqs],
            "replica_tokens": [int(x) for x in toks],
            "replica_request_imbalance": imbalance(reqs),
            "replica_token_imbalance": imbalance(toks)}


def summarize(records: pd.DataFrame, goodput: dict[str, float] | None = None,
              num_replicas: int | None = None) -> dict:
    """The summary dict of a record table (:mod:`dynasim.data_record`); see module doc.
    ``num_replicas``: the fleet size for the per-replica keys (:func:`replica_load`)."""
    ok = records[records["error"] == ""]
    duration = float(records["finish_time"].max()) if len(records) else 0.0
    aborted = records[records["error"] == "aborted"]  # the client cancelled them
    out: dict = {"completed": int(len(ok)),
                 "failed": int(len(records) - len(ok) - len(aborted)),
                 "duration": duration}
    if len(aborted):
        out["aborted"] = int(len(aborted))
        out["aborted_output_tokens"] = int(aborted["output_tokens"].sum())
    total_in = int(ok["prompt_tokens"].sum())
    total_out = int(ok["output_tokens"].sum())
    out["total_input_tokens"] = total_in
    out["total_output_tokens"] = total_out
    per_s = 1.0 / duration if duration > 0 else 0.0
    out["request_throughput"] = len(ok) * per_s
    out["output_throughput"] = total_out * per_s
    out["total_token_throughput"] = (total_in + total_out) * per_s
    tpot = ok["tpot"].to_numpy()
    _stats(ok["ttft"].to_numpy(), "ttft", out)
    _stats(tpot[~np.isnan(tpot)], "tpot", out)
    _stats(ok["e2e_latency"].to_numpy(), "e2el", out)
    out["num_preemptions"] = int(records["num_preemptions"].sum())
    if goodput:
        good = np.ones(len(ok), dtype=bool)
        values = {"ttft": ok["ttft"].to_numpy(), "e2el": ok["e2e_latency"].to_numpy(),
                  "tpot": np.nan_to_num(tpot, nan=0.0)}
        for key, slo in goodput.items():
            good &= values[key] <= slo
        out["request_goodput"] = int(good.sum()) * per_s
        out["goodput_slos_ms"] = {k: v * 1000.0 for k, v in goodput.items()}
    if "replica" in records.columns:
        out.update(replica_load(records, num_replicas))
    return out


def check_window(num_programs: int, warmup: int = 0, cooldown: int = 0) -> None:
    """Check a steady-state window (:func:`steady_state_mask`) against a run of
    ``num_programs`` programs.

    Raises:
        InputError: a negative count (field ``warmup_programs``/``cooldown_programs``) or a
            window that leaves no program (field ``warmup_programs``).
    """
    for name, v in (("warmup_programs", warmup), ("cooldown_programs", cooldown)):
        if v < 0:
            raise InputError(f"{name} must be >= 0, got {v}", field=name)
    if warmup + cooldown >= num_programs:
        raise InputError(f"warmup_programs {warmup} + cooldown_programs {cooldown} leave "
                         f"none of the {num_programs} programs to count",
                         field="warmup_programs")


def steady_state_mask(arrival_times: Sequence[float] | np.ndarray, warmup: int = 0,
                      cooldown: int = 0) -> np.ndarray:
    """Which programs are counted for SLO attainment: all but the first ``warmup`` and
    the last ``cooldown`` to arrive (by arrival time, ties by position), so attainment is
    measured while the queue is in steady state rather than filling or draining (the
    paper's protocol runs 500 programs at rates where queues form, Dynasor §4).
    Counts, not a fraction: the count is what the summary reports."""
    t = np.asarray(arrival_times, dtype=float)
    rank = np.empty(len(t), dtype=int)
    rank[np.argsort(t, kind="stable")] = np.arange(len(t))
    return (rank >= warmup) & (rank < len(t) - cooldown)


def summarize_programs(programs: pd.DataFrame, warmup: int = 0, cooldown: int = 0) -> dict:
    """Program-level summary (Dynasor §4): ``num_programs``, ``slo_attainment`` (fraction
    meeting their deadline) and ``slo_attainment_programs_counted`` (how many programs it
    is over), ``accuracy``, token totals, ``program_throughput`` (per s),
    ``{mean,median,p90,p99}_program_latency_s`` and the finish-time fairness φ
    distribution ``{mean,median,p90,p99}_fairness_s_per_token``; ``aborted_calls``
    (eager dispatch); for a mixed workload (:mod:`dynasim.workloads.mix`),
    ``slo_attainment_by_workload`` and ``accuracy_by_workload`` (dicts by workload).

    ``warmup``/``cooldown``: SLO attainment counts only the programs arriving after the
    first ``warmup`` and before the last ``cooldown`` arrivals (the steady state,
    :func:`steady_state_mask`); every other key counts all programs.

    Raises:
        InputError: a window leaving no program (:func:`check_window`).
    """
    n = len(programs)
    out: dict = {"num_programs": n}
    if not n:
        return out
    lat = programs["latency"].to_numpy(float)
    counted = programs
    if warmup or cooldown:
        check_window(n, warmup, cooldown)
        counted = programs[steady_state_mask(programs["arrival_time"].to_numpy(float),
                                             warmup, cooldown)]
    out["slo_attainment"] = float(counted["slo_met"].mean())
    out["slo_attainment_programs_counted"] = int(len(counted))
    out["accuracy"] = float(programs["correct"].mean())
    if "workload" in programs and programs["workload"].nunique() > 1:  # a mix
        out["slo_attainment_by_workload"] = {
            str(w): float(g.mean()) for w, g in counted.groupby("workload")["slo_met"]}
        out["accuracy_by_workload"] = {
            str(w): float(g.mean()) for w, g in programs.groupby("workload")["correct"]}
    if "aborted_calls" in programs:
        out["aborted_calls"] = int(programs["aborted_calls"].sum())
    out["total_program_output_tokens"] = int(programs["output_tokens"].sum())
    out["total_program_prompt_tokens"] = int(programs["prompt_tokens"].sum())
    out["mean_samples_used"] = float(programs["samples_used"].mean())
    span = float(programs["finish_time"].max())
    out["program_throughput"] = n / span if span > 0 else 0.0
    out["mean_program_latency_s"] = float(lat.mean())
    out["median_program_latency_s"] = float(np.median(lat))
    for p in PERCENTILES:
        out[f"p{p}_program_latency_s"] = float(np.percentile(lat, p))
    phi = programs["fairness"].dropna().to_numpy(float)
    if len(phi):
        out["mean_fairness_s_per_token"] = float(phi.mean())
        out["median_fairness_s_per_token"] = float(np.median(phi))
        for p in PERCENTILES:
            out[f"p{p}_fairness_s_per_token"] = float(np.percentile(phi, p))
    return out
