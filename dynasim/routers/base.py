"""The router interface: which replica serves a request, from a read-only view of each.

A router is a small plain object, like a policy (:mod:`dynasim.policies.base`): no SimPy,
no engine internals, deterministic (ties go to the lowest replica index), so the
simulator's :class:`~dynasim.cluster.Cluster` and the replay harness use the very same
objects. It sees each replica through :class:`ReplicaView`, four numbers a router in
front of real vLLM servers can also know (its own in-flight count, the server's
``vllm:kv_cache_usage_perc`` / block counts, a router-side prefix index):

* ``num_outstanding()``: requests sent to the replica and not finished (waiting or
  running), the load of Vidur's and LLMServingSim's least-outstanding router;
* ``kv_blocks_used()`` / ``kv_blocks_total()``: KV blocks referenced now / the cache's
  size (cached-but-idle blocks count as free, as vLLM's usage gauge does);
* ``prefix_match(req)``: prompt tokens of ``req`` the replica holds in its prefix cache
  now (SGLang's cache-aware router keeps an approximate radix tree per worker for this).

:meth:`Router.route` returns the replica index (0-based) for a request about to be sent.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from dynasim.request import Request


class ReplicaView(Protocol):
    """What a router may read of one replica (read-only; see module docstring)."""

    def num_outstanding(self) -> int:
        """Requests in flight on the replica (sent, not finished)."""

    def kv_blocks_used(self) -> int:
        """KV blocks referenced by requests now."""

    def kv_blocks_total(self) -> int:
        """KV blocks of the replica's cache (>= 1)."""

    def prefix_match(self, req: Request) -> int:
        """Prompt tokens of ``req`` found in the replica's prefix cache now (0: none)."""


class Router:
    """Base router. Subclasses set :attr:`name` and override :meth:`route`.

    Knobs are constructor arguments (:func:`dynasim.routers.make_router` passes them).
    """

    name = "base"

    def route(self, req: Request, replicas: Sequence[ReplicaView]) -> int:
        """Index in ``replicas`` (0-based) of the replica that serves ``req``.

        Called once per request, at the moment it is sent; ``replicas`` is never empty.
        """
        raise NotImplementedError

    def __repr__(self) -> str:
        knobs = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if not k.startswith("_"))
        return f"{type(self).__name__}({knobs})"


def least_outstanding(replicas: Sequence[ReplicaView]) -> int:
    """Index of the replica with the fewest requests in flight (ties: lowest index)."""
    loads = [r.num_outstanding() for r in replicas]
    return loads.index(min(loads))  # the first of the least


def kv_usage(replica: ReplicaView) -> float:
    """Fraction of the replica's KV blocks in use, in [0, 1]."""
    return replica.kv_blocks_used() / max(1, replica.kv_blocks_total())


def least_kv(replicas: Sequence[ReplicaView]) -> int:
    """Index of the replica with the lowest KV usage fraction (fractions, so a fleet of
    different cache sizes compares fairly); ties go to fewer requests in flight, then to
    the lowest index."""
    keys = [(kv_usage(r), r.num_outstanding(), i) for i, r in enumerate(replicas)]
    return min(keys)[2]


def overloaded(load: int, loads: Sequence[int], abs_threshold: float,
               rel_threshold: float) -> bool:
    """SGLang's imbalance test for a replica with ``load`` requests in flight among
    ``loads``: both ``load - min(loads) > abs_threshold`` and ``load > rel_threshold *
    min(loads)`` (sgl-router ``policies/cache_aware.rs``: the fleet is imbalanced when
    max - min > balance_abs_threshold and max > balance_rel_threshold × min)."""
    low = min(loads)
    return load - low > abs_threshold and load > rel_threshold * low
