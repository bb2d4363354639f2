"""The twin's OpenAI-compatible HTTP API (aiohttp.web), in vLLM's response shapes.

Endpoints: ``GET /health``, ``GET /version``, ``GET /v1/models``, ``POST /tokenize``,
``GET /metrics`` (:mod:`dynasim.serve.metrics`), ``POST /v1/completions`` and
``POST /v1/chat/completions`` (streamed as server-sent events or one JSON body). The
request fields and what the twin does with them are listed in :mod:`dynasim.serve`.

A streamed response's headers go out with its first token (or its error): a request the
engine rejects (it could never fit the KV cache) is thus answered HTTP 400 like one over
``max_model_len``. The handler of a client that disconnects is cancelled
(``handler_cancellation``) and aborts the request in the engine
(:meth:`~dynasim.serve.twin.Twin.abort`), as vLLM's API server aborts a request whose
client went away.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Callable
from typing import Any

from aiohttp import web

from dynasim.request import FINISHED, REJECTED
from dynasim.serve.requests import BadRequest, Completion, parse_completion, tokenize_body
from dynasim.serve.twin import Stream, Twin


def error_response(message: str, status: int = 400, kind: str = "BadRequestError"
                   ) -> web.Response:
    """vLLM's error body: ``{"error": {"message", "type", "param", "code"}}``."""
    return web.json_response({"error": {"message": message, "type": kind, "param": None,
                                        "code": status}}, status=status)


