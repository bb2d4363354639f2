"""``dynasim proxy``: an OpenAI-compatible server with Dynasor-CoT early exit (§2.1).

::

    dynasim proxy --target-base-url http://127.0.0.1:8000 [--host 127.0.0.1] [--port 8001]

It sits in front of an OpenAI-compatible vLLM server and serves

* ``POST /v1/completions`` and ``POST /v1/chat/completions``: a request carrying a
  ``dynasor`` object (:mod:`replay.proxy.config`; top-level or the openai SDK's
  ``extra_body``) is served by :class:`replay.proxy.session.CotSession` (probes every
  ``probe_interval`` tokens, stops when C_k >= τ, cancels the upstream). A request
  without one is a transparent pass-through: its bytes go upstream unchanged (every
  sampling parameter, ``ignore_eos``, token-id prompts, ``priority``...) and the
  upstream's answer comes back unchanged, streamed as it arrives;
* ``GET /v1/models`` and every other path and method (``/tokenize``, ``/detokenize``,
  ``/metrics``, ``/health``, ...): passed through.

Headers: the client's ``Authorization`` (and every other end-to-end header) goes
upstream; hop-by-hop headers (RFC 9110 §7.6.1), ``Host`` and ``Content-Length`` do not.
Errors: a bad ``dynasor`` field or a request that probing cannot serve gets HTTP 400
with an OpenAI-style error naming the field; an unreachable upstream gets 502. A client
that disconnects cancels its upstream request (aiohttp ``handler_cancellation`` and a
watchdog, :func:`watch_client`). Upstream connections are never reused
(``force_close``): closing the connection is vLLM's only abort signal, and a pooled
keep-alive connection once let a cancelled request run on to its end in vLLM.
The proxy binds loopback unless ``--host`` says otherwise.
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from replay.proxy.config import BadField, DynasorConfig
from replay.proxy.session import CotSession, check_body, openai_error

if TYPE_CHECKING:
    from aiohttp.typedefs import Handler

#: Request headers not forwarded (hop-by-hop, RFC 9110 §7.6.1, plus what aiohttp sets).
_DROP_REQ = {"host", "connection", "keep-alive", "proxy-authenticate",
             "proxy-authorization", "te", "trailer", "transfer-encoding", "upgrade",
             "content-length"}
#: Response headers not copied back (aiohttp frames the body itself).
_DROP_RESP = _DROP_REQ | {"date", "server"}

_HTTP = web.AppKey("http", aiohttp.ClientSession)
_TARGET = web.AppKey("target", str)
_DEFAULTS = web.AppKey("defaults", DynasorConfig)
_PROBE_TIMEOUT = web.AppKey("probe_timeout", float)


def forward_headers(request: web.Request) -> dict[str, str]:
    """The client's end-to-end headers (Authorization included) to send upstream;
    ``Accept-Encoding: identity`` when the client sent none (aiohttp would otherwise
    ask for gzip on its behalf, and the bytes are relayed undecoded)."""
    out = {k: v for k, v in request.headers.items() if k.lower() not in _DROP_REQ}
    if "Accept-Encoding" not in request.headers:
        out["Accept-Encoding"] = "identity"
    return out


async def passthrough(request: web.Request, body: bytes | None = None,
                      headers: dict | None = None) -> web.StreamResponse:
    """Forward ``request`` unchanged (or with ``body``) and stream the answer back.

    The upstream session does not decompress, so the bytes and ``Content-Encoding`` are
    the upstream's own. 502 when the upstream cannot be reached."""
    app = request.app
    url = app[_TARGET] + request.path_qs
    data = await request.read() if body is None else body
    try:
        resp = await app[_HTTP].request(request.method, url, data=data or None,
                                        headers=headers or forward_headers(request),
                                        allow_redirects=False)
    except (aiohttp.ClientError, OSError) as exc:
        return openai_error(502, f"cannot reach the upstream server {app[_TARGET]}: "
                            f"{exc}", kind="upstream_error")
    async with resp:
        out = web.StreamResponse(status=resp.status, reason=resp.reason, headers={
            k: v for k, v in resp.headers.items() if k.lower() not in _DROP_RESP})
        await out.prepare(request)
        try:
            async for piece in resp.content.iter_any():
                await out.write(piece)
            await out.write_eof()
        except ConnectionResetError:  # the client left: closing resp aborts upstream
            pass
        except (aiohttp.ClientError, OSError):  # upstream failed mid-body: cut it short
            if request.transport is not None:
                request.transport.close()
    return out


