"""The twin's ``/metrics``: Prometheus text with vLLM V1's metric names and meanings.

Source: vLLM V1 ``vllm/v1/metrics/loggers.py`` (``PrometheusStatLogger``); every sample
carries ``model_name`` and ``engine`` (the replica index) labels as vLLM's do. What the
replay harness reads (:mod:`replay.vllm_metrics`, :mod:`replay.server_checks`) is all
here:

* gauges ``vllm:num_requests_running`` / ``vllm:num_requests_waiting`` (the engine's
  running and waiting lists now), ``vllm:kv_cache_usage_perc`` (KV blocks referenced /
  blocks, a fraction in [0, 1] despite the name), ``vllm:cache_config_info`` (1, with
  ``block_size``, ``num_gpu_blocks``, ``enable_prefix_caching`` labels);
* counters ``vllm:prompt_tokens_total`` (prompt tokens of requests that produced their
  first token), ``vllm:generation_tokens_total`` (tokens generated, aborted requests'
  included), ``vllm:num_preemptions_total``, ``vllm:request_success_total``
  (``finished_reason="length"``: the twin always stops at ``max_tokens``);
* histograms (``_bucket``/``_sum``/``_count``, vLLM's buckets) per finished request, in
  simulated seconds: ``vllm:time_to_first_token_seconds`` and
  ``vllm:e2e_request_latency_seconds`` (from arrival at the server),
  ``vllm:request_queue_time_seconds`` (reaching the engine -> first scheduled),
  ``vllm:request_prefill_time_seconds`` (first scheduled -> first token),
  ``vllm:request_decode_time_seconds`` (first -> last token),
  ``vllm:request_inference_time_seconds`` (first scheduled -> last token).
"""

from __future__ import annotations

import bisect
import math
from collections import defaultdict
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from dynasim.engine import Engine
    from dynasim.request import Request

#: vLLM V1's TTFT buckets (s).
TTFT_BUCKETS = (0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0,
                2.5, 5.0, 7.5, 10.0, 20.0, 40.0, 80.0, 160.0, 640.0, 2560.0)
#: vLLM V1's request latency buckets (s): E2E, queue, prefill, decode, inference.
LATENCY_BUCKETS = (0.3, 0.5, 0.8, 1.0, 1.5, 2.0, 2.5, 5.0, 10.0, 15.0, 20.0, 30.0, 40.0,
                   50.0, 60.0, 120.0, 240.0, 480.0, 960.0, 1920.0, 7680.0)

_HISTOGRAMS = {
    "vllm:time_to_first_token_seconds": ("Histogram of time to first token in seconds.",
                                         TTFT_BUCKETS),
    "vllm:e2e_request_latency_seconds": ("Histogram of e2e request latency in seconds.",
                                         LATENCY_BUCKETS),
    "vllm:request_queue_time_seconds": ("Histogram of time spent in WAITING phase.",
                                        LATENCY_BUCKETS),
    "vllm:request_prefill_time_seconds": ("Histogram of time spent in PREFILL phase.",
                                          LATENCY_BUCKETS),
    "vllm:request_decode_time_seconds": ("Histogram of time spent in DECODE phase.",
                                         LATENCY_BUCKETS),
    "vllm:request_inference_time_seconds": ("Histogram of time spent in RUNNING phase.",
                                            LATENCY_BUCKETS),
}