class TwinServer:
    """The HTTP face of a :class:`~dynasim.serve.twin.Twin`.

    Args:
        twin: the real-time engine driver.
        model: the served model name (``/v1/models``; requests naming another get 404).
        max_model_len: prompt + output limit in tokens (``None``: none; then
            ``/v1/models`` reports none and ``max_tokens`` defaults to 16).
        priority_enabled: whether requests may carry a non-zero ``priority`` (vLLM's
            ``--scheduling-policy priority``); otherwise they get vLLM's HTTP 400.
    """

    def __init__(self, twin: Twin, model: str, max_model_len: int | None,
                 priority_enabled: bool) -> None:
        self.twin = twin
        self.model = model
        self.max_model_len = max_model_len
        self.priority_enabled = priority_enabled
        self.created = int(time.time())

    def app(self) -> web.Application:
        """The aiohttp application; the twin's driver task runs while it is up."""
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_get("/health", self.health)
        app.router.add_get("/version", self.version)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/metrics", self.metrics)
        app.router.add_post("/tokenize", self.tokenize)
        app.router.add_post("/v1/completions", self.completions)
        app.router.add_post("/v1/chat/completions", self.chat)
        app.cleanup_ctx.append(self._driver)
        return app

    async def _driver(self, app: web.Application):
        self.twin.start()
        task = asyncio.create_task(self.twin.run())
        task.add_done_callback(_report_crash)
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    # ------------------------------------------------------------ simple ones
    async def health(self, request: web.Request) -> web.Response:
        """200, empty body (vLLM's ``/health``)."""
        return web.Response()

    async def version(self, request: web.Request) -> web.Response:
        """``{"version": ...}``: dynasim's version, marked as the twin."""
        from dynasim import __version__

        return web.json_response({"version": f"dynasim-twin-{__version__}"})

    async def models(self, request: web.Request) -> web.Response:
        """The one served model, with ``max_model_len`` as vLLM lists it."""
        entry: dict[str, Any] = {"id": self.model, "object": "model",
                                 "created": self.created, "owned_by": "dynasim",
                                 "root": self.model, "parent": None, "permission": []}
        if self.max_model_len is not None:
            entry["max_model_len"] = self.max_model_len
        return web.json_response({"object": "list", "data": [entry]})

    async def metrics(self, request: web.Request) -> web.Response:
        """Prometheus text (:mod:`dynasim.serve.metrics`), as of now."""
        self.twin.advance()
        text = self.twin.metrics.render(self.twin.engines, self.model)
        return web.Response(text=text, content_type="text/plain", charset="utf-8")

    async def tokenize(self, request: web.Request) -> web.Response:
        """vLLM's ``/tokenize``: ``{"count", "max_model_len", "tokens", "token_strs"}``
        under the twin's rule (:mod:`dynasim.serve.tokens`)."""
        try:
            body = await _json_body(request)
            ids = tokenize_body(body)
        except BadRequest as exc:
            return error_response(exc.message, exc.status, exc.kind)
        return web.json_response({"count": len(ids), "max_model_len": self.max_model_len,
                                  "tokens": ids, "token_strs": None})

    # ------------------------------------------------------------ completions
    async def completions(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/completions`` (module docstring)."""
        return await self._serve(request, chat=False)

    async def chat(self, request: web.Request) -> web.StreamResponse:
        """``POST /v1/chat/completions`` (module docstring)."""
        return await self._serve(request, chat=True)

    async def _serve(self, request: web.Request, chat: bool) -> web.StreamResponse:
        try:
            body = await _json_body(request)
            c = parse_completion(body, chat, self.model, self.max_model_len,
                                 self.priority_enabled)
        except BadRequest as exc:
            return error_response(exc.message, exc.status, exc.kind)
        rid = request.headers.get("X-Request-Id") or uuid.uuid4().hex
        c.id = ("chatcmpl-" if chat else "cmpl-") + rid
        stream = self.twin.submit(c.prompt_ids, c.max_tokens, c.priority)
        try:
            await _wait(stream, lambda: stream.tokens > 0 or stream.ended)
            if stream.ended and stream.req.status == REJECTED:
                return error_response(stream.req.error)
            if c.stream:
                return await self._stream(request, stream, c)
            await _wait(stream, lambda: stream.ended)
            if stream.req.status != FINISHED:
                return error_response(stream.req.error or stream.req.status, 500,
                                      "InternalServerError")
            return web.json_response(c.whole(stream.req, self.created))
        finally:
            self.twin.abort(stream)  # a no-op once it has ended

    async def _stream(self, request: web.Request, stream: Stream, c: Completion
                      ) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream",
                                           "Cache-Control": "no-cache"})
        await resp.prepare(request)
        sent = 0
        while True:
            n = stream.tokens
            if n > sent:
                last = stream.ended and stream.req.status == FINISHED and n == c.max_tokens
                await resp.write(b"".join(_event(e) for e in
                                          c.token_chunks(sent, n, last, self.created)))
                sent = n
            if stream.ended:
                break
            stream.changed.clear()
            if stream.tokens == sent and not stream.ended:
                await stream.changed.wait()
        req = stream.req
        tail = b""
        if req.status != FINISHED:  # aborted by the server: say so in the stream
            tail += _event({"error": {"message": req.error or req.status,
                                      "type": "InternalServerError", "code": 500}})
        elif c.include_usage:
            tail += _event(c.usage_chunk(req, self.created))
        await resp.write(tail + b"data: [DONE]\n\n")
        await resp.write_eof()
        return resp


def _report_crash(task: asyncio.Task) -> None:
    """Log the traceback of a driver task that died (a simulator bug): the server then
    serves no more tokens, and the log says why."""
    if not task.cancelled() and task.exception() is not None:
        import logging

        logging.getLogger("dynasim.serve").error("the twin's engine driver stopped",
                                                 exc_info=task.exception())


async def _wait(stream: Stream, done: Callable[[], bool]) -> None:
    while not done():
        stream.changed.clear()
        if done():
            return
        await stream.changed.wait()


def _event(doc: dict) -> bytes:
    return b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n"


async def _json_body(request: web.Request) -> dict:
    try:
        body = await request.json()
    except (ValueError, UnicodeDecodeError) as exc:
        raise BadRequest(f"the body is not JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadRequest("the body must be a JSON object")
    return body
