"""What a running vLLM says about itself, read through its HTTP endpoints only.

* ``GET /version`` (``{"version": "0.32.0"}``) and ``GET /v1/models`` (``max_model_len``
  of the served model);
* ``GET /metrics`` (Prometheus text): :func:`parse_prometheus` keeps every sample with
  its labels; :class:`Scrape` sums a metric over label sets and subtracts scrapes.
  vLLM V1 records, per finished request, histograms whose ``_sum``/``_count`` deltas
  around a request give the engine's own timings (engine-core clock, so they do not
  depend on when the API server gets to stream): ``vllm:request_prefill_time_seconds``
  (scheduled -> first token), ``vllm:request_decode_time_seconds`` (first -> last
  token), ``vllm:request_queue_time_seconds`` (queued -> scheduled), and API-server-side
  ``vllm:time_to_first_token_seconds`` and ``vllm:e2e_request_latency_seconds``
  (API-server arrival -> first / last token processed). ``vllm:cache_config_info`` carries
  the KV cache in its labels (``num_gpu_blocks``, ``block_size``,
  ``enable_prefix_caching``); the gauges ``vllm:num_requests_running`` /
  ``vllm:num_requests_waiting`` show the scheduler's state after each step.

``max_num_seqs`` and ``max_num_batched_tokens`` are not exported by vLLM;
:func:`probe_max_num_seqs` finds the first by filling the running batch and watching the
gauges (the second can only be given as a flag).
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field

import aiohttp

from replay.client import Outcome, get_text, stream_completion

_SAMPLE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)')
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')

PREFILL = "vllm:request_prefill_time_seconds"
DECODE = "vllm:request_decode_time_seconds"
QUEUE = "vllm:request_queue_time_seconds"
TTFT = "vllm:time_to_first_token_seconds"
E2E = "vllm:e2e_request_latency_seconds"
GENERATED = "vllm:generation_tokens_total"


def parse_prometheus(text: str) -> dict[str, list[tuple[dict[str, str], float]]]:
    """``{metric name: [(labels, value), ...]}`` from Prometheus text exposition."""
    out: dict[str, list[tuple[dict[str, str], float]]] = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        m = _SAMPLE.match(line)
        if not m:
            continue
        try:
            value = float(m.group(4))
        except ValueError:
            continue
        labels = dict(_LABEL.findall(m.group(3) or ""))
        out.setdefault(m.group(1), []).append((labels, value))
    return out


@dataclass
class Scrape:
    """One read of ``/metrics`` at client time ``t`` (``time.perf_counter``)."""

    samples: dict[str, list[tuple[dict[str, str], float]]]
    t: float = field(default_factory=time.perf_counter)

    def total(self, name: str) -> float:
        """The metric summed over its label sets (0 when absent)."""
        return sum(v for _, v in self.samples.get(name, ()))

    def delta(self, before: Scrape, name: str) -> float:
        """``total(name)`` now minus in ``before``."""
        return self.total(name) - before.total(name)

    def hist_delta(self, before: Scrape, name: str) -> tuple[float, float]:
        """(sum, count) of histogram ``name`` observed between ``before`` and now."""
        return (self.delta(before, name + "_sum"), self.delta(before, name + "_count"))

    def labels(self, name: str) -> dict[str, str]:
        """The labels of the first sample of ``name`` (info metrics), or ``{}``."""
        got = self.samples.get(name)
        return dict(got[0][0]) if got else {}


async def scrape(session: aiohttp.ClientSession, base_url: str,
                 headers: dict | None = None) -> Scrape:
    """Read ``/metrics``.

    Raises:
        RuntimeError: no answer, or not HTTP 200 (the server exports no metrics).
    """
    url = base_url.rstrip("/") + "/metrics"
    try:
        status, text = await get_text(session, url, headers)
    except (aiohttp.ClientError, OSError) as exc:
        raise RuntimeError(f"{url}: cannot reach the server ({exc})") from exc
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status}; calibration reads vLLM's Prometheus "
                           "metrics (start vLLM without --disable-log-stats)")
    return Scrape(parse_prometheus(text))


async def get_json(session: aiohttp.ClientSession, url: str, headers: dict) -> dict:
    """GET ``url`` as JSON.

    Raises:
        RuntimeError: unreachable, not HTTP 200, or not JSON, with what came back.
    """
    import json

    try:
        status, text = await get_text(session, url, headers)
    except (aiohttp.ClientError, OSError) as exc:
        raise RuntimeError(f"{url}: cannot reach the server ({exc})") from exc
    if status != 200:
        raise RuntimeError(f"{url}: HTTP {status} {text[:200]!r}")
    try:
        return json.loads(text)
    except ValueError:
        raise RuntimeError(f"{url}: not JSON {text[:200]!r}") from None


async def served_max_model_len(session: aiohttp.ClientSession, base_url: str,
                               model: str, headers: dict) -> int | None:
    """The context length (tokens, prompt + output) of ``model`` from ``GET /v1/models``
    (vLLM lists ``max_model_len`` per served model); ``None`` when the server does not say
    (no such endpoint or field: an OpenAI-compatible server other than vLLM).

    Raises:
        RuntimeError: ``model`` is not among the listed models.
    """
    try:
        models = await get_json(session, base_url.rstrip("/") + "/v1/models", headers)
    except RuntimeError:
        return None
    data = models.get("data") if isinstance(models, dict) else None
    if not isinstance(data, list):
        return None
    entry = next((m for m in data if isinstance(m, dict) and m.get("id") == model), None)
    if entry is None:
        names = ", ".join(str(m.get("id")) for m in data if isinstance(m, dict))
        raise RuntimeError(f"{base_url.rstrip('/')}/v1/models: model {model!r} is not "
                           f"served (served: {names or 'none'})")
    value = entry.get("max_model_len")
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 \
        else None


async def server_info(session: aiohttp.ClientSession, base_url: str, model: str,
                      headers: dict) -> dict:
    """``version``, ``max_model_len`` and the KV cache of the server (module doc).

    Raises:
        RuntimeError: unreachable server, or ``model`` not among the served models.
    """
    root = base_url.rstrip("/")
    models = await get_json(session, root + "/v1/models", headers)
    entry = next((m for m in models.get("data", ()) if m.get("id") == model), None)
    if entry is None:
        names = ", ".join(str(m.get("id")) for m in models.get("data", ()))
        raise RuntimeError(f"{root}/v1/models: model {model!r} is not served "
                           f"(served: {names or 'none'})")
    try:
        version = str((await get_json(session, root + "/version", headers))["version"])
    except (RuntimeError, KeyError, TypeError):
        version = "unknown"
    cache = (await scrape(session, base_url, headers)).labels("vllm:cache_config_info")
    info = {"version": version, "max_model_len": entry.get("max_model_len"),
            "cache_config": cache}
    try:
        info["block_size"] = int(cache["block_size"])
        info["num_gpu_blocks"] = int(cache["num_gpu_blocks"])
    except (KeyError, ValueError):
        pass
    if "enable_prefix_caching" in cache:
        info["enable_prefix_caching"] = cache["enable_prefix_caching"] == "True"
    return info


async def _probe_once(session: aiohttp.ClientSession, url: str, model: str,
                      headers: dict, pool: list[int], limit: int,
                      max_tokens: int) -> tuple[int, bool, list[str]]:
    """One probe: (most seen running, exact, the errors of the probe's requests)."""
    completions = url.rstrip("/") + "/v1/completions"
    body = {"model": model, "max_tokens": max_tokens, "ignore_eos": True,
            "temperature": 0.0}
    prompts = [[pool[(i + j) % len(pool)] for j in range(8)] for i in range(limit)]
    outs = [Outcome() for _ in prompts]
    tasks = [asyncio.ensure_future(stream_completion(
        session, completions, dict(body, prompt=p), headers, 120.0, time.perf_counter,
        o)) for p, o in zip(prompts, outs)]
    most, full = 0, []
    try:
        while not all(t.done() for t in tasks):
            s = await scrape(session, url, headers)
            running = int(s.total("vllm:num_requests_running"))
            waiting = int(s.total("vllm:num_requests_waiting"))
            most = max(most, running)
            if waiting > 0 and running > 0:
                full.append(running)
                if len(full) >= 3:
                    break
            await asyncio.sleep(0.02)
    finally:
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    errors = [o.error for o in outs if o.error and o.error != "cancelled"]
    return (max(full), True, errors) if full else (most, False, errors)


async def probe_max_num_seqs(session: aiohttp.ClientSession, url: str, model: str,
                             headers: dict, pool: list[int], limit: int,
                             max_tokens: int = 48, attempts: int = 3) -> tuple[int, bool]:
    """vLLM's ``max_num_seqs``: send ``limit`` short requests at once and read the
    gauges while they run; a step that leaves requests waiting (8-token prompts never
    exhaust the token budget or the KV cache) has every seat taken, so the running count
    then is the limit. Returns ``(value, exact)``; ``exact`` is False when nothing ever
    waited, i.e. the limit is at least ``limit`` (the most seen running is returned).

    A probe that saw no full batch is repeated (up to ``attempts`` in all, after the
    server is idle again): the gauges are set from the engine's step outputs, and a
    CPU engine that holds its output thread back while busy (:mod:`replay.calibrate.steps`)
    can deliver a whole probe's outputs at once, so that no scrape sees it running.

    Raises:
        RuntimeError: every probe request failed (the first error is named), or no probe
            ever saw a running request (give ``--max-num-seqs``).
    """
    best = 0
    for attempt in range(attempts):
        if attempt:
            await wait_idle(session, url, headers)
        most, exact, errors = await _probe_once(session, url, model, headers, pool,
                                                limit, max_tokens)
        if len(errors) == limit:
            raise RuntimeError(f"{url}: every max_num_seqs probe request failed: "
                               f"{errors[0]}")
        if exact:
            return most, True
        best = max(best, most)
    if best == 0:
        raise RuntimeError(f"{url}: {attempts} probes of {limit} requests never saw a "
                           "request running in vllm:num_requests_running; give "
                           "--max-num-seqs")
    return best, False


async def try_scrape(session: aiohttp.ClientSession, base_url: str,
                     headers: dict | None = None) -> Scrape | None:
    """:func:`scrape`, or ``None`` when the server exports no metrics."""
    try:
        return await scrape(session, base_url, headers)
    except RuntimeError:
        return None


def engine_totals(before: Scrape | None, after: Scrape | None) -> dict:
    """The engine's own totals between two scrapes, summed over the requests finished
    in between: ``decode_s``, ``prefill_s``, ``queue_s``, ``generated`` (tokens);
    ``{}`` when either scrape is missing."""
    if before is None or after is None:
        return {}
    return {"decode_s": after.hist_delta(before, DECODE)[0],
            "prefill_s": after.hist_delta(before, PREFILL)[0],
            "queue_s": after.hist_delta(before, QUEUE)[0],
            "generated": after.delta(before, GENERATED)}


def local_cpu_pressure(base_url: str) -> float | None:
    """Linux CPU pressure (PSI ``some avg10``, % of the last 10 s in which a runnable
    task waited for a CPU) when the server runs on this machine, else ``None``: timings
    taken while other work competes for the CPU are slower than the calibration."""
    from urllib.parse import urlparse

    if urlparse(base_url).hostname not in ("127.0.0.1", "localhost", "::1"):
        return None
    try:
        with open("/proc/pressure/cpu", encoding="ascii") as f:
            return float(f.readline().split("avg10=")[1].split()[0])
    except (OSError, IndexError, ValueError):
        return None


def wait_calm(base_url: str, threshold: float, timeout: float = 600.0) -> float | None:
    """Block until this machine's CPU pressure (:func:`local_cpu_pressure`) is below
    ``threshold`` % or ``timeout`` s have passed; returns the last reading (``None``
    for a remote server or without PSI: no wait)."""
    deadline = time.monotonic() + timeout
    while True:
        psi = local_cpu_pressure(base_url)
        if psi is None or psi < threshold or time.monotonic() > deadline:
            return psi
        time.sleep(2.0)


async def wait_idle(session: aiohttp.ClientSession, base_url: str, headers: dict,
                    timeout: float = 30.0) -> None:
    """Wait until the server runs and queues no request (e.g. after aborts)."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        s = await scrape(session, base_url, headers)
        if s.total("vllm:num_requests_running") + s.total("vllm:num_requests_waiting") == 0:
            return
        await asyncio.sleep(0.05)


KV_USAGE_GAUGES = ("vllm:kv_cache_usage_perc", "vllm:gpu_cache_usage_perc")
"""vLLM's KV-cache usage gauge, a fraction in [0, 1] despite the name: V1
(``vllm/v1/metrics/loggers.py``) and V0 (``vllm/engine/metrics.py``)."""


def kv_usage(s: Scrape | None) -> float | None:
    """The server's KV-cache usage fraction in [0, 1] from a scrape (the first gauge of
    :data:`KV_USAGE_GAUGES` present, averaged over its label sets, e.g. data-parallel
    engines), or ``None`` when there is no scrape or no such gauge."""
    if s is None:
        return None
    for name in KV_USAGE_GAUGES:
        got = s.samples.get(name)
        if got:
            return sum(v for _, v in got) / len(got)
    return None
