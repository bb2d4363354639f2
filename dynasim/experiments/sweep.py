"""``dynasim sweep``: many online simulations, one tidy table (issue 6).

``dynasim sweep CONFIG [flags] --output-dir DIR`` runs every cell of a sweep
(:mod:`dynasim.experiments.sweep_config`: workloads x profiles x policies x request rates x SLO scales
x seeds) and writes, in ``DIR``:

* ``cells.jsonl``: one JSON line per finished cell, appended and flushed to disk as soon as
  the cell ends, so a killed sweep loses no finished cell (a torn last line is removed on
  the rerun, which runs that cell again; a line that is not UTF-8 JSON is skipped with a
  warning naming ``cells.jsonl:LINE``);
* ``results.parquet``: the tidy table, a row per cell: its configuration (``cell_id,
  workload, profile, policy, program_rate, slo_scale, seed, num_programs, ...,
  base_deadline_s, deadline_protocol``), the program summary of :func:`dynasim.metrics.summarize_programs`
  (``slo_attainment, slo_attainment_programs_counted, accuracy, mean_program_latency_s, p90_program_latency_s,
  total_program_output_tokens, mean_fairness_s_per_token, ...``), the request summary of
  :func:`dynasim.metrics.summarize` (``mean_ttft_ms, p99_e2el_ms, ...``), ``engine_steps``,
  ``wall_seconds`` and ``error`` (empty when the cell ran); rewritten at the end, on
  Ctrl-C and every few seconds;
* ``records/<cell_id>.parquet`` with ``keep_records``: the cell's program records
  (:data:`dynasim.data_record.PROGRAM_COLUMNS`), for latency and fairness CDFs;
* ``sweep.json``: the configuration.

Every workload, profile and policy name is checked before any cell runs (one error line
naming the key). A cell that fails anyway (its error is in the ``error`` column) makes
``dynasim sweep`` exit with status 1 after printing how many failed and the first error.

A rerun with the same ``DIR`` skips every cell already in ``cells.jsonl`` without error
(resumable; cells are keyed by :func:`~dynasim.experiments.sweep_config.cell_id`) and runs the rest.

Executors: ``--scheduler processes`` (default; ``--jobs`` local processes, one per core by
default; ``--jobs 1`` runs in this process), ``--scheduler dask --address
tcp://HOST:PORT`` sends the cells to a Dask cluster (its workers need dynasim installed and
the same data: ``DYNASIM_DATA_DIR`` or network). Every cell is a deterministic
simulation, so the table does not depend on the executor or on the order cells finish.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING

import pandas as pd

from dynasim.data_record import json_default, write_atomic
from dynasim.errors import InputError
from dynasim.experiments.sweep_config import COT_KEYS, LIMIT_KEYS, SweepConfig, expand

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

CONFIG_COLUMNS = ["cell_id", "workload", "profile", "policy", "program_rate", "slo_scale",
                  "seed", "num_programs", "burstiness", "cap", "detect_at", "threshold",
                  "reward_threshold", "low_threshold", "sjf_aging", "enable_prefix_caching",
                  "base_deadline_multiple", "warmup_programs", "cooldown_programs",
                  "probe_interval", "certainty_window", "token_budget",
                  "base_deadline_s", "deadline_protocol"]


# ------------------------------------------------------------------ one cell
@lru_cache(maxsize=16)
def _workload(name: str):
    from dynasim.workloads.catalog import load_workload

    return load_workload(name)


def _profile(cell: dict):
    from dynasim.profiles import load_profile

    prof = load_profile(cell["profile"])
    limits = {k: cell["limits"].get(k) for k in LIMIT_KEYS}
    return prof.with_overrides(enable_prefix_caching=cell["enable_prefix_caching"],
                               **limits)


def _intra_args(cell: dict) -> dict:
    return {"cap": cell["cap"], "detect_at": cell["detect_at"],
            "threshold": cell["threshold"], "reward_threshold": cell["reward_threshold"],
            "low_threshold": cell.get("low_threshold"),
            **{k: cell[k] for k in COT_KEYS if cell.get(k) is not None}}


def derive_base_deadline(cell: dict) -> float | dict[str, float]:
    """Base deadline (s) of a cell's (workload, profile): the configured one, else
    :func:`dynasim.simulation.base_deadlines` at the cell's cap (policy-, rate- and
    seed-independent) times ``base_deadline_multiple`` (default 1); one per part of a
    mixed workload."""
    from dynasim.simulation import base_deadlines

    if cell["base_deadline"] is not None:
        return float(cell["base_deadline"])
    return base_deadlines(_workload(cell["workload"]), _profile(cell), cell["cap"],
                          cell.get("base_deadline_multiple"))


def run_cell(cell: dict) -> dict:
    """Simulate one cell; returns ``{"row": dict, "records": DataFrame | None}``.

    ``cell`` is a dict of :func:`~dynasim.experiments.sweep_config.expand` with ``cell_id`` and
    ``base_deadline_s`` (seconds) set. Bad input of the cell (an unknown policy, a
    profile the limits break) is returned as the row's ``error``, never raised, so one
    bad cell does not stop a sweep. Deterministic: same cell, same row."""
    from dynasim.metrics import summarize, summarize_programs
    from dynasim.policies import make_policy
    from dynasim.simulation import deadline_protocol, online_programs, simulate_programs

    t0 = time.perf_counter()
    row = {k: cell.get(k) for k in CONFIG_COLUMNS}
    row.update({k: cell[k] for k in ("replicas", "router") if k in cell})  # a fleet cell
    if isinstance(row["base_deadline_s"], dict):  # a mix: one base per workload
        row["base_deadline_by_workload"] = json.dumps(row["base_deadline_s"])
        row["base_deadline_s"] = float("nan")
    window = {"warmup": cell.get("warmup_programs") or 0,
              "cooldown": cell.get("cooldown_programs") or 0}
    row["deadline_protocol"] = deadline_protocol(
        cell["base_deadline"], cell.get("base_deadline_multiple"), **window)
    try:
        profile = _profile(cell)
        policy = make_policy(cell["policy"], aging_s=cell["sjf_aging"], **_intra_args(cell))
        specs, times, deadlines, _ = online_programs(
            _workload(cell["workload"]), profile, cell["program_rate"],
            burstiness=cell["burstiness"], seed=cell["seed"],
            num_programs=cell["num_programs"], slo_scale=cell["slo_scale"],
            base=cell["base_deadline_s"], cap=cell["cap"])
        if "replicas" in cell:  # a fleet behind a router, a policy instance per replica
            from dynasim.cluster import simulate_cluster_programs
            from dynasim.routers import make_router

            requests, programs, engine = simulate_cluster_programs(
                specs, times, [profile] * cell["replicas"],
                lambda: make_policy(cell["policy"], aging_s=cell["sjf_aging"],
                                    **_intra_args(cell)),
                make_router(cell["router"]), deadlines)
        else:
            requests, programs, engine = simulate_programs(specs, times, profile, policy,
                                                          deadlines)
        program_summary = summarize_programs(programs, **window)
    except InputError as exc:
        row.update(error=str(exc), wall_seconds=time.perf_counter() - t0)
        return {"row": row, "records": None}
    except Exception as exc:  # noqa: BLE001 -- one broken cell must not stop the others
        row.update(error=f"{type(exc).__name__}: {exc}",
                   wall_seconds=time.perf_counter() - t0)
        return {"row": row, "records": None}
    fleet = {"num_replicas": cell["replicas"]} if "replicas" in cell else {}
    for summary in (summarize(requests, **fleet), program_summary):
        row.update({k: v for k, v in summary.items()
                    if isinstance(v, (int, float, bool)) and k not in row})
    for key in ("slo_attainment_by_workload", "accuracy_by_workload"):  # a mix
        for w, v in program_summary.get(key, {}).items():
            row[f"{key.removesuffix('_by_workload')}@{w}"] = v
    row.update(num_programs=len(programs), engine_steps=engine.num_steps,
               prefix_cache_hit_rate=engine.prefix_cache_hit_rate,
               wall_seconds=time.perf_counter() - t0, error="")
    return {"row": row, "records": programs}


# ----------------------------------------------------------------- the store
class SweepStore:
    """The output folder of a sweep: the ``cells.jsonl`` journal, the records and the
    tidy ``results.parquet`` (module doc)."""

    def __init__(self, out: str | Path) -> None:
        self.out = Path(out)
        if self.out.exists() and not self.out.is_dir():
            raise InputError("is an existing file, not a folder", source=str(out),
                             field="output_dir")
        try:
            self.out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create this folder: {exc.strerror or exc}",
                             source=str(out), field="output_dir") from None
        self.journal = self.out / "cells.jsonl"
        self.rows: dict[str, dict] = {}
        self.warnings: list[str] = []
        if self.journal.exists():
            self._read_journal()

    def _read_journal(self) -> None:
        """Load the finished cells; skip (with a warning naming ``file:line``) any line
        that is not UTF-8 JSON of a cell, and cut a torn last line so the next append
        starts on a fresh line."""
        data = self.journal.read_bytes()
        lines = data.split(b"\n")
        tail = lines.pop()  # b"" when the file ends with a newline
        for n, raw in enumerate(lines, start=1):
            row, why = _parse_journal_line(raw)
            if row is None:
                if why:
                    self._warn(n, f"{why}: skipped")
            elif not row.get("error"):
                self.rows[row["cell_id"]] = row
        if not tail:
            return
        n = len(lines) + 1
        row, why = _parse_journal_line(tail)
        if row is None:  # a write cut short by a kill: drop the fragment
            self._warn(n, f"torn last line ({len(tail)} bytes, {why}) removed: that "
                          "cell runs again")
            with open(self.journal, "r+b") as f:
                f.truncate(len(data) - len(tail))
                os.fsync(f.fileno())
            return
        if not row.get("error"):
            self.rows[row["cell_id"]] = row
        with open(self.journal, "ab") as f:  # complete but unterminated: end the line
            f.write(b"\n")
            os.fsync(f.fileno())

    def _warn(self, line: int, what: str) -> None:
        msg = f"dynasim: warning: {self.journal}:{line}: {what}"
        self.warnings.append(msg)
        print(msg, file=sys.stderr)

    def add(self, row: dict, records: pd.DataFrame | None) -> None:
        """Persist one finished cell (records first, then its journal line, fsynced)."""
        if records is not None:
            rec = self.out / "records"
            rec.mkdir(exist_ok=True)
            write_atomic(rec / f"{row['cell_id']}.parquet",
                         lambda p: records.to_parquet(p, index=False))
        with open(self.journal, "a", encoding="utf-8") as f:
            f.write(json.dumps(row, default=json_default) + "\n")  # NaN as NaN: json reads it
            f.flush()
            os.fsync(f.fileno())
        if not row["error"]:
            self.rows[row["cell_id"]] = row

    def write_table(self, order: list[str] | None = None) -> Path:
        """Rewrite ``results.parquet`` from the finished cells (``order``: cell ids to
        put first, in sweep order); atomic (a temporary file is renamed)."""
        rows = list(self.rows.values())
        if order:
            rank = {c: i for i, c in enumerate(order)}
            rows.sort(key=lambda r: rank.get(r["cell_id"], len(rank)))
        df = pd.DataFrame(rows)
        if len(df):  # rows journaled by an older dynasim lack newer keys: left empty
            df = df.reindex(columns=CONFIG_COLUMNS + [c for c in df.columns
                                                      if c not in CONFIG_COLUMNS])
        path = self.out / "results.parquet"
        write_atomic(path, lambda p: df.to_parquet(p, index=False))
        return path


def _parse_journal_line(raw: bytes) -> tuple[dict | None, str]:
    """``(row, "")`` for a journal line holding a cell, else ``(None, why)`` (``why``
    empty for a blank line)."""
    if not raw.strip():
        return None, ""
    try:
        row = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError:
        return None, "not UTF-8"
    except ValueError:
        return None, "not valid JSON"
    if not isinstance(row, dict) or not isinstance(row.get("cell_id"), str):
        return None, "not a cell (no cell_id)"
    return row, ""


# ---------------------------------------------------------------- executors
def _watch_parent(parent: int) -> None:
    """Initializer of a spawn worker: leave Ctrl-C to the sweep process (it stops the
    workers), and exit when that process is gone (even after ``kill -9``) instead of
    running on, reparented to PID 1."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, daemon=True, name="watch-parent").start()


