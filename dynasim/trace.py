"""Request traces: read Mooncake JSONL and Azure 2023 CSV, write Mooncake JSONL.

A :class:`Trace` is a table with one row per request, in file order. ``request_id`` is the
0-based line index of the request in the input trace (header lines not counted).

Columns (units): ``arrival_time`` (seconds since the first request of the file),
``prompt_tokens`` (tokens, >= 1), ``output_tokens`` (tokens, >= 1), and optionally
``hash_ids`` (list of ids of shared 512-token prefix blocks, Mooncake). Extra keys of a
Mooncake line are kept as further columns and written back.

Rules checked on read, each failing with an :class:`~dynasim.errors.InputError` naming
file, line and field: the file is UTF-8 text and not empty; every required field is
present; lengths are finite integers in 1..:data:`MAX_TOKENS` (vLLM rejects ``max_tokens
< 1`` and empty prompts); timestamps are finite, >= 0, and never go backwards (reported in
the file's unit: ms for Mooncake). Blank lines at the end of a JSONL file are ignored;
a blank line between requests is refused.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from dynasim.errors import InputError, read_text

MAX_TOKENS = 2**31 - 1
"""Largest token count accepted (int32, far above any model's context length)."""
MOONCAKE_FIELDS = ("timestamp", "input_length", "output_length")
AZURE_FIELDS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


@dataclass
class Trace:
    """A request trace. ``frame`` is indexed by ``request_id`` (see module docstring)."""

    source: str
    frame: pd.DataFrame

    def __len__(self) -> int:
        return len(self.frame)

    def head(self, n: int) -> Trace:
        """The first ``n`` requests, ids unchanged."""
        return Trace(self.source, self.frame.iloc[:n].copy())


def _check_length(value: object, src: str, line: int, field: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise InputError(f"expected an integer token count, got {value!r}",
                         source=src, line=line, field=field)
    if isinstance(value, float) and (math.isnan(value) or math.isinf(value)):
        raise InputError(f"token count is {value}", source=src, line=line, field=field)
    if value != int(value):
        raise InputError(f"token count {value} is not an integer",
                         source=src, line=line, field=field)
    if value < 1:
        raise InputError(f"token count {value} must be >= 1", source=src, line=line,
                         field=field)
    if value > MAX_TOKENS:
        raise InputError(f"token count {value} is larger than {MAX_TOKENS}", source=src,
                         line=line, field=field)
    return int(value)


def _check_times(times: np.ndarray, src: str, field: str, first_line: int,
                 unit: str) -> None:
    """Finite, >= 0, never backwards; ``times`` and messages in the file's ``unit``."""
    bad = ~np.isfinite(times)
    if bad.any():
        i = int(np.argmax(bad))
        raise InputError(f"timestamp is {times[i]}", source=src, line=first_line + i,
                         field=field)
    if len(times) and times[0] < 0:
        raise InputError(f"timestamp {times[0]:g} {unit} is negative", source=src,
                         line=first_line, field=field)
    back = np.diff(times) < 0
    if back.any():
        i = int(np.argmax(back)) + 1
        raise InputError(f"timestamp goes backwards ({times[i]:g} {unit} after "
                         f"{times[i - 1]:g} {unit})", source=src, line=first_line + i,
                         field=field)


def read_mooncake(path: str | Path) -> Trace:
    """Read a Mooncake JSONL trace (``timestamp`` ms, ``input_length``, ``output_length``,
    optional ``hash_ids``; other keys kept).

    Raises:
        InputError: not UTF-8, empty file, bad JSON, missing field, bad length or
            timestamp, a blank line between requests.
    """
    src = str(path)
    rows: list[dict] = []
    stamps: list[float] = []
    blank: int | None = None  # first blank line since the last request
    for lineno, text in enumerate(read_text(path).split("\n"), start=1):
        if not text.strip():
            blank = blank or lineno
            continue  # fine at the end of the file
        if blank is not None:
            raise InputError("blank line inside a JSONL trace", source=src, line=blank)
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InputError(f"not valid JSON ({exc.msg})", source=src,
                             line=lineno) from None
        if not isinstance(obj, dict):
            raise InputError("a line must be a JSON object", source=src, line=lineno)
        for field in MOONCAKE_FIELDS:
            if field not in obj:
                raise InputError("missing", source=src, line=lineno, field=field)
        ts = obj.pop("timestamp")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)):
            raise InputError(f"expected a number of milliseconds, got {ts!r}",
                             source=src, line=lineno, field="timestamp")
        try:
            stamps.append(float(ts))
        except OverflowError:
            raise InputError(f"timestamp {ts} ms is too large", source=src, line=lineno,
                             field="timestamp") from None
        row = {"arrival_time": stamps[-1] / 1000.0,
               "prompt_tokens": _check_length(obj.pop("input_length"), src, lineno,
                                              "input_length"),
               "output_tokens": _check_length(obj.pop("output_length"), src, lineno,
                                              "output_length")}
        if "hash_ids" in obj:
            ids = obj.pop("hash_ids")
            if not isinstance(ids, list) or not all(
                    isinstance(x, int) and not isinstance(x, bool) for x in ids):
                raise InputError("expected a list of integer block ids", source=src,
                                 line=lineno, field="hash_ids")
            row["hash_ids"] = ids
        row.update(obj)
        rows.append(row)
    if not rows:
        raise InputError("empty trace: no requests", source=src)
    _check_times(np.array(stamps), src, "timestamp", 1, "ms")
    frame = pd.DataFrame(rows)
    frame.index.name = "request_id"
    return Trace(src, frame)


