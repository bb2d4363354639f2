"""Step-time profile ``llmservingsim-llama3.1-8b-rtxpro6000`` from LLMServingSim's
per-layer vLLM 0.19 timings of Llama-3.1-8B on one RTX PRO 6000 Blackwell.

Source: casys-kaist/LLMServingSim ``profiler/perf/RTXPRO6000/meta-llama/Llama-3.1-8B/
bf16/`` (commit 5daddb2, MIT), four files, each a dataset here:

* ``meta.yaml``: the profiler run (vLLM 0.19.0, ``enforce_eager``, dummy weights,
  ``hf_overrides.num_hidden_layers: 1``, block 16, ``max_num_batched_tokens`` 2048,
  ``max_num_seqs`` 256, ``gpu_memory_utilization`` 0.9, prefix caching off);
* ``tp1/attention.csv``: ``prefill_chunk, kv_prefill, n_decode, kv_decode, time_us``,
  the attention of *one layer* for a batch of at most one prefill chunk
  (``prefill_chunk`` new tokens after ``kv_prefill`` cached ones) and ``n_decode``
  decodes each after ``kv_decode`` cached tokens;
* ``tp1/dense.csv``: ``layer, tokens, time_us`` per operator of one layer
  (``layernorm``, ``qkv_proj``, ``rotary_emb``, ``o_proj``, ``gate_up_proj``,
  ``act_fn``, ``down_proj``) and of the model (``embedding``, ``final_layernorm``);
* ``tp1/per_sequence.csv``: ``layer, sequences, time_us`` for ``lm_head`` (logits of
  each sequence's last token) and ``sampler``.

Reading ``meta.yaml``: the profiler times every TP degree on one GPU by shrinking the
model with ``hf_overrides`` (LLMServingSim ``profiler/core/engine.py``,
``fuse_engine_kwargs``), and ``engine_effective`` records the *last* boot, TP 2: its
overrides halve the heads (16, KV 4), the MLP (7168) and the vocabulary (64128). The
``tp1`` files were measured at full width with one layer: ``lm_head`` at one sequence
takes 714 us, reading the full 4096 x 128256 bf16 matrix (1.05 GB) at 1.47 TB/s; half
the vocabulary would take half that.

Composition, as LLMServingSim's simulator builds a step (``serving/core/
trace_generator.py``: the ``llama.yaml`` sequence ``embedding``; 32 x [``layernorm``,
``qkv_proj``, ``rotary_emb``, ``attention``, ``o_proj``, ``layernorm``,
``gate_up_proj``, ``act_fn``, ``down_proj``]; ``final_layernorm``, ``lm_head``,
``sampler``; kernels run back to back at TP 1)::

    us = embedding(T) + 32 x (2 layernorm(T) + qkv_proj(T) + rotary_emb(T) + attention
                              + o_proj(T) + gate_up_proj(T) + act_fn(T) + down_proj(T))
         + final_layernorm(T) + lm_head(S) + sampler(S)

with ``T = prefill_chunk + n_decode`` tokens and ``S = [prefill_chunk > 0] + n_decode``
sequences, dense and per-sequence times interpolated linearly between profiled points
(as LLMServingSim does; every ``T``, ``S`` used lies inside the profiled grids). One
composed step per measured attention row, with ``T`` up to the 2048-token budget;
``StepRow(prefill=((prefill_chunk, kv_prefill),), num_decode=n_decode,
sum_decode_ctx=n_decode * (kv_decode + 1))``.

Fit: on the *pure* steps only (pure decode, and a prefill chunk alone, with or without
cached context), 20% held out, seed 0. Mixed steps are reported, not fitted: in vLLM
0.19 a decode's attention costs more when a prefill chunk shares its batch, growing
with the decode count (attention of 128 decodes is ~2.2x the sum of its pure parts),
which the additive ``tokens`` form cannot express. Fitting the grid's 17,900 mixed rows
with the 400 pure ones makes pure decode steps, the bulk of a serving run, ~25% too
slow (median); this way they are within ~5% and a mixed step is under-predicted, by the
amount ``provenance.mixed_steps`` reports (median 14%, more with more decodes).

Not in the data, so not in the profile: CPU time per step (scheduling, input
preparation, detokenisation; the profiler times GPU kernels only) and CUDA graphs (the
profile is eager; LLMServingSim later measured graphs saving ~0.5 ms per step here).

Limits: RTX PRO 6000 Blackwell Server Edition, 96 GB; KV capacity (96 GiB x 0.9 -
16.06 GB of bf16 weights) / 128 KiB per token = 585,248 tokens (the value LLMServingSim's
own RTXPRO6000 example reports); ``max_num_seqs``, ``max_num_batched_tokens``,
``block_size``, prefix caching from ``meta.yaml``; ``max_model_len`` 131072
(Llama-3.1's context; attention was profiled to 16,384 cached tokens, beyond that the
linear term extrapolates); scheduling ``v1``; ``frontend_latency_ms`` 0.
"""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from dynasim import datasets
from dynasim.errors import InputError
from dynasim.profiles.fit import StepRow, fit_tokens, predict_ms
from dynasim.profiles.profile import Profile
from dynasim.profiles.splitwise import Gpu, Model, count, kv_capacity_tokens, positive, read_csv
from dynasim.profiles.step_time import TokensStepTime

