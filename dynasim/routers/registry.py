"""Routers by name: ``make_router("prefix-affinity", cache_threshold=0.5)``.

The registry imports its members, so none of them imports it back.
"""

from __future__ import annotations

import inspect

from dynasim.errors import InputError
from dynasim.routers.affinity import PrefixAffinity, ProgramAffinity
from dynasim.routers.base import Router
from dynasim.routers.simple import LeastKV, LeastOutstanding, RoundRobin

ROUTERS: dict[str, type[Router]] = {
    "round-robin": RoundRobin, "least-outstanding": LeastOutstanding, "least-kv": LeastKV,
    "prefix-affinity": PrefixAffinity, "program-affinity": ProgramAffinity}
"""Router classes by CLI name."""


def make_router(name: str, **knobs: float) -> Router:
    """A fresh router called ``name`` (:data:`ROUTERS`) with ``knobs`` as its
    constructor's keyword arguments (e.g. ``cache_threshold``, ``balance_abs_threshold``).

    Raises:
        InputError: an unknown name (field ``router``, listing the known ones), a knob the
            router does not take (field = the knob), or a knob value out of range.
    """
    cls = ROUTERS.get(name)
    if cls is None:
        raise InputError(f"unknown router (routers: {', '.join(ROUTERS)})", source=name,
                         field="router")
    params = inspect.signature(cls.__init__).parameters
    for key in knobs:
        if key not in params or key == "self":
            takes = [p for p in params if p != "self"]
            raise InputError(f"router {name} has no knob {key!r} (knobs: "
                             f"{', '.join(takes) or 'none'})", field=key)
    return cls(**knobs)
