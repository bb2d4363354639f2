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
``seq_ms``                         ``seq_ms`` + LM-head FLOPs per sequence / (F x
                                   ``compute_eff``)
=================================  ========================================================

Linear layers cost ``max(weights read, FLOPs)`` (the form's roofline knee).

**What the coefficients are learned against, and why.** The nine coefficients
(:class:`Coefficients`; efficiencies in (0, 1], overheads >= 0 ms) are fitted by
bounded least squares (:func:`scipy.optimize.least_squares`) on log step-time ratios
against the *run-fitted profiles* (:data:`dynasim.profiles.builders.RUN_PROFILES`: one
per recorded server, each fitted by simulating its recorded runs,
:mod:`dynasim.profiles.fit_runs`) over a grid of step compositions inside each
profile's limits (:func:`step_grid`: decode batches 1 to ``max_num_seqs`` at three
context lengths, prefill chunks of 64 tokens to the step budget alone and beside
decodes), every profile weighted alike. Learning directly against the recorded runs'
per-request latencies would need a simulation per evaluation (minutes per fold); the
fitted profiles already summarise those runs (their per-request error is in
``dynasim validate``), so fitting to them costs milliseconds and keeps the
leave-one-model-out loop (:func:`dynasim.profiles.roofline_validate.leave_one_model_out`) a one-minute check.
``frontend_latency_ms`` is the median of the training profiles'.

Measured (``python -m dynasim.profiles.roofline_validate``, 1000 requests x 2 windows
per run): median per-request E2E error of the held-out model 4.8% to 64.0%, median
over the six held-out servers 10.1% (TTFT 27.4%); the worst is Llama-2-7B (64.0%: its
profile is fitted with async scheduling, which the roofline is simulated without; see
:data:`LEARNED`), then Qwen3-32B on RTX PRO 6000 (30.7%, the only Blackwell, PCIe TP 2
server). Before the async fits of Llama-2-7B and RTX 4090: 2.2% to 41.8%, median 14.9%
(TTFT 24.2%), Llama-2-7B 17.1%.

Alternatives measured and *not* adopted (median held-out E2E error per server, same
command with the flags shown; efficiencies bounded below by :data:`MIN_EFFICIENCY`;
measured before the async fits):

==========================================  =====  =====  =====  =====  =====  =====  =====
fit target (flags)                          Q14B   L2-7B  L2-70  Mixt.  L3-8B  Q32B   med.
==========================================  =====  =====  =====  =====  =====  =====  =====
grid, global (default)                      23.0   17.1   12.7    3.3    2.2   41.8   14.9
grid, overheads per vLLM version            23.0   41.6   18.6    5.1   13.3   14.7   16.6
  (``--per-version``)
grid, front-end latency per vLLM version    23.0   17.2   12.6    3.2    2.2   41.8   14.9
occupied steps (``--fit-target occupied``)  17.6   39.5    6.6   11.7   19.7   43.2   18.7
occupied steps, per version                 17.6   42.0    4.8    8.6   44.7   25.5   21.5
per-request mean decode steps (earlier)        -      -      -      -      -      -   33.6
==========================================  =====  =====  =====  =====  =====  =====  =====

*Occupied steps* (:func:`dynasim.profiles.roofline_validate.occupied_steps`) are the
step compositions the engine meets replaying each training server's fitting runs under
its fitted profile, the region the runs pin down. Fitted there, the efficiencies leave
their bound 1 (memory 0.72 to 0.84, KV 0.5 to 0.85) but the KV efficiency is driven by
the GQA servers' per-sequence costs and over-charges Llama-2-7B (no GQA: 4x the KV
bytes per token). The run-fitted profiles disagree about physics in ways no shared
roofline reconciles: the vLLM 0.15.1 H100 fits read KV 2 to 2.5x faster than the
datasheet bandwidth and compute prefill above the dense peak (unmodelled prefix-cache
hits of the BLIS workloads, and the prefill/front-end trade-off), the vLLM 0.19 fits
charge 0.4 to 0.65 ms per sequence (host-side work) that the H100 servers do not;
refitting the overheads per vLLM version fixes Qwen3-32B (41.8% -> 14.7%) but two
servers per version are too few (Llama-2-7B then borrows the TP servers' all-reduce
latency). The per-family front-end latency changes nothing: E2E is dominated by steps.

