"""vLLM v0's step (0.2-0.4, ``vllm/core/scheduler.py`` ``_schedule``) for
:class:`dynasim.engine.Engine` (a mixin it inherits; the rules are in the engine's
module docstring: *v0 step*, *v0 padding*, *gangs that cannot fit*): if waiting requests
can be admitted whole the step is prefill only, otherwise every running request decodes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynasim.request import Request


class V0Scheduler:
    """The v0 step of :class:`dynasim.engine.Engine`; it reads and writes the engine's
    attributes and calls its ``_plan``, ``_start``, ``_fits_empty`` and
    ``_reserve_decode_blocks``."""

    def _v0_check(self, group: Sequence[Request], tokens: int, lens: list[int],
                  seats: int, free: int) -> list[tuple[int, int, int, int]] | None:
        """The v0 plans of ``group`` if it fits whole next to a prefill batch of
        ``tokens`` tokens and whole lengths ``lens``, with ``seats`` seats and ``free``
        blocks above the watermark; ``None`` if it does not.

        With ``max_paddings`` the batch is padded: vLLM 0.2/0.3 ``Scheduler._schedule``
        measures ``len(seq_lens) * max(seq_lens)`` and the padding over whole sequence
        lengths (``seq.get_len()``), prefix-cached tokens included, so a gang of equal
        prompts never counts as padding however much of it the cache holds."""
        if len(group) > seats:
            return None
        if len(group) == 1 and not group[0]._hashes and self.max_paddings is None:
            n = group[0].num_known_tokens  # fast path: no cache lookup, no padding
            if tokens + n > self.max_num_batched_tokens:
                return None
            blocks = -(-n // self.block_size)
            return None if blocks > free else [(0, n, blocks, 0)]
        pending: set = set()
        plan = [self._plan(req, req.num_known_tokens, pending) for req in group]
        if self.max_paddings is None:
            if tokens + sum(p[1] for p in plan) > self.max_num_batched_tokens:
                return None
        else:
            new = [*lens, *(r.num_known_tokens for r in group)]
            padded = len(new) * max(new)
            if padded > self.max_num_batched_tokens or padded - sum(new) > self.max_paddings:
                return None
        if sum(p[2] + p[3] for p in plan) > free:
            return None
        return plan

    def _schedule_v0(self) -> tuple[dict[Request, int], bool]:
        chunks: dict[Request, int] = {}
        tokens, lens = 0, []
        while len(self.waiting):
            group = self.waiting.peek()
            whole = self._v0_take(group, tokens, lens)
            if whole is not None:
                self.waiting.pop()
                self._v0_start(group, whole, chunks)
                tokens += sum(p[1] for p in whole)
                lens.extend(r.num_known_tokens for r in group)
                continue
            if len(group) > 1 and not self._fits_empty(group):
                for req in group:  # admit the leading members that fit, one by one
                    plan = self._v0_take((req,), tokens, lens)
                    if plan is None:
                        break
                    self.waiting.remove(req)
                    self._v0_start((req,), plan, chunks)
                    tokens += plan[0][1]
                    lens.append(req.num_known_tokens)
            break
        if chunks:
            return chunks, False
        if self.num_decoding and self._phase[self.clock % self.block_size] > self._free():
            self._reserve_decode_blocks()  # (the check is _due_blocks() > _free())
        return chunks, self.num_decoding > 0

    def _v0_take(self, group: Sequence[Request], tokens: int, lens: list[int]
                 ) -> list[tuple[int, int, int, int]] | None:
        """:meth:`_v0_check` against this step's batch so far and the engine's state."""
        seats = self.max_num_seqs - len(self.running)
        if len(group) > seats:
            return None
        return self._v0_check(group, tokens, lens, seats, self._free() - self.watermark_blocks)

    def _v0_start(self, group: Sequence[Request], plan: list[tuple[int, int, int, int]],
                  chunks: dict[Request, int]) -> None:
        for req, (hit, n, blocks, _) in zip(group, plan):
            self._start(req, hit, blocks, n)
            chunks[req] = n
