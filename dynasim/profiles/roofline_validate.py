"""Leave-one-model-out error of roofline profiles (:mod:`dynasim.profiles.roofline`).

For each recorded server of :data:`dynasim.profiles.builders.RUN_PROFILES` (one model
each): learn the roofline coefficients from the *other* servers' run-fitted profiles,
build the held-out model's roofline profile from its architecture
(:data:`~dynasim.profiles.model_config.KNOWN_MODELS`), its GPU's datasheet and its
recorded engine limits (KV blocks, ``max_num_seqs``, ``max_num_batched_tokens``, as
``--kv-blocks`` etc. would give them), simulate every recorded run of that model
(:func:`dynasim.profiles.run_windows.windows`: up to ``max_requests`` requests from each
of two starts per run) and report the median per-request E2E and TTFT error pooled over
them (:func:`dynasim.profiles.run_windows.errors`), beside the error of the run-fitted
profile itself on the same requests (what a measured profile achieves) and the KV
blocks vLLM's memory rule derives against the recorded ones.

Prints its table::

    python -m dynasim.profiles.roofline_validate [--max-requests 1000]
    dynasim profiles --roofline-validate
"""

from __future__ import annotations

import argparse
import functools
import math
import time

from dynasim.profiles.builders import RUN_PROFILES
from dynasim.profiles.fit_runs import profile_for
from dynasim.profiles.gpus import GPU, get_gpu
from dynasim.profiles.model_config import ModelConfig, load_model_config
from dynasim.profiles.profile import SWITCHES, Profile, load_profile
from dynasim.profiles.roofline import (
    Coefficients,
    derive_kv_blocks,
    fields_of,
    learn_coefficients,
    step_time_coefficients,
)
from dynasim.profiles.run_switches import switches_for
from dynasim.profiles.run_windows import simulate_window, window_errors, windows
from dynasim.profiles.step_time import TokensStepTime
from dynasim.runs import load_run

#: requests per window of the fitting runs replayed for :func:`occupied_steps`
OCCUPIED_REQUESTS = 300
#: step compositions kept per server
OCCUPIED_STEPS = 600


class _Recorder:
    """A step-time model that delegates to ``inner`` and keeps every step composition
    the engine asks it about (the engine's only view of the step-time model is
    ``step_time`` and ``split``)."""

    def __init__(self, inner: TokensStepTime) -> None:
        self.inner = inner
        self.seen: list[tuple[list[tuple[int, int]], int, int]] = []

    def step_time(self, prefill: list[tuple[int, int]], num_decode: int,
                  sum_decode_ctx: int) -> float:
        self.seen.append((list(prefill), num_decode, int(sum_decode_ctx)))
        return self.inner.step_time(prefill, num_decode, sum_decode_ctx)

    def split(self, prefill: list[tuple[int, int]], num_decode: int,
              sum_decode_ctx: int) -> tuple[float, float]:
        self.seen.append((list(prefill), num_decode, int(sum_decode_ctx)))
        return self.inner.split(prefill, num_decode, sum_decode_ctx)


@functools.cache
def occupied_steps(name: str, max_requests: int = OCCUPIED_REQUESTS,
                   max_steps: int = OCCUPIED_STEPS) -> tuple:
    """Step compositions ``(prefill chunks, num_decode, sum_decode_ctx)`` the engine
    meets when it replays the *fitting* runs of the run-fitted server ``name``
    (:data:`RUN_PROFILES` first entry; up to ``max_requests`` requests from each of two
    windows per run) under that server's fitted profile: the region of step space the
    recorded runs pinned down (module docstring of :mod:`dynasim.profiles.roofline`).
    At most ``max_steps``, evenly strided (deterministic)."""
    prof = load_profile(name)
    rec = _Recorder(prof.step_time)
    replay = prof.model_copy(update={"step_time": rec})
    for run in RUN_PROFILES[name][0]:
        for w in windows(load_run(run), max_requests):
            simulate_window(replay, w)
    seen = rec.seen
    stride = max(1, math.ceil(len(seen) / max_steps))
    return tuple(seen[::stride])


