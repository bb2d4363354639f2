"""Load-only routers: round-robin, least-outstanding, least-kv.

Sources: Vidur (``vidur/scheduler/global_scheduler``: round-robin, least outstanding
requests), LLMServingSim 2.0 and BLIS (round-robin, least-loaded), vLLM production-stack
and llm-d (KV-cache utilisation scorer: the replica with the most free KV).
"""

from __future__ import annotations

from collections.abc import Sequence

from dynasim.request import Request
from dynasim.routers.base import ReplicaView, Router, least_kv, least_outstanding


class RoundRobin(Router):
    """Request k (in sending order, from 0) goes to replica ``k mod N``; blind to load."""

    name = "round-robin"

    def __init__(self) -> None:
        self._next = 0

    def route(self, req: Request, replicas: Sequence[ReplicaView]) -> int:
        i = self._next % len(replicas)
        self._next = i + 1
        return i


class LeastOutstanding(Router):
    """The replica with the fewest requests in flight (ties: lowest index); Vidur's
    ``LORGlobalScheduler``."""

    name = "least-outstanding"

    def route(self, req: Request, replicas: Sequence[ReplicaView]) -> int:
        return least_outstanding(replicas)


class LeastKV(Router):
    """The replica using the smallest fraction of its KV blocks (ties: fewer in flight,
    then lowest index); production-stack's and llm-d's KV-utilisation score."""

    name = "least-kv"

    def route(self, req: Request, replicas: Sequence[ReplicaView]) -> int:
        return least_kv(replicas)
