"""Approximate shortest-job-first over programs, with aging (Dynasor App. D.3).

A program's remaining time is estimated as the paper does: the knob it may still use
times its own average tokens per step so far,

    remaining = (knob allowed − calls finished) × (output tokens finished / calls finished)

where the knob allowed is the cap until certaindex has decided and the decided knob after
(so certaindex shortens the estimate of programs it stops). Before any of its calls has
finished, a program's tokens per step is the mean over all calls finished so far in the
run (or 1 token when none has). Programs are gang-admitted (:class:`~dynasim.policies.gang.
ProgramQueue`), shortest estimate first.

**Aging** (the paper gives no rule; dynasim's choice): a program that has waited
``aging_s`` seconds (default 30 s) since its arrival outranks every program that has
not, and such starving programs are served in arrival order. This bounds how long a long
program can be passed over by a stream of short ones while leaving SJF's order intact at
loads where nothing waits that long.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable
from typing import TYPE_CHECKING

from dynasim.policies.gang import Gang, ProgramQueue
from dynasim.request import Request

if TYPE_CHECKING:
    from dynasim.policies.intra_program import IntraPolicy
    from dynasim.workloads.program import Program

DEFAULT_AGING_S = 30.0


class SJF(Gang):
    """Shortest (estimated remaining) program first, gang-admitted, with aging.

    Args:
        intra: the intra-program policy.
        aging_s: waiting time in seconds after which a program is served before all
            non-starving ones.
    """

    name = "sjf"

    def __init__(self, intra: IntraPolicy | None = None, aging_s: float = DEFAULT_AGING_S) -> None:
        super().__init__(intra)
        self.aging_s = aging_s
        self.now = 0.0
        self._ages: list[float] = []  # heap of program arrival + aging_s, seconds
        self._tokens = 0
        self._calls = 0

    def on_step(self, now: float) -> None:
        self.now = now

    def on_arrival(self, req: Request, now: float) -> None:
        self.now = now

    def on_finish(self, req: Request, now: float) -> None:
        self.now = now
        if req.status == "finished":
            self._tokens += req.output_tokens
            self._calls += 1

    def on_program_arrival(self, program: Program, now: float) -> None:
        super().on_program_arrival(program, now)
        heapq.heappush(self._ages, program.arrival_time + self.aging_s)

    def order_changes_at(self, now: float) -> float | None:
        """The next time (seconds) a registered program reaches ``aging_s`` of waiting
        and may jump the queue (programs that finished meanwhile are harmless: the
        engine only stops a decode run early there)."""
        ages = self._ages
        while ages and ages[0] <= now:
            heapq.heappop(ages)
        return ages[0] if ages else None

    def estimate(self, program: Program) -> float:
        """Estimated remaining output tokens of ``program`` (module docstring)."""
        left = max(0, program.knob_allowed() - program.calls_done)
        if program.calls_done:
            per = program.output_tokens_done / program.calls_done
        else:
            per = self._tokens / self._calls if self._calls else 1.0
        return left * per

    def _key(self, req: Request) -> tuple:
        prog = self.programs.get(req.program_id) if req.program_id is not None else None
        if prog is None:
            return (1, req.output_tokens, req.arrival_time, req.request_id)
        if self.now - prog.arrival_time >= self.aging_s:
            return (0, prog.arrival_time, prog.program_id, 0)
        return (1, self.estimate(prog), prog.arrival_time, prog.program_id)

    def new_queue(self, prefix_match: Callable[[Request], int] | None = None) -> ProgramQueue:
        return ProgramQueue(self._key)

    def _victim_rank(self, req: Request) -> tuple:
        """The SJF order (:meth:`_key`): the longest, non-starving program goes first."""
        return self._key(req)

    def priority(self, req: Request) -> int:
        """Estimated remaining tokens (smaller first); starving programs get 0."""
        k = self._key(req)
        return 0 if k[0] == 0 else int(k[1]) + 1
