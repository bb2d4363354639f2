"""``dynasim calibrate``: measure a running vLLM through its HTTP API and fit a profile.

Measurements (:mod:`replay.calibrate.steps`; only ``/v1/completions``, ``/tokenize``,
``/metrics``, ``/v1/models`` and ``/version``; prompts are token ids of exact length, each
unique so the prefix cache never hits unless sharing is the point):

1. **lone prefills**: one request at a time (``max_tokens=1``) over a range of prompt
   lengths: the client's TTFT and the engine's prefill step and queue time.
2. **mixed steps**: ``j`` requests decoding, then one prefill; its engine prefill time
   is one step holding the prefill and ``j`` decodes.
3. **decode steps**: ``k`` concurrent streams (``ignore_eos``) at a fixed context
   (sharing the context's KV blocks through the prefix cache when their prompts exceed
   a step's budget); the engine's decode time over the streams' steps is the mean step
   at batch ``k``.

Fit: the medians per configuration of (2), (3) and the long prompts of (1) are
:class:`dynasim.profiles.fit.StepRow` rows of the ``tokens`` step-time form
(:func:`dynasim.profiles.fit.fit_tokens`, 20% held out); short lone prefills are slower than the
same prefill in a busy engine (about 1.5 ms at 16 tokens on the tiny CPU model: the cost
of starting an idle engine, hidden by compute from about 512 tokens on), so they join
only when the server has a single seat (no mixed step possible). The
profile's ``frontend_latency_ms`` is the median over lone requests of the client's TTFT
minus the engine queue time minus the fitted step: the per-request time outside the
modelled steps (HTTP and the API server both ways, the hop to the engine core, and the
extra cost of a step that starts an idle engine).

Limits come from the server where it says them (``max_model_len``: ``/v1/models``;
block size, KV blocks and prefix caching: ``vllm:cache_config_info``; ``max_num_seqs``:
probed by filling the batch) or from flags; ``max_num_batched_tokens`` is not exported
and defaults to 2048 (vLLM's OpenAI-server default on CPU). The provenance records where
each limit came from and every raw measurement; :mod:`replay.calibrate.report` plots them.
"""

from __future__ import annotations

import asyncio
import datetime
import re
import statistics
import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from dynasim.errors import InputError
from dynasim.profiles import Profile
from dynasim.profiles.fit import StepRow, fit_tokens
from replay.calibrate.steps import Meter, decode_run, lone_prefill, mixed_steps
from replay.vllm_metrics import probe_max_num_seqs, server_info, wait_idle

if TYPE_CHECKING:
    import aiohttp

#: vLLM's ``--max-num-batched-tokens`` for its OpenAI server on CPU; not exported.
DEFAULT_BATCHED_TOKENS = 2048
#: Lone prefills at least this long join the fit (shorter ones pay ~1.5 ms for starting
#: an idle engine, which the profile's frontend latency carries instead).
LONE_FIT_TOKENS = 512


@dataclass(frozen=True)
class Plan:
    """What to measure; sizes are capped by the server's limits."""

    lone_prompts: tuple[int, ...]
    lone_repeats: int
    mixed_decoders: int              # how many background batch sizes (1 .. seats - 1)
    mixed_prompts: tuple[int, ...]
    mixed_repeats: int
    contexts: tuple[int, ...]        # decode context lengths
    decode_tokens: int               # output tokens per decode stream
    decode_repeats: int
    batch_sizes: int                 # most decode batch sizes (1 .. max_num_seqs)


FULL = Plan((16, 64, 256, 512, 1024, 2048), 3, 3, (16, 128, 512, 1024, 2048), 2,
            (16, 512, 1024, 2048), 128, 3, 6)
QUICK = Plan((16, 256, 1024, 2048), 2, 2, (16, 256, 1024), 1, (16, 512, 1024), 64, 2, 4)