def server(name: str) -> tuple[Profile, ModelConfig, GPU]:
    """The run-fitted profile ``name`` with its model's shape and its GPU."""
    prof = load_profile(name)
    return prof, load_model_config(prof.model), get_gpu(prof.gpu)


def learn_all(async_scheduling: bool = False) -> Coefficients:
    """The coefficients learned from every run-fitted server over its
    :func:`occupied_steps`, the roofline charged with ``async_scheduling`` (the CLI's
    :data:`~dynasim.profiles.roofline.LEARNED` and, for a profile with async
    scheduling, :data:`~dynasim.profiles.roofline.LEARNED_ASYNC`)."""
    return learn_coefficients(_training(list(RUN_PROFILES), occupied=True),
                              async_roofline=async_scheduling)


def version(name: str) -> str | None:
    """The vLLM version of the recorded runs behind the run-fitted server ``name``."""
    return load_run(RUN_PROFILES[name][0][0]).engine.get("vllm_version")


def _training(names: list[str], occupied: bool = False
              ) -> list[tuple[Profile, ModelConfig, GPU, list]]:
    """``(profile, model, gpu, steps)`` of the servers ``names``: their
    :func:`occupied_steps`, or none (the fit's grid) unless ``occupied``."""
    return [(*server(n), list(occupied_steps(n)) if occupied else []) for n in names]


def held_out_switches(held: str, engine: dict, source: str = "version") -> dict[str, bool]:
    """The engine switches of the roofline profile of the held-out server ``held``:
    ``"version"`` those of its runs' vLLM version and recorded config
    (:func:`~dynasim.profiles.run_switches.switches_for`, what ``dynasim profiles
    --roofline --vllm-version`` selects), ``"fitted"`` those of its run-fitted profile
    (the version's less :data:`~dynasim.profiles.builders.SWITCH_OVERRIDES`, chosen by
    its recorded runs), ``"off"`` none."""
    if source == "off":
        return dict.fromkeys(SWITCHES, False)
    if source == "fitted":
        prof = load_profile(held)
        return {k: bool(getattr(prof, k)) for k in SWITCHES}
    return switches_for(engine)


def leave_one_model_out(max_requests: int | None = 1000,
                        only: list[str] | None = None, occupied: bool = True,
                        per_version: bool = False, switches: str = "fitted") -> list[dict]:
    """One row per held-out server (``only``: these names of :data:`RUN_PROFILES`):
    ``server``, ``model``, ``gpu``, ``tp``, ``runs``, ``scored`` (requests),
    ``e2e`` / ``ttft`` (median per-request error of the roofline profile, fractions),
    ``fitted_e2e`` / ``fitted_ttft`` (the run-fitted profile's), ``kv_blocks``
    (recorded) and ``derived_kv_blocks``, ``coefficients`` (learned without it),
    ``seconds``. ``occupied``: fit over :func:`occupied_steps` (default) or, false,
    over :func:`~dynasim.profiles.roofline.step_grid`; ``per_version``: refit the
    overheads and front-end latency on the training servers of the held-out server's
    vLLM version (:func:`learn_coefficients` ``family``, off by default: it measured
    worse). ``switches``: the held-out profile's engine switches
    (:func:`held_out_switches`), also in each row; the roofline is learned charged with
    each training server's async switch from the same source. Alternatives and figures:
    the module docstring of :mod:`dynasim.profiles.roofline`."""
    names = list(RUN_PROFILES)
    rows = []
    for held in only or names:
        t0 = time.perf_counter()
        fitted, model, gpu = server(held)
        runs = [load_run(r) for group in RUN_PROFILES[held] for r in group]
        engine = runs[0].engine
        train = [n for n in names if n != held]
        peers = [n for n in train if per_version and version(n) == engine.get("vllm_version")]
        flags = [held_out_switches(n, load_run(RUN_PROFILES[n][0][0]).engine,
                                   switches)["async_scheduling"] for n in [*train, *peers]]
        coef = learn_coefficients(_training(train, occupied), _training(peers, occupied),
                                  async_roofline=flags)
        tp = fitted.tensor_parallel_size
        st = step_time_coefficients(model, gpu, tp, coef)
        sw = held_out_switches(held, engine, switches)
        prof = profile_for(engine, f"roofline-{held}", st, coef.frontend_latency_ms,
                           switches=sw)
        wins = [w for r in runs for w in windows(r, max_requests)]
        got = window_errors(prof, wins)
        ref = window_errors(fitted, wins)
        rows.append({"server": held, "model": model.name, "gpu": gpu.name, "tp": tp,
                     "runs": len(runs), "scored": got["scored"],
                     "e2e": got["median_e2e_error"], "ttft": got["median_ttft_error"],
                     "mean_e2e": got["mean_e2e_error"],
                     "fitted_e2e": ref["median_e2e_error"],
                     "fitted_ttft": ref["median_ttft_error"],
                     "kv_blocks": engine["num_gpu_blocks"],
                     "derived_kv_blocks": derive_kv_blocks(model, gpu, tp,
                                                           engine["block_size"]),
                     "coefficients": fields_of(coef),
                     "switches": sorted(k for k, v in sw.items() if v),
                     "seconds": time.perf_counter() - t0})
    return rows


