"""Step-time profiles fitted to Splitwise's measured prefill and decode times.

Source: ``data/perf_model.csv`` of Mutinifni/splitwise-sim (commit 8f99e7d, MIT; dataset
``splitwise-perf-model``), profiled on DGX-A100 and DGX-H100 machines (splitwise-sim
README). One row per run: ``model``, ``hardware``, ``tensor_parallel``,
``prompt_size``, ``batch_size``, ``token_size`` (tokens), ``prompt_time`` (ms to prefill
``batch_size`` prompts of ``prompt_size`` tokens in one step), ``token_time`` (ms, the
mean step time while ``batch_size`` requests decode up to ``token_size`` tokens after
their prompt) and ``e2e_time`` (ms, the whole run). Each configuration was run 5 times
(15 for prompt 512 / batch 1 / 128 tokens).

Rows -> :class:`~dynasim.profiles.fit.StepRow` (one per configuration, the *median* of its
repeats, as splitwise-sim's own ``DatabasePerformanceModel`` reads this file, so a
held-out row is a configuration the fit never saw):

* prefill: ``prefill = ((prompt_size, 0),) * batch_size``, time ``prompt_time``;
* decode: ``num_decode = batch_size`` and ``sum_decode_ctx = batch_size * (prompt_size +
  n / 2)``, time ``token_time``: the context of a decoding request grows from
  ``prompt_size + 1`` to ``prompt_size + n`` over the ``n`` decoded tokens and
  ``token_time`` averages those steps, so the mean context stands for all of them (exact
  because a decode step is affine in its context). ``n`` is ``token_size`` unless the run
  stopped early: ``token_size`` is a cap, and in many runs of 512+ tokens ``e2e_time`` is
  far below ``prompt_time + token_size * token_time`` (e.g. Llama-2-70B, A100, TP 2,
  8192 tokens: 7% of it), so ``n = (e2e_time - prompt_time) / token_time``, clipped to
  ``[1, token_size]``, per run, median per configuration. Using ``token_size`` would
  overstate those contexts up to ~14x.

Dropped, with the reason:

* **Llama-2-70B at TP 2, batch 64** (prompt 512, 128 tokens; 5 rows each on
  ``a100-80gb``, ``h100-80gb`` and their ``h100-80gb-pcap`` copy). Against batch 32 of
  the same runs the prefill of twice the tokens is 8x *faster* (A100 796 vs 6,607 ms;
  H100 361 vs 2,394 ms) and the decode step is *faster* (A100 67.3 vs 72.2 ms; H100
  42.3 vs 52.3 ms), while ``e2e_time`` is 14.5-17x ``prompt_time + 128 * token_time``
  (A100 159.8 s vs 9.4 s; H100 84 s vs 5.8 s); no other group's e2e exceeds that sum by
  more than 17% (the early-stopped runs above fall *below* it). At TP 2 the 138 GB of
  weights leave little KV room on two 80 GB GPUs, so the batch was evidently served in
  smaller waves: the times measure some smaller batch, not 64. TP 4 and 8 at batch 64
  are consistent and kept.
* **prefill steps larger than the profile's ``max_num_batched_tokens``** (A100 2048,
  H100 8192 tokens): vLLM V1 never runs such a step (it chunks the prompt), and above
  ~2k tokens these prefills grow faster than linearly in the batch's tokens, which the
  ``tokens`` form cannot follow; fitting them would bend the in-range fit.
* **``h100-80gb-pcap``**: not a measurement (``prompt_time`` is exactly 1.3 x the
  ``h100-80gb`` value and ``token_time`` is identical), so no profile is made from it.

Decode rows with context beyond ``max_model_len`` are kept: they are real decode steps;
the fit report's ``max_sum_decode_ctx`` shows the range.

Fit: :func:`dynasim.profiles.fit.fit_tokens`, 30% of the configurations held out (seed 0). Two
coefficients are pinned to their roofline (:func:`decode_attention_ms_per_token`,
:func:`prefill_attention_ms_per_pair`) where the rows cannot determine them: decode
attention always (the measured decode contexts sum to at most ~37k tokens, which moves a
step by less than its run-to-run spread; free fits put it at 0 or at 12x the KV-read
cost), prefill attention when no fit row has a prompt of 4096+ tokens (the A100
profiles, whose 2048-token budget keeps attention under ~3% of a measured prefill). The
H100 rows include 4096- and 8192-token prompts, which do show the quadratic term, so
there it is fitted.

Limits (the same rules for the three published builders, :mod:`dynasim.profiles.vidur`,
:mod:`dynasim.profiles.llmservingsim`): ``kv_capacity_tokens`` = (GPU memory x
``gpu_memory_utilization`` 0.9 x TP - fp16 weights) / KV bytes per token (layers x 2 x
KV heads x head dim x 2 bytes), floored to whole 16-token blocks, with the nominal
memory in GiB (80 GiB for A100-80GB / H100-80GB), as LLMServingSim's memory model does.
It is an upper bound: vLLM sees slightly less than nominal and also reserves activation
and CUDA-graph memory, so a real server holds some percent fewer tokens. A combination
whose weights do not fit gets no profile. ``max_num_seqs`` / ``max_num_batched_tokens``
are vLLM V1's ``vllm serve`` defaults (A100: 256 / 2048; H100: 1024 / 8192), scheduling
``v1``, ``max_model_len`` the model's context (Llama-2 4096, BLOOM 2048), no prefix
caching (the measurements had none), ``frontend_latency_ms`` 0 (no source for it).
"""

