"""Calibrating a profile from recorded vLLM runs by simulating them (``dynasim calibrate
--from-runs``): the generalisation of ``dynasim validate --refit`` (DistServe) to any
run of :mod:`dynasim.runs`.

The profile's engine limits are the runs' recorded server settings (KV blocks, block
size, ``max_num_seqs``, ``max_num_batched_tokens``, ``max_model_len``; scheduling V1);
what is fitted is the step time (:class:`~dynasim.profiles.step_time.TokensStepTime`,
six coefficients) and the per-request overhead ``frontend_latency_ms`` (HTTP,
tokenisation and the API-server hop before the engine queue). The engine's rule switches
(:data:`~dynasim.profiles.profile.SWITCHES`) are those of the runs' vLLM version
(:func:`~dynasim.profiles.run_switches.switches_for`), and the fit simulates with them on.

Two stages, both deterministic:

1. **Steps from per-chunk times**, where a run has them (the 2 req/s residency run):
   each gap between two streamed tokens of a request is one engine step; its
   composition (requests decoding, their summed context, prompts whose first token
   closed that step) is read off every request's first/last-token window
   (:func:`chunk_step_rows`). Pure decode steps fix ``step_ms``,
   ``decode_attention_ms_per_token`` and ``seq_ms`` (:func:`fit_decode`); steps with a
   prompt in them give the start of ``dense_ms_per_token`` (their median extra time per
   prompt token). Under async scheduling a step takes ``max(GPU, CPU)`` of the model's
   split (:meth:`~dynasim.profiles.step_time.TokensStepTime.split`), which is not linear
   in the coefficients: ``step_ms``, ``dense_ms_per_token``,
   ``decode_attention_ms_per_token``, ``seq_ms`` and ``dense_floor_ms`` are then fitted together to every
   chunk row by bounded least squares on relative residuals (:func:`fit_async_steps`),
   started from the linear fit. Without chunk times the decode coefficients start from per-request
   windows (:func:`window_step_rows`: a request's TPOT against the mean batch and
   context during its decode) and stay free in stage 2.
2. **Simulate and minimise per-request error**: :func:`scipy.optimize.minimize`
   (Nelder-Mead) over the logarithms of the free coefficients (``dense_ms_per_token``,
   ``prefill_attention_ms_per_pair``, plus the decode ones without chunk times; the
   attention coefficient first scanned over five decades) and the front-end latency,
   each evaluation simulating every fitting run's *windows*
   (:func:`~dynasim.profiles.run_windows.windows`: up to ``max_requests`` requests from
   ``k`` evenly spaced starts, so a two-stage run is seen at both rates; the first
   ``warmup_s`` of a window that starts mid-run are simulated but not scored, the server
   being empty there) and scoring

       cost = mean over runs and their windows of [median E2E error
                 + 0.5 x median TTFT error + 0.5 x |mean sim E2E / mean real E2E - 1|]

   with per-request error ``|sim - real| / real`` over requests served in the
   recording. Failed (timed-out) requests are simulated, never scored. A run whose
   client capped its requests in flight (the residency driver) is simulated in a closed
   loop from the client's schedule (:mod:`dynasim.runs.client`), else open loop on the
   recorded sends.

Held-out runs (``held_out``) are simulated whole with the fitted profile and reported;
so are the fitting runs, whole. A fit of 100 evaluations on one to three runs takes
15 s to 2 minutes on one core (the shipped fits:
:data:`dynasim.profiles.builders.RUN_PROFILES`).

Without async scheduling ``dense_floor_ms`` stays 0: the recorded runs cannot tell a
roofline floor from the per-step constant, both adding to the step. Under async
scheduling they differ (the floor is GPU time, ``step_ms`` CPU time hidden under it), so
``dense_floor_ms`` is fitted too, started at the additive fit's per-step constant
(:func:`async_start`).
"""

from __future__ import annotations

import math
import time

import numpy as np

from dynasim.profiles.fit import StepRow
from dynasim.profiles.profile import SWITCHES, Profile
from dynasim.profiles.run_switches import switches_for
from dynasim.profiles.run_windows import window_errors, windows
from dynasim.profiles.step_time import TokensStepTime
from dynasim.runs import RecordedRun, load_run

