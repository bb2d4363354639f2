"""Arrival processes as in ``vllm bench serve``, and traces built from them.

Inter-arrival gaps follow Gamma(shape = burstiness, scale = 1 / (request_rate *
burstiness)): mean gap 1/request_rate, coefficient of variation 1/sqrt(burstiness);
burstiness 1 is a Poisson process. As in vLLM 0.11 ``vllm/benchmarks/serve.py``
(``get_request``): one gap is drawn per request (the first request waits one gap too),
the cumulative delays are then rescaled so that the last request is sent at exactly
``num_prompts / request_rate`` seconds, and ``request_rate = inf`` sends everything at
t = 0.
"""

from __future__ import annotations

import math

import numpy as np

from dynasim.errors import InputError
from dynasim.trace import Trace


def arrival_times(n: int, request_rate: float, burstiness: float = 1.0,
                  seed: int = 0) -> np.ndarray:
    """Arrival times in seconds, shape ``(n,)``, non-decreasing; the last is ``n / rate``.

    Raises:
        InputError: ``n < 1``, ``request_rate <= 0`` or NaN, ``burstiness <= 0``.
    """
    if n < 1:
        raise InputError(f"--num-prompts must be >= 1, got {n}", field="num_prompts")
    if not request_rate > 0:
        raise InputError(f"--request-rate must be > 0, got {request_rate}",
                         field="request_rate")
    if not (burstiness > 0 and math.isfinite(burstiness)):
        raise InputError(f"--burstiness must be a positive number, got {burstiness}",
                         field="burstiness")
    if math.isinf(request_rate):
        return np.zeros(n)
    rng = np.random.default_rng(seed)
    delays = np.cumsum(rng.gamma(shape=burstiness, scale=1.0 / (request_rate * burstiness),
                                 size=n))
    target = n / request_rate
    times = delays * (target / delays[-1])
    times[-1] = target  # exact despite rounding; keep the sequence non-decreasing
    return np.minimum(times, target, out=times)


def retime(trace: Trace, request_rate: float, burstiness: float = 1.0,
           seed: int = 0) -> Trace:
    """The same requests in the same order (ids kept) with new arrival times."""
    frame = trace.frame.copy()
    frame["arrival_time"] = arrival_times(len(frame), request_rate, burstiness, seed)
    return Trace(trace.source, frame)


def generate(lengths_from: Trace, num_prompts: int, request_rate: float,
             burstiness: float = 1.0, seed: int = 0) -> Trace:
    """A new trace of ``num_prompts`` requests: (prompt, output) length pairs drawn
    uniformly with replacement from ``lengths_from`` (pairs kept together, as
    ``vllm bench serve`` samples dataset rows), arrivals from :func:`arrival_times`.
    Both draws use ``seed``; ids are 0..num_prompts-1."""
    times = arrival_times(num_prompts, request_rate, burstiness, seed)
    rng = np.random.default_rng([seed, 1])
    rows = rng.integers(0, len(lengths_from), size=num_prompts)
    src = lengths_from.frame.iloc[rows]
    frame = src[["prompt_tokens", "output_tokens"]].reset_index(drop=True)
    frame.insert(0, "arrival_time", times)
    frame.index.name = "request_id"
    return Trace(f"generated(from={lengths_from.source}, rate={request_rate}, "
                 f"burstiness={burstiness}, seed={seed})", frame)