from __future__ import annotations

import csv
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from dynasim import datasets
from dynasim.errors import InputError
from dynasim.profiles.fit import StepRow, fit_tokens
from dynasim.profiles.profile import Profile

SOURCE = "splitwise-perf-model"
HELD_OUT = 0.3
SEED = 0
MIN_ROWS = 20
GIB = 2 ** 30
GPU_MEMORY_UTILIZATION = 0.9
BLOCK_SIZE = 16


# --- helpers shared by the published-measurement builders -----------------------------

def kv_capacity_tokens(memory_gib: float, tp: int, weight_bytes: int,
                       kv_bytes_per_token: int,
                       utilization: float = GPU_MEMORY_UTILIZATION) -> int:
    """KV tokens that fit: ``(memory_gib GiB x utilization x tp - weight_bytes) /
    kv_bytes_per_token``, floored to whole 16-token blocks; 0 when the weights do not
    fit."""
    free = memory_gib * GIB * utilization * tp - weight_bytes
    if free <= 0:
        return 0
    tokens = int(free // kv_bytes_per_token)
    return tokens - tokens % BLOCK_SIZE


def count(text: str) -> int:
    """A whole number >= 0."""
    value = float(text)
    if not math.isfinite(value) or value != int(value) or value < 0:
        raise ValueError(f"expected a whole number >= 0, got {text!r}")
    return int(value)


def positive_int(text: str) -> int:
    """A whole number >= 1 (``"512"``, ``"512.0"``)."""
    value = float(text)
    if not math.isfinite(value) or value != int(value) or value < 1:
        raise ValueError(f"expected a whole number >= 1, got {text!r}")
    return int(value)


def non_negative(text: str) -> float:
    """A finite number >= 0."""
    value = float(text)
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"expected a finite number >= 0, got {text!r}")
    return value


def positive(text: str) -> float:
    """A finite number > 0."""
    value = non_negative(text)
    if value == 0:
        raise ValueError("expected a number > 0, got 0")
    return value


def read_csv(path: Path, columns: dict[str, Callable[[str], object]]
             ) -> list[tuple[int, dict]]:
    """Rows of a CSV file as ``(line, {column: parsed value})``, for the named columns.

    Raises:
        InputError: naming the file, line and column of a missing column or a value
            the column's parser rejects.
    """
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        missing = [c for c in columns if c not in (reader.fieldnames or [])]
        if missing:
            raise InputError("missing column", source=str(path), line=1, field=missing[0])
        out = []
        for row in reader:
            parsed = {}
            for col, parse in columns.items():
                try:
                    parsed[col] = parse(row[col] if row[col] is not None else "")
                except ValueError as exc:
                    raise InputError(str(exc), source=str(path), line=reader.line_num,
                                     field=col) from None
            out.append((reader.line_num, parsed))
    return out