def _stop_workers(ex: ProcessPoolExecutor, futures: list[Future]) -> None:
    """Cancel what has not started and end the worker processes now (a worker may be
    minutes into a cell): SIGTERM, then SIGKILL after 5 s."""
    procs = list((getattr(ex, "_processes", None) or {}).values())
    for fut in futures:
        fut.cancel()
    ex.shutdown(wait=False, cancel_futures=True)
    for p in procs:
        if p.is_alive():
            p.terminate()
    for p in procs:
        p.join(5)
        if p.is_alive():
            p.kill()
            p.join(1)


def _local(cells: list[dict], jobs: int):
    if jobs == 1:
        for cell in cells:
            yield run_cell(cell)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    ex = ProcessPoolExecutor(max_workers=jobs, mp_context=mp.get_context("spawn"),
                             initializer=_watch_parent, initargs=(os.getpid(),))
    futures = [ex.submit(run_cell, c) for c in cells]
    try:
        for fut in as_completed(futures):
            yield fut.result()
    except BaseException:  # Ctrl-C, SIGTERM, the generator closed, any error
        _stop_workers(ex, futures)
        raise
    ex.shutdown(wait=True)


def _raise_interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def check_names(cells: list[dict]) -> None:
    """Load every workload, profile (with the limits) and policy (with the knobs) the
    cells name, before any cell runs: a typo costs one line, not a sweep of failed cells.

    Raises:
        InputError: the first name that does not load, with ``field`` the config key
            (``workloads``, ``profiles``, ``policies``) unless the error names a finer one.
    """
    from dynasim.policies import make_policy

    seen: set = set()
    for c in cells:
        checks = (("workloads", c["workload"], lambda c=c: _workload(c["workload"])),
                  ("profiles", (c["profile"], json.dumps(c["limits"], sort_keys=True)),
                   lambda c=c: _profile(c)),
                  ("policies", (c["policy"], c["sjf_aging"],
                                json.dumps(_intra_args(c), sort_keys=True)),
                   lambda c=c: make_policy(c["policy"], aging_s=c["sjf_aging"],
                                           **_intra_args(c))))
        for key, ident, load in checks:
            if (key, ident) in seen:
                continue
            seen.add((key, ident))
            try:
                load()
            except InputError as exc:
                field = key if exc.field in (None, "policy") else exc.field
                raise InputError(exc.message, source=exc.source, line=exc.line,
                                 field=field) from None


