"""Approximate shortest-job-first over programs, with aging (Dynasor App. D.3).

A program's remaining time is estimated as the paper does: the knob it may still use
times its own average tokens per step so far,

    remaining = (knob allowed − calls finished) × (output tokens finished / calls finished)

where the knob allowed is the cap until certaindex has decided and the decided knob after
(so certaindex shortens the estimate of programs it stops).

A long chain of thought (one main request, probes under Dynasor-CoT) has one call, so
that estimate says nothing; its remaining length is estimated, without knowing its own,
as the mean length of the chains that ended so far in the run (finished, or stopped by
their probes) minus the tokens it has generated, known from its probes (probes issued ×
the probe interval): a chain near its end, and its probes, go first. dynasim's choice
(issue 17): a non-clairvoyant estimate that learns the workload's chain length online
and lets Dynasor-CoT's probes of advanced chains jump the queue. Before any of its calls has
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

from typing import TYPE_CHECKING

from dynasim.policies.gang import DEFAULT_AGING_S, AgingGang
from dynasim.request import Request

if TYPE_CHECKING:
    from dynasim.policies.intra_program import IntraPolicy
    from dynasim.workloads.program import Program

__all__ = ["DEFAULT_AGING_S", "SJF"]


class SJF(AgingGang):
    """Shortest (estimated remaining) program first, gang-admitted, with aging.

    Args:
        intra: the intra-program policy.
        aging_s: waiting time in seconds after which a program is served before all
            non-starving ones.
    """

    name = "sjf"

    def __init__(self, intra: IntraPolicy | None = None, aging_s: float = DEFAULT_AGING_S) -> None:
        super().__init__(intra, aging_s)
        self._tokens = 0
        self._calls = 0
        self._chain_tokens = 0  # long chain of thought: main requests that ended
        self._chains = 0

    def on_arrival(self, req: Request, now: float) -> None:
        self.now = now

    def on_finish(self, req: Request, now: float) -> None:
        self.now = now
        if req.output_key is not None:  # a chain of thought's main request
            self._chain_tokens += req.num_generated
            self._chains += 1
        elif req.status == "finished":
            self._tokens += req.output_tokens
            self._calls += 1

    def on_program_arrival(self, program: Program, now: float) -> None:
        super().on_program_arrival(program, now)
        self._age_from(program.arrival_time)

    def estimate(self, program: Program) -> float:
        """Estimated remaining output tokens of ``program`` (module docstring)."""
        if getattr(getattr(program, "spec", None), "trajectory", None) is not None:  # CoT
            mean = self._chain_tokens / self._chains if self._chains else 1.0
            done = (len(program.issued) - 1) * getattr(program.intra, "probe_interval", 0)
            return max(1.0, mean - done)
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

    def _victim_rank(self, req: Request) -> tuple:
        """The SJF order (:meth:`_key`): the longest, non-starving program goes first."""
        return self._key(req)