def _client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


def watch_client(handler: Handler) -> Handler:
    """Wrap a handler so that it is cancelled within 0.2 s of the client closing its
    connection, whatever it awaits (aiohttp's ``handler_cancellation`` does this on
    ``connection_lost``; this watchdog also covers a close it has not reported). A
    cancelled handler leaves its ``async with`` of the upstream response, which closes
    that connection: vLLM then aborts the request."""
    async def watched(request: web.Request) -> web.StreamResponse:
        task = asyncio.current_task()

        async def watch() -> None:
            while not _client_gone(request):
                await asyncio.sleep(0.2)
            task.cancel()

        watcher = asyncio.ensure_future(watch())
        try:
            return await handler(request)
        except asyncio.CancelledError:
            if not watcher.done():
                raise
            return web.Response(status=499)  # nobody is listening any more
        except ConnectionResetError:
            return web.Response(status=499)
        finally:
            watcher.cancel()

    return watched


def _endpoint(kind: str):
    async def handler(request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        try:
            body = json.loads(raw)
        except ValueError:
            return await passthrough(request, raw)  # the upstream reports its error
        if not isinstance(body, dict) or "dynasor" not in body:
            return await passthrough(request, raw)
        try:
            cfg = request.app[_DEFAULTS].merged(body.pop("dynasor"))
            if cfg is None:
                return await passthrough(request, json.dumps(body).encode(),
                                         _json_headers(request))
            check_body(kind, body)
        except BadField as exc:
            return openai_error(400, f"{exc.field}: {exc.message}", param=exc.field)
        session = CotSession(request.app[_HTTP], request.app[_TARGET], kind, body, cfg,
                             _json_headers(request), request.app[_PROBE_TIMEOUT])
        return await session.run(request)

    return watch_client(handler)


def _json_headers(request: web.Request) -> dict[str, str]:
    h = {k: v for k, v in forward_headers(request).items()
         if k.lower() not in ("content-type", "accept-encoding")}
    h["Content-Type"] = "application/json"
    h["Accept-Encoding"] = "identity"  # the proxy parses these bodies itself
    return h


def make_app(target_base_url: str, defaults: DynasorConfig | None = None,
             probe_timeout: float = 60.0) -> web.Application:
    """The proxy's aiohttp application (module doc).

    Args:
        target_base_url: the upstream server root, e.g. ``http://127.0.0.1:8000``.
        defaults: server-wide probing defaults (request fields override them).
        probe_timeout: seconds one probe may take before it counts as failed.
    """
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app[_TARGET] = target_base_url.rstrip("/")
    app[_DEFAULTS] = (defaults or DynasorConfig()).validated("defaults")
    app[_PROBE_TIMEOUT] = float(probe_timeout)

    async def lifecycle(app: web.Application):
        app[_HTTP] = aiohttp.ClientSession(
            auto_decompress=False, timeout=aiohttp.ClientTimeout(total=None,
                                                                 sock_connect=10),
            connector=aiohttp.TCPConnector(limit=0, force_close=True),
            cookie_jar=aiohttp.DummyCookieJar())
        yield
        await app[_HTTP].close()

    app.cleanup_ctx.append(lifecycle)
    app.router.add_post("/v1/completions", _endpoint("completions"))
    app.router.add_post("/v1/chat/completions", _endpoint("chat"))
    app.router.add_route("*", "/{tail:.*}", watch_client(passthrough))
    return app


async def serve(app: web.Application, host: str, port: int) -> web.AppRunner:
    """Start ``app`` on ``host:port`` (client disconnects cancel handlers); returns the
    runner (``await runner.cleanup()`` stops it)."""
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, host, port).start()
    return runner
