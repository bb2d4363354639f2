"""``distserve-opt13b-a100``: the profile built from DistServe's published vLLM
measurements (OPT-13B, A100), read through :mod:`dynasim.datasets` (sha256-checked)."""

from __future__ import annotations

import csv
import json

from dynasim import datasets
from dynasim.profiles.profile import Profile

CALIBRATION = {"prefill_scale": 0.848, "decode_scale": 0.97, "decode_ctx_scale": 1.0,
               "overhead_ms_per_seq": 0.352, "frontend_latency_ms": 5.124}
"""The five numbers fitted against DistServe's real vLLM runs (``dynasim validate
--refit`` reproduces them; see :func:`distserve_opt13b_a100`)."""


def distserve_opt13b_a100(calibration: dict[str, float] | None = None) -> Profile:
    """``distserve-opt13b-a100``: vLLM serving OPT-13B on one A100-80GB, TP 1.

    Step time: DistServe's fitted vLLM coefficients (``profiler-a100-80g.vllm.json``,
    key ``facebook/opt-13b`` / ``"1"``), used as simdistserve uses them (see
    :class:`~dynasim.profiles.step_time.DistServeStepTime`), including its per-step overhead for
    the vLLM engine (``add_ray_overhead``: 2 ms + 1e-4 ms per context token). The JSON on
    DistServe's main branch already folds in their realignment factors (x1.4 prefill,
    x1.2 decode, commit 4c68ed9), so no further factor is applied.

    Calibration against real vLLM (DistServe's baseline runs, :mod:`dynasim.experiments.validate`):
    five numbers in :data:`CALIBRATION`, each a physical quantity the coefficients leave
    out, fitted jointly on the three runs by :func:`dynasim.experiments.validate.refit` (simulate,
    minimise the worst run's median E2E error + 0.3 x the worst median TTFT error) and
    checked by leaving each run out:

    * ``prefill_scale`` multiplies the prefill coefficients ``b, c`` (DistServe's profile
      is of their own engine; vLLM's prefill is faster);
    * ``decode_scale`` and ``decode_ctx_scale`` multiply the decode constant ``a`` and
      the per-context-token ``b`` (both batch-size sets);
    * ``overhead_ms_per_seq``: vLLM 0.2's per-sequence CPU work per step (sampling,
      detokenization, output streaming over Ray);
    * ``frontend_latency_ms``: HTTP, tokenization and the Ray hop before the engine.

    v0 padding: ``max_paddings`` 256, vLLM 0.2.x's default; prompts batched in a prefill
    step are padded to the longest (:mod:`dynasim.engine`).

    Limits: KV capacity from ``max_num_tokens.csv`` (opt-13b, TP 1, PP 1); the vLLM
    server flags DistServe used for its baseline runs (``--max-num-batched-tokens
    16384 --max-num-seqs 1024 --block-size 16``, repo commit 8f13114); ``max_model_len``
    2048 (OPT-13B's position embeddings); scheduling ``v0`` (their vLLM was a 0.2.3 fork:
    prefill-first, no chunked prefill).
    """
    coeffs_file = datasets.fetch("distserve-profiler-a100-vllm")
    tp1 = json.loads(coeffs_file.read_text())["facebook/opt-13b"]["1"]
    kv = None
    with open(datasets.fetch("distserve-max-num-tokens"), newline="") as f:
        for row in csv.DictReader(f):
            if (row["model"], row["tp"], row["pp"]) == ("facebook/opt-13b", "1", "1"):
                kv = int(row["max_num_tokens"])
    src = datasets.REGISTRY["distserve-profiler-a100-vllm"]
    kv_src = datasets.REGISTRY["distserve-max-num-tokens"]
    cal = {**CALIBRATION, **(calibration or {})}
    pa, pb, pc = tp1["prefill"]

    def decode(abc: list[float]) -> list[float]:
        return [abc[0] * cal["decode_scale"], abc[1] * cal["decode_ctx_scale"], abc[2]]

    return Profile(
        name="distserve-opt13b-a100", model="facebook/opt-13b", gpu="A100-80GB",
        tensor_parallel_size=1, kv_capacity_tokens=kv, block_size=16, max_num_seqs=1024,
        max_num_batched_tokens=16384, max_model_len=2048, scheduling="v0", max_paddings=256,
        frontend_latency_ms=round(cal["frontend_latency_ms"], 4),
        step_time={"form": "distserve",
                   "prefill": [pa, pb * cal["prefill_scale"], pc * cal["prefill_scale"]],
                   "decode_small_batch": decode(tp1["decoding_smallbs"]),
                   "decode_large_batch": decode(tp1["decoding_largebs"]),
                   "large_batch_threshold": tp1["decoding_large_small_bs_threshold"],
                   "step_overhead_ms": 2.0, "overhead_ms_per_context_token": 1e-4,
                   "overhead_ms_per_seq": round(cal["overhead_ms_per_seq"], 4)},
        provenance={
            "step_time": {"repo": src.repo, "commit": src.commit, "path": src.path,
                          "sha256": src.sha256, "key": "facebook/opt-13b / tp 1",
                          "units": "ms",
                          "overhead": "simdistserve/base/worker.py add_ray_overhead"},
            "kv_capacity_tokens": {"repo": kv_src.repo, "commit": kv_src.commit,
                                   "path": kv_src.path, "sha256": kv_src.sha256},
            "limits": "DistServe vLLM baseline flags, LLMServe/DistServe commit 8f13114 "
                      "(--max-num-batched-tokens 16384 --max-num-seqs 1024 "
                      "--block-size 16)",
            "calibration": {
                "against": "DistServe vLLM runs vllm-{100-1,200-2,300-3} (dynasim validate)",
                **cal,
                "method": "see dynasim.profiles.distserve.distserve_opt13b_a100 docstring"},
            "license": "Apache-2.0 (DistServe)",
        })