NAME = "llmservingsim-llama3.1-8b-rtxpro6000"
SOURCES = {"meta": "llmservingsim-rtxpro6000-llama31-8b-meta",
           "attention": "llmservingsim-rtxpro6000-llama31-8b-attention",
           "dense": "llmservingsim-rtxpro6000-llama31-8b-dense",
           "per_sequence": "llmservingsim-rtxpro6000-llama31-8b-per-sequence"}
HELD_OUT = 0.2
SEED = 0
MODEL = Model("meta-llama/Llama-3.1-8B", 8_030_261_248, layers=32, heads=32, kv_heads=8,
              head_dim=128, max_model_len=131072)
PER_LAYER = ("layernorm", "layernorm", "qkv_proj", "rotary_emb", "o_proj", "gate_up_proj",
             "act_fn", "down_proj")
PER_STEP = ("embedding", "final_layernorm")
PER_SEQUENCE = ("lm_head", "sampler")


def read_meta(path: Path) -> dict:
    """The mappings of a profiler ``meta.yaml`` (``yaml.safe_load``).

    Raises:
        InputError: not YAML, or not a mapping at the top (file, and the line of the
            entry that cannot be read).
    """
    import yaml

    try:
        with open(path, encoding="utf-8") as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "context_mark", None) or getattr(exc, "problem_mark", None)
        raise InputError(f"invalid YAML ({getattr(exc, 'problem', exc)})", source=str(path),
                         line=mark.line + 1 if mark else None) from None
    if not isinstance(data, dict):
        raise InputError("expected a mapping of 'key: value' entries", source=str(path))
    return data


def _meta_value(meta: dict, path: Path, *keys):
    node = meta
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            raise InputError("missing in meta.yaml", source=str(path), field=".".join(keys))
        node = node[key]
    return node


def engine_flags(path: Path | None = None) -> dict:
    """The engine flags the profile takes from ``meta.yaml``, checked.

    Raises:
        InputError: a missing flag, or a run that is not the one this profile describes
            (another model, no TP 1, not one layer per forward).
    """
    path = path or datasets.fetch(SOURCES["meta"])
    meta = read_meta(path)
    if _meta_value(meta, path, "model") != MODEL.name:
        raise InputError(f"profiles {meta['model']}, not {MODEL.name}", source=str(path),
                         field="model")
    if 1 not in (_meta_value(meta, path, "tp_degrees") or []):
        raise InputError("no TP 1 profile", source=str(path), field="tp_degrees")
    if _meta_value(meta, path, "engine_effective", "hf_overrides", "num_hidden_layers") != 1:
        raise InputError("times must be of one layer", source=str(path),
                         field="engine_effective.hf_overrides.num_hidden_layers")
    flags = {k: _meta_value(meta, path, "engine_effective", k)
             for k in ("max_num_batched_tokens", "max_num_seqs", "block_size",
                       "gpu_memory_utilization", "enable_prefix_caching", "enforce_eager")}
    flags["vllm_version"] = _meta_value(meta, path, "vllm_version")
    flags["gpu"] = _meta_value(meta, path, "gpu")
    flags["attention_max_kv"] = _meta_value(meta, path, "attention_grid", "max_kv")
    flags["last_tp"] = max(meta["tp_degrees"])
    flags["hf_overrides"] = _meta_value(meta, path, "engine_effective", "hf_overrides")
    return flags


