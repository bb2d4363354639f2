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

It is told about events through :meth:`Policy.on_arrival` and :meth:`Policy.on_finish`,
and about programs through :meth:`Policy.on_program_arrival` /
:meth:`Policy.on_program_finish`; program-aware policies (gang, SJF) read the live
:class:`~dynasim.workloads.program.Program` objects registered there.

A policy is *inter-program* (the queue order: ``fcfs``, ``lpm``, ``gang``, ``sjf``;
Dynasor App. D.3) combined with an *intra-program* policy (how much knob each program
gets: baseline-even by default, ``certaindex`` for static thresholding; App. D.2), held
in :attr:`Policy.intra`. Names (:func:`make_policy`): ``lpm``, ``gang+certaindex``,
``sjf+certaindex`` ...; plain ``certaindex`` is Dynasor's full system, certaindex + SJF
(which is gang-admitted).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Protocol

from dynasim.policies.intra_program import DEFAULT_CAP, BaselineEven, IntraPolicy
from dynasim.request import Request

if TYPE_CHECKING:
    from dynasim.workloads.program import Program


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

    Args:
        intra: the intra-program policy (default baseline-even at the paper's cap).

    Attributes:
        name: the inter-program policy's CLI name.
        programs: live programs by id (registered by the driver).
    """

    name = "fcfs"

    def __init__(self, intra: IntraPolicy | None = None) -> None:
        self.intra = intra if intra is not None else BaselineEven(DEFAULT_CAP)
        self.programs: dict[int, Program] = {}

    @property
    def label(self) -> str:
        """``inter`` or ``inter+intra`` (``@eager`` under eager dispatch) as written on
        the command line."""
        intra = self.intra.name
        label = self.name if intra == "even" else f"{self.name}+{intra}"
        return label + ("@eager" if self.intra.dispatch == "eager" else "")

    def new_queue(self, prefix_match: Callable[[Request], int] | None = None) -> WaitingQueue:
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

    def on_step(self, now: float) -> None:
        """Called by the engine before it schedules a step; ``now`` in seconds."""

    #: Eviction order of the engine's prefix cache under this policy
    #: (:class:`~dynasim.prefix_cache.PrefixCache`): ``"lru"``, vLLM's free-block queue
    #: (``vllm/v1/core/block_pool.py``: least recently freed first, a request's tail
    #: blocks before its head), the baseline; ``"program"``, Dynasor's program-aware
    #: manager (blocks of programs with no running request first, then LRU), which the
    #: program policies (gang, SJF, PLAS) use. Set it on an instance to compare the two.
    eviction = "lru"

    #: True when the waiting order depends on the engine's prefix cache (LPM), so it
    #: may change when a decode step evicts a cached block.
    order_depends_on_cache = False

    def order_changes_at(self, now: float) -> float | None:
        """The next time (seconds, after ``now``) at which the waiting order may change
        with time alone, with no arrival, finish or cache change (SJF aging); ``None``:
        never (FCFS, LPM, gang).

        The engine advances a run of decode steps in one go on the premise that a
        waiting group it could not admit at the start of the run cannot become
        admissible during it; it ends a run at the first step boundary at or after this
        time, where a step-by-step engine would see the new order."""
        return None

    def on_program_arrival(self, program: Program, now: float) -> None:
        """Register a program before its first requests are submitted."""
        self.programs[program.program_id] = program

    def on_program_finish(self, program: Program, now: float) -> None:
        """Forget a finished program."""
        self.programs.pop(program.program_id, None)