@dataclass(frozen=True)
class Gpu:
    """A GPU kind: the profile's name for it, nominal memory (GiB), vLLM V1 server
    defaults, and peak HBM bandwidth (TB/s) and dense bf16 tensor throughput (TFLOPS)."""

    name: str
    memory_gib: float
    max_num_seqs: int
    max_num_batched_tokens: int
    hbm_tb_s: float
    bf16_tflops: float | None = None


@dataclass(frozen=True)
class Model:
    """A model's shape: fp16/bf16 parameter count and attention/KV-cache geometry."""

    name: str
    params: int
    layers: int
    heads: int
    kv_heads: int
    head_dim: int
    max_model_len: int

    @property
    def weight_bytes(self) -> int:
        """fp16 weights: 2 bytes per parameter."""
        return 2 * self.params

    @property
    def kv_bytes_per_token(self) -> int:
        """layers x (K and V) x KV heads x head dim x 2 bytes."""
        return self.layers * 2 * self.kv_heads * self.head_dim * 2


# Attention rooflines: decode attention reads each context token's K and V once per
# step at HBM_EFFICIENCY of peak bandwidth (FlashAttention/paged decode kernels reach
# ~80%); prefill attention does 4 x layers x heads x head_dim FLOPs per causal
# query-key pair (QK^T and PV, 2 x head_dim each) at FLOPS_EFFICIENCY of peak dense
# bf16 (FlashAttention-2 reports roughly 35-60% on A100 for causal head-dim-128 forward
# passes of 0.5k-16k tokens). Both split evenly over TP ranks.
HBM_EFFICIENCY = 0.8
FLOPS_EFFICIENCY = 0.5


def decode_attention_ms_per_token(model: Model, gpu: Gpu, tp: int) -> float:
    """ms per context token of a decode step: KV bytes / TP / effective bandwidth."""
    return 1e3 * model.kv_bytes_per_token / tp / (gpu.hbm_tb_s * 1e12 * HBM_EFFICIENCY)


def prefill_attention_ms_per_pair(model: Model, gpu: Gpu, tp: int) -> float:
    """ms per causal query-key pair of a prefill: FLOPs / TP / effective throughput."""
    flops = 4 * model.layers * model.heads * model.head_dim
    return 1e3 * flops / tp / (gpu.bf16_tflops * 1e12 * FLOPS_EFFICIENCY)


# DGX-A100 (A100-SXM4-80GB) and DGX-H100 (H100-SXM5-80GB) datasheet peaks.
A100 = Gpu("A100-80GB", 80, 256, 2048, hbm_tb_s=2.039, bf16_tflops=312)
H100 = Gpu("H100-80GB", 80, 1024, 8192, hbm_tb_s=3.35, bf16_tflops=989)


# --- Splitwise -------------------------------------------------------------------------

GPUS = {"a100-80gb": A100, "h100-80gb": H100}
# Parameter counts from the models' Hugging Face configs (Llama-2-70b-hf: 80 layers,
# hidden 8192, 64 heads, GQA with 8 KV heads, MLP 28672; bloom: 70 layers, hidden 14336,
# 112 heads of 128, tied embeddings).
MODELS = {"llama2-70b": Model("meta-llama/Llama-2-70b-hf", 68_976_648_192, 80, 64, 8, 128,
                              4096),
          "bloom-176b": Model("bigscience/bloom", 176_247_271_424, 70, 112, 112, 128, 2048)}
# Prompts up to this many tokens put prefill attention under ~3% of their step:
# the fit cannot see it, so it is pinned to the roofline (A100 profiles).
PAIRS_VISIBLE_PROMPT = 4096
MEASURED_TP = {"llama2-70b": (2, 4, 8), "bloom-176b": (8,)}
# (model, hardware, tensor_parallel, batch_size) groups dropped as inconsistent.
DROPPED_GROUPS = {("llama2-70b", "a100-80gb", 2, 64), ("llama2-70b", "h100-80gb", 2, 64)}
DROP_REASON = ("prefill of 2x the tokens 8x faster and decode faster than batch 32, and "
               "e2e_time 14.5-17x prompt_time + 128 x token_time: the batch was served in "
               "smaller waves, so the times do not measure batch 64 "
               "(see dynasim.profiles.splitwise docstring)")