NAMES = TokensStepTime.coefficient_names()
DECODE_SIDE = ("step_ms", "decode_attention_ms_per_token", "seq_ms")


def profile_for(engine: dict, name: str, coefficients: dict[str, float],
                frontend_latency_ms: float, provenance: dict | None = None,
                switches: dict[str, bool] | None = None) -> Profile:
    """A V1 profile with ``engine``'s recorded limits (:class:`~dynasim.runs.RecordedRun`
    ``engine``), the given step-time coefficients (ms) and front-end latency (ms), and
    the engine ``switches`` on (default: all off; :func:`fit_from_runs` passes
    :func:`~dynasim.profiles.run_switches.switches_for` of the runs)."""
    switches = switches or {}
    return Profile(
        name=name, model=engine.get("model", ""), gpu=engine.get("gpu", ""),
        tensor_parallel_size=engine.get("tensor_parallel_size", 1),
        kv_capacity_tokens=engine["num_gpu_blocks"] * engine["block_size"],
        block_size=engine["block_size"], max_num_seqs=engine["max_num_seqs"],
        max_num_batched_tokens=engine["max_num_batched_tokens"],
        max_model_len=engine.get("max_model_len"), scheduling="v1",
        enable_prefix_caching=bool(engine.get("enable_prefix_caching", False)),
        frontend_latency_ms=round(float(frontend_latency_ms), 4),
        **{k: bool(switches.get(k, False)) for k in SWITCHES},
        step_time={"form": "tokens", **{k: float(coefficients[k]) for k in NAMES}},
        provenance=provenance or {})


def chunk_step_rows(run: RecordedRun, max_rows: int = 4000, seed: int = 0) -> list[StepRow]:
    """One :class:`~dynasim.profiles.fit.StepRow` per inter-token gap of ``run.chunks``
    (module stage 1), at most ``max_rows`` drawn by a seeded generator. A gap from
    token time ``a`` to ``b`` of one request is one step; in it decode every request
    with first token <= ``a`` < last token (context = prompt + tokens so far, linear in
    time over its window) and prefill every prompt whose first token lies in
    ``(a, b]`` (one whole-prompt chunk each: these prompts fit one step's budget)."""
    if run.chunks is None:
        return []
    c = run.chunks
    m = run.measured
    # token chunks only: 0 carries the role, the one after the last token the finish
    ntok = m["output_tokens"].to_numpy()[c["request_id"].to_numpy()]
    c = c[(c["chunk_index"] >= 1) & (c["chunk_index"] <= ntok)]
    first = m["first_token_time"].to_numpy(float)
    last = m["finish_time"].to_numpy(float)
    prompt = m["prompt_tokens"].to_numpy(float)
    out_tok = m["output_tokens"].to_numpy(float)
    rid = c["request_id"].to_numpy()
    t = c["time"].to_numpy()
    same = np.r_[rid[1:] == rid[:-1], False]
    a_idx = np.flatnonzero(same)
    rng = np.random.default_rng(seed)
    if len(a_idx) > max_rows:
        a_idx = np.sort(rng.choice(a_idx, max_rows, replace=False))
    rows = []
    for i in a_idx:
        a, b = t[i], t[i + 1]
        if b <= a:
            continue
        dec = (first <= a) & (last > a)
        frac = np.clip((a - first[dec]) / np.maximum(last[dec] - first[dec], 1e-9), 0, 1)
        ctx = float((prompt[dec] + 1 + frac * out_tok[dec]).sum())
        pre = (first > a) & (first <= b)
        rows.append(StepRow(tuple((int(p), 0) for p in prompt[pre]), int(dec.sum()), ctx,
                            (b - a) * 1e3, group=run.name))
    return rows


