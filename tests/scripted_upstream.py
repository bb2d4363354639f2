"""A tiny scripted OpenAI-compatible upstream for the proxy tests, and a helper that runs
any aiohttp app in a background thread.

:class:`ScriptedUpstream` streams a fixed text, one whole word a token: token i is
``" x<i>"`` (1-based), so a probe's prompt tells exactly how many tokens it saw (the
largest ``x<i>`` in it). Probe requests (a prompt, or a continued assistant message,
ending with one of ``probe_suffixes``) are answered with ``answers(n)`` for a probe that
saw n tokens. It records every request (:attr:`log`: path, JSON body, headers, kind) and
every main stream (:attr:`streams`: tokens sent, whether it finished or the client closed
it first: a cancellation).

Endpoints: ``/v1/completions`` and ``/v1/chat/completions`` (streaming, with
``stream_options.include_usage`` / ``continuous_usage_stats`` as vLLM, or one JSON body),
``/v1/models``, ``/tokenize`` and ``/detokenize`` (one token per character: id =
``ord``), ``/health``, and ``/echo`` (any method: echoes method, query, headers, body).
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable

from aiohttp import web

from replay.proxy.probe import DEFAULT_PROBE_TEXT

_X = re.compile(r"\bx(\d+)\b")


class ScriptedUpstream:
    """The scripted server (module doc).

    Args:
        n_tokens: tokens of the main text (a request's ``max_tokens`` may cut it).
        answers: probe output for a probe that saw n tokens (default ``"42} \\]"``).
        token_delay: seconds between streamed tokens.
        probe_delay: seconds before a probe is answered (a function of n, or a number).
        probe_suffixes: endings that mark a probe request.
    """

    def __init__(self, n_tokens: int = 200, answers: Callable[[int], str] | None = None,
                 token_delay: float = 0.002, probe_delay=0.0,
                 probe_suffixes: tuple[str, ...] = (DEFAULT_PROBE_TEXT,),
                 model: str = "scripted") -> None:
        self.n_tokens = n_tokens
        self.answers = answers or (lambda n: "42} \\]")
        self.token_delay = token_delay
        self.probe_delay = probe_delay if callable(probe_delay) else (lambda n: probe_delay)
        self.probe_suffixes = probe_suffixes
        self.model = model
        self.log: list[dict] = []
        self.streams: list[dict] = []

    # ------------------------------------------------------------------ helpers
    def main_requests(self) -> list[dict]:
        return [e for e in self.log if e["kind"] == "main"]

    def probe_requests(self) -> list[dict]:
        return [e for e in self.log if e["kind"] == "probe"]

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/v1/completions", self._generate)
        app.router.add_post("/v1/chat/completions", self._generate)
        app.router.add_get("/v1/models", self._models)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/detokenize", self._detokenize)
        app.router.add_get("/health", self._health)
        app.router.add_route("*", "/echo", self._echo)
        return app

    async def _health(self, request):
        return web.Response()

    async def _models(self, request):
        return web.json_response({"object": "list", "data": [
            {"id": self.model, "object": "model", "owned_by": "scripted",
             "max_model_len": 4096}]})

    async def _tokenize(self, request):
        body = await request.json()
        toks = [ord(c) for c in body.get("prompt", "")]
        self.log.append({"path": "/tokenize", "body": body, "kind": "tokenize",
                         "headers": dict(request.headers)})
        return web.json_response({"tokens": toks, "count": len(toks),
                                  "max_model_len": 4096})

    async def _detokenize(self, request):
        body = await request.json()
        return web.json_response({"prompt": "".join(map(chr, body.get("tokens", [])))})

    async def _echo(self, request):
        return web.json_response({"method": request.method, "query": request.query_string,
                                  "headers": dict(request.headers),
                                  "body": (await request.read()).decode()})

    @staticmethod
    def _prompt_text(body: dict) -> str:
        if "messages" in body:
            return "".join(f"<|{m['role']}|>\n{m.get('content') or ''}\n"
                           for m in body["messages"])
        p = body.get("prompt", "")
        return "".join(map(chr, p)) if isinstance(p, list) else str(p)

    def _is_probe(self, body: dict) -> bool:
        if "messages" in body:
            last = body["messages"][-1]
            text = (last.get("content") or "") if body.get("continue_final_message") else ""
        else:
            text = self._prompt_text(body)
        return any(text.endswith(s) for s in self.probe_suffixes)

    # ------------------------------------------------------------------- serve
    async def _generate(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        chat = request.path.endswith("chat/completions")
        kind = "probe" if self._is_probe(body) else "main"
        self.log.append({"path": request.path, "body": body, "kind": kind,
                         "headers": dict(request.headers), "time": time.monotonic()})
        rid = f"{'chatcmpl' if chat else 'cmpl'}-{len(self.log)}"
        if body.get("model") != self.model:
            return web.json_response({"error": {"message": f"model {body.get('model')!r} "
                                                "does not exist", "type": "NotFoundError",
                                                "param": "model", "code": 404}}, status=404)
        if kind == "probe":
            n = max((int(m) for m in _X.findall(self._prompt_text(body))), default=0)
            await asyncio.sleep(self.probe_delay(n))
            out = self.answers(n)
            return web.json_response(self._doc(rid, chat, out, "length", 10,
                                               len(out.split())))
        limit = body.get("max_tokens") or self.n_tokens
        n = min(self.n_tokens, limit)
        finish = "length" if limit < self.n_tokens else "stop"
        prompt_tokens = len(self._prompt_text(body))
        if not body.get("stream"):
            text = "".join(f" x{i}" for i in range(1, n + 1))
            return web.json_response(self._doc(rid, chat, text, finish, prompt_tokens, n))
        opts = body.get("stream_options") or {}
        usage = bool(opts.get("include_usage"))
        continuous = usage and bool(opts.get("continuous_usage_stats"))
        rec = {"sent": 0, "total": n, "finished": False, "cancelled": False}
        self.streams.append(rec)
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        obj = "chat.completion.chunk" if chat else "text_completion"
        base = {"id": rid, "object": obj, "created": 1, "model": self.model}
        try:
            if chat:
                await _sse(resp, dict(base, choices=[{"index": 0, "delta": {
                    "role": "assistant", "content": ""}, "finish_reason": None}]))
            for i in range(1, n + 1):
                await asyncio.sleep(self.token_delay)
                piece = f" x{i}"
                choice = {"index": 0, "finish_reason": finish if i == n else None}
                choice.update({"delta": {"content": piece}} if chat else {"text": piece})
                doc = dict(base, choices=[choice])
                if continuous:
                    doc["usage"] = _usage(prompt_tokens, i)
                await _sse(resp, doc)
                rec["sent"] = i
            if usage:
                await _sse(resp, dict(base, choices=[], usage=_usage(prompt_tokens, n)))
            await resp.write(b"data: [DONE]\n\n")
            rec["finished"] = True
        except ConnectionResetError:  # the client closed the stream: a cancellation
            rec["cancelled"] = True
        except asyncio.CancelledError:
            rec["cancelled"] = True
            raise
        return resp

    def _doc(self, rid: str, chat: bool, text: str, finish: str, prompt: int, n: int):
        choice = {"index": 0, "finish_reason": finish}
        choice.update({"message": {"role": "assistant", "content": text}} if chat
                      else {"text": text})
        return {"id": rid, "object": "chat.completion" if chat else "text_completion",
                "created": 1, "model": self.model, "choices": [choice],
                "usage": _usage(prompt, n)}


def _usage(prompt: int, n: int) -> dict:
    return {"prompt_tokens": prompt, "completion_tokens": n, "total_tokens": prompt + n}


async def _sse(resp: web.StreamResponse, doc: dict) -> None:
    await resp.write(b"data: " + json.dumps(doc).encode() + b"\n\n")


class BackgroundApp:
    """Run an aiohttp app on 127.0.0.1 (a free port) in a daemon thread with its own
    event loop, as a context manager; ``base_url`` is set on enter."""

    def __init__(self, app: web.Application, handler_cancellation: bool = False) -> None:
        self.app = app
        self.handler_cancellation = handler_cancellation
        self.loop = asyncio.new_event_loop()
        self.base_url = ""
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)

    def __enter__(self) -> BackgroundApp:
        self._thread.start()
        self.base_url = asyncio.run_coroutine_threadsafe(self._start(), self.loop).result(30)
        return self

    async def _start(self) -> str:
        self.runner = web.AppRunner(self.app, handler_cancellation=self.handler_cancellation,
                                    access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        return f"http://127.0.0.1:{port}"

    def __exit__(self, *exc) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self.loop.close()
