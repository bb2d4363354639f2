"""Roofline profiles: a profile for a model nobody has measured, from its Hugging Face
``config.json`` (:mod:`~dynasim.profiles.model_config`), a GPU's datasheet
(:mod:`~dynasim.profiles.gpus`) and the TP degree, with efficiency coefficients learned
from every recorded run (BLIS's approach: an analytic roofline times learned
coefficients).

**The roofline of one step, per TP shard** (the ``tokens`` step-time form,
:class:`~dynasim.profiles.step_time.TokensStepTime`; B = memory bandwidth, F = dense
BF16 peak, N = link bandwidth per direction, all from the datasheet):

=================================  ========================================================
``dense_floor_ms``                 weights read once per step / (B x ``mem_eff``)
``dense_ms_per_token``             linear-layer FLOPs per token / (F x ``compute_eff``)
                                   + TP all-reduce bytes per token (2 per layer, ring:
                                   ``2 (tp-1)/tp x h x dtype``) / (N x ``link_eff``)
``prefill_attention_ms_per_pair``  attention FLOPs per causal pair / (F x ``attn_eff``)
``decode_attention_ms_per_token``  KV bytes per context token / (B x ``kv_eff``)
``step_ms``                        ``step_ms + layer_ms x L + allreduce_ms x 2L`` (TP > 1):
                                   scheduler, kernel launches, all-reduce latency
``seq_ms``                         ``seq_ms``: sampling, output processing
=================================  ========================================================

Linear layers cost ``max(weights read, FLOPs)`` (the form's roofline knee). The first
five are the GPU part of :meth:`~dynasim.profiles.step_time.TokensStepTime.split`, the
overheads (``step_ms``, ``seq_ms``) its CPU part, so a profile with async scheduling
charges ``max(GPU, CPU)`` as the engine does (``dynasim.engine`` docstring). The
LM-head FLOPs (``2 V h`` per sequence, < 2% of a decode token's linear FLOPs for these
models) are left out: its weights are in the floor, and a per-sequence GPU term has no
place in the form. Known gap: the TP all-reduce adds to the step in vLLM (no overlap),
but the form has no per-token term outside the ``max``, so at decode, under the
weights floor, it is hidden; over PCIe (RTX PRO 6000 TP 2: ~10 ms of a ~59 ms decode
step at 128 sequences) that under-charges decode (a ``TokensStepTime`` term outside the
``max`` was tried: with the learner fitted to run-fitted profiles that have no such term,
Qwen3-32B went to 46.9% and the median to 11.3%, so it is not used).

**What the coefficients are learned against, and why.** The nine coefficients
(:class:`Coefficients`; efficiencies in [0.5, 1], overheads >= 0 ms) are fitted by
bounded least squares (:func:`scipy.optimize.least_squares`) on log step-time ratios
against the *run-fitted profiles* (:data:`dynasim.profiles.builders.RUN_PROFILES`: one
per recorded server, each fitted by simulating its recorded runs,
:mod:`dynasim.profiles.fit_runs`) over the *occupied steps*
(:func:`dynasim.profiles.roofline_validate.occupied_steps`: the step compositions the
engine meets replaying each server's fitting runs under its fitted profile, the region
the runs pin down), every profile weighted alike. A profile's step time is what the
engine charges under its switches (``max(GPU, CPU)`` of its split with async
scheduling, the sum without: :func:`effective_ms`), and the roofline is charged as the
profile it will be (``async_roofline`` of :func:`learn_coefficients`): hence two sets,
:data:`LEARNED` (no async scheduling, the CLI default) and :data:`LEARNED_ASYNC` (for
``--vllm-version`` of a version with it). Learning directly against the recorded runs'
per-request latencies would need a simulation per evaluation (minutes per fold); the
fitted profiles summarise those runs (their per-request error is in ``dynasim
validate``), so fitting to them keeps the leave-one-model-out loop
(:func:`dynasim.profiles.roofline_validate.leave_one_model_out`) a half-minute check.
``frontend_latency_ms`` is the median of the training profiles'.

Measured (``python -m dynasim.profiles.roofline_validate``: 1000 requests x 2 windows
per run, occupied steps, each held-out roofline profile with its run-fitted profile's
switches): median per-request E2E error of the held-out model Qwen3-14B H100 20.2%,
Llama-2-7B H100 11.3%, Llama-2-70B TP 4 9.1%, Mixtral TP 2 9.7%, Llama-3.1-8B RTX 4090
1.0%, Qwen3-32B RTX PRO 6000 TP 2 28.0%; median over the six 10.5% (TTFT 28.9%).
The same servers and engine with the learner before (grid, additive step times,
held-out profiles without switches, PCIe all-reduce at the full link rate): 10.0%,
71.2%, 9.1%, 7.4%, 0.6%, 29.6%; median 9.5% (TTFT 30.6%). The worst two: Qwen3-32B
decodes too fast (the all-reduce gap above), Qwen3-14B's fitted profile charges ~30%
more than the datasheet roofline in every step (``step_ms`` 11 ms), which the other
servers' overheads do not explain.

Alternatives measured and *not* adopted (median held-out E2E error per server, same
command with the flags shown, same engine as the figures above):

=============================================  =====  =====  =====  =====  =====  =====
fit target, held-out switches (flags)          Q14B   L2-7B  L2-70  Mixt.  L3-8B  Q32B
=============================================  =====  =====  =====  =====  =====  =====
occupied, fitted profile's (default)            20.2   11.3    9.1    9.7    1.0   28.0
occupied, vLLM version's                        21.0   18.8   12.4    3.3   13.1   29.8
  (``--switches version``)
grid, fitted profile's (``--fit-target grid``)  27.9   12.8   16.4    6.4   16.4   21.3
default, PCIe all-reduce at the full link rate  20.8   11.8   19.9    9.5    1.9   42.7
default, all-reduce outside the ``max``         20.2   12.2   10.4    7.1    3.1   46.9
  (a ``comm_ms_per_token`` GPU term)
default, steps where a fitted profile is below   7.5   12.5   70.1   13.0    5.3    6.5
  the datasheet floor left out of the target
  the same with ``link_eff`` fixed at 1          10.5   11.5   65.5   26.8    8.6   22.2
=============================================  =====  =====  =====  =====  =====  =====

The floor filter (a run-fitted profile charging less than the roofline at every peak
somewhere, e.g. Llama-2-70B TP 4's 2,048-token prefill at 36.5 ms where the FLOPs alone
take 71 ms, is extrapolating) brings both Qwen3 servers under 10% (median 10.0%), but
the learned ``compute_eff`` falls to ~0.75 and Llama-2-70B, near saturation at 20
req/s in its runs, overloads when held out: not adopted while one server goes to 70%.

The vLLM version's switches (what ``--vllm-version`` gives) put async scheduling on
every server, but four of the six run-fitted profiles fit their runs better without it
(:data:`dynasim.profiles.builders.SWITCH_OVERRIDES`), and charged ``max(GPU, CPU)``
those servers come out too fast. ``--per-version`` (overheads refitted per vLLM
version) was measured worse before these changes (median 16.6% against 14.9%).

Known limits: the six recorded servers are 3 GPUs and 3 vLLM versions; the fitted
profiles of the two LLMServingSim runs (300 saturated requests each, no per-step
times) split prefill and decode unphysically (Qwen3-32B: a 2,048-token prompt step
~70 ms where ``timeseries.csv`` shows ~350 ms, 0.65 ms per decoding sequence), which
the roofline learns from; per-step CPU overhead differs between vLLM versions and hosts
and is learned as one constant. ``python -m dynasim.profiles.roofline_validate`` (or
``dynasim profiles --roofline-validate``) prints the leave-one-model-out table.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, fields

import numpy as np
from pydantic import ValidationError

from dynasim.errors import InputError, from_validation_error
from dynasim.profiles.gpus import GPU
from dynasim.profiles.model_config import ModelConfig
from dynasim.profiles.profile import SWITCHES, Profile
from dynasim.profiles.step_time import TokensStepTime

#: vLLM's ``--gpu-memory-utilization`` default (``CacheConfig``)
GPU_MEMORY_UTILIZATION = 0.9


@dataclass(frozen=True)
class Coefficients:
    """Learned roofline coefficients (module table): efficiencies (fractions of the
    datasheet peak) and overheads (ms)."""

    mem_eff: float = 0.7
    kv_eff: float = 0.5
    compute_eff: float = 0.6
    attn_eff: float = 0.4
    link_eff: float = 0.5
    step_ms: float = 2.0
    layer_ms: float = 0.05
    allreduce_ms: float = 0.01
    seq_ms: float = 0.02
    frontend_latency_ms: float = 20.0

    EFFICIENCIES = ("mem_eff", "kv_eff", "compute_eff", "attn_eff", "link_eff")
    OVERHEADS = ("step_ms", "layer_ms", "allreduce_ms", "seq_ms")


LEARNED = Coefficients(mem_eff=0.80508, kv_eff=0.57733, compute_eff=1, attn_eff=0.62537,
                       link_eff=1, step_ms=8.8513e-15, layer_ms=0.0049608,
                       allreduce_ms=0.010059, seq_ms=0.0096916, frontend_latency_ms=17.623)
"""The coefficients learned from all six run-fitted servers for a roofline profile
without async scheduling (:func:`dynasim.profiles.roofline_validate.learn_all`; a test
checks they match a fresh fit): the default of ``dynasim profiles --roofline``."""

LEARNED_ASYNC = Coefficients(mem_eff=0.74563, kv_eff=0.56966, compute_eff=1, attn_eff=0.5,
                             link_eff=1, step_ms=5.2565e-12, layer_ms=3.1973e-14,
                             allreduce_ms=2.0219e-14, seq_ms=1.3208e-13,
                             frontend_latency_ms=17.623)
"""The same, learned for a roofline profile with async scheduling (its step charged
``max(GPU, CPU)``; ``learn_all(True)``): ``dynasim profiles --roofline --vllm-version``
of a version with async scheduling on. Its overheads come out ~0: under async
scheduling the CPU part hides under the GPU part of every occupied step, so the
recorded servers' extra time goes to the efficiencies (memory 0.75, KV 0.57)."""


