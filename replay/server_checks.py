"""Checks of a live server before a replay: does it honour vLLM's ``priority`` field
(:func:`probe_priority`), and its engine counters from ``/metrics``
(:func:`scrape_metrics`), read before and after a run."""

from __future__ import annotations

import aiohttp

from replay.client import post_json
from replay.vllm_metrics import try_scrape


async def probe_priority(session: aiohttp.ClientSession, base_url: str, model: str,
                         headers: dict, token: int) -> bool:
    """Whether the server honours vLLM's ``priority`` field: one 1-token request with
    ``priority=1``. vLLM started without ``--scheduling-policy priority`` answers
    HTTP 400 ("Priority scheduling is not enabled"); with it, 200.

    Raises:
        RuntimeError: the server is unreachable or fails the probe for another reason
            (wrong model name, ...), with its answer.
    """
    url = base_url.rstrip("/") + "/v1/completions"
    body = {"model": model, "prompt": [token] * 4, "max_tokens": 1, "priority": 1}
    status, doc = 0, ""
    for attempt in range(3):  # a transient 5xx must not abort a long run
        try:
            status, doc = await post_json(session, url, body, dict(
                headers, **{"X-Request-Id": f"dynasim-probe-{attempt}"}))
        except (aiohttp.ClientError, OSError) as exc:
            status, doc = 0, f"cannot reach the server ({exc})"
            continue
        if status == 200:
            return True
        if status == 400 and "riority" in str(doc):
            return False
        if status < 500:
            break
    raise RuntimeError(f"{url}: probe request failed (HTTP {status}): {str(doc)[:300]}")


async def scrape_metrics(session: aiohttp.ClientSession, base_url: str,
                         headers: dict | None = None) -> dict[str, float]:
    """Counters from vLLM's Prometheus ``/metrics`` (summed over label sets):
    ``generation_tokens``, ``prompt_tokens``, ``num_preemptions``; ``{}`` if absent."""
    names = {"vllm:generation_tokens_total": "generation_tokens",
             "vllm:prompt_tokens_total": "prompt_tokens",
             "vllm:num_preemptions_total": "num_preemptions"}
    s = await try_scrape(session, base_url, headers)
    if s is None:
        return {}
    return {short: s.total(full) for full, short in names.items() if full in s.samples}