def _dask(cells: list[dict], address: str):
    try:
        from dask.distributed import Client, as_completed
    except ImportError:
        raise InputError("--scheduler dask needs dask[distributed] installed",
                         field="scheduler") from None
    try:
        client = Client(address, timeout="10s")
    except (OSError, TimeoutError) as exc:
        raise InputError(f"cannot reach the Dask scheduler ({exc})", field="address",
                         source=address) from None
    with client:
        futures = client.map(run_cell, cells, pure=False)
        try:
            for fut in as_completed(futures):
                yield fut.result()
        finally:
            client.cancel(futures)


def run_sweep(cfg: SweepConfig, out: str | Path, *, scheduler: str = "processes",
              jobs: int | None = None, address: str | None = None,
              progress: bool = True, flush_every: float = 5.0) -> pd.DataFrame:
    """Run every cell of ``cfg`` not yet finished in ``out``; returns the tidy table,
    with the rows of the cells that failed in this run in ``df.attrs["failed_cells"]``.

    SIGTERM is turned into ``KeyboardInterrupt`` while the sweep runs, so a killed sweep
    writes its table and stops its worker processes (none is left reparented to PID 1).

    Raises:
        InputError: ``--scheduler dask`` without a reachable ``address``; a workload,
            profile or policy that cannot be loaded (before any cell runs); an output
            folder that is a file or cannot be created.
        KeyboardInterrupt: (Ctrl-C or SIGTERM) after writing the table of the cells
            finished so far.
    """
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    cells = expand(cfg)
    check_names(cells)
    store = SweepStore(out)
    (store.out / "sweep.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    order = [c["cell_id"] for c in cells]
    todo = [c for c in cells if c["cell_id"] not in store.rows]
    console = Console(stderr=True)
    if len(todo) < len(cells):
        console.print(f"{len(cells) - len(todo)} of {len(cells)} cells already finished "
                      f"in {store.journal}: skipped")
    bases: dict[tuple, float] = {}
    for c in todo:  # one base deadline per (workload, profile, cap, limits)
        key = (c["workload"], c["profile"], c["cap"], json.dumps(c["limits"], sort_keys=True),
               c["enable_prefix_caching"], c["base_deadline"],
               c.get("base_deadline_multiple"))
        if key not in bases:
            bases[key] = derive_base_deadline(c)
        c["base_deadline_s"] = bases[key]
    if scheduler == "dask":
        if not address:
            raise InputError("--scheduler dask needs --address tcp://HOST:PORT",
                             field="address")
        results = _dask(todo, address)
    elif scheduler == "processes":
        results = _local(todo, jobs or os.cpu_count() or 1)
    else:
        raise InputError("unknown scheduler (processes, dask)", field="scheduler",
                         source=scheduler)
    failed: list[dict] = []
    last = time.monotonic()
    cols = (TextColumn("sweep"), BarColumn(), MofNCompleteColumn(), TextColumn("cells"),
            TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn())
    in_main = threading.current_thread() is threading.main_thread()
    old_term = signal.signal(signal.SIGTERM, _raise_interrupt) if in_main else None
    with Progress(*cols, console=console, disable=not progress) as bar:
        task = bar.add_task("cells", total=len(todo))
        try:
            for res in results:
                store.add(res["row"], res["records"] if cfg.keep_records else None)
                if res["row"]["error"]:
                    failed.append(res["row"])
                    console.print(f"[red]cell {res['row']['cell_id']} "
                                  f"({res['row']['policy']} at {res['row']['program_rate']}"
                                  f" programs/s): {res['row']['error']}")
                bar.advance(task)
                if time.monotonic() - last > flush_every:
                    store.write_table(order)
                    last = time.monotonic()
        finally:
            if hasattr(results, "close"):
                results.close()  # stops the workers now, not at garbage collection
            if in_main:
                signal.signal(signal.SIGTERM, old_term)
            path = store.write_table(order)
    console.print(f"{len(store.rows)} of {len(cells)} cells in {path}"
                  + (f"; {len(failed)} failed (rerun to retry them)" if failed else ""))
    df = pd.read_parquet(path)  # the table as every later reader gets it
    df.attrs["failed_cells"] = failed
    return df


def fleet_view(df: pd.DataFrame, baseline: str = "lpm") -> tuple[pd.DataFrame, str]:
    """A sweep table as the per-policy tables read it: rows of fleet cells (a
    ``router`` column, :data:`~dynasim.experiments.sweep_config.FLEET_AXES`) get their
    ``policy`` relabelled ``POLICY @ ROUTER`` (plus `` xN`` when replica counts vary), so
    the tables compare routers; the baseline becomes ``round-robin`` under the first
    policy swept. A table without fleet cells, and ``baseline``, are returned as given.
    """
    if "router" not in df or df["router"].isna().all():
        return df, baseline
    out = df.copy()
    label = out["policy"].astype(str) + " @ " + out["router"].astype(str)
    if out["replicas"].nunique() > 1:
        label += " x" + out["replicas"].astype("Int64").astype(str)
    first = str(df["policy"].iloc[0])
    base = label[(out["policy"] == first) & (out["router"] == "round-robin")]
    out["policy"] = label
    return out, (str(base.iloc[0]) if len(base) else baseline)


def rate_tables(df: pd.DataFrame) -> dict[tuple, dict[str, pd.DataFrame]]:
    """Per (workload, profile, SLO scale): for each of SLO attainment, mean program
    latency (s), accuracy and, in a fleet sweep, prefix-cache hit rate, a table with a
    row per policy (``POLICY @ ROUTER`` in a fleet sweep, :func:`fleet_view`) and a
    column per program rate (programs/s), each value the mean over seeds of the cells
    that ran."""
    from dynasim.experiments.results import ok_rows

    values = {"SLO attainment": "slo_attainment",
              "mean program latency (s)": "mean_program_latency_s", "accuracy": "accuracy"}
    if "router" in df and df["router"].notna().any():
        values["prefix-cache hit rate"] = "prefix_cache_hit_rate"
    df, _ = fleet_view(df)
    out = {}
    for key, g in ok_rows(df).groupby(["workload", "profile", "slo_scale"], sort=True):
        out[key] = {name: g.pivot_table(index="policy", columns="program_rate", values=col,
                                        aggfunc="mean")
                    for name, col in values.items()}
    return out


def headline_table(df: pd.DataFrame, target: float = 0.9,
                   baseline: str = "lpm") -> pd.DataFrame:
    """The highest program rate (programs/s) at which each policy keeps ``target`` SLO
    attainment (:func:`dynasim.experiments.results.max_rate_at_attainment`), with its ratio to the
    ``baseline`` policy's rate in the same (workload, profile, SLO scale): Dynasor §4
    reports sjf+certaindex at 1.6-3.3x SGLang's LPM. ``ratio_to_<baseline>`` is NaN
    when the baseline is absent or has no rate. A fleet sweep compares routers
    (:func:`fleet_view`), against round-robin."""
    from dynasim.experiments.results import max_rate_at_attainment

    df, baseline = fleet_view(df, baseline)
    t = max_rate_at_attainment(df, target=target)
    base = _baseline_values(t, ["workload", "profile", "slo_scale"], "max_rate", baseline)
    t[f"ratio_to_{baseline}"] = t["max_rate"].to_numpy() / base
    return t


def tightest_slo_table(df: pd.DataFrame, target: float = 0.9,
                       baseline: str = "lpm") -> pd.DataFrame:
    """The tightest SLO scale at which each policy keeps ``target`` attainment
    (:func:`dynasim.experiments.results.min_slo_scale_at_attainment`) per (workload, profile, program
    rate), and how many times tighter it is than the ``baseline``'s
    (``<baseline> scale / policy scale``; Dynasor §4 reports 1.3-4.7x against LPM).
    ``status`` ``beyond_range`` means the smallest scale swept still met the target (an
    upper bound, so the ratio is a lower bound)."""
    from dynasim.experiments.results import min_slo_scale_at_attainment

    df, baseline = fleet_view(df, baseline)
    t = min_slo_scale_at_attainment(df, target=target)
    base = _baseline_values(t, ["workload", "profile", "program_rate"], "min_slo_scale",
                            baseline)
    t[f"tighter_than_{baseline}"] = base / t["min_slo_scale"].to_numpy()
    return t


def _baseline_values(t: pd.DataFrame, keys: list[str], col: str, baseline: str):
    """``col`` of the ``baseline`` policy's row with the same ``keys``, for every row of
    ``t`` (NaN where the baseline has none)."""
    base = t[t["policy"] == baseline].set_index(keys)[col]
    return base.reindex(pd.MultiIndex.from_frame(t[keys])).to_numpy()