def learned_for(async_scheduling: bool) -> Coefficients:
    """:data:`LEARNED_ASYNC` for a profile with async scheduling, else :data:`LEARNED`."""
    return LEARNED_ASYNC if async_scheduling else LEARNED


def version_switches(version: str | None) -> dict[str, bool]:
    """The engine switches (:data:`~dynasim.profiles.profile.SWITCHES`) of vLLM
    ``version`` (:func:`~dynasim.profiles.run_switches.switches_for`), all off for None.

    Raises:
        InputError: a version that is not ``MAJOR.MINOR[.PATCH]`` digits.
    """
    from dynasim.profiles.run_switches import switches_for

    if version is None:
        return dict.fromkeys(SWITCHES, False)
    if not re.fullmatch(r"\d+\.\d+(\.\d+)?", version.strip()):
        raise InputError(f"expected a vLLM version like 0.19.0, got {version!r}",
                         field="vllm-version")
    return switches_for({"vllm_version": version.strip()})


def step_time_coefficients(model: ModelConfig, gpu: GPU, tp: int,
                           coef: Coefficients) -> dict[str, float]:
    """The ``tokens`` step-time coefficients (ms; module table) of ``model`` on ``tp``
    shards of ``gpu`` under ``coef``: the roofline terms in the GPU coefficients
    (``dense_floor_ms``, ``dense_ms_per_token``, the attention ones), the overheads in
    ``step_ms`` and ``seq_ms``, which are the CPU part of
    :meth:`~dynasim.profiles.step_time.TokensStepTime.split`."""
    ms = 1e3
    ar = 0.0
    if tp > 1:  # ring all-reduce of the hidden state, twice per layer
        ar = 2 * model.num_layers * 2 * (tp - 1) / tp * model.hidden_size * model.dtype_bytes
    return {
        "form": "tokens",
        "step_ms": coef.step_ms + coef.layer_ms * model.num_layers
        + (coef.allreduce_ms * 2 * model.num_layers if tp > 1 else 0.0),
        "dense_floor_ms": ms * model.step_weight_bytes / tp / (gpu.bandwidth * coef.mem_eff),
        "dense_ms_per_token": ms * (model.flops_per_token / tp / (gpu.flops * coef.compute_eff)
                                    + ar / (gpu.link * coef.link_eff)),
        "prefill_attention_ms_per_pair": ms * model.attention_flops_per_pair / tp
        / (gpu.flops * coef.attn_eff),
        "decode_attention_ms_per_token": ms * model.kv_bytes_per_token(tp)
        / (gpu.bandwidth * coef.kv_eff),
        "seq_ms": coef.seq_ms}