def _table(path: Path, key: str, names: tuple[str, ...]) -> dict[str, tuple]:
    """``{layer: (sorted key values, time_us)}`` from a ``layer, <key>, time_us`` file."""
    points = defaultdict(list)
    for line, r in read_csv(path, {"layer": str, key: count, "time_us": positive}):
        points[r["layer"]].append((r[key], r["time_us"], line))
    table = {}
    for name in set(names):
        if name not in points:
            raise InputError(f"no rows for layer {name!r}", source=str(path), field="layer")
        pts = sorted(points[name])
        for a, b in zip(pts, pts[1:]):
            if a[0] == b[0]:
                raise InputError(f"{key} {b[0]} repeated for layer {name!r}",
                                 source=str(path), line=b[2], field=key)
        table[name] = (np.array([p[0] for p in pts]), np.array([p[1] for p in pts]))
    return table


def _lookup(table: dict, name: str, x: int, path: Path) -> float:
    xs, ys = table[name]
    if not xs[0] <= x <= xs[-1]:
        raise InputError(f"{name} needed at {x}, profiled only {xs[0]}..{xs[-1]}",
                         source=str(path), field=name)
    return float(np.interp(x, xs, ys))


def composed_rows(budget: int = 2048) -> tuple[list[StepRow], list[StepRow]]:
    """Full-model step times (ms), one per measured attention row with at most
    ``budget`` tokens: ``(pure, mixed)`` rows (see the module docstring), labelled
    ``"decode"``, ``"prefill"`` or ``"mixed"`` in ``StepRow.group``.

    Raises:
        InputError: a malformed file (file, line, column) or a step outside the
            profiled token / sequence grids.
    """
    dense_path = datasets.fetch(SOURCES["dense"])
    seq_path = datasets.fetch(SOURCES["per_sequence"])
    attn_path = datasets.fetch(SOURCES["attention"])
    dense = _table(dense_path, "tokens", PER_LAYER + PER_STEP)
    per_seq = _table(seq_path, "sequences", PER_SEQUENCE)
    cols = {"prefill_chunk": count, "kv_prefill": count, "n_decode": count,
            "kv_decode": count, "time_us": positive}
    pure, mixed = [], []
    for line, r in read_csv(attn_path, cols):
        pc, nd = r["prefill_chunk"], r["n_decode"]
        tokens, seqs = pc + nd, (pc > 0) + nd
        if tokens == 0:
            raise InputError("an empty step", source=str(attn_path), line=line,
                             field="n_decode")
        if tokens > budget:
            continue
        us = (MODEL.layers * (r["time_us"] + sum(_lookup(dense, n, tokens, dense_path)
                                                 for n in PER_LAYER))
              + sum(_lookup(dense, n, tokens, dense_path) for n in PER_STEP)
              + sum(_lookup(per_seq, n, seqs, seq_path) for n in PER_SEQUENCE))
        kind = "mixed" if pc and nd else ("prefill" if pc else "decode")
        row = StepRow(prefill=((pc, r["kv_prefill"]),) if pc else (), num_decode=nd,
                      sum_decode_ctx=nd * (r["kv_decode"] + 1), ms=us / 1000.0, group=kind)
        (mixed if kind == "mixed" else pure).append(row)
    return pure, mixed


def _mixed_report(model: TokensStepTime, mixed: list[StepRow]) -> dict:
    err = (predict_ms(model, mixed) - np.array([r.ms for r in mixed])) / np.array(
        [r.ms for r in mixed])
    by_nd = defaultdict(list)
    for r, e in zip(mixed, err):
        by_nd[r.num_decode].append(e)
    return {"rows": len(mixed), "median_error": round(float(np.median(np.abs(err))), 4),
            "p90_error": round(float(np.percentile(np.abs(err), 90)), 4),
            "median_signed_error": round(float(np.median(err)), 4),
            "median_signed_error_by_n_decode": {
                str(k): round(float(np.median(v)), 4) for k, v in sorted(by_nd.items())}}


