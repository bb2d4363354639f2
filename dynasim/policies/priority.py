"""Priority: vLLM's ``--scheduling-policy priority`` as an inter-program policy.

Rules (vLLM V1, ``vllm/v1/core/sched/request_queue.py`` ``PriorityRequestQueue`` and
``vllm/v1/core/sched/scheduler.py`` ``Scheduler.schedule``):

* the waiting queue is a heap on ``(priority, arrival_time)``: lower priority values run
  first, ties by arrival (and by request id, dynasim's tie-break for equal arrival times);
* a preempted request is re-queued *by priority* (``prepend_request`` pushes it on the
  heap like a new one), not at the head as under FCFS;
* the preemption victim is the running request with the worst ``(priority,
  arrival_time)``: ``max(self.running, key=lambda r: (r.priority, r.arrival_time))``,
  not the last admitted.

A request's priority is its trace's ``priority`` column (Mooncake JSONL carries extra keys;
vLLM's per-request ``priority`` field), 0 where absent; the replay harness sends it back
as the same field.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterable, Sequence

from dynasim.policies.base import Policy
from dynasim.request import Request


def priority_key(req: Request) -> tuple[int, float, int]:
    """vLLM's priority order of a request: (priority, arrival time s, request id)."""
    return (req.priority, req.arrival_time, req.request_id)


class PriorityQueue:
    """Waiting requests on a heap by :func:`priority_key`; preempted ones re-queued by
    priority (module docstring). Removal (an abort while waiting) is lazy."""

    def __init__(self) -> None:
        self._heap: list[tuple[tuple[int, float, int], Request]] = []
        self._gone: set[int] = set()  # ids of removed requests still on the heap
        self._n = 0

    def push(self, req: Request) -> None:
        heapq.heappush(self._heap, (priority_key(req), req))
        self._gone.discard(req.request_id)
        self._n += 1

    def prepend(self, req: Request) -> None:
        """A preempted request: pushed by priority (vLLM ``prepend_request`` of the
        priority queue is ``add_request``)."""
        self.push(req)

    def _top(self) -> tuple[tuple[int, float, int], Request]:
        heap = self._heap
        while heap and heap[0][1].request_id in self._gone:
            self._gone.discard(heapq.heappop(heap)[1].request_id)
        if not heap:
            raise IndexError("empty queue")
        return heap[0]

    def peek(self) -> Sequence[Request]:
        return (self._top()[1],)

    def pop(self) -> Sequence[Request]:
        self._top()
        self._n -= 1
        return (heapq.heappop(self._heap)[1],)

    def remove(self, req: Request) -> None:
        if req.request_id in self._gone or all(r is not req for _, r in self._heap):
            raise ValueError(f"request {req.request_id} is not waiting")
        self._gone.add(req.request_id)
        self._n -= 1

    def __len__(self) -> int:
        return self._n

    def __iter__(self):
        return (r for _, r in sorted(self._heap, key=lambda e: e[0])
                if r.request_id not in self._gone)


class Priority(Policy):
    """vLLM's priority scheduling (module docstring): lower ``priority`` first, ties by
    arrival; the victim is the running request with the worst (priority, arrival)."""

    name = "priority"

    def new_queue(self, prefix_match: Callable[[Request], int] | None = None) -> PriorityQueue:
        return PriorityQueue()

    def victim(self, running: Iterable[Request]) -> Request:
        """``max(running, key=(priority, arrival_time))`` (vLLM V1 ``Scheduler.schedule``
        under ``SchedulingPolicy.PRIORITY``); equal keys: the last admitted of them."""
        best, best_key = None, None
        for req in running:
            k = (req.priority, req.arrival_time)
            if best_key is None or k > best_key:
                best, best_key = req, k
        if best is None:
            raise IndexError("no running request to preempt")
        return best

    def priority(self, req: Request) -> int:
        """The request's own priority (its trace's ``priority`` column, 0 where absent)."""
        return req.priority