def window_step_rows(run: RecordedRun, max_rows: int = 1500, seed: int = 0
                     ) -> list[StepRow]:
    """Decode steps from per-request windows where no chunk times exist: a served
    request with ``o >= 3`` output tokens spent ``o - 1`` steps between its first and
    last token, so its mean step took ``tpot``; in them decoded on average ``batch``
    requests (the sum of the windows' overlaps with its own / its length, itself
    included) with ``ctx`` summed context (each growing linearly over its window).
    One :class:`~dynasim.profiles.fit.StepRow` per request (at most ``max_rows``, a
    seeded draw); prefill steps inside the window inflate ``tpot``, which stage 2's
    decode scale corrects."""
    m = run.measured
    first = m["first_token_time"].to_numpy(float)
    last = m["finish_time"].to_numpy(float)
    ok = (m["error"] == "").to_numpy() & (m["output_tokens"].to_numpy() >= 3)
    prompt = m["prompt_tokens"].to_numpy(float)
    out_tok = m["output_tokens"].to_numpy(float)
    idx = np.flatnonzero(ok)
    if len(idx) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(idx, max_rows, replace=False))
    f_ok, l_ok = first[ok], last[ok]
    p_ok, o_ok = prompt[ok], out_tok[ok]
    rows = []
    for i in idx:
        a, b = first[i], last[i]
        if b <= a:
            continue
        lo, hi = np.maximum(f_ok, a), np.minimum(l_ok, b)
        ov = np.clip(hi - lo, 0.0, None)
        mid = np.clip(((lo + hi) / 2 - f_ok) / np.maximum(l_ok - f_ok, 1e-9), 0, 1)
        batch = ov.sum() / (b - a)
        ctx = (ov * (p_ok + mid * o_ok)).sum() / (b - a)
        rows.append(StepRow((), max(int(round(batch)), 1), float(ctx),
                            float((b - a) / (out_tok[i] - 1) * 1e3), group=run.name))
    return rows


def fit_decode(rows: list[StepRow]) -> dict[str, float]:
    """``step_ms``, ``decode_attention_ms_per_token`` and ``seq_ms`` of pure decode
    ``rows`` (ms = step + attention x context + seq x decodes: the ``tokens`` form of a
    decode step below its roofline knee), by non-negative least squares on relative
    residuals (:func:`scipy.optimize.nnls`)."""
    from scipy.optimize import nnls

    y = np.array([r.ms for r in rows], float)
    a = np.array([[1.0, r.sum_decode_ctx, r.num_decode] for r in rows]) / y[:, None]
    x, _ = nnls(a, np.ones(len(y)))
    return dict(zip(DECODE_SIDE, (float(v) for v in x)))


def fit_async_steps(rows: list[StepRow], start: dict[str, float]) -> dict[str, float]:
    """``step_ms``, ``dense_floor_ms``, ``dense_ms_per_token``,
    ``decode_attention_ms_per_token`` and ``seq_ms`` of chunk ``rows`` (decode and mixed
    steps) under async scheduling, where a step takes ``max(GPU, CPU)`` of
    :meth:`TokensStepTime.split` (``vllm/v1/engine/core.py`` ``step_with_batch_queue``:
    step N+1 is scheduled and step N's output processed while the GPU runs). Bounded
    least squares on relative residuals (:func:`scipy.optimize.least_squares`) from
    :func:`async_start` of ``start`` (all coefficients, ms);
    ``prefill_attention_ms_per_pair`` stays at ``start``."""
    from scipy.optimize import least_squares

    keys = ("step_ms", "dense_floor_ms", "dense_ms_per_token",
            "decode_attention_ms_per_token", "seq_ms")
    start = async_start(start)
    feats = np.array([TokensStepTime.features(r.prefill, r.num_decode, r.sum_decode_ctx)
                      for r in rows], float)  # tokens, pairs, ctx, seqs
    y = np.array([r.ms for r in rows], float)
    pair = start["prefill_attention_ms_per_pair"] * feats[:, 1]

    def resid(x: np.ndarray) -> np.ndarray:
        step, floor, dense, attn, seq = x
        gpu = np.maximum(floor, dense * feats[:, 0]) + pair + attn * feats[:, 2]
        return np.maximum(gpu, step + seq * feats[:, 3]) / y - 1.0

    x0 = np.array([max(start[k], 1e-9) for k in keys])
    res = least_squares(resid, x0, bounds=(0.0, np.inf), method="trf", x_scale=x0)
    return {**start, **dict(zip(keys, (float(v) for v in res.x)))}


