"""Sweep scale-out benchmark (a script, not a test): wall time of one sweep on a Dask
``LocalCluster`` of 1, 2, ... single-threaded worker processes on loopback.

    python -m dynasim.experiments.scaleout notebooks/routers.yaml --workers 1,2
    python -m dynasim.experiments.scaleout notebooks/schedulers.yaml --workers 1,2 \\
        --num-programs 100

Each worker count runs the whole sweep from scratch into its own temporary folder through
the same path as ``dynasim sweep --scheduler dask --address ...``
(:func:`dynasim.experiments.sweep.run_sweep`), and prints cells, wall seconds, cells per
wall minute and the speed-up over the first count. The tables of every count are checked
equal (each cell is a deterministic simulation), so a speed-up never comes from doing
different work. Base deadlines are derived once per sweep before the cells are sent
(``run_sweep``), in this process, so they count in every wall time alike.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from dynasim.errors import InputError
from dynasim.experiments.sweep_config import load_config

#: Columns compared across worker counts (the cells' results, not their timings).
SAME = ["cell_id", "slo_attainment", "mean_program_latency_s", "accuracy"]


def time_sweep(config: str, workers: list[int], **overrides: object) -> list[dict]:
    """Run the sweep of ``config`` (with ``overrides``, config keys) once per entry of
    ``workers`` on a fresh loopback ``LocalCluster`` of that many one-thread worker
    processes; returns and prints one row per count: ``workers, cells, wall_s,
    cells_per_min, speedup`` (wall seconds of the first count / this count's).

    Raises:
        InputError: a bad config (as ``dynasim sweep``), a worker count below 1, or
            tables that differ between counts.
    """
    import pandas as pd
    from dask.distributed import LocalCluster

    from dynasim.experiments.sweep import run_sweep

    if any(n < 1 for n in workers):
        raise InputError("worker counts must be >= 1", field="workers")
    cfg = load_config(config, overrides)
    rows: list[dict] = []
    first: pd.DataFrame | None = None
    for n in workers:
        with tempfile.TemporaryDirectory() as tmp, LocalCluster(
                n_workers=n, threads_per_worker=1, processes=True, host="127.0.0.1",
                dashboard_address=None) as cluster:
            t0 = time.perf_counter()
            df = run_sweep(cfg, Path(tmp) / "sweep", scheduler="dask",
                           address=cluster.scheduler_address, progress=False)
            wall = time.perf_counter() - t0
        cols = [c for c in SAME if c in df]
        table = df[cols].sort_values("cell_id").reset_index(drop=True)
        if first is None:
            first = table
        elif not table.equals(first):
            raise InputError(f"the table with {n} workers differs from the first count's",
                             field="workers")
        row = {"workers": n, "cells": len(df), "wall_s": round(wall, 1),
               "cells_per_min": round(60 * len(df) / wall, 1),
               "speedup": round(rows[0]["wall_s"] / wall, 2) if rows else 1.0}
        rows.append(row)
        print("  ".join(f"{k} {v}" for k, v in row.items()), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    """``python -m dynasim.experiments.scaleout CONFIG [--workers 1,2]``."""
    p = argparse.ArgumentParser(prog="python -m dynasim.experiments.scaleout",
                                description=__doc__.splitlines()[0])
    p.add_argument("config", help="a sweep config (dynasim sweep's)")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts")
    p.add_argument("--num-programs", type=int, help="override the config's num_programs")
    args = p.parse_args(argv)
    try:
        counts = [int(x) for x in args.workers.split(",") if x.strip()]
    except ValueError:
        p.error(f"--workers: not a comma-separated list of integers: {args.workers!r}")
    try:
        time_sweep(args.config, counts, num_programs=args.num_programs)
    except InputError as exc:
        print(f"dynasim: error: {exc}")
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
