"""Reader of the BLIS training runs: vLLM 0.15.1 on H100-SXM driven by inference-perf
(Llama-2-7b TP 1, Llama-2-70b TP 4, Mixtral-8x7B TP 2; general, codegen, roleplay and
a Mixtral reasoning workload; constant-rate stages, e.g. 8 then 20 req/s for 600 s each).

Source: inference-sim/training ``replay_data/`` at commit c4f0340 (deleted later), the
data the BLIS simulator (inference-sim) learns its coefficients from. Per run two files,
datasets ``blis-<run>`` and ``blis-<run>-ground-truth`` in :mod:`dynasim.datasets`:

* ``<exp>.json``: ``config`` (``tensor_parallelism``, ``max_num_seqs``,
  ``max_num_batched_tokens``, ``kv_blocks_total_gpu``, ``block_size``),
  ``model_config`` (architecture), ``model_id``, ``split`` (BLIS's train/validate),
  ``requests``: ``index``, ``arrival_time_us`` (µs since the first send),
  ``input_tokens``, ``output_tokens`` (as the client's tokenizer counted the prompt and
  the streamed tokens), ``has_error``;
* ``<exp>_ground_truth.json``: per ``index``, ``ttft_s``, ``e2e_s`` (client clock, from
  the send), ``has_error``.

Failed requests are client timeouts (their ``e2e_s`` sits at inference-perf's
timeout; the reasoning run loses most of its requests this way) and record 0 tokens,
as do a few served ones (0 tokens counted, a normal E2E): the trace gives both the
median prompt (and, without ``output_len``, output) length of the run's requests with
counts (``imputed``); ``client_timeout_s`` is the smallest ``e2e_s`` among them, rounded down to a
second (the timeout is not written anywhere else).

Output lengths: the client counts streamed events, and in 15-45% of the served requests
of a run it records fewer output tokens (2 to ~240) than were generated: every
workload runs with ``ignore_eos`` and one ``output_len`` (inference-perf's
``profile.yaml``, dataset ``blis-<run>-profile``, from ``default_args/`` at commit
ed5c1d2), and such a request's decode takes as long as a full one's (codegen 7b:
median 2.07 s for counts under 50 and for counts of 247-250). So with ``ignore_eos``
every request's output is ``output_len`` (the client's count is kept as
``counted_output_tokens``). Without it (:func:`read_files` called without
``output_len``), a served request whose (E2E - TTFT) per counted token exceeds
:data:`UNDERCOUNT_TPOT` times the run's median is imputed like a failed one.

BLIS's own error on held-out runs of this kind (its README): 6.7% median E2E, 17.6%
median TTFT, reported per run as ``published`` (an aggregate, not this run's figure).
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd

from dynasim.errors import InputError, read_text
from dynasim.runs.common import RecordedRun, make_trace, measured_records, path_of

#: run name -> experiment folder name in ``replay_data/``
EXPERIMENTS = {
    "blis-llama2-7b-codegen": "20260217-155451-llama-2-7b-tp1-codegen",
    "blis-llama2-7b-roleplay": "20260217-162547-llama-2-7b-tp1-roleplay",
    "blis-llama2-7b-general": "20260217-231439-llama-2-7b-tp1-general",
    "blis-llama2-70b-general": "20260217-202857-llama-2-70b-tp4-general",
    "blis-llama2-70b-codegen": "20260217-203421-llama-2-70b-hf-tp4-codegen",
    "blis-llama2-70b-roleplay": "20260218-084319-llama-2-70b-tp4-roleplay",
    "blis-mixtral-codegen": "20260218-120914-mixtral-8x7b-v0-1-tp2-codegen",
    "blis-mixtral-general": "20260218-130541-mixtral-8x7b-v0-1-tp2-general",
    "blis-mixtral-reasoning": "20260218-135247-mixtral-8x7b-v0-1-tp2-reasoning",
    "blis-mixtral-roleplay": "20260218-141024-mixtral-8x7b-v0-1-tp2-roleplay"}
RUNS = tuple(EXPERIMENTS)

#: BLIS's published held-out error (inference-sim README), fractions
PUBLISHED = {"e2e_median": 0.067, "ttft_median": 0.176}
UNDERCOUNT_TPOT = 3.0
"""A served request whose time per counted output token exceeds this multiple of the
run's median is taken as an undercounted stream (module docstring)."""
REQUEST_KEYS = ("index", "arrival_time_us", "input_tokens", "output_tokens", "has_error")
TRUTH_KEYS = ("index", "ttft_s", "e2e_s", "has_error")
CONFIG_KEYS = ("tensor_parallelism", "max_num_seqs", "max_num_batched_tokens",
               "kv_blocks_total_gpu", "block_size")


