"""Reasoning workloads: LLM calls (:mod:`~dynasim.workloads.call`), programs that issue
them wave by wave (:mod:`~dynasim.workloads.program`), and the named workloads with their
parsers (:mod:`~dynasim.workloads.catalog`: per-sample CSVs, Game of 24, ToT logs).
"""

from dynasim.workloads.catalog import Workload, load_workload, read_samples
from dynasim.workloads.program import Program, ProgramSpec

__all__ = ["Program", "ProgramSpec", "Workload", "load_workload", "read_samples"]
