"""One LLM request that a reasoning program issues, as recorded in a real trace.

A :class:`Call` is the unit every program algorithm produces: its prompt as a chain of
*segments* (content key, tokens), its output length, and -- when the trace holds them --
the answer it reached, whether that answer is correct, and a reward score. Two calls whose
prompts start with the same segment keys share that prefix, which is what the engine's
prefix cache (:mod:`dynasim.prefix_cache`) and SGLang's LPM order act on.
"""

from __future__ import annotations

from dataclasses import dataclass

#: (content key, tokens): a run of prompt tokens whose content is named by ``key``.
Segment = tuple[str, int]


@dataclass(frozen=True, slots=True)
class Call:
    """One request of a program.

    Attributes:
        prompt: segments of the prompt, in order; the prompt length is the sum of their
            token counts. Equal leading keys mean an equal prefix.
        output_tokens: tokens the request generates (>= 1).
        answer: the final answer extracted from this output (``None``: none, or not an
            answer-bearing call).
        correct: whether ``answer`` is correct (``None``: unknown / not applicable).
        reward: a reward-model or value score in [0, 1] (``None``: none).
    """

    prompt: tuple[Segment, ...]
    output_tokens: int
    answer: str | None = None
    correct: bool | None = None
    reward: float | None = None

    @property
    def prompt_tokens(self) -> int:
        """Prompt length in tokens."""
        return sum(n for _, n in self.prompt)
