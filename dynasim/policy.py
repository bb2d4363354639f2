"""Scheduling policies: the objects the engine (and the replay harness) consult.

A policy never touches SimPy or the engine's internals. It answers three questions,
as vLLM's scheduler asks its request queue (``vllm/v1/core/sched/request_queue.py``):

* **which waiting requests are admitted next** -- the policy owns the waiting queue
  (:class:`WaitingQueue`) and hands out *admission groups*: a tuple of requests that must
  be admitted together or not at all (a single request for FCFS, a program's requests for
  gang scheduling). The engine admits groups in the queue's order and stops at the first
  group that does not fit (vLLM's head-of-line ``break``);
* **which running request is preempted** when KV blocks run out (:meth:`Policy.victim`);
* **what integer priority a request carries** (:meth:`Policy.priority`), which the replay
  harness sends as vLLM's ``priority`` field.

It is told about events through :meth:`Policy.on_arrival` and :meth:`Policy.on_finish`;
program-aware policies (gang, SJF, certaindex) keep their per-program state there.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol

from dynasim.request import Request


class WaitingQueue(Protocol):
    """A waiting queue handing out admission groups, best first."""

    def push(self, req: Request) -> None:
        """Add a newly arrived request."""

    def prepend(self, req: Request) -> None:
        """Put a preempted request back at the head (vLLM ``prepend_request``)."""

    def peek(self) -> Sequence[Request]:
        """The next admission group, without removing it. Raises IndexError if empty."""

    def pop(self) -> Sequence[Request]:
        """Remove and return the group :meth:`peek` returned."""

    def remove(self, req: Request) -> None:
        """Remove a request (aborted while waiting). Raises ValueError if absent."""

    def __len__(self) -> int:
        """Number of waiting requests."""


class FCFSQueue:
    """First come, first served: arrival order, preempted requests at the head.

    Source: vLLM ``FCFSRequestQueue`` (``add_request`` appends, ``prepend_request``
    appendleft, ``pop_request`` popleft).
    """

    def __init__(self) -> None:
        self._q: deque[Request] = deque()

    def push(self, req: Request) -> None:
        self._q.append(req)

    def prepend(self, req: Request) -> None:
        self._q.appendleft(req)

    def peek(self) -> Sequence[Request]:
        return (self._q[0],)

    def pop(self) -> Sequence[Request]:
        return (self._q.popleft(),)

    def remove(self, req: Request) -> None:
        self._q.remove(req)

    def __len__(self) -> int:
        return len(self._q)

    def __iter__(self):
        return iter(self._q)


class Policy:
    """Base policy with vLLM's FCFS behaviour; subclasses override what differs.

    Attributes:
        name: the policy's CLI name.
    """

    name = "fcfs"

    def new_queue(self, prefix_match=None) -> WaitingQueue:
        """A fresh waiting queue for one engine (or one replay client).

        Args:
            prefix_match: ``prefix_match(req) -> int``, prompt tokens of ``req`` in the
                engine's prefix cache now (used by LPM; ``None`` where unknown).
        """
        return FCFSQueue()

    def victim(self, running: Iterable[Request]) -> Request:
        """The running request to preempt when KV blocks run out.

        ``running`` iterates in admission order. FCFS takes the last admitted: vLLM V1
        ``Scheduler.schedule`` does ``self.running.pop()``; v0 ``running.pop()`` likewise.
        """
        return next(reversed(running))  # type: ignore[call-overload]

    def priority(self, req: Request) -> int:
        """vLLM integer priority for ``req`` (lower first); FCFS sends 0 for all."""
        return 0

    def on_arrival(self, req: Request, now: float) -> None:
        """Called when ``req`` arrives (before it is queued); ``now`` in seconds."""

    def on_finish(self, req: Request, now: float) -> None:
        """Called when ``req`` finishes or is rejected; ``now`` in seconds."""


class FCFS(Policy):
    """First come, first served (vLLM's default ``--scheduling-policy fcfs``)."""

    name = "fcfs"


POLICIES: dict[str, type[Policy]] = {"fcfs": FCFS}


def make_policy(name: str) -> Policy:
    """The policy called ``name``.

    Raises:
        InputError: unknown name.
    """
    from dynasim.errors import InputError

    if name not in POLICIES:
        raise InputError(f"unknown policy (known: {', '.join(POLICIES)})", field="policy",
                         source=name)
    return POLICIES[name]()
