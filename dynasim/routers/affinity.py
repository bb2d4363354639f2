"""Affinity routers: keep related requests on one replica unless it is overloaded.

* :class:`PrefixAffinity`: SGLang's cache-aware router (sgl-router
  ``policies/cache_aware.rs``): when the fleet is imbalanced, the least-loaded replica;
  otherwise the replica holding the longest cached prefix of the prompt if it covers at
  least ``cache_threshold`` of it, else the replica with the most free KV (SGLang: the
  worker with the smallest radix tree). Here the prefix match is exact (the replica's
  own prefix cache), where SGLang approximates it with a router-side tree.
* :class:`ProgramAffinity`: every call of a reasoning program to the replica its first
  call went to (Autellix's program-aware load balancer; Parrot dispatches an
  application's requests together), so the program's shared prompt prefix stays in one
  prefix cache, unless that replica is overloaded, when the call goes to the
  least-loaded replica instead.

"Overloaded" is SGLang's imbalance test (:func:`~dynasim.routers.base.overloaded`) on
requests in flight, with the thresholds as knobs (sgl-router's defaults).
"""

from __future__ import annotations

from collections.abc import Sequence

from dynasim.errors import InputError
from dynasim.request import Request
from dynasim.routers.base import ReplicaView, Router, least_kv, least_outstanding, overloaded

BALANCE_ABS_THRESHOLD = 64
"""Requests in flight above the least-loaded replica before a replica counts as
overloaded (sgl-router ``--balance-abs-threshold``)."""
BALANCE_REL_THRESHOLD = 1.5
"""... and the ratio to the least-loaded replica's count (``--balance-rel-threshold``)."""
CACHE_THRESHOLD = 0.3
"""Fraction of the prompt a cached prefix must cover to attract the request
(``--cache-threshold``)."""


def _check_thresholds(abs_threshold: float, rel_threshold: float) -> None:
    if not abs_threshold >= 0:
        raise InputError(f"must be >= 0 requests, got {abs_threshold}",
                         field="balance_abs_threshold")
    if not rel_threshold >= 1:
        raise InputError(f"must be >= 1, got {rel_threshold}", field="balance_rel_threshold")


class PrefixAffinity(Router):
    """Longest cached prefix with a load cap (module docstring).

    Args:
        cache_threshold: in [0, 1]; fraction of the prompt's tokens.
        balance_abs_threshold, balance_rel_threshold: the load cap (requests in flight).

    Raises:
        InputError: a threshold out of range (field = the knob's name).
    """

    name = "prefix-affinity"

    def __init__(self, cache_threshold: float = CACHE_THRESHOLD,
                 balance_abs_threshold: float = BALANCE_ABS_THRESHOLD,
                 balance_rel_threshold: float = BALANCE_REL_THRESHOLD) -> None:
        if not 0 <= cache_threshold <= 1:
            raise InputError(f"must be in [0, 1], got {cache_threshold}",
                             field="cache_threshold")
        _check_thresholds(balance_abs_threshold, balance_rel_threshold)
        self.cache_threshold = cache_threshold
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold

    def route(self, req: Request, replicas: Sequence[ReplicaView]) -> int:
        loads = [r.num_outstanding() for r in replicas]
        if overloaded(max(loads), loads, self.balance_abs_threshold,
                      self.balance_rel_threshold):
            return least_outstanding(replicas)
        best, match = 0, -1
        for i, r in enumerate(replicas):
            m = r.prefix_match(req)
            if m > match:
                best, match = i, m
        if match > 0 and match >= self.cache_threshold * req.prompt_tokens:
            return best
        return least_kv(replicas)


class ProgramAffinity(Router):
    """A program's calls to the replica of its first call, unless overloaded (module
    docstring). The first call (and any request without a program) goes to the
    least-loaded replica; an overflowing call goes there too and the program stays
    pinned to its first replica.

    Args:
        balance_abs_threshold, balance_rel_threshold: the load cap (requests in flight).

    Raises:
        InputError: a threshold out of range (field = the knob's name).
    """

    name = "program-affinity"

    def __init__(self, balance_abs_threshold: float = BALANCE_ABS_THRESHOLD,
                 balance_rel_threshold: float = BALANCE_REL_THRESHOLD) -> None:
        _check_thresholds(balance_abs_threshold, balance_rel_threshold)
        self.balance_abs_threshold = balance_abs_threshold
        self.balance_rel_threshold = balance_rel_threshold
        self._home: dict[int, int] = {}

    def route(self, req: Request, replicas: Sequence[ReplicaView]) -> int:
        pid = req.program_id
        home = self._home.get(pid) if pid is not None else None
        if home is not None and home < len(replicas):
            loads = [r.num_outstanding() for r in replicas]
            if not overloaded(loads[home], loads, self.balance_abs_threshold,
                              self.balance_rel_threshold):
                return home
            return least_outstanding(replicas)
        i = least_outstanding(replicas)
        if pid is not None:
            self._home[pid] = i
        return i

    def home(self, program_id: int) -> int | None:
        """The replica a program is pinned to (``None`` before its first call)."""
        return self._home.get(program_id)