def sizes(top: int, most: int) -> list[int]:
    """1 .. top, at most ``most`` of them (geometric when there are more)."""
    if top <= most:
        return list(range(1, top + 1))
    ratio = top ** (1 / (most - 1))
    return sorted({max(1, round(ratio ** i)) for i in range(most - 1)} | {top})


async def _limits(session: aiohttp.ClientSession, base_url: str, model: str, headers: dict,
                  info: dict, given: dict, pool: list[int],
                  probe_seqs: int) -> tuple[dict, dict]:
    lim, src = {}, {}
    for key, what in (("max_model_len", "/v1/models"),
                      ("block_size", "vllm:cache_config_info"),
                      ("enable_prefix_caching", "vllm:cache_config_info")):
        if key in given or info.get(key) is not None:
            lim[key] = given.get(key, info.get(key))
            src[key] = "flag" if key in given else what
    if "kv_capacity_tokens" in given or "num_gpu_blocks" in info:
        lim["kv_capacity_tokens"] = given.get("kv_capacity_tokens") or \
            info["num_gpu_blocks"] * info["block_size"]
        src["kv_capacity_tokens"] = "flag" if "kv_capacity_tokens" in given else \
            "vllm:cache_config_info num_gpu_blocks x block_size"
    else:
        src["kv_capacity_tokens"] = "not exported: assumed unlimited (give the flag)"
    lim["max_num_batched_tokens"] = given.get("max_num_batched_tokens",
                                              DEFAULT_BATCHED_TOKENS)
    src["max_num_batched_tokens"] = "flag" if "max_num_batched_tokens" in given else \
        "assumed: vLLM's OpenAI-server default on CPU (the server does not export it)"
    if "max_num_seqs" in given:
        lim["max_num_seqs"], src["max_num_seqs"] = given["max_num_seqs"], "flag"
    else:
        seqs, exact = await probe_max_num_seqs(session, base_url, model, headers, pool,
                                               probe_seqs)
        await wait_idle(session, base_url, headers)
        lim["max_num_seqs"] = seqs
        src["max_num_seqs"] = "probed: requests running while others waited" if exact \
            else f"probed: at least {seqs} (none waited with {probe_seqs} sent)"
    return lim, src


async def measure(base_url: str, model: str, plan: Plan, *, api_key: str | None = None,
                  limits: dict | None = None, probe_seqs: int = 256,
                  progress: Callable[[str, int, int], None] | None = None) -> dict:
    """Run every measurement of ``plan`` (module doc); returns the raw data and limits.
    ``limits`` are values given by flags; they win over what the server says.

    Raises:
        RuntimeError: unreachable server, ``model`` not served, no ``/tokenize`` or
            ``/metrics``, or a failed calibration request.
    """
    from replay.client import new_session
    from replay.prompts import PromptBuilder, fetch_token_pool

    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    given = {k: v for k, v in (limits or {}).items() if v is not None}
    async with new_session() as session:
        info = await server_info(session, base_url, model, headers)  # fail fast
        pool = await fetch_token_pool(session, base_url, model, headers)
        m = Meter(session, base_url, model, headers,
                  PromptBuilder(pool, "calibrate-" + uuid.uuid4().hex[:12]))
        # warm-up, before the seat probe too: a fresh server's first requests are slower
        for prompt in (64, 16, 512, 2048):
            await m.request(m.prompt(min(prompt, given.get(
                "max_model_len", info.get("max_model_len") or 4096) - 9)), 8)
        lim, src = await _limits(session, base_url, model, headers, info, given, pool,
                                 probe_seqs)
        await asyncio.sleep(0.5)  # let the server settle after the probe's aborts
        seats, max_len = lim["max_num_seqs"], lim.get("max_model_len") or 4096
        top = min(max_len - 2, lim["max_num_batched_tokens"] - seats)
        lone = sorted({min(p, top) for p in plan.lone_prompts})
        mixed_p = sorted({min(p, top) for p in plan.mixed_prompts})
        decoders = sizes(seats - 1, plan.mixed_decoders) if seats > 1 else []
        batches = sizes(seats, plan.batch_sizes)
        contexts = sorted({min(c, max_len - plan.decode_tokens - 1) for c in plan.contexts})
        total = (len(lone) * plan.lone_repeats + len(decoders) * len(mixed_p)
                 * plan.mixed_repeats + len(batches) * len(contexts) * plan.decode_repeats)
        done = 0

        def tick(what: str) -> None:
            nonlocal done
            done += 1
            if progress is not None:
                progress(what, done, total)

        data = {"info": info, "limits": lim, "limit_sources": src, "lone": [],
                "mixed": [], "decode": [], "discarded": 0}
        for _ in range(plan.lone_repeats):
            for p in lone:
                row = await lone_prefill(m, p)
                if row is None:
                    data["discarded"] += 1
                else:
                    data["lone"].append(row)
                tick(f"lone prefill, {p} tokens")
        bg_tokens = min(max_len - 20, 2000)
        for j in decoders:
            for _ in range(plan.mixed_repeats):
                rows = await mixed_steps(m, j, mixed_p, bg_tokens)
                data["mixed"] += rows
                data["discarded"] += len(mixed_p) - len(rows)
                for _ in mixed_p:
                    tick(f"mixed steps, {j} decoding")
        caching = bool(lim.get("enable_prefix_caching"))
        for _ in range(plan.decode_repeats):
            for c in contexts:
                for k in batches:
                    # unique contexts when one step prefills them all, else shared
                    share = caching and k * c > lim["max_num_batched_tokens"]
                    for _attempt in range(4):
                        row = await decode_run(m, k, c, plan.decode_tokens,
                                               lim.get("block_size") or 16, share)
                        if row is not None:
                            data["decode"].append(row)
                            break
                        data["discarded"] += 1
                    tick(f"decode, batch {k}, context {c}")
    return data


