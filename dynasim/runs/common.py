"""What every recorded-run reader returns: a :class:`RecordedRun`.

A recorded run is a real vLLM server's run of a known load: the project's
:class:`~dynasim.trace.Trace` of what the server was sent (arrival = the client's send
time, seconds since the first send; prompt tokens as the server counted them where the
source records that; output tokens generated, or asked for when the request failed)
and a *measured* record table in the schema of :mod:`dynasim.data_record` (the same
columns a simulation or a replay writes), so that :mod:`replay.compare` compares a
simulation with it as with a replay.

Conventions shared by the readers:

* ``arrival_time`` is the client's send time (what the server saw), seconds since the
  first request's send; ``ttft`` and ``e2e_latency`` are from that send, as
  ``vllm bench serve`` and inference-perf measure them (client clock).
* a request the client gave up on (a timeout) or that failed has a non-empty
  ``error``; its trace lengths are the ones asked for when the source records them,
  else imputed (``imputed`` column True) from the run's successful requests.
* the trace's extra columns: ``client_timeout_s`` (NaN: none recorded), ``imputed``;
  where the client capped its requests in flight, ``scheduled_time`` (when it meant to
  send, s on the trace clock) and ``client_max_concurrency`` (the cap), which
  :mod:`dynasim.runs.client` simulates as a closed loop (``dynasim validate``,
  ``dynasim calibrate --from-runs``); ``dynasim simulate`` of an exported trace replays
  the recorded sends open loop.

Bad input (a missing column, a non-number, times going backwards) raises
:class:`~dynasim.errors.InputError` naming the file, line and field.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from dynasim.data_record import COLUMNS, with_latencies
from dynasim.errors import InputError
from dynasim.trace import Trace


@dataclass
class RecordedRun:
    """One recorded run of a real vLLM server.

    Attributes:
        name: the run's name (``dynasim validate --runs NAME``, ``recorded:NAME``).
        source: where it comes from (repository and path), for tables.
        trace: what was sent (:class:`~dynasim.trace.Trace`, module conventions).
        measured: the measured records, :data:`dynasim.data_record.COLUMNS`, one row
            per trace row, same ``request_id``.
        engine: the server's settings as recorded: ``vllm_version``, ``model``,
            ``gpu``, ``tensor_parallel_size``, ``max_num_seqs``,
            ``max_num_batched_tokens``, ``num_gpu_blocks``, ``block_size``,
            ``max_model_len``, ``enable_prefix_caching`` (absent keys: not recorded).
        published: the source's own simulator error on this run where published
            (``{"e2e_mean": 0.005, ...}`` fractions, keyed ``METRIC_STAT``), else empty.
        chunks: per-chunk times where recorded (``request_id``, ``time`` in s on the
            trace clock, ``chunk_index``), else ``None``.
    """

    name: str
    source: str
    trace: Trace
    measured: pd.DataFrame
    engine: dict = field(default_factory=dict)
    published: dict = field(default_factory=dict)
    chunks: pd.DataFrame | None = None

    def summary(self) -> dict:
        """The ``summary.json`` of the run as a run folder (:func:`write_run_dir`);
        ``trace`` is the file name :func:`dynasim.runs.export_run` writes the trace to,
        so that ``dynasim compare`` accepts a simulation of that file."""
        return {"trace": f"recorded-{self.name}.jsonl", "recorded": True, "source": self.source,
                "num_requests": len(self.trace), "engine": self.engine,
                "failed": int((self.measured["error"] != "").sum())}


def measured_records(arrival: np.ndarray, first: np.ndarray, finish: np.ndarray,
                     prompt: np.ndarray, output: np.ndarray,
                     error: list[str] | np.ndarray) -> pd.DataFrame:
    """The measured record table (:data:`~dynasim.data_record.COLUMNS`) from per-request
    arrays on the trace clock (seconds): send, first-token and last-token times, prompt
    and output tokens, error text (empty when served). Failed requests get NaN times
    where the source has none and 0 output tokens, as the simulator writes them."""
    err = np.asarray(error, dtype=object).astype(str)
    failed = err != ""
    df = pd.DataFrame({
        "request_id": np.arange(len(arrival), dtype=np.int64),
        "arrival_time": np.asarray(arrival, float),
        "first_token_time": np.where(failed, np.nan, np.asarray(first, float)),
        "finish_time": np.asarray(finish, float),
        "prompt_tokens": np.asarray(prompt, np.int64),
        "output_tokens": np.where(failed, 0, np.asarray(output, np.int64)),
        "num_preemptions": 0, "error": err, "program_id": -1, "cached_tokens": 0})
    return with_latencies(df)[COLUMNS]


def make_trace(name: str, arrival: np.ndarray, prompt: np.ndarray, output: np.ndarray,
               timeout_s: float = float("nan"),
               imputed: np.ndarray | None = None) -> Trace:
    """A :class:`~dynasim.trace.Trace` named ``recorded:NAME`` (module conventions);
    ``arrival`` in seconds since the first send (shifted to start at 0)."""
    a = np.asarray(arrival, float)
    frame = pd.DataFrame({"arrival_time": a - a.min(),
                          "prompt_tokens": np.asarray(prompt, np.int64),
                          "output_tokens": np.asarray(output, np.int64),
                          "client_timeout_s": float(timeout_s),
                          "imputed": (np.zeros(len(a), bool) if imputed is None
                                      else np.asarray(imputed, bool))})
    frame.index.name = "request_id"
    return Trace(f"recorded:{name}", frame)


def require_columns(df: pd.DataFrame, columns: tuple[str, ...], source: str,
                    line: int | None = 1) -> None:
    """Raise :class:`InputError` (file, line, field) for the first missing column."""
    for col in columns:
        if col not in df.columns:
            raise InputError("missing column", source=source, line=line, field=col)


def numeric(df: pd.DataFrame, col: str, source: str, first_line: int = 2,
            integer: bool = False, minimum: float | None = None,
            lines: np.ndarray | None = None) -> np.ndarray:
    """Column ``col`` as floats; a blank, non-numeric, non-finite (or, with ``integer``,
    fractional; with ``minimum``, smaller) value raises :class:`InputError` naming its
    line (``first_line`` is the line of row 0: 2 for a CSV with a header; ``lines``, when
    given, the line of each row, for a subset of a file's rows)."""
    values = pd.to_numeric(df[col], errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if integer:
        bad |= values != np.floor(np.where(np.isfinite(values), values, 0))
    if minimum is not None:
        bad |= values < minimum
    if bad.any():
        i = int(np.argmax(bad))
        want = "an integer" if integer else "a number"
        if minimum is not None:
            want += f" >= {minimum:g}"
        line = int(lines[i]) if lines is not None else first_line + i
        raise InputError(f"expected {want}, got {df[col].iloc[i]!r}", source=source,
                         line=line, field=col)
    return values


def path_of(dataset: str) -> Path:
    """The checksum-verified local path of a registered file (:func:`dynasim.datasets.fetch`)."""
    from dynasim import datasets

    return datasets.fetch(dataset)
