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

Logging (``dynasim proxy`` prints it on stderr): the ``replay.proxy.access`` logger has
one INFO line per request, ``METHOD PATH STATUS SECONDSs probes_sent=N
stopped_early=yes|no`` (499: the client left first), and ``replay.proxy`` a WARNING for
every refused ``dynasor`` object (HTTP 400, naming the field) and every failed probe
(:mod:`replay.proxy.session`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING

import aiohttp
from aiohttp import web

from replay.proxy.config import BadField, DynasorConfig
from replay.proxy.session import CotSession, check_body, openai_error
from replay.vllm_metrics import served_max_model_len

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
#: Request key of the CotSession report, read by the access log.
_REPORT = web.RequestKey("dynasor_report", dict)
#: model -> the upstream's max_model_len (tokens), once it has said it.
_MAX_LEN = web.AppKey("max_model_len", dict)

log = logging.getLogger("replay.proxy")
access_log = logging.getLogger("replay.proxy.access")


@web.middleware
async def log_access(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Log one access line per request once it is answered (module doc)."""
    t0 = time.perf_counter()
    status = 500
    try:
        resp = await handler(request)
        status = resp.status
        return resp
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499
        raise
    finally:
        rep = request.get(_REPORT) or {}
        access_log.info("%s %s %d %.3fs probes_sent=%d stopped_early=%s",
                        request.method, request.path, status, time.perf_counter() - t0,
                        rep.get("probes_sent", 0),
                        "yes" if rep.get("stopped_early") else "no")


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
            await check_fits_upstream(request, body.get("model"), cfg)
        except BadField as exc:
            log.warning("refused %s %s: %s: %s", request.method, request.path,
                        exc.field, exc.message)
            return openai_error(400, f"{exc.field}: {exc.message}", param=exc.field)
        session = CotSession(request.app[_HTTP], request.app[_TARGET], kind, body, cfg,
                             _json_headers(request), request.app[_PROBE_TIMEOUT])
        request[_REPORT] = session.report
        return await session.run(request)

    return watch_client(handler)


async def check_fits_upstream(request: web.Request, model: object,
                              cfg: DynasorConfig) -> None:
    """Refuse a ``probe_max_tokens`` the upstream could never serve: vLLM refuses a
    request whose prompt + ``max_tokens`` exceeds ``max_model_len``, and a probe's prompt
    holds at least one token, so every probe would fail. The limit is read once per
    model from the upstream's ``GET /v1/models`` (vLLM lists ``max_model_len``); when
    it does not say (or cannot be reached) only the fixed cap of
    :meth:`DynasorConfig.validated` applies, and it is asked again next time.

    Raises:
        BadField: ``dynasor.probe_max_tokens`` >= the upstream's ``max_model_len``.
    """
    app = request.app
    cache = app[_MAX_LEN]
    if isinstance(model, str) and model not in cache:
        try:
            async with asyncio.timeout(10):
                limit = await served_max_model_len(app[_HTTP], app[_TARGET], model,
                                                   _json_headers(request))
        except (RuntimeError, TimeoutError):  # not served / unreachable: upstream says
            limit = None
        if limit is not None:
            cache[model] = limit
    limit = cache.get(model) if isinstance(model, str) else None
    if limit is not None and cfg.probe_max_tokens >= limit:
        raise BadField("dynasor.probe_max_tokens", f"must be < the upstream's "
                       f"max_model_len {limit} (a probe's prompt takes at least one "
                       f"token), got {cfg.probe_max_tokens}")


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
    app = web.Application(client_max_size=64 * 1024 * 1024, middlewares=[log_access])
    app[_TARGET] = target_base_url.rstrip("/")
    app[_DEFAULTS] = (defaults or DynasorConfig()).validated("defaults")
    app[_PROBE_TIMEOUT] = float(probe_timeout)
    app[_MAX_LEN] = {}

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
    runner (``await runner.cleanup()`` stops it).

    Raises:
        OSError: the address cannot be bound (port in use, unknown host); the app's
            upstream client session is closed first.
        OverflowError: a port outside 0-65535.
    """
    runner = web.AppRunner(app, handler_cancellation=True, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()  # closes the upstream ClientSession (cleanup_ctx)
        raise
    return runner