def _median_rows(rows: list[dict], keys: tuple[str, ...]) -> list[dict]:
    groups = defaultdict(list)
    for r in rows:
        groups[tuple(r[k] for k in keys)].append(r)
    return [{k: (statistics.median(r[k] for r in g) if isinstance(g[0][k], float) else
                 g[0][k]) for k in g[0]} | {"n": len(g)} for g in groups.values()]


def fit_data(data: dict) -> tuple:
    """(model, fit report, rows fitted, medians by kind, frontend ms) from raw data."""
    med = {"lone": _median_rows(data["lone"], ("prompt",)),
           "mixed": _median_rows(data["mixed"], ("decoders", "prompt")),
           "decode": _median_rows(data["decode"], ("batch", "context"))}
    rows = [StepRow(((r["prompt"], 0),), r["decoders"], r["sum_decode_ctx"],
                    r["prefill_ms"], "mixed") for r in med["mixed"]]
    rows += [StepRow((), r["batch"], r["sum_decode_ctx"], r["step_ms"],
                     f"decode ctx {r['context']}") for r in med["decode"]]
    # lone prefills: every one with a single seat (no mixed step possible), else the long
    # ones, where the extra cost of starting an idle engine is lost in the compute
    floor = 0 if len(med["mixed"]) < 2 else LONE_FIT_TOKENS
    rows += [StepRow(((r["prompt"], 0),), 0, 0.0, r["prefill_ms"], "lone")
             for r in med["lone"] if r["prompt"] >= floor]
    # few rows cannot tell a roofline floor from the constant: pin the floor to 0
    fixed = {"dense_floor_ms": 0.0} if len(rows) < 20 else None
    try:
        model, report = fit_tokens(rows, held_out=0.2, seed=0, fixed=fixed)
    except ValueError as exc:
        raise InputError(f"cannot fit the step-time model ({exc}); "
                         f"{data['discarded']} measurements were discarded") from None
    if not data["lone"]:
        raise InputError("no valid lone-request measurement: cannot set the per-request "
                         "overhead")
    fe = statistics.median(r["client_ttft_ms"] - r["queue_ms"]
                           - 1e3 * model.step_time([(r["prompt"], 0)], 0, 0)
                           for r in data["lone"])
    return model, report, rows, med, max(fe, 0.0)


