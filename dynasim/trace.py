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
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from dynasim.errors import InputError, read_text

if TYPE_CHECKING:
    import pyarrow as pa

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

    Vectorised: pyarrow's JSON reader parses the whole file and the rules are checked on
    columns (about 1 s for a million lines); a file that fails any of them, or that
    holds anything the columnar path does not reproduce exactly, is read again line by
    line (:func:`_read_mooncake_lines`), which finds the first bad line and raises its
    error, so the messages are the same either way.

    Raises:
        InputError: not UTF-8, empty file, bad JSON, missing field, bad length or
            timestamp, a blank line between requests.
    """
    src = str(path)
    text = read_text(path)
    trace = _read_mooncake_columns(text, src)
    return trace if trace is not None else _read_mooncake_lines(text, src)


# a blank line between requests (JSON whitespace only; any other character on a line
# makes pyarrow fail, and then the line reader judges the file)
_BLANK_LINE = re.compile(r"\n[ \t\r]*\n")
_BLANK_FIRST = re.compile(r"[ \t\r]*\n")
_NULL_HASH_IDS = re.compile(r'"hash_ids"\s*:\s*null')


def _lengths_ok(col: pa.ChunkedArray) -> np.ndarray | None:
    """The token counts of a column as int64 if every one passes :func:`_check_length`,
    else ``None``."""
    import pyarrow as pa

    if pa.types.is_integer(col.type):
        v = col.to_numpy()
        return v.astype(np.int64) if ((v >= 1) & (v <= MAX_TOKENS)).all() else None
    if pa.types.is_floating(col.type):
        v = col.to_numpy()
        ok = np.isfinite(v) & (v >= 1) & (v <= MAX_TOKENS) & (v == np.floor(v))
        return v.astype(np.int64) if ok.all() else None
    return None


def _read_mooncake_columns(text: str, src: str) -> Trace | None:
    """The trace of a Mooncake JSONL ``text`` read by columns (pyarrow), or ``None`` when
    any rule may fail or the columns would differ from the line reader's (then
    :func:`_read_mooncake_lines` reads it and reports the first bad line). Timestamps
    are checked here (:func:`_check_times`, same messages: no blank line inside, so line
    = row + 1)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.json as pa_json

    body = text.rstrip()
    if (not body or _BLANK_FIRST.match(body) or _BLANK_LINE.search(body)
            or _NULL_HASH_IDS.search(body)):
        return None
    try:
        table = pa_json.read_json(io.BytesIO(body.encode("utf-8")))
    except (pa.ArrowException, ValueError):
        return None
    if table.num_rows != body.count("\n") + 1:  # two objects on a line, say
        return None
    names = table.column_names
    if any(f not in names or table[f].null_count for f in MOONCAKE_FIELDS):
        return None
    stamps_col = table["timestamp"]
    if not (pa.types.is_integer(stamps_col.type) or pa.types.is_floating(stamps_col.type)):
        return None
    prompt = _lengths_ok(table["input_length"])
    output = _lengths_ok(table["output_length"])
    if prompt is None or output is None:
        return None
    stamps = stamps_col.to_numpy().astype(np.float64)
    out: dict[str, object] = {"arrival_time": stamps / 1000.0, "prompt_tokens": prompt,
                              "output_tokens": output}
    extras = [c for c in names if c not in MOONCAKE_FIELDS]
    if any(c in out for c in extras):  # a key named like a column: the line reader's
        return None
    first_row = {}
    for c in extras:
        col = table[c]
        if c == "hash_ids":
            if not (pa.types.is_list(col.type) and pa.types.is_integer(col.type.value_type)):
                return None
            if pc.list_flatten(col).null_count:
                return None
            values = col.to_pylist()
            if col.null_count:
                values = [np.nan if v is None else v for v in values]
            out[c] = values
        elif (pa.types.is_integer(col.type) or pa.types.is_floating(col.type)
              or pa.types.is_string(col.type) or pa.types.is_boolean(col.type)):
            series = col.to_pandas()
            if series.dtype == object and col.null_count:
                series = series.where(series.notna(), np.nan)
            out[c] = series
        else:  # nested objects, lists, all-null keys: as the line reader keeps them
            return None
        valid = pc.is_valid(col)
        first_row[c] = (pc.index(valid, True).as_py(), c != "hash_ids")
    _check_times(stamps, src, "timestamp", 1, "ms")  # after every per-line rule
    # columns in the order the line reader's rows introduce them (hash_ids first in a row)
    order = sorted(extras, key=lambda c: first_row[c])
    frame = pd.DataFrame({k: out[k] for k in ("arrival_time", "prompt_tokens",
                                              "output_tokens", *order)})
    frame.index.name = "request_id"
    return Trace(src, frame)


def _read_mooncake_lines(text: str, src: str) -> Trace:
    """:func:`read_mooncake` line by line (the reference reader; first bad line wins)."""
    rows: list[dict] = []
    stamps: list[float] = []
    blank: int | None = None  # first blank line since the last request
    for lineno, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            blank = blank or lineno
            continue  # fine at the end of the file
        if blank is not None:
            raise InputError("blank line inside a JSONL trace", source=src, line=blank)
        try:
            obj = json.loads(line)
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
    if not extra:  # the common case, a million lines in about a second: same text
        ms = (frame["arrival_time"].to_numpy(np.float64) * 1000.0).tolist()
        lines = [f'{{"timestamp": {round(t, 3)!r}, "input_length": {p}, '
                 f'"output_length": {o}}}\n'
                 for t, p, o in zip(ms, frame["prompt_tokens"].astype(np.int64).tolist(),
                                    frame["output_tokens"].astype(np.int64).tolist())]
        with open(path, "w", encoding="utf-8") as f:
            f.write("".join(lines))
        return
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