def derive_kv_blocks(model: ModelConfig, gpu: GPU, tp: int, block_size: int = 16,
                     utilization: float = GPU_MEMORY_UTILIZATION) -> int:
    """KV blocks per vLLM's rule (``gpu_memory_utilization`` of the GPU's memory, less
    one shard's weights, over one block's bytes on a shard; activations not reserved,
    so it is a few % above what vLLM reports).

    Raises:
        InputError: the weights leave no room for one block.
    """
    free = gpu.memory_bytes * utilization - model.weight_bytes / tp
    blocks = int(free // (block_size * model.kv_bytes_per_token(tp)))
    if blocks < 1:
        raise InputError(f"{model.name} needs {model.weight_bytes / tp / 2**30:.1f} GiB of "
                         f"weights per GPU: it does not fit {utilization:.0%} of "
                         f"{gpu.name}'s {gpu.memory_gib:g} GiB at TP {tp}",
                         field="tp")
    return blocks


def roofline_profile(model: ModelConfig, gpu: GPU, tp: int, coef: Coefficients, *,
                     name: str | None = None, max_num_seqs: int = 256,
                     max_num_batched_tokens: int = 8192, kv_blocks: int | None = None,
                     block_size: int = 16, max_model_len: int | None = None,
                     provenance: dict | None = None,
                     switches: dict[str, bool] | None = None) -> Profile:
    """A V1 profile (chunked prefill, prefix caching: vLLM V1's defaults; 256 seats and
    8192 batched tokens unless given) of ``model`` on ``tp`` x ``gpu``; ``kv_blocks``
    from :func:`derive_kv_blocks` when None; the engine ``switches``
    (:data:`~dynasim.profiles.profile.SWITCHES`, e.g. those of a vLLM version,
    :func:`~dynasim.profiles.run_switches.switches_for`) on, all off when None.

    Raises:
        InputError: the model does not fit the GPUs, or limits the profile schema rejects.
    """
    if tp < 1:
        raise InputError(f"--tp must be >= 1, got {tp}", field="tp")
    blocks = kv_blocks if kv_blocks is not None else derive_kv_blocks(model, gpu, tp,
                                                                       block_size)
    data = {
        "name": name or f"roofline-{model.name.split('/')[-1].lower()}-{gpu.name}-tp{tp}",
        "model": model.name, "gpu": gpu.name, "tensor_parallel_size": tp,
        "kv_capacity_tokens": blocks * block_size, "block_size": block_size,
        "max_num_seqs": max_num_seqs, "max_num_batched_tokens": max_num_batched_tokens,
        "max_model_len": max_model_len, "scheduling": "v1", "enable_prefix_caching": True,
        "frontend_latency_ms": round(coef.frontend_latency_ms, 4),
        **{k: bool((switches or {}).get(k, False)) for k in SWITCHES},
        "step_time": {k: (v if isinstance(v, str) else float(f"{v:.6g}"))
                      for k, v in step_time_coefficients(model, gpu, tp, coef).items()},
        "provenance": {"method": "dynasim.profiles.roofline (module docstring)",
                       "gpu_source": gpu.source, "kv_blocks": "given" if kv_blocks
                       else f"derived (gpu_memory_utilization {GPU_MEMORY_UTILIZATION})",
                       "coefficients": asdict(coef), **(provenance or {})}}
    try:
        return Profile.model_validate(data)
    except ValidationError as exc:
        raise from_validation_error(exc, "roofline profile") from None


def step_grid(profile: Profile) -> list[tuple[list[tuple[int, int]], int, int]]:
    """Step compositions ``(prefill chunks, num_decode, sum_decode_ctx)`` inside
    ``profile``'s limits (module docstring) that the coefficients are fitted over."""
    seats, budget = profile.max_num_seqs, profile.max_num_batched_tokens
    cap = profile.max_model_len or 8192
    out = []
    for b in sorted({b for b in (1, 4, 16, 64, seats) if b <= seats}):
        for ctx in (256, 1024, 3072):
            out.append(([], b, b * min(ctx, cap)))
    for n in sorted({64, 256, 1024, budget}):
        if n <= budget:
            out.append(([(n, 0)], 0, 0))
            b = min(32, seats - 1, budget - n)
            if b > 0:
                out.append(([(n, 0)], b, b * 1024))
    return out


_NAMES = Coefficients.EFFICIENCIES + Coefficients.OVERHEADS

#: lowest efficiency a fit may learn (fraction of the datasheet peak): the per-layer
#: timings of vLLM 0.19 (``llmservingsim_vllm019_runs/profiler/perf``) reach 90 to 100%
#: of the RTX 4090 / RTX PRO 6000 datasheet bandwidth and BF16 peak in their GEMMs
MIN_EFFICIENCY = 0.5


def effective_ms(st: TokensStepTime, steps: list, async_scheduling: bool) -> np.ndarray:
    """Milliseconds the engine charges for each step of ``steps`` under ``st``: the sum
    of :meth:`~dynasim.profiles.step_time.TokensStepTime.split` or, with
    ``async_scheduling``, its ``max(GPU, CPU)`` (``dynasim.engine`` module docstring:
    vLLM's ``EngineCore.step_with_batch_queue`` overlaps the CPU work with the GPU)."""
    parts = np.array([st.split(*s) for s in steps]) * 1e3
    return parts.max(axis=1) if async_scheduling else parts.sum(axis=1)


def _fit_data(train: list[tuple[Profile, ModelConfig, GPU, list]],
              async_roofline: Sequence[bool]) -> list[tuple]:
    """``(model, gpu, tp, steps, profile step times in ms, async)`` per training server;
    the steps are the given ones, or :func:`step_grid` where none are given; the times
    are what the engine charges under the profile's own ``async_scheduling``
    (:func:`effective_ms`), ``async`` the switch the roofline is charged under."""
    data = []
    for (p, m, g, steps), async_ in zip(train, async_roofline, strict=True):
        grid = steps or step_grid(p)
        y = effective_ms(p.step_time, grid, p.async_scheduling)
        data.append((m, g, p.tensor_parallel_size, grid, y, bool(async_)))
    return data


def _least_squares(data: list[tuple], names: tuple[str, ...], base: Coefficients
                   ) -> Coefficients:
    """``base`` with ``names`` refitted: bounded least squares on ``log(roofline /
    profile)``, every server weighted alike (module docstring)."""
    from scipy.optimize import least_squares

    eff = [k for k in names if k in Coefficients.EFFICIENCIES]
    bounds = {"step_ms": 50.0, "layer_ms": 2.0, "allreduce_ms": 1.0, "seq_ms": 5.0}

    def coef_of(x: np.ndarray) -> Coefficients:
        vals = {k: (1.0 / v if k in eff else float(v)) for k, v in zip(names, x)}
        return Coefficients(**{**fields_of(base), **vals})

    def residuals(x: np.ndarray) -> np.ndarray:
        c = coef_of(x)
        out = []
        for m, g, tp, grid, y, async_ in data:
            st = TokensStepTime(**step_time_coefficients(m, g, tp, c))
            pred = effective_ms(st, grid, async_)
            out.append(np.log(pred / y) / math.sqrt(len(y)))
        return np.concatenate(out)

    lo = np.array([1.0 if k in eff else 0.0 for k in names])
    hi = np.array([1.0 / MIN_EFFICIENCY if k in eff else bounds[k] for k in names])
    x0 = np.array([1.0 / getattr(base, k) if k in eff else getattr(base, k) for k in names])
    x0 = np.clip(x0, lo + 1e-9, hi - 1e-9)
    res = least_squares(residuals, x0, bounds=(lo, hi), method="trf")
    c = coef_of(res.x)
    return Coefficients(**{**fields_of(c), **{k: float(f"{getattr(c, k):.5g}")
                                              for k in names}})


def learn_coefficients(train: list[tuple[Profile, ModelConfig, GPU, list]],
                       family: list[tuple[Profile, ModelConfig, GPU, list]] | None = None,
                       async_roofline: bool | Sequence[bool] = False) -> Coefficients:
    """:class:`Coefficients` fitted to the step times of the ``(profile, model, gpu,
    steps)`` servers (module docstring): bounded least squares on ``log(roofline /
    profile)`` over each server's ``steps`` (:func:`step_grid` when empty), every server
    weighted alike; efficiencies bounded to [:data:`MIN_EFFICIENCY`, 1], overheads to
    [0, 50] ms (step), [0, 2] (layer), [0, 1] (all-reduce), [0, 5] (sequence); the
    front-end latency is the training profiles' median. A profile's step time is what
    the engine charges under its own ``async_scheduling`` (:func:`effective_ms`); the
    roofline's is charged as a profile with ``async_roofline`` would be (one bool for
    every server, or one per server of ``train`` then ``family``): ``max(GPU, CPU)`` of
    its split when on, their sum when off. With ``family`` (the training servers of the
    target's vLLM version, when there are any) the overheads and the front-end latency
    are then refitted on those servers alone, the efficiencies kept.
    """
    family = family or []
    flags = ([bool(async_roofline)] * (len(train) + len(family))
             if isinstance(async_roofline, bool) else list(async_roofline))
    if len(flags) != len(train) + len(family):
        raise ValueError("async_roofline needs one flag per server of train and family")
    coef = _least_squares(_fit_data(train, flags[:len(train)]), _NAMES, Coefficients())
    front = float(np.median([t[0].frontend_latency_ms for t in train]))
    if family:
        coef = _least_squares(_fit_data(family, flags[len(train):]), Coefficients.OVERHEADS,
                              coef)
        front = float(np.median([t[0].frontend_latency_ms for t in family]))
    return Coefficients(**{**fields_of(coef), "frontend_latency_ms": round(front, 3)})


def fields_of(coef: Coefficients) -> dict[str, float]:
    """``coef`` as a flat dict (for tables and provenance)."""
    return {f.name: getattr(coef, f.name) for f in fields(coef)}
