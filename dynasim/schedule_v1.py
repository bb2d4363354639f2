"""vLLM V1's step (``vllm/v1/core/sched/scheduler.py`` ``Scheduler.schedule``) for
:class:`dynasim.engine.Engine` (a mixin it inherits; the rules are in the engine's module
docstring: *V1 step*, *preemption*, *full-prompt admission*, *gangs that cannot fit*):
running requests first (decodes, then the prefill chunks of those still prefilling,
preempting victims when their blocks do not fit), then waiting groups admitted in the
policy's order with a first chunk each while budget, seats and blocks last.
"""

from __future__ import annotations

from collections.abc import Sequence

from dynasim.decode_set import _cdiv
from dynasim.request import RUNNING, Request


class V1Scheduler:
    """The V1 step of :class:`dynasim.engine.Engine`; it reads and writes the engine's
    attributes and calls its ``_plan``, ``_start``, ``_register``, ``_alloc``,
    ``_free``, ``_due_blocks``, ``_preempt``, ``_fits_empty`` and
    ``_reserve_decode_blocks``."""

    def _free_seats(self) -> int:
        """Seats a waiting request may take: ``max_num_seqs`` less the running requests
        and, under async scheduling, those that finished in the last step and still hold
        theirs (engine module docstring)."""
        return self.max_num_seqs - len(self.running) - len(self._lingering)

    def _schedule_v1(self) -> tuple[dict[Request, int], bool]:
        self._reserve_decode_blocks()
        budget = self.max_num_batched_tokens - self.num_decoding
        chunks: dict[Request, int] = {}
        for req in list(self.prefilling):
            if req.status != RUNNING:
                continue
            if budget <= 0:
                break
            n = min(req.num_known_tokens - req.num_computed, budget)
            while True:
                need = (_cdiv(req.num_computed + n, self.block_size) - req.num_blocks
                        - req._shared)
                if need <= self._free() - self._due_blocks():
                    break
                victim = self.policy.victim(self.running)
                if victim._decoding:
                    budget += 1
                budget += chunks.pop(victim, 0)
                self._preempt(victim)
                if victim is req:
                    break
            if req.status != RUNNING:
                break
            self._alloc(need)
            req.num_blocks += need
            self._register(req, req.num_computed + n)
            chunks[req] = n
            budget -= n
        if not self._preempted:
            self._admit(chunks, budget)
        return chunks, self.num_decoding > 0

    def _admit(self, chunks: dict[Request, int], budget: int) -> None:
        """V1 admission of waiting groups with a first chunk each (module docstring); a
        group that could never fit whole is admitted in pieces (:meth:`_fits_empty`)."""
        while len(self.waiting) and budget > 0:
            group = self.waiting.peek()
            fits = False
            if len(group) <= self._free_seats():
                plan, need, left = self._plan_v1(group, budget)
                fits = need <= self._free() - self._due_blocks()
            if fits:
                self.waiting.pop()
            elif len(group) > 1 and not self._fits_empty(group):
                plan, left = self._piece_v1(group, budget)
                for req, *_ in plan:
                    self.waiting.remove(req)
                if not plan:
                    break
            else:
                break
            for req, hit, n, blocks in plan:
                self._start(req, hit, blocks, n)
                if n:
                    chunks[req] = n
            budget = left
            if len(plan) < len(group):
                break  # the rest of a split group stays at the head

    def _plan_v1(self, group: Sequence[Request], budget: int
                 ) -> tuple[list[tuple[Request, int, int, int]], int, int]:
        """(plan, blocks needed, budget left) to admit ``group`` whole with ``budget``
        tokens: per request (request, hit blocks, chunk tokens, new blocks)."""
        plan, need, pending = [], 0, set()
        for req in group:
            hit, n, blocks, idle = self._plan(req, budget, pending)
            budget -= n
            need += self._admit_need(req, hit, blocks) + idle
            plan.append((req, hit, n, blocks))
        return plan, need, budget

    def _admit_need(self, req: Request, hit: int, blocks: int) -> int:
        """New blocks that must fit to admit ``req`` with ``hit`` cached blocks and a
        first chunk of ``blocks`` new ones: those, or with ``admit_full_prompt`` the
        blocks of all its known tokens (module docstring)."""
        if self.admit_full_prompt:
            return max(blocks, _cdiv(req.num_known_tokens, self.block_size) - hit)
        return blocks

    def _piece_v1(self, group: Sequence[Request], budget: int
                  ) -> tuple[list[tuple[Request, int, int, int]], int]:
        """The leading members of ``group`` that fit now, as (plan, budget left)."""
        plan, need, pending = [], 0, set()
        free = self._free() - self._due_blocks()
        seats = self._free_seats()
        for req in group[:seats]:
            if budget <= 0:
                break
            hit, n, blocks, idle = self._plan(req, budget, set(pending))
            want = self._admit_need(req, hit, blocks) + idle
            if need + want > free:
                break
            self._plan(req, budget, pending)
            need += want
            budget -= n
            plan.append((req, hit, n, blocks))
        return plan, budget
