"""One request served with Dynasor-CoT early exit (Dynasor §2.1) by :mod:`replay.proxy.server`.

The main generation is always streamed from the upstream (``stream: true`` with
``stream_options: {include_usage, continuous_usage_stats}``, so vLLM reports the exact
``completion_tokens`` in every chunk). One consumer loop reads a queue fed by two kinds
of producers, so nothing ever waits for a probe:

* the *pump* task reads the upstream SSE stream and queues each chunk; the loop forwards
  it to a streaming client at once (a non-streaming client gets one JSON body at the end);
* every ``probe_interval`` generated tokens the loop starts a *probe* task on a copy of
  the text so far (:meth:`CotSession._probe`); its result is queued when it returns.

Probe results are evaluated in probe order (a fast later probe waits for a slow earlier
one), each by :func:`replay.proxy.probe.should_stop`. At the first k with C_k >= τ the
upstream stream is closed (vLLM aborts a request whose connection closes, freeing its
seat and KV blocks), outstanding probes are cancelled, and the response ends with
:func:`replay.proxy.probe.final_answer_text` and ``finish_reason`` ``"stop"``.

How a probe is sent (the model's own template, no family hard-coded):

* chat: ``/v1/chat/completions`` with the request's messages plus an assistant message
  holding the text so far + probe text, ``continue_final_message: true,
  add_generation_prompt: false`` (vLLM applies the served tokenizer's chat template and
  continues that message); the request's ``chat_template``/``chat_template_kwargs`` ride
  along;
* completions with a string prompt: prompt + text so far + probe text;
* completions with a token-id prompt (the replay harness sends these): the prompt ids +
  the ids of (text so far + probe text) from the upstream's ``POST /tokenize``
  (``add_special_tokens: false``), so the prompt part is exactly what the main request ran.

The report (the ``dynasor`` field of the final JSON / final SSE chunk, and
``X-Dynasor-*`` headers on non-streamed responses): ``tokens_generated`` (main-stream
completion tokens the upstream produced, = ``usage.completion_tokens``; the appended final
answer is not counted), ``probes`` (probes evaluated), ``probes_skipped`` (hesitant),
``probes_unanswered`` (box never closed), ``probes_failed`` (upstream error or timeout),
``probes_sent``, ``probe_tokens`` (completion tokens spent in probes), ``stopped_early``,
``stop_token`` (tokens generated when the deciding probe's text was taken; -1 if none),
``answer`` (the deciding answer or null).
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass

import aiohttp
from aiohttp import web

from replay.client import sse_lines
from replay.proxy import probe as cot_probe
from replay.proxy.config import BadField, DynasorConfig

log = logging.getLogger("replay.proxy")


def openai_error(status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error") -> web.Response:
    """An OpenAI/vLLM-style error body ``{"error": {message, type, param, code}}``."""
    return web.json_response({"error": {"message": message, "type": kind,
                                        "param": param, "code": status}}, status=status)


@dataclass(slots=True)
class ProbeResult:
    """One probe's outcome: its answer (None if hesitant/unanswered/failed)."""

    answer: str | None
    hesitant: bool = False
    failed: bool = False
    tokens: int = 0
    at_tokens: int = 0


def check_body(kind: str, body: dict) -> None:
    """Refuse what a single probed stream cannot serve (raises :class:`BadField`):
    ``n``/``best_of`` > 1, ``echo``, batched prompts, ``tools``, and ``logprobs``
    without streaming (chunks are forwarded as they are, logprobs included, only
    when the client streams)."""
    for name in ("n", "best_of"):
        if body.get(name) not in (None, 1):
            raise BadField(name, "must be 1 with dynasor (one probed stream)")
    if body.get("tools"):
        raise BadField("tools", "tool calls are not supported with dynasor")
    if not body.get("stream") and body.get("logprobs") not in (None, False):
        raise BadField("logprobs", "needs stream: true with dynasor")
    if kind == "completions":
        if body.get("echo"):
            raise BadField("echo", "not supported with dynasor")
        p = body.get("prompt")
        if not (isinstance(p, str) or (isinstance(p, list) and p and all(
                isinstance(t, int) and not isinstance(t, bool) for t in p))):
            raise BadField("prompt", "with dynasor the prompt must be one string or one "
                           "list of token ids")
    elif not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadField("messages", "must be a non-empty list")