def _json(path: str) -> object:
    try:
        return json.loads(read_text(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON ({exc.msg})", source=path,
                         line=exc.lineno) from None


def _items(obj: object, keys: tuple[str, ...], path: str, where: str) -> pd.DataFrame:
    """A list of dicts with ``keys`` as a frame; the first bad item raises InputError
    (item number as ``where[i]``, JSON has no useful line)."""
    if not isinstance(obj, list) or not obj:
        raise InputError("expected a non-empty list", source=path, field=where)
    for i, item in enumerate(obj):
        if not isinstance(item, dict):
            raise InputError("expected an object", source=path, field=f"{where}[{i}]")
        for k in keys:
            v = item.get(k)
            if k == "ttft_s" and item.get("has_error") is True:
                continue  # a timed-out request may have no first token
            ok = isinstance(v, bool) if k == "has_error" else (
                isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
                and v >= 0)
            if not ok:
                raise InputError(f"missing or not a non-negative number: {v!r}",
                                 source=path, field=f"{where}[{i}].{k}")
    return pd.DataFrame(obj).reindex(columns=list(keys))


def read_profile(path: str) -> int | None:
    """The output length every request generated, from inference-perf's
    ``profile.yaml`` (one line of JSON): ``data.shared_prefix.output_len`` when
    ``server.ignore_eos`` is true, else ``None`` (lengths then vary with the text).

    Raises:
        InputError: not JSON, or ``ignore_eos`` without an integer ``output_len``.
    """
    prof = _json(path)
    server = prof.get("server", {}) if isinstance(prof, dict) else {}
    if not isinstance(server, dict) or server.get("ignore_eos") is not True:
        return None
    n = (prof.get("data") or {}).get("shared_prefix", {}).get("output_len")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise InputError(f"ignore_eos without an output length >= 1: {n!r}", source=path,
                         field="data.shared_prefix.output_len")
    return n


def read_files(replay_path: str, truth_path: str, name: str = "blis",
               output_len: int | None = None) -> RecordedRun:
    """One BLIS run from its two files (module docstring); ``output_len``: the length
    every request generated (:func:`read_profile`), which replaces the client's counts.

    Raises:
        InputError: bad JSON, a missing key or a bad value (naming
            ``requests[i].field``), ground truth of other requests, arrivals going
            backwards, no request with token counts.
    """
    data = _json(replay_path)
    if not isinstance(data, dict):
        raise InputError("expected a JSON object", source=replay_path)
    for key in ("config", "requests"):
        if key not in data:
            raise InputError("missing", source=replay_path, field=key)
    cfg = data["config"]
    for key in CONFIG_KEYS:
        if not isinstance(cfg.get(key), int):
            raise InputError("missing or not an integer", source=replay_path,
                             field=f"config.{key}")
    req = _items(data["requests"], REQUEST_KEYS, replay_path, "requests")
    truth = _items(_json(truth_path), TRUTH_KEYS, truth_path, "")
    if len(truth) != len(req) or (truth["index"].to_numpy() != req["index"].to_numpy()).any():
        raise InputError("ground truth lists other requests than the replay file",
                         source=truth_path, field="index")
    arrival = req["arrival_time_us"].to_numpy(float) / 1e6
    back = np.diff(arrival) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise InputError("arrival goes backwards", source=replay_path,
                         field=f"requests[{i}].arrival_time_us")
    failed = req["has_error"].to_numpy(bool) | truth["has_error"].to_numpy(bool)
    prompt = req["input_tokens"].to_numpy(np.int64)
    output = req["output_tokens"].to_numpy(np.int64)
    counted_output = output.copy()
    if output_len is not None:  # ignore_eos: the server generated output_len each time
        output = np.full(len(req), output_len, dtype=np.int64)
    unknown = failed | (prompt < 1) | (output < 1)  # a few served rows record 0 tokens
    ttft_all = pd.to_numeric(truth["ttft_s"], errors="coerce").to_numpy(float)
    e2e_all = truth["e2e_s"].to_numpy(float)
    counted = ~unknown & (output >= 2)
    tpot = np.full(len(req), np.nan)
    tpot[counted] = (e2e_all[counted] - ttft_all[counted]) / (output[counted] - 1)
    if counted.any() and output_len is None:  # undercounted streams (module docstring)
        unknown |= counted & (tpot > UNDERCOUNT_TPOT * np.nanmedian(tpot))
    timeout = float("nan")
    if unknown.any():
        known = ~unknown
        if not known.any():
            raise InputError("no request with token counts: no lengths to impute",
                             source=replay_path, field="requests")
        prompt = np.where(unknown, int(np.median(prompt[known])), prompt)
        output = np.where(unknown, int(np.median(output[known])), output)
    if failed.any():
        timeout = float(math.floor(truth["e2e_s"].to_numpy()[failed].min()))
    ttft = pd.to_numeric(truth["ttft_s"], errors="coerce").to_numpy(float)
    e2e = truth["e2e_s"].to_numpy(float)
    err = np.where(failed, f"client timeout ({timeout:g} s)", "")
    trace = make_trace(name, arrival, prompt, output, timeout, unknown)
    trace.frame["counted_output_tokens"] = counted_output
    measured = measured_records(arrival - arrival.min(), arrival - arrival.min() + ttft,
                                arrival - arrival.min() + e2e, prompt, output, err)
    engine = {"vllm_version": "0.15.1", "model": data.get("model_id", ""),
              "gpu": "H100-SXM-80GB", "tensor_parallel_size": cfg["tensor_parallelism"],
              "max_num_seqs": cfg["max_num_seqs"],
              "max_num_batched_tokens": cfg["max_num_batched_tokens"],
              "num_gpu_blocks": cfg["kv_blocks_total_gpu"], "block_size": cfg["block_size"],
              "max_model_len": 4096, "enable_prefix_caching": True,
              "model_config": data.get("model_config", {}), "split": data.get("split", "")}
    return RecordedRun(name, f"inference-sim/training {replay_path}", trace, measured,
                       engine, dict(PUBLISHED))


def read(name: str) -> RecordedRun:
    """The BLIS run ``name`` (a key of :data:`EXPERIMENTS`).

    Raises:
        InputError: unknown name, or a bad file (:func:`read_files`).
    """
    if name not in EXPERIMENTS:
        raise InputError(f"unknown BLIS run (known: {', '.join(RUNS)})", source=name)
    short = EXPERIMENTS[name][16:]
    run = read_files(str(path_of(f"blis-{short}")), str(path_of(f"blis-{short}-ground-truth")),
                     name, read_profile(str(path_of(f"blis-{short}-profile"))))
    run.source = f"inference-sim/training replay_data/{EXPERIMENTS[name]}"
    return run
