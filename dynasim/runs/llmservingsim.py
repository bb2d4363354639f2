"""Reader of LLMServingSim's vLLM 0.19.0 validation runs: 300 ShareGPT requests at
~10 req/s on an RTX 4090 (Llama-3.1-8B, TP 1) and on two RTX PRO 6000 (Qwen3-32B, TP 2).

Source: casys-kaist/LLMServingSim ``bench/examples/<hw>/<model>/`` at commit 5daddb2
(MIT); datasets ``llmservingsim-<run>-{requests,meta,summary}`` in
:mod:`dynasim.datasets`.

``vllm/requests.jsonl``: per request ``request_id``, ``input_toks``, ``output_toks``
(engine counts), ``arrival_time`` (client wall clock), ``queued_ts``, ``scheduled_ts``,
``first_token_ts``, ``last_token_ts`` (engine monotonic clock, s; vLLM's
``RequestStateStats``). The engine clock is the trace clock here: arrival = ``queued_ts``
(the engine queue; LLMServingSim's ``bench/README.md`` defines TTFT = first token -
arrival, and its reported TTFT mean equals first token - ``queued_ts``), so the
simulation runs with no front-end latency for these runs.

``vllm/meta.json``: the engine's resolved settings (``engine_kwargs``; ``kv_cache.
num_gpu_blocks`` where recorded). The Qwen3-32B run does not record its KV cache; it is
estimated from the GPU's memory (:data:`QWEN3_32B_TP2_BLOCKS`).

``validation/summary.txt``: LLMServingSim's own error per metric (``Diff%`` of TTFT,
TPOT and latency means and percentiles) on the same run, reported as ``published``.
"""

from __future__ import annotations

import json
import math
import re

import numpy as np
import pandas as pd

from dynasim.errors import InputError, read_text
from dynasim.runs.common import RecordedRun, make_trace, measured_records, path_of

RUNS = {"llmservingsim-rtx4090-llama3.1-8b": ("rtx4090-llama3.1-8b", "RTX-4090-24GB"),
        "llmservingsim-rtxpro6000-qwen3-32b": ("rtxpro6000-qwen3-32b",
                                               "RTX-PRO-6000-Blackwell-96GB")}
FIELDS = ("input_toks", "output_toks", "queued_ts", "first_token_ts", "last_token_ts")

QWEN3_32B_TP2_BLOCKS = 26000
"""KV blocks (16 tokens) of Qwen3-32B at TP 2 on RTX PRO 6000 (not in its meta.json):
(0.9 x 102.6 GB - 32.8 GB of bf16 weights per GPU - ~4 GB activations and graphs)
/ 131,072 B per token per GPU (64 layers x 4 KV heads x 128 x 2 x 2 B) ~ 424k tokens,
rounded down. 300 requests of ~1,500 tokens never fill it (128 seats), so the estimate
does not move latency."""

_SUMMARY_ROW = re.compile(r"^(TTFT|TPOT|Latency)\s+(Mean|Median|P90|P95|P99)\s+"
                          r"(\S+)\s+(\S+)\s+([+-]?[\d.]+)%\s*$")


