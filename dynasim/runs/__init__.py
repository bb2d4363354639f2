"""Recorded runs of real vLLM servers as first-class inputs: one reader per source
(:mod:`~dynasim.runs.residency`, :mod:`~dynasim.runs.blis`,
:mod:`~dynasim.runs.llmservingsim`), each returning a
:class:`~dynasim.runs.common.RecordedRun` (the trace sent plus the measured records in the
schema of :mod:`dynasim.data_record`).

``load_run(NAME)`` reads a run by name (:data:`RUNS`); :func:`write_run_dir` writes it as
a run folder (``requests.parquet`` + ``summary.json``), the layout ``dynasim compare``
reads, so a simulation compares with a recorded run as with a replay. ``python -m
dynasim.runs NAME DIR`` (:func:`export_run`) writes both the trace and the folder::

    python -m dynasim.runs residency-rate4 out/rate4
    dynasim simulate --trace out/rate4/recorded-residency-rate4.jsonl \
        --profile vllm023-qwen3-14b-h100 --output-dir out/sim-rate4
    dynasim compare out/sim-rate4 recorded:residency-rate4   # or out/rate4
"""

from __future__ import annotations

import json
from collections.abc import Callable
from functools import cache
from pathlib import Path

from dynasim.errors import InputError
from dynasim.runs import blis, llmservingsim, residency
from dynasim.runs.common import RecordedRun

READERS: dict[str, Callable[[str], RecordedRun]] = {
    **{n: residency.read for n in residency.RUNS},
    **{n: blis.read for n in blis.RUNS},
    **{n: llmservingsim.read for n in llmservingsim.RUNS}}
RUNS = tuple(READERS)
"""Every recorded run by name, in source order."""

__all__ = ["RUNS", "RecordedRun", "export_run", "load_run", "write_run_dir"]


@cache
def load_run(name: str) -> RecordedRun:
    """The recorded run ``name`` (read once per process; callers must not modify it).

    Raises:
        InputError: unknown name, or a bad file.
    """
    name = name.removeprefix("recorded:")
    if name not in READERS:
        raise InputError(f"unknown recorded run (known: {', '.join(RUNS)})", source=name)
    return READERS[name](name)


def write_run_dir(run: RecordedRun, out: str | Path) -> Path:
    """Write ``run``'s measured records as a run folder ``out`` (``requests.parquet``,
    ``summary.json``; created if needed) and return its path."""
    d = Path(out)
    d.mkdir(parents=True, exist_ok=True)
    run.measured.to_parquet(d / "requests.parquet", index=False)
    (d / "summary.json").write_text(json.dumps(run.summary(), indent=2, default=str) + "\n")
    return d


def export_run(name: str, out: str | Path) -> tuple[Path, Path]:
    """Write run ``name``'s trace as Mooncake JSONL (``OUT/recorded-NAME.jsonl``, its
    extra columns as extra keys) and its measured records as a run folder (``OUT``,
    :func:`write_run_dir`). Returns ``(trace path, folder)``.

    Raises:
        InputError: unknown name, or a bad file.
    """
    from dynasim.trace import write_mooncake

    run = load_run(name)
    d = write_run_dir(run, out)
    path = d / f"recorded-{run.name}.jsonl"
    write_mooncake(run.trace, path)
    return path, d

