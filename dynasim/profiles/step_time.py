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

Two forms ship, chosen by the profile's ``step_time.form``:

* ``"distserve"`` (:class:`DistServeStepTime`): DistServe's fitted prefill/decode
  polynomials, for the profiles built from DistServe's coefficients;
* ``"tokens"`` (:class:`TokensStepTime`): a roofline-shaped form over the tokens of the
  step, fitted by :mod:`dynasim.profiles.fit` to live measurements (``dynasim calibrate``) and to
  published per-step or per-operator timings.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field


class StepTimeModel(Protocol):
    """What the engine needs from a step-time model."""

    def step_time(self, prefill: list[tuple[int, int]], num_decode: int,
                  sum_decode_ctx: int) -> float:
        """Seconds for one step (see module docstring for the arguments)."""
        ...

    def split(self, prefill: list[tuple[int, int]], num_decode: int,
              sum_decode_ctx: int) -> tuple[float, float]:
        """``(gpu, cpu)`` seconds of one step, summing to :meth:`step_time`; the CPU
        part does not depend on ``sum_decode_ctx``."""
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

    def split(self, prefill: list[tuple[int, int]], num_decode: int,
              sum_decode_ctx: int) -> tuple[float, float]:
        """``(gpu, cpu)`` seconds of one step, summing to :meth:`step_time`: the CPU
        part is the per-step and per-sequence overheads (``step_overhead_ms +
        overhead_ms_per_seq * sequences``, independent of ``sum_decode_ctx``); the
        per-context-token overhead stays with the GPU part. Used by async scheduling
        (:class:`~dynasim.profiles.profile.Profile` ``async_scheduling``)."""
        total = self.step_time(prefill, num_decode, sum_decode_ctx)
        cpu = (self.step_overhead_ms
               + self.overhead_ms_per_seq * (num_decode + len(prefill))) / 1000.0
        return total - cpu, cpu


class TokensStepTime(BaseModel):
    """Step time from the tokens of the step, coefficients in milliseconds.

    With ``T`` the tokens computed in the step (every prefill chunk's tokens plus one per
    decoding request), ``S`` the sequences in it (chunks + decodes), and causal attention
    counted as query-key pairs (a chunk of ``n`` new tokens after ``p`` computed ones
    has ``n * p + n * (n + 1) / 2`` pairs)::

        ms = step_ms                                   # per step: scheduler, launch, sync
           + max(dense_floor_ms, dense_ms_per_token * T)   # linear layers: reading the
                                                       #   weights or computing, whichever
                                                       #   is slower (roofline)
           + prefill_attention_ms_per_pair * pairs     # prefill attention FLOPs
           + decode_attention_ms_per_token * sum_decode_ctx  # reading the KV cache
           + seq_ms * S                                # per-sequence work: sampling,
                                                       #   logits, output processing

    Every term is a physical cost with a sign constraint (all coefficients >= 0), so a
    fit cannot trade one against another into negative times. A pure decode step with a
    fixed ``num_decode`` has fixed ``T`` and ``S``, so its time is affine in
    ``sum_decode_ctx`` as the engine requires.
    """

    model_config = ConfigDict(extra="forbid")

    form: Literal["tokens"] = "tokens"
    step_ms: float = Field(ge=0)
    dense_floor_ms: float = Field(ge=0)
    dense_ms_per_token: float = Field(ge=0)
    prefill_attention_ms_per_pair: float = Field(ge=0)
    decode_attention_ms_per_token: float = Field(ge=0)
    seq_ms: float = Field(ge=0)

    def step_time(self, prefill: list[tuple[int, int]], num_decode: int,
                  sum_decode_ctx: int) -> float:
        """Seconds for one step; see the class docstring for the rule."""
        tokens, pairs, ctx, seqs = self.features(prefill, num_decode, sum_decode_ctx)
        ms = (self.step_ms + max(self.dense_floor_ms, self.dense_ms_per_token * tokens)
              + self.prefill_attention_ms_per_pair * pairs
              + self.decode_attention_ms_per_token * ctx + self.seq_ms * seqs)
        return ms / 1000.0

    def split(self, prefill: list[tuple[int, int]], num_decode: int,
              sum_decode_ctx: int) -> tuple[float, float]:
        """``(gpu, cpu)`` seconds of one step, summing to :meth:`step_time`: the CPU
        part is ``step_ms + seq_ms * S`` (scheduler, sampling, output processing;
        independent of ``sum_decode_ctx``), the GPU part the rest. Used by async
        scheduling (:class:`~dynasim.profiles.profile.Profile` ``async_scheduling``)."""
        total = self.step_time(prefill, num_decode, sum_decode_ctx)
        cpu = (self.step_ms + self.seq_ms * (num_decode + len(prefill))) / 1000.0
        return total - cpu, cpu

    @staticmethod
    def features(prefill: Sequence[tuple[int, int]], num_decode: int,
                 sum_decode_ctx: float) -> tuple:
        """``(tokens, causal pairs, decode context, sequences)`` of a step, the terms the
        coefficients multiply (class docstring); :mod:`dynasim.profiles.fit` fits on the same."""
        tokens, pairs = num_decode, 0.0
        for n, p in prefill:
            tokens += n
            pairs += n * p + n * (n + 1) / 2
        return tokens, pairs, sum_decode_ctx, num_decode + len(prefill)

    @staticmethod
    def coefficient_names() -> tuple[str, ...]:
        """The fitted coefficients, in the order :mod:`dynasim.profiles.fit` uses."""
        return ("step_ms", "dense_floor_ms", "dense_ms_per_token",
                "prefill_attention_ms_per_pair", "decode_attention_ms_per_token", "seq_ms")


StepTime = Annotated[DistServeStepTime | TokensStepTime, Field(discriminator="form")]
"""Either shipped form, told apart by its ``form`` key."""