def read_requests(path: str, name: str = "llmservingsim") -> RecordedRun:
    """``requests.jsonl`` as a :class:`RecordedRun` (module docstring).

    Raises:
        InputError: bad JSON, a missing or non-numeric field, a first token before the
            queue time or a last token before the first (file, line, field).
    """
    rows = []
    for lineno, text in enumerate(read_text(path).split("\n"), start=1):
        if not text.strip():
            continue
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", source=path, line=lineno) from None
        if not isinstance(obj, dict):
            raise InputError("a line must be a JSON object", source=path, line=lineno)
        for key in FIELDS:
            v = obj.get(key)
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise InputError(f"missing or not a number: {v!r}", source=path, line=lineno,
                                 field=key)
        for key in ("input_toks", "output_toks"):
            if obj[key] < 1 or obj[key] != int(obj[key]):
                raise InputError(f"token count {obj[key]!r} must be an integer >= 1",
                                 source=path, line=lineno, field=key)
        for a, b in (("queued_ts", "first_token_ts"), ("first_token_ts", "last_token_ts")):
            if obj[b] < obj[a]:
                raise InputError(f"{obj[b]} is before {a} {obj[a]}", source=path,
                                 line=lineno, field=b)
        rows.append({k: obj[k] for k in FIELDS} | {"line": lineno})
    if not rows:
        raise InputError("no requests", source=path)
    df = pd.DataFrame(rows).sort_values("queued_ts", kind="stable").reset_index(drop=True)
    t0 = df["queued_ts"].iloc[0]
    arrival = df["queued_ts"].to_numpy() - t0
    prompt, output = df["input_toks"].to_numpy(np.int64), df["output_toks"].to_numpy(np.int64)
    trace = make_trace(name, arrival, prompt, output)
    measured = measured_records(arrival, df["first_token_ts"].to_numpy() - t0,
                                df["last_token_ts"].to_numpy() - t0, prompt, output,
                                [""] * len(df))
    return RecordedRun(name, f"casys-kaist/LLMServingSim {path}", trace, measured)


def read_summary(path: str) -> dict[str, float]:
    """LLMServingSim's ``summary.txt``: ``{"ttft_mean": 0.006, "e2e_median": ...}``,
    its (sim - vLLM) / vLLM per metric as fractions (``Latency`` is ``e2e``).

    Raises:
        InputError: no metric row in the file.
    """
    out = {}
    for line in read_text(path).splitlines():
        m = _SUMMARY_ROW.match(line.strip())
        if m:
            metric = {"TTFT": "ttft", "TPOT": "tpot", "Latency": "e2e"}[m.group(1)]
            out[f"{metric}_{m.group(2).lower()}"] = float(m.group(5)) / 100.0
    if not out:
        raise InputError("no 'METRIC STAT vLLM Sim Diff%' row", source=path)
    return out


def read_meta(path: str, gpu: str) -> dict:
    """``meta.json`` as the engine keys of :class:`RecordedRun`.

    Raises:
        InputError: bad JSON or no ``engine_kwargs``.
    """
    try:
        meta = json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", source=path, line=exc.lineno) from None
    kw = meta.get("engine_kwargs") if isinstance(meta, dict) else None
    if not isinstance(kw, dict):
        raise InputError("missing", source=path, field="engine_kwargs")
    kv = meta.get("kv_cache") or {}
    blocks = kv.get("num_gpu_blocks")
    return {"vllm_version": meta.get("vllm_version", ""), "model": kw.get("model", ""),
            "gpu": gpu, "tensor_parallel_size": kw.get("tensor_parallel_size", 1),
            "max_num_seqs": kw.get("max_num_seqs", 256),
            "max_num_batched_tokens": kw.get("max_num_batched_tokens", 2048),
            "num_gpu_blocks": blocks or QWEN3_32B_TP2_BLOCKS,
            "num_gpu_blocks_estimated": blocks is None,
            "block_size": kv.get("block_size", 16),
            "max_model_len": kw.get("max_model_len"),
            "enable_prefix_caching": kv.get("enable_prefix_caching", True)}


def read(name: str) -> RecordedRun:
    """The LLMServingSim run ``name`` (a key of :data:`RUNS`).

    Raises:
        InputError: unknown name, or a bad file.
    """
    if name not in RUNS:
        raise InputError(f"unknown LLMServingSim run (known: {', '.join(RUNS)})",
                         source=name)
    stem, gpu = RUNS[name]
    run = read_requests(str(path_of(f"llmservingsim-{stem}-requests")), name)
    run.engine = read_meta(str(path_of(f"llmservingsim-{stem}-meta")), gpu)
    run.published = read_summary(str(path_of(f"llmservingsim-{stem}-summary")))
    run.source = f"casys-kaist/LLMServingSim bench/examples ({stem})"
    return run
