"""Longest prefix match (LPM): SGLang's cache-aware waiting-queue order (Dynasor App. D.3
baseline).

Each scheduling round, SGLang (``python/sglang/srt/managers/schedule_policy.py``,
``SchedulePolicy.calc_priority``) matches every waiting request against its radix cache
and serves the longest cached prefix first; ties keep arrival order. With more than 128
waiting requests it falls back to FCFS, since matching them all costs too much; dynasim
does the same. The cache itself is the engine's (:mod:`dynasim.prefix_cache`), with
SGLang's and vLLM's plain LRU eviction.

Requests are admitted one by one (no gang); preempted requests go to the head.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence

from dynasim.policies.base import Policy
from dynasim.request import Request

#: SGLang's threshold: above this many waiting requests, LPM falls back to FCFS.
LPM_MAX_QUEUE = 128


class LPMQueue:
    """Waiting requests ordered by cached prefix length, longest first (module docstring).

    Args:
        prefix_match: ``prefix_match(req) -> tokens`` cached now.
    """

    def __init__(self, prefix_match: Callable[[Request], int] | None) -> None:
        self._q: deque[Request] = deque()
        self._front: deque[Request] = deque()  # preempted, served first
        self._match = prefix_match or (lambda r: 0)
        self._head: Request | None = None

    def push(self, req: Request) -> None:
        self._q.append(req)
        self._head = None

    def prepend(self, req: Request) -> None:
        self._front.appendleft(req)  # preempted requests go first
        self._head = None

    def _pick(self) -> Request:
        if self._front:
            return self._front[0]
        if self._head is None:
            if not self._q:
                raise IndexError("empty queue")
            if len(self._q) > LPM_MAX_QUEUE:
                self._head = self._q[0]
            else:
                best, best_len = self._q[0], -1
                for r in self._q:  # first of the longest: stable, ties in arrival order
                    m = self._match(r)
                    if m > best_len:
                        best, best_len = r, m
                self._head = best
        return self._head

    def peek(self) -> Sequence[Request]:
        return (self._pick(),)

    def pop(self) -> Sequence[Request]:
        r = self._pick()
        (self._front if self._front and self._front[0] is r else self._q).remove(r)
        self._head = None
        return (r,)

    def remove(self, req: Request) -> None:
        (self._front if req in self._front else self._q).remove(req)
        self._head = None

    def refresh(self) -> None:
        """Re-match at the next peek (the cache changed); the engine calls it per step."""
        self._head = None

    def __len__(self) -> int:
        return len(self._q) + len(self._front)

    def __iter__(self):
        yield from self._front
        yield from self._q


class LPM(Policy):
    """SGLang's longest-prefix-match over the engine's prefix cache (needs
    ``enable_prefix_caching``; on a live vLLM server it cannot be enforced)."""

    name = "lpm"
    needs_prefix_cache = True
    order_depends_on_cache = True

    def new_queue(self, prefix_match: Callable[[Request], int] | None = None) -> LPMQueue:
        return LPMQueue(prefix_match)