Known limits: the six recorded servers are 3 GPUs and 3 vLLM versions; per-step CPU
overhead (the largest term at small batches) differs between vLLM versions and hosts
and is learned as one constant, so a server unlike every training one (another GPU
class, another vLLM) is extrapolated. ``python -m dynasim.profiles.roofline_validate`` (or ``dynasim profiles
--roofline-validate``) prints the
leave-one-model-out table.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields

import numpy as np
from pydantic import ValidationError

from dynasim.errors import InputError, from_validation_error
from dynasim.profiles.gpus import GPU
from dynasim.profiles.model_config import ModelConfig
from dynasim.profiles.profile import Profile
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


LEARNED = Coefficients(mem_eff=1.0, kv_eff=0.5444, compute_eff=1.0, attn_eff=1.0,
                       link_eff=1.0, step_ms=2.0806, layer_ms=0.0, allreduce_ms=0.0,
                       seq_ms=0.067987, frontend_latency_ms=18.519)
"""The coefficients learned from all six run-fitted servers
(:func:`dynasim.profiles.roofline_validate.learn_all`; a test checks they match a fresh
fit): the default of ``dynasim profiles --roofline``. The efficiencies but ``kv_eff``
sit at their bound 1: the run-fitted profiles are as fast as the datasheet roofline, or
faster in prefill (their prefill and front-end terms trade off), so the datasheet
ceilings themselves are the best fit and the learned part is the per-step and
per-sequence overhead. ``kv_eff`` is about 0.54 since the two profiles fitted with async
scheduling (Llama-2-7B H100, Llama-3.1-8B RTX 4090) charge 1.5-6x more per decode
context token than before; the fit reads their step times as the additive sum, not the
``max(GPU, CPU)`` the engine takes under async scheduling."""


def step_time_coefficients(model: ModelConfig, gpu: GPU, tp: int,
                           coef: Coefficients) -> dict[str, float]:
    """The ``tokens`` step-time coefficients (ms; module table) of ``model`` on ``tp``
    shards of ``gpu`` under ``coef``."""
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
        "seq_ms": coef.seq_ms + ms * model.lm_head_flops_per_seq / tp
        / (gpu.flops * coef.compute_eff)}


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
                     provenance: dict | None = None) -> Profile:
    """A V1 profile (chunked prefill, prefix caching: vLLM V1's defaults; 256 seats and
    8192 batched tokens unless given) of ``model`` on ``tp`` x ``gpu``; ``kv_blocks``
    from :func:`derive_kv_blocks` when None.

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


def _fit_data(train: list[tuple[Profile, ModelConfig, GPU, list]]) -> list[tuple]:
    """``(model, gpu, tp, steps, profile step times in ms)`` per training server; the
    steps are the given ones, or :func:`step_grid` where none are given."""
    data = []
    for p, m, g, steps in train:
        grid = steps or step_grid(p)
        y = np.array([p.step_time.step_time(*s) * 1e3 for s in grid])
        data.append((m, g, p.tensor_parallel_size, grid, y))
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
        for m, g, tp, grid, y in data:
            st = TokensStepTime(**step_time_coefficients(m, g, tp, c))
            pred = np.array([st.step_time(*s) * 1e3 for s in grid])
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
                       family: list[tuple[Profile, ModelConfig, GPU, list]] | None = None
                       ) -> Coefficients:
    """:class:`Coefficients` fitted to the step times of the ``(profile, model, gpu,
    steps)`` servers (module docstring): bounded least squares on ``log(roofline /
    profile)`` over each server's ``steps`` (:func:`step_grid` when empty), every server
    weighted alike; efficiencies bounded to [:data:`MIN_EFFICIENCY`, 1], overheads to
    [0, 50] ms (step), [0, 2] (layer), [0, 1] (all-reduce), [0, 5] (sequence); the
    front-end latency is the training profiles' median. With ``family`` (the training
    servers of the target's vLLM version, when there are any) the overheads and the
    front-end latency are then refitted on those servers alone, the efficiencies kept.
    """
    coef = _least_squares(_fit_data(train), _NAMES, Coefficients())
    front = float(np.median([t[0].frontend_latency_ms for t in train]))
    if family:
        coef = _least_squares(_fit_data(family), Coefficients.OVERHEADS, coef)
        front = float(np.median([t[0].frontend_latency_ms for t in family]))
    return Coefficients(**{**fields_of(coef), "frontend_latency_ms": round(front, 3)})


def fields_of(coef: Coefficients) -> dict[str, float]:
    """``coef`` as a flat dict (for tables and provenance)."""
    return {f.name: getattr(coef, f.name) for f in fields(coef)}