def build() -> Profile:
    """The ``llmservingsim-llama3.1-8b-rtxpro6000`` profile; see the module docstring."""
    flags = engine_flags()
    budget = int(flags["max_num_batched_tokens"])
    gpu = Gpu("RTX-PRO-6000-Blackwell-96GB", 96, int(flags["max_num_seqs"]), budget,
              hbm_tb_s=1.597)
    pure, mixed = composed_rows(budget)
    step_time, fit = fit_tokens(pure, held_out=HELD_OUT, seed=SEED)
    files = {k: {"path": datasets.REGISTRY[v].path, "sha256": datasets.REGISTRY[v].sha256}
             for k, v in SOURCES.items()}
    src = datasets.REGISTRY[SOURCES["meta"]]
    return Profile(
        name=NAME, model=MODEL.name, gpu=gpu.name, tensor_parallel_size=1,
        kv_capacity_tokens=kv_capacity_tokens(gpu.memory_gib, 1, MODEL.weight_bytes,
                                              MODEL.kv_bytes_per_token,
                                              float(flags["gpu_memory_utilization"])),
        block_size=int(flags["block_size"]), max_num_seqs=gpu.max_num_seqs,
        max_num_batched_tokens=budget, max_model_len=MODEL.max_model_len,
        scheduling="v1", enable_prefix_caching=bool(flags["enable_prefix_caching"]),
        frontend_latency_ms=0.0, step_time=step_time, fit=fit,
        provenance={
            "step_time": {
                "repo": src.repo, "commit": src.commit, "files": files,
                "license": src.license, "units": "us in the files, ms in the profile",
                "measured": f"vLLM {flags['vllm_version']} on {flags['gpu']}, one layer, "
                            f"enforce_eager={flags['enforce_eager']}, GPU kernel time only",
                "composition": "embedding + 32 x (2 layernorm + qkv_proj + rotary_emb + "
                               "attention + o_proj + gate_up_proj + act_fn + down_proj) + "
                               "final_layernorm at T = prefill_chunk + n_decode tokens; "
                               "lm_head + sampler at S = [prefill_chunk > 0] + n_decode "
                               "sequences; linear interpolation between profiled points "
                               "(LLMServingSim serving/core/trace_generator.py)",
                "rows": f"one per attention.csv row with T <= {budget}; "
                        "StepRow(prefill=((prefill_chunk, kv_prefill),), "
                        "num_decode=n_decode, sum_decode_ctx=n_decode * (kv_decode + 1))",
                "fit": f"dynasim.profiles.fit.fit_tokens on the {len(pure)} pure decode / pure "
                       f"prefill steps, held_out={HELD_OUT}, seed={SEED}"},
            "mixed_steps": {
                "why_not_fitted": "in vLLM 0.19 a decode's attention costs more when a "
                                  "prefill chunk shares the batch (superadditive, growing "
                                  "with n_decode); the additive tokens form cannot follow",
                **_mixed_report(step_time, mixed)},
            "meta_yaml": f"engine_effective is the last boot, TP {flags['last_tp']}: "
                         f"hf_overrides {flags['hf_overrides']} shard the model for it; "
                         "the tp1 files are full width, one layer (lm_head at 1 sequence "
                         "= 714 us reads all 128256 x 4096 weights)",
            "not_modelled": "CPU time per step; CUDA graphs (the profile is eager)",
            "kv_capacity_tokens": (
                f"(96 GiB x {flags['gpu_memory_utilization']} - {MODEL.weight_bytes} B bf16 "
                f"weights) / {MODEL.kv_bytes_per_token} B per token, floored to 16-token "
                "blocks; LLMServingSim's RTXPRO6000 Llama-3.1-8B example reports the same "
                "585248 tokens; an upper bound"),
            "limits": f"meta.yaml engine_effective: max_num_seqs {gpu.max_num_seqs}, "
                      f"max_num_batched_tokens {budget}, block_size {flags['block_size']}, "
                      f"enable_prefix_caching {flags['enable_prefix_caching']}; "
                      f"max_model_len {MODEL.max_model_len} (Llama-3.1 context; attention "
                      f"profiled to {flags['attention_max_kv']} cached tokens); scheduling "
                      "v1; frontend_latency_ms 0 (no source)",
            "license": "MIT (LLMServingSim)",
        })