def build_profile(data: dict, base_url: str, model: str, *, name: str, gpu: str,
                  tensor_parallel_size: int = 1, scheduling: str | None = None,
                  seconds: float = 0.0) -> tuple[Profile, list[StepRow], dict]:
    """The profile (module doc), the rows fitted and the medians.

    Raises:
        InputError: too few valid measurements, or limits vLLM's rules reject.
    """
    step, report, rows, med, fe = fit_data(data)
    lim, version = data["limits"], data["info"].get("version", "unknown")
    if scheduling is None:
        nums = re.findall(r"\d+", version)[:2]
        scheduling = "v0" if len(nums) == 2 and (int(nums[0]), int(nums[1])) < (0, 8) \
            else "v1"
    lone_api = statistics.median(r["client_ttft_ms"] - r["prefill_ms"] - r["queue_ms"]
                                 for r in data["lone"])
    provenance = {
        "source": "dynasim calibrate (replay/calibrate/run.py)", "server": base_url,
        "model": model, "vllm_version": version,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "seconds": round(seconds, 1), "limits": data["limit_sources"],
        "frontend_latency": "median over lone requests of client TTFT - engine queue time "
                            "- fitted prefill step",
        "lone_api_overhead_ms": round(lone_api, 3),
        "discarded_measurements": data["discarded"],
        "cpu_pressure_pct": data.get("cpu_pressure_pct"),
        "measured": {k: data[k] for k in ("lone", "mixed", "decode")}}
    try:
        profile = Profile(
            name=name, model=model, gpu=gpu, tensor_parallel_size=tensor_parallel_size,
            kv_capacity_tokens=lim.get("kv_capacity_tokens") or 10**9,
            block_size=lim.get("block_size") or 16, max_num_seqs=lim["max_num_seqs"],
            max_num_batched_tokens=lim["max_num_batched_tokens"],
            max_model_len=lim.get("max_model_len"), scheduling=scheduling,
            enable_prefix_caching=bool(lim.get("enable_prefix_caching")),
            frontend_latency_ms=round(fe, 3), step_time=step, fit=report,
            provenance=provenance)
    except ValueError as exc:
        raise InputError(f"limits rejected: {exc}", source=base_url) from None
    return profile, rows, med


@dataclass
class Calibration:
    """What :func:`calibrate` returns."""

    profile: Profile
    data: dict
    rows: list[StepRow] = field(default_factory=list)
    medians: dict = field(default_factory=dict)
    seconds: float = 0.0


def calibrate(base_url: str, model: str, *, quick: bool = False, api_key: str | None = None,
              limits: dict | None = None, name: str | None = None, gpu: str = "unknown",
              tensor_parallel_size: int = 1, scheduling: str | None = None,
              probe_seqs: int = 256,
              progress: Callable[[str, int, int], None] | None = None) -> Calibration:
    """Measure the server and fit a profile (module doc).

    Raises:
        InputError: unreachable server, unserved model, failed requests, or too few
            valid measurements; the message says which.
    """
    from replay.vllm_metrics import local_cpu_pressure

    t0, pressure = time.perf_counter(), local_cpu_pressure(base_url)
    try:
        data = asyncio.run(measure(base_url, model, QUICK if quick else FULL,
                                   api_key=api_key, limits=limits, probe_seqs=probe_seqs,
                                   progress=progress))
    except RuntimeError as exc:
        raise InputError(str(exc), field="base_url") from None
    seconds = time.perf_counter() - t0
    name = name or "calibrated-" + re.sub(r"[^A-Za-z0-9._-]+", "-", model).strip("-")
    data["cpu_pressure_pct"] = (pressure, local_cpu_pressure(base_url))
    profile, rows, med = build_profile(data, base_url, model, name=name, gpu=gpu,
                                       tensor_parallel_size=tensor_parallel_size,
                                       scheduling=scheduling, seconds=seconds)
    return Calibration(profile, data, rows, med, seconds)