def async_start(coef: dict[str, float]) -> dict[str, float]:
    """An async-scheduling start from additive (sync) coefficients ``coef``: the
    per-step constant of a small decode step is mostly reading the weights, GPU work
    that async scheduling does not hide, so it moves to ``dense_floor_ms`` and a
    quarter of it stays as the CPU ``step_ms`` (:meth:`TokensStepTime.split`)."""
    return {**coef, "dense_floor_ms": max(coef["dense_floor_ms"], coef["step_ms"]),
            "step_ms": 0.25 * coef["step_ms"]}


def decode_rows(runs: list[RecordedRun]) -> tuple[list[StepRow], bool]:
    """Stage-1 rows: pure decode steps from chunk times where any run has them
    (``True``), else from request windows (``False``)."""
    rows = [r for run in runs for r in chunk_step_rows(run, max_rows=20000)]
    if sum(not r.prefill for r in rows) >= 20:
        return rows, True
    return [r for run in runs for r in window_step_rows(run)], False


def start_point(runs: list[RecordedRun]) -> tuple[dict[str, float], float]:
    """A starting point from the recordings alone: per-step time from the lowest-load
    run's median TPOT, prefill cost per token from its median TTFT over its median
    prompt, 10 ms front end."""
    m = min(runs, key=lambda r: r.measured["ttft"].median()).measured
    ok = m[m["error"] == ""]
    tpot = float(ok["tpot"].median()) * 1e3
    ttft = float(ok["ttft"].median()) * 1e3
    prompt = float(ok["prompt_tokens"].median())
    per_tok = max(ttft - 10.0 - tpot, 0.2 * ttft) / max(prompt, 1.0)
    return ({"step_ms": 0.6 * tpot, "dense_floor_ms": 0.0,
             "dense_ms_per_token": per_tok, "prefill_attention_ms_per_pair": 1e-7,
             "decode_attention_ms_per_token": 0.1 * tpot / 1e4, "seq_ms": 0.01 * tpot},
            10.0)