def read_azure(path: str | Path) -> Trace:
    """Read an Azure LLM inference trace 2023 CSV (``TIMESTAMP,ContextTokens,
    GeneratedTokens``); arrival times are seconds since the first row's timestamp.

    Raises:
        InputError: not UTF-8, empty file, missing column or value, bad length or
            timestamp.
    """
    src = str(path)
    text = read_text(path)
    try:
        raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False)
    except pd.errors.EmptyDataError:
        raise InputError("empty trace: no header and no requests", source=src) from None
    for field in AZURE_FIELDS:
        if field not in raw.columns:
            raise InputError("missing column in the header", source=src, line=1,
                             field=field)
    if raw.empty:
        raise InputError("empty trace: a header but no requests", source=src)
    for field in AZURE_FIELDS:
        empty = (raw[field].str.strip() == "").to_numpy()
        if empty.any():
            raise InputError("missing value", source=src, line=int(np.argmax(empty)) + 2,
                             field=field)
    stamps = pd.to_datetime(raw["TIMESTAMP"], errors="coerce", format="mixed")
    if stamps.isna().any():
        i = int(np.argmax(stamps.isna().to_numpy()))
        raise InputError(f"not a timestamp: {raw['TIMESTAMP'].iloc[i]!r}", source=src,
                         line=i + 2, field="TIMESTAMP")
    times = (stamps - stamps.iloc[0]).dt.total_seconds().to_numpy()
    _check_times(times, src, "TIMESTAMP", 2, "s after the first row")
    out = {"arrival_time": times}
    for field, col in (("ContextTokens", "prompt_tokens"), ("GeneratedTokens", "output_tokens")):
        values = pd.to_numeric(raw[field], errors="coerce").to_numpy(dtype=float)
        ok = np.isfinite(values) & (values >= 1) & (values == np.floor(values)) \
            & (values <= MAX_TOKENS)
        if not ok.all():
            i = int(np.argmax(~ok))
            raise InputError(f"token count {raw[field].iloc[i]!r} must be an integer in "
                             f"1..{MAX_TOKENS}",
                             source=src, line=i + 2, field=field)
        out[col] = values.astype(np.int64)
    frame = pd.DataFrame(out)
    frame.index.name = "request_id"
    return Trace(src, frame)


def read_trace(name_or_path: str) -> Trace:
    """Read a trace by dataset name (see :data:`dynasim.datasets.TRACES`) or by path;
    ``.jsonl`` is Mooncake format, ``.csv`` Azure 2023 format.

    Raises:
        InputError: unknown name, missing file, unknown suffix, or any read error.
    """
    from dynasim import datasets

    if name_or_path in datasets.REGISTRY:
        if name_or_path not in datasets.TRACES:
            raise InputError(f"dataset is not a request trace (traces: "
                             f"{', '.join(datasets.TRACES)})", source=name_or_path)
        path = datasets.fetch(name_or_path)
        trace = read_trace(str(path))
        trace.source = name_or_path
        return trace
    path = Path(name_or_path)
    if not path.is_file():
        raise InputError("no such trace file, and not a dataset name (names: "
                         f"{', '.join(datasets.TRACES)})", source=name_or_path)
    if path.suffix == ".jsonl":
        return read_mooncake(path)
    if path.suffix == ".csv":
        return read_azure(path)
    raise InputError("unknown trace format: expected .jsonl (Mooncake) or .csv (Azure 2023)",
                     source=name_or_path)


def write_mooncake(trace: Trace, path: str | Path) -> None:
    """Write ``trace`` as Mooncake JSONL: ``timestamp`` in ms (rounded to 1 µs), lengths,
    ``hash_ids`` when present, and extra columns as extra keys."""
    frame = trace.frame
    extra = [c for c in frame.columns if c not in ("arrival_time", "prompt_tokens",
                                                   "output_tokens")]
    with open(path, "w", encoding="utf-8") as f:
        for row in frame.itertuples(index=False):
            d = row._asdict()
            obj = {"timestamp": round(d["arrival_time"] * 1000.0, 3),
                   "input_length": int(d["prompt_tokens"]),
                   "output_length": int(d["output_tokens"])}
            for c in extra:
                v = d[c]
                if not isinstance(v, (list, tuple, np.ndarray)) and pd.isna(v):
                    continue  # key absent on this line
                if isinstance(v, np.generic):
                    v = v.item()
                obj[c] = list(v) if isinstance(v, (list, tuple, np.ndarray)) else v
            f.write(json.dumps(obj) + "\n")
