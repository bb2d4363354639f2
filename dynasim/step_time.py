"""Step-time models: how long one engine step (one forward pass of a batch) takes.

A model maps the composition of a step to seconds. The engine describes a step by

* ``prefill``: the prefill chunks, each ``(num_new_tokens, num_context_before)``; a
  whole prompt is ``(prompt_tokens, 0)``; the k-th chunk of a chunked prefill starts at
  the tokens already computed;
* ``num_decode``: how many requests decode one token;
* ``sum_decode_ctx``: the sum over decoding requests of their context length including
  the token being decoded (prompt + generated so far), in tokens.

Contract used by the engine to advance many decode steps at once: for a fixed
``num_decode``, a pure decode step's time is affine in ``sum_decode_ctx``.
"""

from __future__ import annotations

from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict


class StepTimeModel(Protocol):
    """What the engine needs from a step-time model."""

    def step_time(self, prefill: list[tuple[int, int]], num_decode: int,
                  sum_decode_ctx: int) -> float:
        """Seconds for one step (see module docstring for the arguments)."""
        ...


class DistServeStepTime(BaseModel):
    """DistServe simdistserve's step-time form, coefficients in milliseconds.

    Source: LLMServe/DistServe ``simdistserve/estimators/time_estimator.py``
    (``get_prefill_time``, ``get_decode_time``) and ``simdistserve/base/worker.py``:

    * prefill: ``a + b * sum(n_i) + c * sum(n_i ** 2)`` over the prompts of the batch
      (sum of squares of each length, not square of the sum);
    * decode: ``a + b * sum(ctx_i) + c * batch_size`` with ``ctx_i`` = prompt + tokens
      decoded so far + 1; the ``decode_small_batch`` set applies while
      ``batch_size < large_batch_threshold``, else ``decode_large_batch``;
    * a per-step overhead ``step_overhead_ms + overhead_ms_per_context_token * sum of
      context tokens in the batch`` (simdistserve's ``add_ray_overhead`` for its vLLM
      engine, which ran with Ray workers).

    dynasim's extension for chunked prefill (vLLM V1), stated as an assumption: a chunk
    of ``n`` new tokens after ``p`` computed ones costs ``b * n + c * ((p + n)**2 - p**2)``,
    so the chunks of a prompt add up to that prompt's unchunked cost; a mixed step pays
    the prefill constant once and drops the decode constant.
    """

    model_config = ConfigDict(extra="forbid")

    form: Literal["distserve"] = "distserve"
    prefill: tuple[float, float, float]
    decode_small_batch: tuple[float, float, float]
    decode_large_batch: tuple[float, float, float]
    large_batch_threshold: int = 95
    step_overhead_ms: float = 0.0
    overhead_ms_per_context_token: float = 0.0
    overhead_ms_per_seq: float = 0.0

    def step_time(self, prefill: list[tuple[int, int]], num_decode: int,
                  sum_decode_ctx: int) -> float:
        """Seconds for one step; see the class docstring for the rule."""
        ms = self.step_overhead_ms
        ctx_tokens = sum_decode_ctx
        if prefill:
            a, b, c = self.prefill
            ms += a
            for n, p in prefill:
                ms += b * n + c * ((p + n) * (p + n) - p * p)
                ctx_tokens += p + n
        if num_decode:
            a, b, c = (self.decode_small_batch if num_decode < self.large_batch_threshold
                       else self.decode_large_batch)
            if not prefill:
                ms += a
            ms += b * sum_decode_ctx + c * num_decode
        ms += self.overhead_ms_per_context_token * ctx_tokens
        ms += self.overhead_ms_per_seq * (num_decode + len(prefill))
        return ms / 1000.0