def fit_from_runs(fit_on: list[str], held_out: list[str], name: str, *,
                  max_requests: int = 3000, max_evals: int = 120,
                  provenance: dict | None = None,
                  switches: dict[str, bool] | None = None) -> tuple[Profile, dict]:
    """Fit a profile named ``name`` on the recorded runs ``fit_on`` (names of
    :data:`dynasim.runs.RUNS`, one server: their engine settings must agree) and report
    every run of ``fit_on + held_out`` simulated whole. The engine ``switches`` (default
    :func:`switches_for` the runs' engine; a partial dict overrides only its keys) are
    on while fitting and in the profile.

    Returns:
        ``(profile, report)``: ``report`` has ``fit_seconds``, ``evaluations``,
        ``cost``, ``chunk_rows`` (stage 1 rows, 0 without chunks) and ``runs``: per run
        the :func:`~dynasim.profiles.run_windows.errors` dict with ``run`` and ``fitted`` (bool).

    Raises:
        InputError: an unknown run name.
        ValueError: runs of different servers (KV blocks, limits or model differ).
    """
    from scipy.optimize import minimize

    t_start = time.perf_counter()
    runs = [load_run(n) for n in fit_on]
    keys = ("model", "num_gpu_blocks", "max_num_seqs", "max_num_batched_tokens",
            "tensor_parallel_size")
    for r in runs[1:]:
        diff = [k for k in keys if r.engine.get(k) != runs[0].engine.get(k)]
        if diff:
            raise ValueError(f"{r.name} and {runs[0].name} differ in {diff}: one server "
                             "per profile")
    engine = runs[0].engine
    switches = {**switches_for(engine), **(switches or {})}
    coef, front = start_point(runs)
    rows, from_chunks = decode_rows(runs)
    coef.update(fit_decode([r for r in rows if not r.prefill]))
    mixed = [r for r in rows if r.prefill]
    if from_chunks and len(mixed) >= 20:  # the extra time of a step with a prompt in it
        y = np.array([r.ms for r in mixed])
        dec = np.array([coef["step_ms"] + coef["seq_ms"] * r.num_decode
                        + coef["decode_attention_ms_per_token"] * r.sum_decode_ctx
                        for r in mixed])
        tok = np.array([sum(n for n, _ in r.prefill) for r in mixed], float)
        coef["dense_ms_per_token"] = max(float(np.median((y - dec) / tok)), 1e-6)
    if from_chunks and switches["async_scheduling"]:  # step = max(GPU, CPU): refit jointly
        coef = fit_async_steps(rows, coef)
    # stage 2: prefill costs and front end; without chunk times the decode side too
    # (request windows blur it), started where stage 1 put it
    free = ["dense_ms_per_token", "prefill_attention_ms_per_pair"]
    if switches["async_scheduling"] and not from_chunks:  # GPU floor and CPU step apart
        coef = async_start(coef)
        free.append("dense_floor_ms")
    if not from_chunks:
        free += list(DECODE_SIDE)
        for k, tiny in zip(DECODE_SIDE, (0.1, 1e-6, 1e-3)):  # a log-space start > 0
            coef[k] = max(coef[k], tiny)
    wins = {r.name: windows(r, max_requests) for r in runs}
    floor = 1e-9

    def unpack(z: np.ndarray) -> tuple[dict[str, float], float]:
        c = dict(coef)
        for k, v in zip(free, z):
            c[k] = math.exp(v)
        return c, math.exp(z[-1])

    def cost(z: np.ndarray) -> float:
        c, fr = unpack(z)
        prof = profile_for(engine, name, c, fr, switches=switches)
        total = 0.0
        for r in runs:  # each window on its own: a pooled median hides one rate's error
            for w in wins[r.name]:
                e = window_errors(prof, [w])
                total += (e["median_e2e_error"] + 0.5 * e["median_ttft_error"]
                          + 0.5 * e["mean_e2e_error"]) / len(wins[r.name])
        return total / len(runs) if math.isfinite(total) else 1e3

    z0 = np.array([math.log(max(coef[k], floor)) for k in free] + [math.log(front)])
    # the attention coefficient is the least known (decades apart between models): scan
    # its decades from dense_ms_per_token / 1e5 to / 10 before the local search
    i_pair = free.index("prefill_attention_ms_per_pair")
    scan = [z0.copy() for _ in range(5)]
    for j, z in enumerate(scan):
        z[i_pair] = math.log(coef["dense_ms_per_token"]) - math.log(10) * (5 - j)
    scan_cost = [cost(z) for z in scan]
    if min(scan_cost) < cost(z0):
        z0 = scan[int(np.argmin(scan_cost))]
    res = minimize(cost, z0, method="Nelder-Mead",
                   options={"maxfev": max_evals, "xatol": 1e-3, "fatol": 1e-4,
                            "initial_simplex": z0 + np.vstack([np.zeros(len(z0)),
                                                               0.5 * np.eye(len(z0))])})
    c, fr = unpack(res.x)
    c = {k: float(f"{v:.6g}") for k, v in c.items()}
    fit_seconds = time.perf_counter() - t_start
    prov = {"fitted_on": list(fit_on), "held_out": list(held_out),
            "method": "dynasim.profiles.fit_runs.fit_from_runs (module docstring)",
            "max_requests": max_requests, "max_evals": max_evals,
            "objective": round(float(res.fun), 5), "evaluations": int(res.nfev),
            "decode_rows": len(rows), "decode_rows_from": "chunk times" if from_chunks
            else "request windows",
            "engine": {k: v for k, v in engine.items() if k != "model_config"},
            **(provenance or {})}
    if any(switches.values()):  # absent when all off: the profiles fitted before them
        prov["switches"] = "dynasim.profiles.run_switches.switches_for"
    profile = profile_for(engine, name, c, float(f"{fr:.6g}"), prov, switches)
    report_rows = [{"run": n, "fitted": n in fit_on,
                    **window_errors(profile, windows(load_run(n), None))}
                   for n in [*fit_on, *held_out]]
    return profile, {"fit_seconds": fit_seconds, "evaluations": int(res.nfev),
                     "cost": float(res.fun), "decode_rows": len(rows),
                     "decode_rows_from_chunks": from_chunks,
                     "runs": report_rows}