class Histogram:
    """A Prometheus histogram: cumulative counts per upper bound, sum and count."""

    __slots__ = ("bounds", "counts", "sum", "count")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(bounds)
        self.counts = [0] * len(self.bounds)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Add one observation (NaN is ignored)."""
        if math.isnan(value):
            return
        for k in range(bisect.bisect_left(self.bounds, value), len(self.counts)):
            self.counts[k] += 1  # cumulative: every bucket whose bound is >= value
        self.sum += value
        self.count += 1


class ServerMetrics:
    """Counters and histograms of the twin, per replica (module docstring)."""

    def __init__(self) -> None:
        self.prompt_tokens: dict[int, int] = defaultdict(int)
        self.generation_tokens: dict[int, int] = defaultdict(int)
        self.success: dict[int, int] = defaultdict(int)
        self.num_aborted = 0
        self.hist: dict[tuple[str, int], Histogram] = {}

    def _h(self, name: str, replica: int) -> Histogram:
        key = (name, replica)
        h = self.hist.get(key)
        if h is None:
            h = self.hist[key] = Histogram(_HISTOGRAMS[name][1])
        return h

    def first_token(self, req: Request) -> None:
        """``req`` produced its first token: count its prompt tokens."""
        self.prompt_tokens[req.replica] += req.prompt_tokens

    def generated(self, req: Request, n: int) -> None:
        """``req`` generated ``n`` more tokens."""
        self.generation_tokens[req.replica] += n

    def aborted(self) -> None:
        """A client went away before its request ended."""
        self.num_aborted += 1

    def finished(self, req: Request, scheduled: float, frontend_latency: float) -> None:
        """``req`` finished; ``scheduled``: simulated time it was first seen running;
        ``frontend_latency``: seconds from arrival to the engine."""
        r = req.replica
        self.success[r] += 1
        t0, t1, t2 = req.arrival_time, req.first_token_time, req.finish_time
        self._h("vllm:time_to_first_token_seconds", r).observe(t1 - t0)
        self._h("vllm:e2e_request_latency_seconds", r).observe(t2 - t0)
        self._h("vllm:request_queue_time_seconds", r).observe(
            max(0.0, scheduled - t0 - frontend_latency))
        self._h("vllm:request_prefill_time_seconds", r).observe(t1 - scheduled)
        self._h("vllm:request_decode_time_seconds", r).observe(t2 - t1)
        self._h("vllm:request_inference_time_seconds", r).observe(t2 - scheduled)

    def render(self, engines: Sequence[Engine], model: str) -> str:
        """The Prometheus text exposition of the twin's ``engines`` (one per replica,
        by index) now (module docstring)."""
        out: list[str] = []

        def labels(i: int, **extra: object) -> str:
            items = {"engine": str(i), "model_name": model, **extra}
            return ",".join(f'{k}="{_escape(str(v))}"' for k, v in items.items())

        def family(name: str, kind: str, text: str, values: Sequence[tuple[str, float]]
                   ) -> None:
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} {kind}")
            out.extend(f"{name}{{{lab}}} {_num(v)}" for lab, v in values)

        idx = range(len(engines))
        family("vllm:num_requests_running", "gauge", "Number of requests in model "
               "execution batches.", [(labels(i), len(engines[i].running)) for i in idx])
        family("vllm:num_requests_waiting", "gauge", "Number of requests waiting to be "
               "processed.", [(labels(i), len(engines[i].waiting)) for i in idx])
        family("vllm:kv_cache_usage_perc", "gauge", "KV-cache usage. 1 means 100 percent "
               "usage.", [(labels(i), engines[i].used_blocks() / engines[i].total_blocks)
                          for i in idx])
        family("vllm:cache_config_info", "gauge", "Information of the LLMEngine "
               "CacheConfig", [(labels(i, block_size=e.block_size,
                                       num_gpu_blocks=e.total_blocks,
                                       enable_prefix_caching=e.cache is not None), 1)
                               for i, e in enumerate(engines)])
        family("vllm:num_preemptions_total", "counter", "Cumulative number of preemption "
               "from the engine.", [(labels(i), engines[i].num_preemptions) for i in idx])
        family("vllm:prompt_tokens_total", "counter", "Number of prefill tokens "
               "processed.", [(labels(i), self.prompt_tokens[i]) for i in idx])
        family("vllm:generation_tokens_total", "counter", "Number of generation tokens "
               "processed.", [(labels(i), self.generation_tokens[i]) for i in idx])
        family("vllm:request_success_total", "counter", "Count of successfully processed "
               "requests.", [(labels(i, finished_reason="length"), self.success[i])
                             for i in idx])
        for name, (text, bounds) in _HISTOGRAMS.items():
            out.append(f"# HELP {name} {text}")
            out.append(f"# TYPE {name} histogram")
            for i in idx:
                h = self.hist.get((name, i)) or Histogram(bounds)
                for b, c in zip(h.bounds, h.counts):
                    out.append(f"{name}_bucket{{{labels(i, le=_num(b))}}} {c}")
                out.append(f"{name}_bucket{{{labels(i, le='+Inf')}}} {h.count}")
                out.append(f"{name}_sum{{{labels(i)}}} {_num(h.sum)}")
                out.append(f"{name}_count{{{labels(i)}}} {h.count}")
        return "\n".join(out) + "\n"


def _num(v: float) -> str:
    return repr(float(v)) if isinstance(v, float) else str(v)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
