"""Step-time profile ``vidur-llama3-8b-a100`` from Vidur's per-operator A100 timings.

Source: microsoft/vidur ``data/profiling/compute/a100/meta-llama/Meta-Llama-3-8B/mlp.csv``
(commit 7d47513, MIT; dataset ``vidur-a100-llama3-8b-mlp``): one row per profiled
``num_tokens`` (1 ... 32768) and ``num_tensor_parallel_workers`` (1, 2, 4, 8), with
``time_stats.<op>.median`` per operator of *one* decoder layer (``input_layernorm``,
``attn_pre_proj`` (QKV), ``attn_rope``, ``attn_post_proj`` (O), ``post_attention_layernorm``,
``mlp_up_proj`` (gate+up), ``mlp_act``, ``mlp_down_proj``, ``add``) plus ``emb``, and the
model shape (``n_head``, ``n_kv_head``, ``n_embd``, ``n_expanded_embd``, ``vocab_size``).

Units: milliseconds. Vidur's ``ExecutionTime.model_time`` sums these times and multiplies
by 1e-3 to return seconds; and at 1 token the 32 layers sum to 9.70 ms, which is reading
the layers' 14.0 GB of bf16 weights at 1.44 TB/s (71% of the A100's 2.04 TB/s peak):
plausible in ms, impossible in s or us.

Rows (TP 1, ``num_tokens`` up to the profile's 2048-token step budget; repeated token
counts reduced to their median): the step's non-attention time

    ms = 32 x (input_layernorm + attn_pre_proj + attn_rope + attn_post_proj
               + post_attention_layernorm + mlp_up_proj + mlp_act + mlp_down_proj + add)
         + emb

(the per-layer sum is Vidur's ``ExecutionTime._get_block_execution_time`` without
attention and TP communication, ``add`` once per layer as Vidur counts it; ``emb`` runs
once per step, and Vidur leaves it out), as a prefill chunk of ``num_tokens`` tokens,
``StepRow(prefill=((num_tokens, 0),))``. :func:`dynasim.profiles.fit.fit_tokens` fits
``step_ms``, ``dense_floor_ms`` and ``dense_ms_per_token`` (20% held out, seed 0) with
the attention terms pinned to 0 (the rows hold no attention) and ``seq_ms`` pinned to 0
(every row is one sequence, so it cannot be told from ``step_ms``). The profile's
``fit`` reports that fit: its errors are on the measured non-attention time.

Added after the fit, assumptions with no measurement behind them (Vidur's
``attention.csv`` is not in the local data):

* attention from A100 rooflines (:mod:`dynasim.profiles.splitwise` helpers): decode attention
  reads 32 layers x 2 x 8 KV heads x 128 x 2 B = 128 KiB per context token at 80% of
  2.039 TB/s (8.0e-5 ms per token); prefill attention does 4 x 32 layers x 32 heads x
  128 = 524,288 FLOPs per causal query-key pair at 50% of 312 TFLOPS (3.4e-6 ms per
  pair, 7 ms for a 2048-token prompt);
* the LM head, which ``mlp.csv`` does not profile: one read of its 4096 x 128256 bf16
  weights (1.05 GB) per step at 80% of peak bandwidth, 0.64 ms added to ``step_ms``
  (at 256 sequences its GEMM is compute-bound and ~0.4 ms slower than that);
* no CPU time: scheduling, sampling and output processing (Vidur's ``cpu_overhead``
  profiles) are not in this data, so real vLLM steps are longer by that.

Limits: A100-80GB, KV capacity (80 GiB x 0.9 - 16.06 GB of bf16 weights) / 128 KiB per
token (see :mod:`dynasim.profiles.splitwise` for the rule), vLLM V1 ``vllm serve`` defaults on an
A100 (256 sequences, 2048 batched tokens), scheduling ``v1``, ``max_model_len`` 8192
(Llama-3's context), no prefix caching, ``frontend_latency_ms`` 0.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from dynasim import datasets
from dynasim.errors import InputError
from dynasim.profiles.fit import StepRow, fit_tokens
from dynasim.profiles.profile import Profile
from dynasim.profiles.splitwise import (
    A100,
    BLOCK_SIZE,
    FLOPS_EFFICIENCY,
    GPU_MEMORY_UTILIZATION,
    HBM_EFFICIENCY,
    Model,
    decode_attention_ms_per_token,
    kv_capacity_tokens,
    non_negative,
    positive_int,
    prefill_attention_ms_per_pair,
    read_csv,
)
from dynasim.profiles.step_time import TokensStepTime

NAME = "vidur-llama3-8b-a100"
SOURCE = "vidur-a100-llama3-8b-mlp"
HELD_OUT = 0.2
SEED = 0
MODEL = Model("meta-llama/Meta-Llama-3-8B", 8_030_261_248, layers=32, heads=32, kv_heads=8,
              head_dim=128, max_model_len=8192)
HIDDEN, VOCAB = 4096, 128256
SHAPE = {"n_head": 32, "n_kv_head": 8, "n_embd": HIDDEN, "n_expanded_embd": 14336,
         "vocab_size": VOCAB}
PER_LAYER = ("input_layernorm", "attn_pre_proj", "attn_rope", "attn_post_proj",
             "post_attention_layernorm", "mlp_up_proj", "mlp_act", "mlp_down_proj", "add")
PER_STEP = ("emb",)
LM_HEAD_MS = 1e3 * HIDDEN * VOCAB * 2 / (A100.hbm_tb_s * 1e12 * HBM_EFFICIENCY)


def _col(op: str) -> str:
    return f"time_stats.{op}.median"


def step_rows(path: Path | None = None) -> list[StepRow]:
    """TP-1 non-attention step times (ms) for 1 ... 2048 tokens, one row per token count
    (median of repeats), labelled ``"tokens N"``.

    Raises:
        InputError: a malformed file (file, line, column) or a model shape other than
            Llama-3-8B's.
    """
    path = path or datasets.fetch(SOURCE)
    columns = {_col(op): non_negative for op in PER_LAYER + PER_STEP}
    columns.update({k: positive_int for k in [*SHAPE, "num_tokens",
                                              "num_tensor_parallel_workers"]})
    by_tokens = defaultdict(list)
    for line, r in read_csv(path, columns):
        for key, want in SHAPE.items():
            if r[key] != want:
                raise InputError(f"{r[key]} is not Llama-3-8B's {want}", source=str(path),
                                 line=line, field=key)
        n = r["num_tokens"]
        if r["num_tensor_parallel_workers"] != 1 or n > A100.max_num_batched_tokens:
            continue
        by_tokens[n].append(MODEL.layers * sum(r[_col(op)] for op in PER_LAYER)
                            + sum(r[_col(op)] for op in PER_STEP))
    return [StepRow(prefill=((n, 0),), num_decode=0, sum_decode_ctx=0,
                    ms=float(np.median(v)), group=f"tokens {n}")
            for n, v in sorted(by_tokens.items())]


def build() -> Profile:
    """The ``vidur-llama3-8b-a100`` profile; see the module docstring."""
    rows = step_rows()
    zero = {"prefill_attention_ms_per_pair": 0.0, "decode_attention_ms_per_token": 0.0,
            "seq_ms": 0.0}
    dense, fit = fit_tokens(rows, held_out=HELD_OUT, seed=SEED, fixed=zero)
    decode_attn = decode_attention_ms_per_token(MODEL, A100, 1)
    prefill_attn = prefill_attention_ms_per_pair(MODEL, A100, 1)
    step_time = TokensStepTime(**{**dense.model_dump(), "step_ms": dense.step_ms + LM_HEAD_MS,
                                  "decode_attention_ms_per_token": decode_attn,
                                  "prefill_attention_ms_per_pair": prefill_attn})
    src = datasets.REGISTRY[SOURCE]
    return Profile(
        name=NAME, model=MODEL.name, gpu=A100.name, tensor_parallel_size=1,
        kv_capacity_tokens=kv_capacity_tokens(A100.memory_gib, 1, MODEL.weight_bytes,
                                              MODEL.kv_bytes_per_token),
        block_size=BLOCK_SIZE, max_num_seqs=A100.max_num_seqs,
        max_num_batched_tokens=A100.max_num_batched_tokens,
        max_model_len=MODEL.max_model_len, scheduling="v1", enable_prefix_caching=False,
        frontend_latency_ms=0.0, step_time=step_time, fit=fit,
        provenance={
            "step_time": {
                "repo": src.repo, "commit": src.commit, "path": src.path,
                "sha256": src.sha256, "license": src.license, "units": "ms",
                "rows": f"num_tensor_parallel_workers=1, num_tokens <= "
                        f"{A100.max_num_batched_tokens}; median per num_tokens",
                "composition": f"{MODEL.layers} x ({' + '.join(PER_LAYER)}) + emb, as "
                               "StepRow(prefill=((num_tokens, 0),))",
                "fit": f"dynasim.profiles.fit.fit_tokens, held_out={HELD_OUT}, seed={SEED}, "
                       "attention and seq_ms pinned to 0; fit errors are on the "
                       "measured non-attention time"},
            "assumptions": {
                "decode_attention_ms_per_token": (
                    f"{decode_attn:.4g}: KV read of {MODEL.kv_bytes_per_token} B per "
                    f"context token at {HBM_EFFICIENCY} x {A100.hbm_tb_s} TB/s"),
                "prefill_attention_ms_per_pair": (
                    f"{prefill_attn:.4g}: 4 x {MODEL.layers} layers x {MODEL.heads} heads x "
                    f"{MODEL.head_dim} FLOPs per causal query-key pair at "
                    f"{FLOPS_EFFICIENCY} x {A100.bf16_tflops} TFLOPS"),
                "lm_head": (f"{LM_HEAD_MS:.4g} ms added to step_ms: one read of the "
                            f"{HIDDEN} x {VOCAB} bf16 LM head per step at "
                            f"{HBM_EFFICIENCY} x peak bandwidth (not in mlp.csv)"),
                "cpu_overhead": "none: Vidur's CPU-overhead profiles are not in this data",
                "rows_left_out": "none for quality; TP 2/4/8 and num_tokens > "
                               f"{A100.max_num_batched_tokens} are outside this profile",
            },
            "kv_capacity_tokens": (
                f"({A100.memory_gib} GiB x {GPU_MEMORY_UTILIZATION} - {MODEL.weight_bytes} "
                f"B bf16 weights) / {MODEL.kv_bytes_per_token} B per token, floored to "
                "16-token blocks; an upper bound"),
            "limits": f"vLLM V1 `vllm serve` defaults on {A100.name}: max_num_seqs "
                      f"{A100.max_num_seqs}, max_num_batched_tokens "
                      f"{A100.max_num_batched_tokens}; max_model_len 8192 (Llama-3); "
                      "scheduling v1; no prefix caching; frontend_latency_ms 0 (no source)",
            "license": "MIT (Vidur)",
        })
