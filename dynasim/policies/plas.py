"""Program-level least attained service (PLAS), gang-admitted, with anti-starvation.

Autellix (Luo et al., arXiv 2502.13965, §4.2) orders LLM calls by the service their
program has already received: the j-th call of a program gets priority
``p(c_j) = Σ_{k<j} t_k`` over the program's *completed* calls, so new and short programs
go first without anyone knowing lengths in advance (least attained service, the
non-clairvoyant stand-in for SJF).

dynasim's form (choices where the paper leaves freedom, or where the simulator differs):

* **Service in tokens, from what the engine reports.** A call's service is the tokens
  the server computed for it: the prompt tokens it prefilled (``prompt_tokens −
  num_cached_tokens``: prefix-cache hits cost nothing) plus its output tokens, counted
  when :meth:`~dynasim.policies.base.Policy.on_finish` reports it *finished* (a rejected
  or cancelled call adds nothing). The trace's lengths of calls not yet finished are
  never read (no oracle). Running calls count from their finish, as in Autellix's
  formula: counting live progress would change the order at every decode step (the
  engine reports progress only at events, and a replay client only at the end of a
  stream).
* **Gang admission** (:class:`~dynasim.policies.gang.ProgramQueue`), as SJF: a program's
  ready calls are admitted together, least attained service first, ties by program
  arrival then id. Autellix schedules single calls; dynasim's reasoning programs issue
  waves of parallel calls (SC samples, ToT branches) whose program finishes with its
  slowest call, so keeping a wave together is what lets a short program actually finish
  early (Dynasor App. D.3's gang argument).
* **Anti-starvation.** Autellix promotes a call whose waiting time grows too large
  relative to its service. dynasim uses an absolute threshold, the same ``aging_s`` as
  SJF (default 30 s): a program whose waiting calls have waited ``aging_s`` seconds
  (since the earliest of them reached the queue) outranks every program that has not,
  and such starving programs are served in the order they started waiting. Waiting is
  counted per wave, not since program arrival, because attained service only grows with
  a program's age: a long program is starved while it waits, not while it runs.
* **Preemption victim**: a running call of the program with the most attained service
  (latest arrival on ties), the last admitted of it.
* **vLLM priority** (replay): ``0`` for a starving program, else attained tokens + 1.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from dynasim.policies.gang import DEFAULT_AGING_S, AgingGang
from dynasim.request import Request

if TYPE_CHECKING:
    from dynasim.policies.intra_program import IntraPolicy
    from dynasim.workloads.program import Program


def call_service(req: Request) -> int:
    """Tokens the server computed for a finished call: prompt tokens prefilled (less
    prefix-cache hits) plus output tokens (Autellix §4.2's service, in tokens)."""
    return max(0, req.prompt_tokens - req.num_cached_tokens) + req.output_tokens


class PLAS(AgingGang):
    """Least attained service over programs (Autellix PLAS), gang-admitted, with a
    waiting-time anti-starvation rule (module docstring).

    Args:
        intra: the intra-program policy.
        aging_s: seconds a program's ready calls may wait before they are served ahead
            of every non-starving program (>= 0).
    """

    name = "plas"

    def __init__(self, intra: IntraPolicy | None = None,
                 aging_s: float = DEFAULT_AGING_S) -> None:
        super().__init__(intra, aging_s)
        self._service: dict[int, int] = {}  # program id -> attained tokens
        self._queued: dict[Request, float] = {}  # waiting request -> queued at (s)

    def attained(self, program_id: int | None) -> int:
        """Attained service of a program in tokens (0 for a request with no program)."""
        return self._service.get(program_id, 0) if program_id is not None else 0

    def on_arrival(self, req: Request, now: float) -> None:
        self.now = now
        self._queued[req] = now
        self._age_from(now)

    def on_finish(self, req: Request, now: float) -> None:
        self.now = now
        self._queued.pop(req, None)
        if req.status == "finished" and req.program_id is not None:
            self._service[req.program_id] = self.attained(req.program_id) + \
                call_service(req)

    def on_program_finish(self, program: Program, now: float) -> None:
        super().on_program_finish(program, now)
        self._service.pop(program.program_id, None)

    def _key(self, req: Request) -> tuple:
        """Queue order of the group whose first (earliest queued) request is ``req``."""
        since = self._queued.get(req, req.arrival_time)
        if self.now - since >= self.aging_s:
            return (0, since, req.request_id)
        prog = self.programs.get(req.program_id) if req.program_id is not None else None
        if prog is None:
            return (1, 0, req.arrival_time, 1, req.request_id)
        return (1, self.attained(prog.program_id), prog.arrival_time, 0, prog.program_id)

    def _victim_rank(self, req: Request) -> tuple:
        """Most attained service first, then the latest-arrived program."""
        prog = self.programs.get(req.program_id) if req.program_id is not None else None
        t = prog.arrival_time if prog is not None else req.arrival_time
        return (self.attained(req.program_id), t)
