"""Reader of the residency-vllm runs: stock vLLM 0.23.0 serving Qwen3-14B (BF16, TP 1) on
one H100-80GB, Poisson arrivals for 600 s per point.

Source: inference-sim/residency-vllm, commit 2641b57 (``results/sweep_rate/agg_{2,4,6,8}
rps/vanilla/`` with 1024-token prompts and 128 output tokens; ``results/w7_sweep/
agg{6,12}/`` with half 256-, half 4096-token prompts; ``server_config.json``). The files
are datasets ``residency-qwen3-14b-*`` in :mod:`dynasim.datasets`.

``trace.csv`` (one row per request; times in µs): ``arrival_time_us`` (the Poisson
schedule, µs since the run's start), ``send_time_us``, ``first_chunk_time_us``,
``last_chunk_time_us`` (client wall clock), ``server_input_tokens`` (the prompt as the
server tokenised it, chat template included), ``output_tokens`` (``max_tokens``; every
request finished by ``length``), ``status`` (``ok`` or an error), ``error_message``.
Under saturation (w7 agg12) the driver's send lags the schedule by up to 4 minutes:
the server saw the send, so the trace's arrival is the send time and TTFT/E2E are from
it (as ``requests.csv`` computes them). Rows are put in send order; ``request_id`` is
that order, ``source_request_id`` the file's id.

The send lags because the driver, ``blis observe``, keeps at most 256 requests in flight
(its ``--max-concurrency`` default; the run has exactly 256 in flight from 40 s on and
each late send follows a response's end by 0.06 ms, median): the trace carries the
schedule too (``scheduled_time``: ``arrival_time_us`` on the trace clock, the first
send's schedule at 0) and the cap (``client_max_concurrency``), which
:mod:`dynasim.runs.client` simulates as a closed loop. A ``trace.csv`` without
``arrival_time_us`` gets neither (open loop on the sends).

``trace.itl.csv`` (the 2 req/s run): ``request_id, chunk_index, timestamp_us`` of every
streamed chunk; chunk 0 carries the role, chunks 1..128 one token each, so the gap
between chunk ``k`` and ``k+1`` (``k >= 1``) is one decode step of the server.

Server (``server_config.json``): 18,038 KV blocks of 16 tokens, 8192 batched tokens,
chunked prefill, prefix caching; ``max_num_seqs`` 256 (vLLM's default, per the
experiment docs).
"""

from __future__ import annotations

import io
import json

import numpy as np
import pandas as pd

from dynasim.errors import InputError, read_text
from dynasim.runs.client import BLIS_OBSERVE_MAX_CONCURRENCY, CAP, SCHEDULE
from dynasim.runs.common import (
    RecordedRun,
    make_trace,
    measured_records,
    numeric,
    path_of,
    require_columns,
)

#: run name -> dataset-name stem (``residency-qwen3-14b-STEM-trace`` / ``-itl``)
RUNS = {"residency-rate2": "rate2", "residency-rate4": "rate4", "residency-rate6": "rate6",
        "residency-rate8": "rate8", "residency-w7-agg6": "w7-agg6",
        "residency-w7-agg12": "w7-agg12"}

TRACE_COLUMNS = ("request_id", "server_input_tokens", "output_tokens", "send_time_us",
                 "first_chunk_time_us", "last_chunk_time_us", "status")
ITL_COLUMNS = ("request_id", "chunk_index", "timestamp_us")