class CotSession:
    """Serve one ``/v1/completions`` or ``/v1/chat/completions`` request with probing.

    Args:
        http: the proxy's upstream ``aiohttp.ClientSession``.
        target: upstream root URL (no trailing slash).
        kind: ``"completions"`` or ``"chat"``.
        body: the client's JSON body, ``dynasor`` removed.
        cfg: the validated probing settings.
        headers: headers to send upstream (Authorization and the like).
        probe_timeout: seconds per probe request (a late probe counts as failed).
    """

    def __init__(self, http: aiohttp.ClientSession, target: str, kind: str, body: dict,
                 cfg: DynasorConfig, headers: dict, probe_timeout: float = 60.0) -> None:
        self.http, self.target, self.kind, self.cfg = http, target, kind, cfg
        self.body, self.headers, self.probe_timeout = body, headers, probe_timeout
        opts = body.get("stream_options") or {}
        self.client_stream = bool(body.get("stream"))
        self.client_usage = self.client_stream and bool(opts.get("include_usage"))
        self.client_continuous = self.client_usage and bool(opts.get("continuous_usage_stats"))
        self.queue: asyncio.Queue = asyncio.Queue()
        # pieces of the main text so far, joined only when read (a probe every
        # probe_interval tokens, the final response): appending to a str attribute
        # copies it whole per chunk, quadratic on the event loop for a long chain
        self._text: list[str] = []       # reasoning + content for chat
        self._content: list[str] = []    # chat: content only; completions: == text
        self._reasoning: list[str] = []
        self.tokens = 0
        self.usage: dict = {}
        self.meta: dict = {}      # id, created, model of the upstream stream
        self.finish: tuple[str | None, object] = (None, None)
        self.probe_tasks: dict[int, asyncio.Task] = {}
        self.results: dict[int, ProbeResult] = {}
        self.answers: list[str | None] = []
        self.report = {"tokens_generated": 0, "probes": 0, "probes_skipped": 0,
                       "probes_unanswered": 0, "probes_failed": 0, "probes_sent": 0,
                       "probe_tokens": 0, "stopped_early": False, "stop_token": -1,
                       "answer": None}
        self._next_probe = cfg.probe_interval
        self._out: web.StreamResponse | None = None

    # ------------------------------------------------------------------ upstream
    def _url(self) -> str:
        return self.target + ("/v1/completions" if self.kind == "completions"
                              else "/v1/chat/completions")

    async def _pump(self, resp: aiohttp.ClientResponse) -> None:
        try:
            async for lines in sse_lines(resp.content):
                for line in lines:
                    if not line.startswith(b"data:"):
                        continue
                    data = line[5:].strip()
                    if data == b"[DONE]":
                        await self.queue.put(("end", None))
                        return
                    try:
                        await self.queue.put(("chunk", json.loads(data)))
                    except ValueError:
                        await self.queue.put(("error", f"malformed upstream SSE "
                                              f"data {data[:80]!r}"))
                        return
            await self.queue.put(("error", "upstream stream ended before [DONE]"))
        except (aiohttp.ClientError, OSError) as exc:
            await self.queue.put(("error", f"upstream connection failed: {exc}"))

    # -------------------------------------------------------------------- probes
    async def _tokenize(self, text: str) -> list[int]:
        async with self.http.post(self.target + "/tokenize", headers=self.headers, json={
                "model": self.body.get("model"), "prompt": text,
                "add_special_tokens": False}) as r:
            doc = await r.json(content_type=None)
            if r.status != 200 or not isinstance(doc, dict):
                raise RuntimeError(f"/tokenize answered HTTP {r.status}")
            return list(doc["tokens"])

    def _probe_body(self) -> dict:
        b = self.body
        out = {"model": b.get("model"), "max_tokens": self.cfg.probe_max_tokens,
               "temperature": self.cfg.probe_temperature, "top_p": self.cfg.probe_top_p,
               "stream": False}
        for key in ("priority", "chat_template", "chat_template_kwargs"):
            if b.get(key) is not None and (key == "priority" or self.kind == "chat"):
                out[key] = b[key]
        return out

    async def probe_request(self, k: int, text: str) -> tuple[str, dict, dict]:
        """(URL, JSON body, headers) of probe k on the main text ``text`` (module doc:
        the request's own messages or prompt, the text so far, the probe text)."""
        body = self._probe_body()
        if isinstance(self.body.get("seed"), int):
            body["seed"] = self.body["seed"] + 1 + k  # reproducible, distinct per probe
        probe = text + self.cfg.probe_text
        headers = dict(self.headers)
        if "X-Request-Id" in headers:
            headers["X-Request-Id"] = f"{headers['X-Request-Id']}-probe{k}"
        if self.kind == "chat":
            msgs = list(self.body["messages"])
            if self.body.get("continue_final_message") and \
                    msgs[-1].get("role") == "assistant":
                probe = str(msgs.pop().get("content") or "") + probe
            msgs.append({"role": "assistant", "content": probe})
            body.update(messages=msgs, continue_final_message=True,
                        add_generation_prompt=False)
            return self.target + "/v1/chat/completions", body, headers
        prompt = self.body["prompt"]
        body["prompt"] = prompt + probe if isinstance(prompt, str) \
            else list(prompt) + await self._tokenize(probe)
        return self.target + "/v1/completions", body, headers

    async def _probe(self, k: int, text: str, at_tokens: int) -> None:
        res = ProbeResult(None, at_tokens=at_tokens)
        try:
            async with asyncio.timeout(self.probe_timeout):
                url, body, headers = await self.probe_request(k, text)
                async with self.http.post(url, json=body, headers=headers) as r:
                    doc = await r.json(content_type=None)
                    if r.status != 200:
                        raise RuntimeError(f"probe HTTP {r.status}")
            choice = doc["choices"][0]
            out = choice["text"] if self.kind == "completions" else \
                (choice["message"].get("content") or "")
            res.tokens = int((doc.get("usage") or {}).get("completion_tokens") or 0)
            res.hesitant = cot_probe.hesitates(out, self.cfg.hesitation_words)
            res.answer = None if res.hesitant else cot_probe.extract_answer(out)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001  (any probe fault = an unanswered probe)
            res.failed = True
            why = f"timeout after {self.probe_timeout:g} s" if isinstance(
                exc, TimeoutError) else (str(exc) or type(exc).__name__)
            log.warning("probe %d (at %d tokens) of %s failed: %s", k, at_tokens,
                        self._url(), why)
        await self.queue.put(("probe", (k, res)))

    def _start_probe(self) -> None:
        k = len(self.probe_tasks)
        self.probe_tasks[k] = asyncio.ensure_future(self._probe(k, self.text, self.tokens))
        self.report["probes_sent"] += 1
        while self._next_probe <= self.tokens:
            self._next_probe += self.cfg.probe_interval

    def _evaluate(self) -> bool:
        """Evaluate finished probes in order; True at the first stop (§2.1 rule)."""
        rep = self.report
        while len(self.answers) in self.results:
            res = self.results[len(self.answers)]
            self.answers.append(res.answer)
            rep["probes"] += 1
            rep["probe_tokens"] += res.tokens
            rep["probes_skipped"] += res.hesitant
            rep["probes_failed"] += res.failed
            rep["probes_unanswered"] += not (res.hesitant or res.failed) \
                and res.answer is None
            if cot_probe.should_stop(self.answers, self.cfg.certainty_window,
                                     self.cfg.threshold):
                rep.update(stopped_early=True, stop_token=res.at_tokens, answer=res.answer)
                return True
        return False

    @property
    def text(self) -> str:
        """The main text so far (chat: reasoning + content)."""
        return "".join(self._text)

    @property
    def content(self) -> str:
        """Chat: the content so far; completions: the text."""
        return "".join(self._content)

    @property
    def reasoning(self) -> str:
        """Chat: the reasoning so far."""
        return "".join(self._reasoning)

    # ------------------------------------------------------------------ chunks
    def _absorb(self, doc: dict) -> None:
        if not self.meta:
            self.meta = {k: doc.get(k) for k in ("id", "created", "model")}
        usage = doc.get("usage")
        if usage:
            self.usage = usage
        for choice in doc.get("choices") or ():
            if self.kind == "completions":
                piece = choice.get("text") or ""
                self._content.append(piece)
            else:
                delta = choice.get("delta") or {}
                r = delta.get("reasoning_content") or delta.get("reasoning") or ""
                piece = delta.get("content") or ""
                self._reasoning.append(r)
                self._content.append(piece)
                piece = r + piece
            self._text.append(piece)
            if not usage and piece:
                self.tokens += 1  # no usage reported: one token per text chunk
            if choice.get("finish_reason") is not None:
                self.finish = (choice["finish_reason"], choice.get("stop_reason"))
        if usage and usage.get("completion_tokens") is not None:
            self.tokens = int(usage["completion_tokens"])
        self.report["tokens_generated"] = self.tokens

    def _usage(self) -> dict:
        prompt = int(self.usage.get("prompt_tokens") or 0)
        out = {"prompt_tokens": prompt, "completion_tokens": self.tokens,
               "total_tokens": prompt + self.tokens}
        if self.usage.get("prompt_tokens_details"):
            out["prompt_tokens_details"] = self.usage["prompt_tokens_details"]
        return out

    def _chunk(self, text: str, finish: str | None, stop_reason: object = None) -> dict:
        if self.kind == "completions":
            choice = {"index": 0, "text": text, "logprobs": None,
                      "finish_reason": finish, "stop_reason": stop_reason}
            obj = "text_completion"
        else:
            choice = {"index": 0, "delta": {"content": text}, "logprobs": None,
                      "finish_reason": finish, "stop_reason": stop_reason}
            obj = "chat.completion.chunk"
        return {"id": self.meta.get("id") or f"dynasor-{time.time_ns()}", "object": obj,
                "created": self.meta.get("created") or int(time.time()),
                "model": self.meta.get("model") or self.body.get("model"),
                "choices": [choice]}

    # --------------------------------------------------------------------- run
    async def run(self, request: web.Request) -> web.StreamResponse:
        """Serve the request (module doc); returns the client response."""
        upstream = dict(self.body, stream=True, stream_options={
            "include_usage": True, "continuous_usage_stats": True})
        try:
            resp = await self.http.post(self._url(), json=upstream, headers=self.headers)
        except (aiohttp.ClientError, OSError) as exc:
            return openai_error(502, f"cannot reach the upstream server {self.target}: "
                                f"{exc}", kind="upstream_error")
        try:
            if resp.status != 200:
                return web.Response(status=resp.status, body=await resp.read(),
                                    content_type=resp.content_type or "application/json")
            return await self._serve(request, resp)
        except ConnectionResetError:  # the client went away: stop everything upstream
            return self._out or web.Response(status=499)
        finally:
            resp.close()  # an unfinished stream: the connection closes, vLLM aborts
            for task in self.probe_tasks.values():
                task.cancel()

    async def _serve(self, request: web.Request,
                     resp: aiohttp.ClientResponse) -> web.StreamResponse:
        pump = asyncio.ensure_future(self._pump(resp))
        out = None
        self._out = None
        if self.client_stream:
            out = web.StreamResponse(headers={
                "Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                "X-Dynasor-Probe-Interval": str(self.cfg.probe_interval),
                "X-Dynasor-Certainty-Window": str(self.cfg.certainty_window),
                "X-Dynasor-Threshold": f"{self.cfg.threshold:g}"})
            await out.prepare(request)
            self._out = out
        held = None  # the chunk with finish_reason: sent last, with the report
        error = None
        try:
            while True:
                what, item = await self.queue.get()
                if what == "chunk":
                    self._absorb(item)
                    if item.get("choices") and self.finish[0] is None \
                            and self.tokens >= self._next_probe:
                        self._start_probe()
                    if out is not None and item.get("choices"):
                        if not self.client_continuous:
                            item.pop("usage", None)
                        if self.finish[0] is not None:
                            held = item
                        else:
                            await _send(out, item)
                elif what == "probe":
                    self.results[item[0]] = item[1]
                    if self.finish[0] is None and self._evaluate():
                        break
                elif what == "end":
                    break
                else:
                    error = item
                    break
        finally:
            pump.cancel()
        early = self.report["stopped_early"]
        if early:
            tail = cot_probe.final_answer_text(self.report["answer"])
            self._content.append(tail)
            self._text.append(tail)
            self.finish = ("stop", None)
            held = self._chunk(tail, "stop")
        if error is not None and not early:
            if out is None:
                return openai_error(502, error, kind="upstream_error")
            await _send(out, {"error": {"message": error, "type": "upstream_error",
                                        "param": None, "code": 502}})
            await out.write(b"data: [DONE]\n\n")
            return out
        if out is None:
            return self._json_response()
        if held is None:
            held = self._chunk("", self.finish[0] or "stop", self.finish[1])
        held["dynasor"] = dict(self.report)
        if self.client_continuous:
            held["usage"] = self._usage()
        await _send(out, held)
        if self.client_usage:
            last = self._chunk("", None)
            last.update(choices=[], usage=self._usage(), dynasor=dict(self.report))
            await _send(out, last)
        await out.write(b"data: [DONE]\n\n")
        return out

    def _json_response(self) -> web.Response:
        base = self._chunk("", None)
        finish, stop_reason = self.finish
        if self.kind == "completions":
            choice = {"index": 0, "text": self.content, "logprobs": None,
                      "finish_reason": finish, "stop_reason": stop_reason,
                      "prompt_logprobs": None}
            obj = "text_completion"
        else:
            msg = {"role": "assistant", "content": self.content, "tool_calls": []}
            if self.reasoning:
                msg["reasoning_content"] = self.reasoning
            choice = {"index": 0, "message": msg, "logprobs": None,
                      "finish_reason": finish, "stop_reason": stop_reason}
            obj = "chat.completion"
        doc = dict(base, object=obj, choices=[choice], usage=self._usage(),
                   dynasor=dict(self.report))
        return web.json_response(doc, headers=report_headers(self.report))


def report_headers(report: dict) -> dict[str, str]:
    """``X-Dynasor-Tokens-Generated``, ``-Probes``, ``-Probes-Skipped``,
    ``-Stopped-Early`` (``true``/``false``), ``-Stop-Token`` of a report."""
    return {"X-Dynasor-Tokens-Generated": str(report["tokens_generated"]),
            "X-Dynasor-Probes": str(report["probes"]),
            "X-Dynasor-Probes-Skipped": str(report["probes_skipped"]),
            "X-Dynasor-Stopped-Early": "true" if report["stopped_early"] else "false",
            "X-Dynasor-Stop-Token": str(report["stop_token"])}


async def _send(out: web.StreamResponse, doc: dict) -> None:
    await out.write(b"data: " + json.dumps(doc, separators=(",", ":")).encode() + b"\n\n")
