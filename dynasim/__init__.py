"""dynasim: a discrete-event simulator of LLM serving for reasoning programs.

Data flows one way: trace -> programs -> policy -> engine -> records -> metrics -> plots.
Core entities are flat modules here (:mod:`~dynasim.trace`, :mod:`~dynasim.arrivals`,
:mod:`~dynasim.request`, :mod:`~dynasim.engine`, :mod:`~dynasim.simulation`,
:mod:`~dynasim.data_record`, :mod:`~dynasim.metrics`, :mod:`~dynasim.certaindex`); the
families of plug-ins and the tooling are subpackages: :mod:`dynasim.profiles`,
:mod:`dynasim.policies`, :mod:`dynasim.workloads`, :mod:`dynasim.experiments`,
:mod:`dynasim.cli`.

The names users import most are here, loaded on first use (so ``import dynasim`` stays
light): ``dynasim.simulate``, ``dynasim.simulate_programs``, ``dynasim.make_policy``,
``dynasim.Profile``, ``dynasim.load_profile``, ``dynasim.read_trace``,
``dynasim.load_workload``.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

_LAZY = {
    "simulate": "dynasim.simulation", "simulate_programs": "dynasim.simulation",
    "online_programs": "dynasim.simulation", "make_policy": "dynasim.policies",
    "Profile": "dynasim.profiles", "load_profile": "dynasim.profiles",
    "read_trace": "dynasim.trace", "load_workload": "dynasim.workloads",
    "InputError": "dynasim.errors",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str):
    """PEP 562: import a public name's module on first access."""
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'dynasim' has no attribute {name!r}")
