"""The measurements of ``dynasim calibrate``, one engine step shape each.

Every function sends real requests and reads the engine's own timings from ``/metrics``
deltas (:mod:`replay.vllm_metrics`), and returns a plain dict, or ``None`` when the
measurement is not what it claims to be (checked, never assumed):

* :func:`lone_prefill`: exactly one request finished in the window;
* :func:`mixed_steps`: the background requests were decoding (their tokens advanced)
  and none had finished when the probe's prefill ran;
* :func:`decode_run`: every stream finished in the window and the streams overlapped
  (the wall time is about one stream's decode time, not ``batch`` of them in a row).

Concurrent streams are separate HTTP requests sent at once, as real clients send them
(one streamed request per sequence costs the API server and the engine core more than
one request with a list of prompts).

Why the checks: on a small CPU box vLLM's engine core can hold back its own input and
output threads while it is busy (its busy-wait for the model worker releases and
re-takes the GIL at a high rate), so a request can reach the engine, or its tokens the
client, only when the engine goes idle. A measurement taken in that state is discarded.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING

from replay.client import Outcome, stream_completion
from replay.prompts import PromptBuilder
from replay.vllm_metrics import DECODE, GENERATED, PREFILL, QUEUE, TTFT, scrape, wait_idle

if TYPE_CHECKING:
    import aiohttp

    from replay.vllm_metrics import Scrape

RUNNING = "vllm:num_requests_running"


class Meter:
    """Requests and scrapes against one server; every prompt unique (salted ids)."""

    def __init__(self, session: aiohttp.ClientSession, base_url: str, model: str, headers: dict,
                 prompts: PromptBuilder, timeout: float = 300.0) -> None:
        self.session, self.base_url, self.model = session, base_url, model
        self.headers, self.prompts, self.timeout = headers, prompts, timeout
        self.url = base_url.rstrip("/") + "/v1/completions"
        self._n = 0

    def prompt(self, tokens: int) -> list[int]:
        """``tokens`` token ids no other request of this run shares."""
        self._n += 1
        return self.prompts.segment(f"calibrate:{self._n}", tokens)

    async def scrape(self) -> Scrape:
        return await scrape(self.session, self.base_url, self.headers)

    async def request(self, prompt: list[int], max_tokens: int,
                      timeout: float | None = None) -> Outcome:
        """One streamed completion (``ignore_eos``, greedy).

        Raises:
            RuntimeError: the request failed (HTTP error, timeout, broken stream).
        """
        out = Outcome()
        await stream_completion(self.session, self.url, {
            "model": self.model, "prompt": prompt, "max_tokens": max_tokens,
            "ignore_eos": True, "temperature": 0.0}, self.headers,
            timeout or self.timeout, time.perf_counter, out)
        if out.error:
            raise RuntimeError(f"{self.url}: calibration request failed: {out.error}")
        return out


async def lone_prefill(m: Meter, tokens: int) -> dict | None:
    """One request of ``tokens`` prompt tokens and one output token on an idle server:
    the engine's prefill step, its queue time, and the client's TTFT."""
    before = await m.scrape()
    out = await m.request(m.prompt(tokens), 1)
    after = await m.scrape()
    (pre, n), (queue, _), (ttft, _) = (after.hist_delta(before, h)
                                       for h in (PREFILL, QUEUE, TTFT))
    if n != 1 or pre <= 0:
        return None
    return {"prompt": tokens, "prefill_ms": pre * 1e3, "queue_ms": queue * 1e3,
            "server_ttft_ms": ttft * 1e3,
            "client_ttft_ms": (out.first_token_time - out.send_time) * 1e3}


async def mixed_steps(m: Meter, decoders: int, prompts: list[int], bg_tokens: int,
                      settle: float = 3.0, probe_timeout: float = 3.0) -> list[dict]:
    """``decoders`` requests decode in the background while each prompt of ``prompts``
    is sent alone (one output token): its prefill step also holds the decodes.
    Returns the valid rows (``sum_decode_ctx`` from the tokens the background requests
    had generated, read from ``vllm:generation_tokens_total``)."""
    start = await m.scrape()
    bg = [asyncio.ensure_future(m.request(m.prompt(16), bg_tokens))
          for _ in range(decoders)]
    rows: list[dict] = []
    try:
        deadline = time.perf_counter() + settle
        while True:  # every background request admitted and decoding
            s = await m.scrape()
            if s.total(RUNNING) >= decoders and s.delta(start, GENERATED) >= 2 * decoders:
                break
            if time.perf_counter() > deadline or any(t.done() for t in bg):
                return rows  # the engine holds its I/O back: nothing valid to measure
            await asyncio.sleep(0.005)
        for tokens in prompts:
            before = await m.scrape()
            try:  # a probe the engine does not take in while busy: stop here
                await m.request(m.prompt(tokens), 1, timeout=probe_timeout)
            except RuntimeError:
                return rows
            after = await m.scrape()
            pre, n = after.hist_delta(before, PREFILL)
            moving = after.delta(before, GENERATED) >= decoders
            if n == 1 and pre > 0 and moving and not any(t.done() for t in bg):
                ctx = 16 + before.delta(start, GENERATED) / decoders + 1
                rows.append({"prompt": tokens, "decoders": decoders,
                             "sum_decode_ctx": decoders * ctx, "prefill_ms": pre * 1e3})
    finally:
        for t in bg:
            t.cancel()
        await asyncio.gather(*bg, return_exceptions=True)
        await wait_idle(m.session, m.base_url, m.headers)
    return rows


async def decode_run(m: Meter, batch: int, context: int, tokens: int, block: int,
                     share: bool) -> dict | None:
    """``batch`` concurrent streams of ``context`` prompt and ``tokens`` output tokens;
    the mean decode step from the engine's ``request_decode_time``. Sent together, the
    streams are prefilled in the first step or two and then decode in lockstep. With
    ``share`` (for prompts that exceed one step's token budget together) they share the
    context's full KV blocks (``block`` tokens each) through the prefix cache, warmed by
    one request first, so their prefills compute a few tokens each."""
    shared = ((context - 1) // block) * block if share else 0
    prefix = m.prompt(shared) if shared else []
    if shared:
        await m.request(prefix, 1)
    prompts = [prefix + m.prompt(context - shared) for _ in range(batch)]
    before = await m.scrape()
    t0 = time.perf_counter()
    outs = await asyncio.gather(*(m.request(p, tokens) for p in prompts))
    wall = time.perf_counter() - t0
    after = await m.scrape()
    total, n = after.hist_delta(before, DECODE)
    pre, _ = after.hist_delta(before, PREFILL)
    if n != batch or total <= 0:
        return None
    per_stream = total / batch
    if batch > 1 and wall > 1.3 * per_stream + pre + 0.05:
        return None  # the streams ran one after another, not as a batch
    client = sorted((o.finish_time - o.first_token_time) / (tokens - 1) for o in outs)
    return {"batch": batch, "context": context, "tokens": tokens,
            "sum_decode_ctx": batch * (context + tokens / 2),
            "step_ms": total * 1e3 / (batch * (tokens - 1)),
            "client_step_ms": 1e3 * client[batch // 2],
            "cached_tokens": min(o.cached_tokens for o in outs)}
