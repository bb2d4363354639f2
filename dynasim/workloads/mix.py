"""Mixed workloads: several workloads served at once, arrivals drawn in proportions.

Real deployments mix easy and hard queries; SJF and gang are meant for exactly that
(issue 18 of dynasim). A mix is written as one string, usable wherever a workload
name is (``--workload``, a sweep's ``workloads`` list)::

    game24-sc,date-sc                 # equal proportions
    game24-sc:3,date-sc:1,game24-tot  # weights (default 1), normalised to proportions

Each program of an online run draws its workload with the given proportions (a seeded
RNG, independent of the arrival times), then takes the next program of that workload's
own seeded order (:func:`dynasim.simulation.program_order`). Every program keeps its
workload's name (``ProgramSpec.workload``, the ``workload`` column of the program
records), so deadlines are set per workload (each its own isolated-p90 base,
:func:`dynasim.simulation.base_deadlines`) and SLO attainment is reported per
workload and overall (:func:`dynasim.metrics.summarize_by_workload`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from dynasim.errors import InputError

if TYPE_CHECKING:
    from dynasim.workloads.program import ProgramSpec


def is_mix(text: str) -> bool:
    """Whether a ``--workload`` value names a mix (holds a comma)."""
    return "," in text


def parse_mix(text: str) -> list[tuple[str, float]]:
    """``"a:3,b"`` -> ``[("a", 0.75), ("b", 0.25)]``: names and proportions (sum 1).

    Raises:
        InputError: an empty part, a weight that is not a finite number > 0, or a
            workload named twice (field ``workload``).
    """
    parts: list[tuple[str, float]] = []
    for item in text.split(","):
        name, _, w = item.strip().rpartition(":") if ":" in item else (item.strip(), "", "1")
        name = name.strip()
        try:
            weight = float(w)
        except ValueError:
            weight = math.nan
        if not name or not (0 < weight < math.inf):
            raise InputError(f"bad mix part {item.strip()!r}: write NAME or NAME:WEIGHT "
                             "with a weight > 0", field="workload", source=text)
        if name in (n for n, _ in parts):
            raise InputError(f"workload {name} named twice in the mix", field="workload",
                             source=text)
        parts.append((name, weight))
    total = sum(w for _, w in parts)
    return [(n, w / total) for n, w in parts]


def mix_parts(text: str, load: Callable[[str], Any]
              ) -> tuple[list[tuple[str, float]], list[ProgramSpec], str]:
    """The parts of the mix ``text`` (:func:`parse_mix`), each read by ``load``
    (:func:`dynasim.workloads.catalog.load_workload`, returning a ``Workload``; it
    builds the mixed one from these): (names and proportions, programs labelled with their workload's
    name, notes).

    Raises:
        InputError: a bad mix string, or a part that is itself a mix or unreadable.
    """
    mix = parse_mix(text)
    programs, notes = [], []
    for name, _ in mix:
        w = load(name)
        if w.mix:
            raise InputError("a mix cannot hold a mix", field="workload", source=name)
        programs += [replace(s, workload=name) for s in w.programs]
        if w.notes:
            notes.append(f"{name}: {w.notes}")
    return mix, programs, "; ".join(notes)