COLUMNS = {"model": str, "hardware": str, "tensor_parallel": positive_int,
           "prompt_size": positive_int, "batch_size": positive_int,
           "token_size": positive_int, "prompt_time": positive, "token_time": positive,
           "e2e_time": positive}


def profile_name(model: str, hardware: str, tp: int) -> str:
    """``splitwise-llama2-70b-a100-tp4`` for ``("llama2-70b", "a100-80gb", 4)``."""
    return f"splitwise-{model}-{hardware.split('-')[0]}-tp{tp}"


def combos() -> dict[str, tuple[str, str, int]]:
    """Profile name -> (model, hardware, TP) for every measured combination whose fp16
    weights fit its GPUs at utilization 0.9."""
    out = {}
    for model, tps in MEASURED_TP.items():
        for hardware, gpu in GPUS.items():
            for tp in tps:
                m = MODELS[model]
                if kv_capacity_tokens(gpu.memory_gib, tp, m.weight_bytes,
                                      m.kv_bytes_per_token) > 0:
                    out[profile_name(model, hardware, tp)] = (model, hardware, tp)
    return out


def read_measurements(path: Path | None = None) -> list[tuple[int, dict]]:
    """All rows of ``perf_model.csv`` as ``(line, fields)``; see :func:`read_csv`."""
    return read_csv(path or datasets.fetch(SOURCE), COLUMNS)


def step_rows(model: str, hardware: str, tp: int, path: Path | None = None
              ) -> tuple[list[StepRow], dict]:
    """The fit rows of one combination, and what was dropped (for the provenance).

    Returns:
        ``(rows, dropped)``: rows labelled ``"prefill p{prompt} b{batch}"`` or
        ``"decode p{prompt} b{batch} t{tokens}"`` in ``StepRow.group``; ``dropped`` maps
        a reason to the CSV lines or configurations it removed.
    """
    budget = GPUS[hardware].max_num_batched_tokens
    prefill, decode = defaultdict(list), defaultdict(list)
    bad_lines = []
    for line, r in read_measurements(path):
        if (r["model"], r["hardware"], r["tensor_parallel"]) != (model, hardware, tp):
            continue
        if (model, hardware, tp, r["batch_size"]) in DROPPED_GROUPS:
            bad_lines.append(line)
            continue
        prefill[r["prompt_size"], r["batch_size"]].append(r["prompt_time"])
        decoded = (r["e2e_time"] - r["prompt_time"]) / r["token_time"]
        decode[r["prompt_size"], r["batch_size"], r["token_size"]].append(
            (r["token_time"], min(max(decoded, 1.0), r["token_size"])))
    rows, over_budget = [], []
    for (p, b), times in sorted(prefill.items()):
        if p * b > budget:
            over_budget.append(f"prompt {p} x batch {b}")
            continue
        rows.append(StepRow(prefill=((p, 0),) * b, num_decode=0, sum_decode_ctx=0,
                            ms=float(np.median(times)), group=f"prefill p{p} b{b}"))
    for (p, b, t), runs in sorted(decode.items()):
        times, decoded = np.median(np.array(runs), axis=0)
        rows.append(StepRow(prefill=(), num_decode=b, sum_decode_ctx=b * (p + decoded / 2),
                            ms=float(times), group=f"decode p{p} b{b} t{t}"))
    dropped = {}
    if bad_lines:
        dropped["inconsistent group: batch_size 64 (prompt 512, 128 tokens), CSV lines "
                + ", ".join(map(str, bad_lines))] = DROP_REASON
    if over_budget:
        dropped[f"prefill steps over max_num_batched_tokens {budget}"] = over_budget
    return rows, dropped


