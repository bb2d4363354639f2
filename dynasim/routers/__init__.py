"""Routers: which replica of a fleet serves each request (round-robin,
least-outstanding, least-kv, prefix-affinity, program-affinity). Plain objects without
SimPy, shared by the simulated :class:`~dynasim.cluster.Cluster` and the replay harness;
:func:`make_router` builds one from its CLI name.
"""

from dynasim.routers.affinity import PrefixAffinity, ProgramAffinity
from dynasim.routers.base import ReplicaView, Router
from dynasim.routers.registry import ROUTERS, make_router
from dynasim.routers.simple import LeastKV, LeastOutstanding, RoundRobin

__all__ = ["ROUTERS", "LeastKV", "LeastOutstanding", "PrefixAffinity", "ProgramAffinity",
           "ReplicaView", "RoundRobin", "Router", "make_router"]
