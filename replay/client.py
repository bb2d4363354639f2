"""One streamed completion against an OpenAI-compatible server, measured as
``vllm bench serve`` measures it (``vllm/benchmarks/lib/endpoint_request_func.py``,
``async_request_openai_completions``).

* the send time is taken just before the HTTP request goes out;
* every SSE chunk that carries ``choices`` is a token chunk: the first one gives the first
  token time (TTFT), each next one an inter-token latency (ITL), the last one the finish
  time (E2E latency = last chunk − send);
* output tokens come from the final ``usage`` chunk (``stream_options.include_usage``);
* anything else ends the request with an ``error`` string: an HTTP status other than 200,
  a connection reset, a malformed SSE line, a stream without ``[DONE]``, the per-request
  timeout, or cancellation. A failed request keeps whatever times it had.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field

import aiohttp


@dataclass(slots=True)
class Outcome:
    """What the client saw of one request (times in seconds on the run's clock).

    Attributes:
        send_time: just before the HTTP request was written.
        first_token_time, finish_time: first and last token chunk (NaN if none).
        chunk_times: every token chunk, in order (ITL = successive differences).
        output_tokens: ``usage.completion_tokens`` (the number of token chunks if the
            server sent no usage; ``usage_reported`` says which).
        prompt_tokens: ``usage.prompt_tokens`` (-1 if not reported).
        cached_tokens: ``usage.prompt_tokens_details.cached_tokens`` (-1 if not
            reported; vLLM reports it with ``--enable-prompt-tokens-details``).
        http_status: the response status (0: no response).
        error: empty on success, else what went wrong.
        dynasor: the ``dynasor`` report of a Dynasor proxy (:mod:`replay.proxy.server`) from
            the last chunk that carried one (``None``: no proxy report).
        token_ids: the generated token ids, when the payload asked vLLM for them
            (``return_token_ids``; a long chain of thought's probes continue them).
    """

    send_time: float = math.nan
    first_token_time: float = math.nan
    finish_time: float = math.nan
    chunk_times: list[float] = field(default_factory=list)
    output_tokens: int = 0
    prompt_tokens: int = -1
    cached_tokens: int = -1
    usage_reported: bool = False
    http_status: int = 0
    error: str = ""
    dynasor: dict | None = None
    token_ids: list[int] = field(default_factory=list)


def _error_message(body: bytes) -> str:
    try:
        doc = json.loads(body)
        msg = doc.get("message") or doc.get("error", {}).get("message") or doc
    except (ValueError, AttributeError):
        msg = body[:200].decode("utf-8", "replace")
    return str(msg)[:300]


def _read_usage(usage: dict, out: Outcome) -> None:
    out.usage_reported = True
    out.output_tokens = int(usage.get("completion_tokens") or 0)
    out.prompt_tokens = int(usage.get("prompt_tokens") or -1)
    details = usage.get("prompt_tokens_details") or {}
    if details.get("cached_tokens") is not None:
        out.cached_tokens = int(details["cached_tokens"])


async def sse_lines(content: aiohttp.StreamReader) -> AsyncIterator[list[bytes]]:
    """The server-sent events of a response body, one network read at a time: for each
    read, in order, the stripped lines of the events it completed (an event ends in a
    blank line), without blank lines and ``:`` comments. Callers decide what a
    non-``data:`` line, ``[DONE]`` and bad JSON mean. Raises what reading the body
    raises (``aiohttp.ClientError``, ``OSError``)."""
    buf = b""
    async for piece in content.iter_any():
        buf += piece
        *events, buf = buf.split(b"\n\n")
        yield [line for event in events for line in map(bytes.strip, event.splitlines())
               if line and not line.startswith(b":")]


async def stream_completion(session: aiohttp.ClientSession, url: str, payload: dict,
                            headers: dict, timeout: float | None,
                            clock: Callable[[], float], out: Outcome,
                            on_tokens: Callable[[int], None] | None = None) -> Outcome:
    """Send one streamed completion and fill ``out`` as it goes (see module doc).

    ``out`` is filled in place so that a caller that cancels this coroutine still holds
    every time measured so far. Never raises for server or network faults (they become
    ``out.error``); re-raises ``asyncio.CancelledError`` after marking ``out.error``.

    Args:
        session: the run's ``aiohttp.ClientSession`` (aiohttp, as ``vllm bench serve``:
            its per-request overhead is a fraction of httpx's, which matters at
            1000 req/s).
        url: the endpoint, e.g. ``http://127.0.0.1:8000/v1/completions``.
        payload: the JSON body (``stream`` is forced on, with usage).
        timeout: seconds for the whole request (``None``: no limit).
        clock: the run's clock, seconds.
        on_tokens: called after each token chunk with the tokens received so far (the
            length of ``out.token_ids`` when ids are returned, else the chunks).
    """
    body = dict(payload, stream=True, stream_options={"include_usage": True})
    chunks = 0
    try:
        async with asyncio.timeout(timeout), contextlib.AsyncExitStack() as stack:
            resp = await _post(session, url, body, headers, clock, out, stack)
            async with resp:
                out.http_status = resp.status
                if resp.status != 200:
                    out.error = f"HTTP {resp.status}: {_error_message(await resp.read())}"
                    return out
                done = False
                async for lines in sse_lines(resp.content):
                    now = clock()
                    for line in lines:
                        if not line.startswith(b"data:"):
                            out.error = f"malformed SSE line {line[:80]!r}"
                            return out
                        data = line[5:].strip()
                        if data == b"[DONE]":
                            done = True
                            break
                        try:
                            doc = json.loads(data)
                        except ValueError:
                            out.error = f"malformed SSE data {data[:80]!r}"
                            return out
                        if doc.get("choices"):
                            if not out.chunk_times:
                                out.first_token_time = now
                            out.chunk_times.append(now)
                            out.finish_time = now
                            chunks += 1
                            ids = doc["choices"][0].get("token_ids")
                            if ids:
                                out.token_ids.extend(ids)
                            if on_tokens is not None:
                                on_tokens(len(out.token_ids) or chunks)
                        usage = doc.get("usage")
                        if usage:
                            _read_usage(usage, out)
                        if isinstance(doc.get("dynasor"), dict):
                            out.dynasor = doc["dynasor"]
                        if "error" in doc and not doc.get("choices"):
                            out.error = ("server error in stream: "
                                         f"{_error_message(data)}")
                            return out
                    if done:
                        break
                if not done:
                    out.error = "stream ended before [DONE]"
                    return out
        if not out.usage_reported:
            out.output_tokens = chunks
        if not chunks:
            out.error = "no token in the response"
    except TimeoutError:
        out.error = f"timeout after {timeout:g} s"
    except asyncio.CancelledError:
        out.error = out.error or "cancelled"
        raise
    except (aiohttp.ClientError, OSError) as exc:
        out.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:  # a cut stream (cancelled, timed out, failed) keeps the tokens it got
        if not out.usage_reported:
            out.output_tokens = chunks
    return out


#: Sends of one request after the server closed its connection without answering.
DISCONNECT_RETRIES = 2


async def _post(session: aiohttp.ClientSession, url: str, body: dict, headers: dict,
                clock: Callable[[], float], out: Outcome,
                stack: contextlib.AsyncExitStack) -> aiohttp.ClientResponse:
    """POST, sending again (at most :data:`DISCONNECT_RETRIES` times, each on a new
    connection) when the server closes the connection before any response byte.

    That is uvicorn closing a pooled keep-alive connection as the request goes out: its
    5 s idle timer (vLLM's ``VLLM_HTTP_TIMEOUT_KEEP_ALIVE``) can fire after the request
    bytes have arrived when its event loop stalls (libuv runs due timers before
    reading sockets), and then every idle connection of the pool is dead at once, so a
    retry on the pool would meet another. The server never parsed the request, so
    nothing ran twice; ``out.send_time`` is the last send."""
    for attempt in range(DISCONNECT_RETRIES + 1):
        out.send_time = clock()
        try:
            return await session.post(url, json=body, headers=headers)
        except aiohttp.ServerDisconnectedError:
            if attempt == DISCONNECT_RETRIES:
                raise
            session = await stack.enter_async_context(new_session(force_close=True))
    raise AssertionError("unreachable")


async def post_json(session: aiohttp.ClientSession, url: str, payload: dict,
                    headers: dict) -> tuple[int, dict | str]:
    """POST a non-streamed JSON request; returns (status, JSON body or text)."""
    async with session.post(url, json=payload, headers=headers) as resp:
        text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text


async def get_text(session: aiohttp.ClientSession, url: str,
                   headers: dict | None = None) -> tuple[int, str]:
    """GET ``url``; returns (status, body text)."""
    async with session.get(url, headers=headers or {}) as resp:
        return resp.status, await resp.text()


def new_session(max_connections: int | None = None,
                force_close: bool = False) -> aiohttp.ClientSession:
    """The client session of a run: no aiohttp timeout (requests carry their own),
    at most ``max_connections`` connections (``None``: unlimited), idle connections
    dropped after 2 s, before vLLM's uvicorn drops them (5 s keep-alive);
    ``force_close``: a new connection per request, none kept (:func:`_post`'s resends).
    """
    connector = (aiohttp.TCPConnector(limit=max_connections or 0, force_close=True)
                 if force_close else
                 aiohttp.TCPConnector(limit=max_connections or 0, keepalive_timeout=2.0))
    return aiohttp.ClientSession(connector=connector,
                                 timeout=aiohttp.ClientTimeout(total=None),
                                 cookie_jar=aiohttp.DummyCookieJar())


PREFIX_BLOCK = 16
"""Tokens per block of the router-side prefix index (vLLM's default KV block size)."""


class ServerView:
    """The client's read-only :class:`~dynasim.routers.base.ReplicaView` of one live
    server, built from what a client in front of vLLM can know, so that the simulator's
    router objects (:mod:`dynasim.routers`) route live requests unchanged:

    * ``num_outstanding()``: requests this client sent to the server and has not seen
      finish (counted client-side: :meth:`sent` / :meth:`done`); other clients' load is
      invisible, as it is to any router that counts its own requests (Vidur's LOR).
    * ``kv_blocks_used()`` / ``kv_blocks_total()``: when the server's ``/metrics``
      exports a KV usage gauge (vLLM V1 ``vllm:kv_cache_usage_perc``, V0
      ``vllm:gpu_cache_usage_perc``), the last value the replay's periodic KV task read
      (:meth:`set_kv_usage`; a scrape per routing decision would cost a round trip per
      request), as parts per million of a nominal cache of :data:`KV_SCALE` blocks.
      Without the gauge (e.g. the stub server) the proxy is the client's own in-flight
      tokens: the prompt + ``max_tokens`` of the requests in flight, in
      :data:`PREFIX_BLOCK`-token blocks, over the same nominal :data:`KV_SCALE`; so
      ``least-kv`` then routes by in-flight tokens (fractions compare fairly across
      servers only when every server reports the gauge or none does).
    * ``prefix_match(req)``: a router-side estimate, as SGLang's cache-aware router keeps
      an approximate tree per worker: the token ids of every prompt sent to this server
      are indexed by chained hashes of their full :data:`PREFIX_BLOCK`-token blocks; the
      match is the longest run of leading blocks of ``req``'s prompt found in that index
      (capped at ``prompt_tokens - 1``, as vLLM's prefix cache never serves the last
      prompt token). Evictions on the server are not seen: the index forgets the least
      recently sent blocks beyond ``max_blocks``. The prompt ids of ``req`` come from
      ``prompt_ids`` (the replay's builder); a request without them matches 0.

    Args:
        prompt_ids: the token ids that ``req`` will be (or was) sent with, or ``None``.
        max_blocks: most prefix blocks remembered (least recently sent forgotten first).
    """

    KV_SCALE = 1_000_000

    def __init__(self, prompt_ids: Callable[[object], list[int] | None] = lambda r: None,
                 max_blocks: int = 200_000) -> None:
        from collections import OrderedDict

        self.outstanding = 0
        self.tokens_in_flight = 0
        self.kv_fraction: float | None = None  # from the gauge; None: not reported
        self._prompt_ids = prompt_ids
        self._blocks: OrderedDict[int, None] = OrderedDict()
        self._max_blocks = max_blocks

    # ---------------------------------------------------------------- updates
    def sent(self, tokens: int, ids: list[int] | None) -> None:
        """A request of ``tokens`` (prompt + max_tokens) with prompt ``ids`` was routed
        here: count it in flight and index its prompt blocks."""
        self.outstanding += 1
        self.tokens_in_flight += tokens
        for h in _block_hashes(ids or ()):
            self._blocks[h] = None
            self._blocks.move_to_end(h)
        while len(self._blocks) > self._max_blocks:
            self._blocks.popitem(last=False)

    def done(self, tokens: int) -> None:
        """A request routed here with ``tokens`` (as given to :meth:`sent`) finished."""
        self.outstanding -= 1
        self.tokens_in_flight -= tokens

    def set_kv_usage(self, fraction: float | None) -> None:
        """The server's KV usage gauge in [0, 1] (``None``: it reports none)."""
        self.kv_fraction = None if fraction is None else min(1.0, max(0.0, fraction))

    # ------------------------------------------------------------ ReplicaView
    def num_outstanding(self) -> int:
        """Requests in flight to this server (class docstring)."""
        return self.outstanding

    def kv_blocks_used(self) -> int:
        """KV use in nominal blocks of :data:`KV_SCALE` (class docstring)."""
        if self.kv_fraction is not None:
            return round(self.kv_fraction * self.KV_SCALE)
        return -(-self.tokens_in_flight // PREFIX_BLOCK)

    def kv_blocks_total(self) -> int:
        """The nominal cache size :data:`KV_SCALE` (class docstring)."""
        return self.KV_SCALE

    def prefix_match(self, req: object) -> int:
        """Estimated cached prompt tokens of ``req`` here (class docstring)."""
        ids = self._prompt_ids(req)
        if not ids:
            return 0
        n = 0
        for h in _block_hashes(ids):
            if h not in self._blocks:
                break
            n += PREFIX_BLOCK
        return min(n, len(ids) - 1)


def _block_hashes(ids: list[int] | tuple) -> list[int]:
    """Chained hashes of the full :data:`PREFIX_BLOCK`-token blocks of ``ids`` (a block's
    hash covers every token before it, as vLLM's prefix-cache block hash does)."""
    out, h = [], 0
    for k in range(0, len(ids) - PREFIX_BLOCK + 1, PREFIX_BLOCK):
        h = hash((h, tuple(ids[k:k + PREFIX_BLOCK])))
        out.append(h)
    return out
