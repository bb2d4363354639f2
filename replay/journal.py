"""Results of a live run, written as they arrive, so that no finished measurement is lost.

Every finished request (and program) is appended at once to ``requests.jsonl``
(``programs.jsonl``) and flushed: a crash or ``kill -9`` loses nothing already measured.
Every few seconds, and at the end or on Ctrl-C, the tables are rewritten atomically
(temporary file + rename) as ``requests.parquet``, ``programs.parquet`` and
``summary.json`` (``"partial": true`` until the run completes), so a reader never sees a
half-written file. :func:`read_records` reads a run directory, preferring the JSONL logs.

Request columns: the simulator's (:data:`dynasim.data_record.COLUMNS`, same units and
definitions, ``arrival_time`` being the time the request was handed to the client's
sender: its send time unless the client-side policy queued it) plus :data:`EXTRA`.
``replica`` is the index of the server in ``--base-url``'s list (0 with one server; -1
for a request of a several-server run that was never sent to any server).
"""

from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pandas as pd

from dynasim.data_record import COLUMNS, PROGRAM_COLUMNS, json_default, with_latencies, write_atomic
from dynasim.metrics import replica_load, summarize, summarize_programs

#: Replay-only request columns (seconds on the run clock unless said):
#: ``scheduled_time`` when the trace (or the program's previous wave) made the request
#: due; ``send_time`` just before the HTTP request went out; ``client_queue_time`` time
#: spent in the client-side policy queue (``--max-concurrency``); ``dispatch_lag`` =
#: send − scheduled − client queue time (the client's own overhead); ``itl`` list of
#: inter-token latencies; ``asked_output_tokens`` the ``max_tokens`` sent;
#: ``usage_prompt_tokens`` the server's prompt count; ``priority`` the vLLM priority
#: sent (-1: none); ``http_status``; and the per-request report of a Dynasor proxy
#: (``replay.proxy.server``, the ``dynasor`` field of its final chunk): ``dynasor_probes``
#: probes evaluated, ``dynasor_tokens`` tokens it generated, ``dynasor_stopped_early``,
#: ``dynasor_stop_token`` tokens at the deciding probe (-1 / False: no report).
DYNASOR_DEFAULTS = {"dynasor_probes": -1, "dynasor_tokens": -1,
                    "dynasor_stopped_early": False, "dynasor_stop_token": -1}
EXTRA = ["scheduled_time", "send_time", "client_queue_time", "dispatch_lag", "itl",
         "asked_output_tokens", "usage_prompt_tokens", "priority", "http_status",
         *DYNASOR_DEFAULTS]


def _dump(row: dict) -> str:
    return json.dumps(row, default=json_default)


def requests_table(rows: list[dict]) -> pd.DataFrame:
    """The record table of replayed request rows (columns COLUMNS + EXTRA)."""
    if not rows:
        return pd.DataFrame({c: pd.Series(dtype=float) for c in COLUMNS + EXTRA})
    df = pd.DataFrame(rows)
    for col, default in DYNASOR_DEFAULTS.items():  # rows of runs without a proxy
        df[col] = df[col].fillna(default).astype(type(default)) if col in df else default
    df = df.sort_values("request_id", kind="stable").reset_index(drop=True)
    return with_latencies(df)[COLUMNS + EXTRA]


def error_reasons(errors: pd.Series) -> dict[str, int]:
    """Failed requests per reason, most frequent first: an error's text up to its first
    ``:`` (``HTTP 503``, ``timeout after 30 s``, ``prompt + output = ... max_model_len
    N``); ``{}`` when nothing failed (also for an empty table)."""
    err = errors.astype(str)
    err = err[(err != "") & (err != "nan")]
    return {str(k): int(v) for k, v in err.str.split(":").str[0].value_counts().items()}


def programs_table(rows: list[dict]) -> pd.DataFrame:
    """The program table of replayed program rows (columns PROGRAM_COLUMNS)."""
    if not rows:
        return pd.DataFrame(columns=PROGRAM_COLUMNS)
    df = pd.DataFrame(rows, columns=PROGRAM_COLUMNS)
    return df.sort_values("program_id", kind="stable").reset_index(drop=True)