def build(model: str, hardware: str, tp: int) -> Profile:
    """The profile of one (model, hardware, TP) combination; see the module docstring.

    Raises:
        InputError: a malformed source file, or fewer than ``MIN_ROWS`` usable rows.
    """
    name = profile_name(model, hardware, tp)
    gpu, m = GPUS[hardware], MODELS[model]
    rows, dropped = step_rows(model, hardware, tp)
    src = datasets.REGISTRY[SOURCE]
    if len(rows) < MIN_ROWS:
        raise InputError(f"{len(rows)} usable configurations for {name}, need {MIN_ROWS}",
                         source=src.path)
    fixed = {"decode_attention_ms_per_token": decode_attention_ms_per_token(m, gpu, tp)}
    longest = max(n for r in rows for n, _ in r.prefill)
    if longest < PAIRS_VISIBLE_PROMPT:
        fixed["prefill_attention_ms_per_pair"] = prefill_attention_ms_per_pair(m, gpu, tp)
    step_time, fit = fit_tokens(rows, held_out=HELD_OUT, seed=SEED, fixed=fixed)
    kv = kv_capacity_tokens(gpu.memory_gib, tp, m.weight_bytes, m.kv_bytes_per_token)
    return Profile(
        name=name, model=m.name, gpu=gpu.name, tensor_parallel_size=tp,
        kv_capacity_tokens=kv, block_size=BLOCK_SIZE, max_num_seqs=gpu.max_num_seqs,
        max_num_batched_tokens=gpu.max_num_batched_tokens, max_model_len=m.max_model_len,
        scheduling="v1", enable_prefix_caching=False, frontend_latency_ms=0.0,
        step_time=step_time, fit=fit,
        provenance={
            "step_time": {
                "repo": src.repo, "commit": src.commit, "path": src.path,
                "sha256": src.sha256, "license": src.license, "units": "ms",
                "rows": f"model={model}, hardware={hardware}, tensor_parallel={tp}",
                "aggregation": "median of each configuration's repeats (as splitwise-sim's "
                               "DatabasePerformanceModel)",
                "prefill_row": "prefill=((prompt_size, 0),) * batch_size, ms=prompt_time",
                "decode_row": "num_decode=batch_size, sum_decode_ctx=batch_size * "
                              "(prompt_size + n / 2), ms=token_time, n = decoded tokens "
                              "= (e2e_time - prompt_time) / token_time clipped to "
                              "[1, token_size] (runs may stop before token_size)",
                "fit": f"dynasim.profiles.fit.fit_tokens, held_out={HELD_OUT}, seed={SEED}",
                "pinned_to_roofline": {
                    k: f"{v:.4g} ms ({'KV read' if k.startswith('decode') else 'FLOPs'} "
                       f"at {HBM_EFFICIENCY if k.startswith('decode') else FLOPS_EFFICIENCY}"
                       f" x {gpu.name} peak; the rows cannot determine it)"
                    for k, v in fixed.items()}},
            "dropped": dropped,
            "kv_capacity_tokens": (
                f"({gpu.memory_gib} GiB x {GPU_MEMORY_UTILIZATION} x TP {tp} - "
                f"{m.weight_bytes} B fp16 weights) / {m.kv_bytes_per_token} B per token "
                f"({m.layers} layers x 2 x {m.kv_heads} KV heads x {m.head_dim} x 2 B), "
                "floored to 16-token blocks; an upper bound (activations and CUDA graphs "
                "not reserved)"),
            "limits": (f"vLLM V1 `vllm serve` defaults on {gpu.name}: max_num_seqs "
                       f"{gpu.max_num_seqs}, max_num_batched_tokens "
                       f"{gpu.max_num_batched_tokens}; max_model_len = {m.name} context "
                       f"{m.max_model_len}; scheduling v1; no prefix caching; "
                       "frontend_latency_ms 0 (no source)"),
            "license": "MIT (splitwise-sim)",
        })


def builders() -> dict[str, Callable[[], Profile]]:
    """Profile name -> zero-argument builder, for :data:`dynasim.profiles.builders.BUILDERS`."""
    return {name: partial(build, *combo) for name, combo in combos().items()}