def read_csv(path: str, columns: tuple[str, ...]) -> pd.DataFrame:
    """A CSV file as strings, with ``columns`` required (InputError naming the file)."""
    try:
        df = pd.read_csv(io.StringIO(read_text(path)), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError("empty file: no header", source=path) from None
    require_columns(df, columns, path)
    if df.empty:
        raise InputError("a header but no requests", source=path)
    return df


def read_trace_csv(path: str, name: str = "residency",
                   max_concurrency: int | None = BLIS_OBSERVE_MAX_CONCURRENCY) -> RecordedRun:
    """One residency ``trace.csv`` as a :class:`RecordedRun` (module docstring);
    ``max_concurrency``: the driver's in-flight cap (``None``: none), kept with the
    schedule when the file has ``arrival_time_us``.

    Raises:
        InputError: missing column; a blank, non-numeric or negative value; a first
            chunk before the send or a last chunk before the first (file, line, field).
    """
    raw = read_csv(path, TRACE_COLUMNS)
    send = numeric(raw, "send_time_us", path, minimum=0)
    ok = (raw["status"].str.strip() == "ok").to_numpy()
    first = np.full(len(raw), np.nan)
    last = np.full(len(raw), np.nan)
    okf = raw[ok]
    lines = np.arange(len(raw)) + 2
    first[ok] = numeric(okf, "first_chunk_time_us", path, minimum=0, lines=lines[ok])
    last[ok] = numeric(okf, "last_chunk_time_us", path, minimum=0, lines=lines[ok])
    for a, b, col in ((send, first, "first_chunk_time_us"),
                      (first, last, "last_chunk_time_us")):
        bad = ok & (b < a)
        if bad.any():
            i = int(np.argmax(bad))
            raise InputError(f"{b[i]:g} us is before {a[i]:g} us", source=path,
                             line=int(lines[i]), field=col)
    prompt = numeric(raw, "server_input_tokens", path, integer=True, minimum=1)
    output = numeric(raw, "output_tokens", path, integer=True, minimum=1)
    order = np.argsort(send, kind="stable")
    t0 = send[order[0]]
    sec = lambda x: (x[order] - t0) / 1e6  # noqa: E731  µs -> s on the trace clock
    err = np.where(ok, "", "client: " + raw.get("error_message", raw["status"])
                   .astype(str).to_numpy())[order]
    trace = make_trace(name, sec(send), prompt[order], output[order])
    trace.frame["source_request_id"] = raw["request_id"].to_numpy()[order]
    if "arrival_time_us" in raw.columns and max_concurrency is not None:
        sched = numeric(raw, "arrival_time_us", path, minimum=0)[order] / 1e6
        trace.frame[SCHEDULE] = np.maximum(sched - sched[0], 0.0)
        trace.frame[CAP] = int(max_concurrency)
    measured = measured_records(sec(send), sec(first), sec(last), prompt[order],
                                output[order], err)
    measured.loc[~ok[order], "finish_time"] = np.nan
    return RecordedRun(name, f"inference-sim/residency-vllm {path}", trace, measured)


def read_itl_csv(path: str, run: RecordedRun) -> pd.DataFrame:
    """Per-chunk times of ``run`` from ``trace.itl.csv``: columns ``request_id`` (the
    run's, i.e. send order), ``chunk_index``, ``time`` (s on the run's trace clock).

    Raises:
        InputError: missing column, bad number, a request id not in the run, chunk
            times going backwards within a request.
    """
    raw = read_csv(path, ITL_COLUMNS)
    src_id = numeric(raw, "request_id", path, integer=True, minimum=0).astype(np.int64)
    idx = numeric(raw, "chunk_index", path, integer=True, minimum=0).astype(np.int64)
    ts = numeric(raw, "timestamp_us", path, minimum=0)
    ids = pd.to_numeric(run.trace.frame["source_request_id"]).to_numpy(np.int64)
    to_run = pd.Series(np.arange(len(ids)), index=ids)
    unknown = ~np.isin(src_id, ids)
    if unknown.any():
        i = int(np.argmax(unknown))
        raise InputError(f"request {src_id[i]} is not in the run's trace.csv", source=path,
                         line=i + 2, field="request_id")
    rid = to_run.loc[src_id].to_numpy()
    # the trace clock: the run's first send (arrival 0) in µs
    # the trace clock: chunk 0 is the first chunk trace.csv times (first_token_time)
    first_rows = (idx == 0) & np.isfinite(run.measured["first_token_time"].to_numpy()[rid])
    if not first_rows.any():
        raise InputError("no chunk 0 of a served request: cannot align the clocks",
                         source=path, field="chunk_index")
    j = int(np.argmax(first_rows))
    t0_us = ts[j] - 1e6 * run.measured["first_token_time"].iloc[rid[j]]
    df = pd.DataFrame({"request_id": rid, "chunk_index": idx, "time": (ts - t0_us) / 1e6,
                       "line": np.arange(len(raw)) + 2})
    df = df.sort_values(["request_id", "chunk_index"], kind="stable")
    back = (df["request_id"].diff() == 0) & (df["time"].diff() < 0)
    if back.any():
        raise InputError("chunk time goes backwards", source=path,
                         line=int(df.loc[back, "line"].iloc[0]), field="timestamp_us")
    return df.drop(columns="line").reset_index(drop=True)


def server_config() -> dict:
    """``server_config.json`` as the engine keys of :class:`RecordedRun`."""
    path = path_of("residency-qwen3-14b-server-config")
    cfg = json.loads(read_text(path))
    for key in ("vllm_version", "num_gpu_blocks", "block_size", "max_num_batched_tokens"):
        if key not in cfg:
            raise InputError("missing", source=str(path), field=key)
    return {"vllm_version": cfg["vllm_version"], "model": cfg.get("model", "Qwen/Qwen3-14B"),
            "gpu": "H100-80GB", "tensor_parallel_size": cfg.get("tensor_parallel_size", 1),
            "max_num_seqs": 256, "max_num_batched_tokens": cfg["max_num_batched_tokens"],
            "num_gpu_blocks": cfg["num_gpu_blocks"], "block_size": cfg["block_size"],
            "max_model_len": cfg.get("max_seq_len"),
            "enable_prefix_caching": cfg.get("enable_prefix_caching", True)}


def read(name: str) -> RecordedRun:
    """The residency run ``name`` (a key of :data:`RUNS`), with per-chunk times when the
    run has them.

    Raises:
        InputError: unknown name, or a bad file (see :func:`read_trace_csv`).
    """
    if name not in RUNS:
        raise InputError(f"unknown residency run (known: {', '.join(RUNS)})", source=name)
    stem = RUNS[name]
    run = read_trace_csv(str(path_of(f"residency-qwen3-14b-{stem}-trace")), name)
    run.source = f"inference-sim/residency-vllm results ({stem})"
    run.engine = server_config()
    from dynasim import datasets

    if f"residency-qwen3-14b-{stem}-itl" in datasets.REGISTRY:
        run.chunks = read_itl_csv(str(path_of(f"residency-qwen3-14b-{stem}-itl")), run)
    return run