class Journal:
    """Incremental writer of one run directory (module doc).

    Args:
        out_dir: the run directory (created).
        meta: configuration keys copied into ``summary.json``.
        goodput: SLOs in seconds (``dynasim.metrics.parse_goodput``) or ``None``.
        programs: whether the run has programs (writes ``programs.*``).
        num_replicas: servers of the run, for the summary's per-replica keys
            (:func:`dynasim.metrics.replica_load`; ``None``: highest index + 1);
            :class:`~replay.dispatcher.Replay` sets it for several servers.
    """

    def __init__(self, out_dir: str | Path, meta: dict, goodput: dict[str, float] | None = None,
                 programs: bool = False, num_replicas: int | None = None) -> None:
        self.num_replicas = num_replicas
        self.dir = Path(out_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.meta = meta
        self.goodput = goodput
        self.has_programs = programs
        self.requests: list[dict] = []
        self.programs: list[dict] = []
        self._req_log = open(self.dir / "requests.jsonl", "w")
        self._prog_log = open(self.dir / "programs.jsonl", "w") if programs else None
        self._lock = threading.Lock()  # the periodic write runs in a worker thread

    def add_request(self, row: dict) -> None:
        """Append one finished (or failed) request row and flush it to disk."""
        self.requests.append(row)
        self._req_log.write(_dump(row) + "\n")
        self._req_log.flush()

    def add_program(self, row: dict) -> None:
        """Append one finished program row and flush it to disk."""
        self.programs.append(row)
        if self._prog_log is not None:
            self._prog_log.write(_dump(row) + "\n")
            self._prog_log.flush()

    def summary(self, extra: dict | None = None, rows: list[dict] | None = None,
                prows: list[dict] | None = None) -> dict:
        """The run's summary: the simulator's keys (``dynasim.metrics``) over what has
        finished, plus dispatch-lag and ITL percentiles (ms), ``errors`` (count per
        reason, :func:`error_reasons`), ``meta`` and ``extra``. ``num_preemptions`` is
        ``None``: a client cannot see a request's preemptions (vLLM's per-request output
        has none); the caller puts the server's ``/metrics`` delta in ``extra``."""
        df = requests_table(self.requests if rows is None else rows)
        sent = df["replica"] >= 0  # -1: never sent to any server (several servers)
        if sent.all():
            out = summarize(df, self.goodput, self.num_replicas)
        else:
            out = summarize(df.drop(columns="replica"), self.goodput)
            out.update(replica_load(df[sent], self.num_replicas))
        out["num_preemptions"] = None
        if self.has_programs:
            out.update(summarize_programs(programs_table(
                self.programs if prows is None else prows)))
        ok = df[df["error"] == ""]
        lag = ok["dispatch_lag"].to_numpy(float) * 1000.0
        if len(lag):
            out["median_dispatch_lag_ms"] = float(np.median(lag))
            out["p99_dispatch_lag_ms"] = float(np.percentile(lag, 99))
            out["max_dispatch_lag_ms"] = float(lag.max())
        itl = [x for v in ok["itl"] for x in (v if isinstance(v, list) else list(v))]
        if itl:
            ms = np.asarray(itl) * 1000.0
            out["mean_itl_ms"] = float(ms.mean())
            out["median_itl_ms"] = float(np.median(ms))
            out["p99_itl_ms"] = float(np.percentile(ms, 99))
        out["errors"] = error_reasons(df["error"])
        out.update(self.meta)
        out.update(extra or {})
        return out

    def write(self, final: bool, extra: dict | None = None) -> dict:
        """Rewrite the parquet tables and ``summary.json`` atomically; returns the
        summary (``partial`` is ``not final``). Thread-safe."""
        with self._lock:
            return self._write(final, extra)

    def _write(self, final: bool, extra: dict | None) -> dict:
        rows, prows = list(self.requests), list(self.programs)  # snapshot: may run in
        req = requests_table(rows)                               # a worker thread
        write_atomic(self.dir / "requests.parquet", lambda p: req.to_parquet(p, index=False))
        if self.has_programs:
            prog = programs_table(prows)
            write_atomic(self.dir / "programs.parquet",
                    lambda p: prog.to_parquet(p, index=False))
        summary = self.summary(dict(extra or {}, partial=not final), rows, prows)
        text = json.dumps(summary, indent=2, default=json_default) + "\n"
        write_atomic(self.dir / "summary.json", lambda p: p.write_text(text))
        return summary

    def close(self) -> None:
        """Close the JSONL logs."""
        self._req_log.close()
        if self._prog_log is not None:
            self._prog_log.close()


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path) as f:
        for line in f:
            line = line.strip()
            if not line:
                continue
            try:
                rows.append(json.loads(line))
            except ValueError:  # a line cut by a crash mid-write: the only one possible
                break
    return rows


def read_records(run_dir: str | Path) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """(requests, programs or None) of a run directory: a replayed run (JSONL logs,
    complete even after a crash) or a simulated one (parquet).

    Raises:
        FileNotFoundError: the directory holds neither.
    """
    d = Path(run_dir)
    if (d / "requests.jsonl").exists():
        req = requests_table(_read_jsonl(d / "requests.jsonl"))
        progs = programs_table(_read_jsonl(d / "programs.jsonl")) \
            if (d / "programs.jsonl").exists() else None
        return req, progs
    if not (d / "requests.parquet").exists():
        raise FileNotFoundError(f"{d}: no requests.jsonl or requests.parquet")
    req = pd.read_parquet(d / "requests.parquet")
    progs = pd.read_parquet(d / "programs.parquet") \
        if (d / "programs.parquet").exists() else None
    return req, progs