def print_table(rows: list[dict]) -> None:
    """The leave-one-model-out table, errors in %."""
    header = ("held-out server", "gpu", "TP", "requests", "E2E med", "TTFT med",
              "E2E mean", "fitted E2E", "fitted TTFT", "KV blocks", "derived")
    table = [header]
    for r in rows:
        table.append((r["server"], r["gpu"], str(r["tp"]), str(r["scored"]),
                      f"{100 * r['e2e']:.1f}%", f"{100 * r['ttft']:.1f}%",
                      f"{100 * r['mean_e2e']:.1f}%", f"{100 * r['fitted_e2e']:.1f}%",
                      f"{100 * r['fitted_ttft']:.1f}%", str(r["kv_blocks"]),
                      str(r["derived_kv_blocks"])))
    widths = [max(len(t[i]) for t in table) for i in range(len(header))]
    for t in table:
        print("  ".join(c.ljust(w) if i < 2 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(t, widths))))
    if rows:
        e2e = sorted(r["e2e"] for r in rows)
        ttft = sorted(r["ttft"] for r in rows)
        mid = len(rows) // 2

        def med(v: list[float]) -> float:
            return v[mid] if len(v) % 2 else (v[mid - 1] + v[mid]) / 2

        print(f"median over held-out servers: E2E {100 * med(e2e):.1f}%, "
              f"TTFT {100 * med(ttft):.1f}%")
    print("coefficients learned without each server:")
    for r in rows:
        c = r["coefficients"]
        print(f"  {r['server']}: " + ", ".join(f"{k}={v:.4g}" for k, v in c.items())
              + f"; switches: {', '.join(r['switches']) or 'none'}")


def main(argv: list[str] | None = None) -> None:
    """``python -m dynasim.profiles.roofline_validate``: print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--max-requests", type=int, default=1000,
                   help="requests per window (two windows per run; 0: whole runs)")
    p.add_argument("--only", nargs="+", choices=list(RUN_PROFILES), help="held-out servers")
    p.add_argument("--fit-target", choices=("grid", "occupied"), default="occupied",
                   help="step compositions fitted over (roofline module docstring)")
    p.add_argument("--per-version", action="store_true",
                   help="refit overheads and front-end latency per vLLM version")
    p.add_argument("--switches", choices=("version", "fitted", "off"), default="fitted",
                   help="engine switches of the held-out roofline profile: its run-fitted "
                   "profile's (default), its vLLM version's, or none")
    args = p.parse_args(argv)
    print_table(leave_one_model_out(args.max_requests or None, args.only,
                                    args.fit_target == "occupied", args.per_version,
                                    args.switches))


if __name__ == "__main__":  # pragma: no cover
    main()
