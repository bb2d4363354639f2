"""A small, fast, fault-injecting stand-in for vLLM's OpenAI-compatible server.

It serves ``/v1/completions`` in vLLM's response format (streaming as server-sent events,
or one JSON body) with configurable timing, and it injects the faults that a real vLLM
server rarely shows on demand: HTTP 5xx answers, connections reset mid-stream, streams
that stall, malformed event lines and slow first bytes. Which request gets which fault is
a pure function of its request id (:func:`fault_for`), so a replay run and its test agree
on it without talking to each other.

It is used by the replay client's tests and by the client-overhead benchmark, so it runs
in its own process (``python -m replay.testing.stub``; :class:`StubServer` starts one) and keeps
per-request work small: plain asyncio streams, a hand-written HTTP/1.1 parser (h11 is not
used: it would add per-event overhead and it cannot express an RST mid-body), the
constant parts of each event encoded once per request, and one socket write for a whole
stream when there is no token delay.

Endpoints (all HTTP/1.1, keep-alive honoured):

* ``GET /health`` -- 200, empty body.
* ``GET /v1/models`` -- the one model, ``max_model_len`` included.
* ``POST /tokenize`` -- ``{"count", "max_model_len", "tokens"}``; one token per UTF-8 byte
  of the prompt, id = byte value + 3 (a 259-id vocabulary).
* ``POST /v1/completions`` -- see :class:`StubConfig` for the timing; always generates
  exactly ``max_tokens`` tokens of text ``" t"`` (``finish_reason`` ``"length"``, as with
  ``ignore_eos``).
* ``GET /stub/log`` -- what the server received: one JSON object per completion request,
  ``{"request_id", "fault", "status", "prompt_tokens", "max_tokens", "priority"}``, in
  order of arrival. ``DELETE /stub/log`` empties it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
import select
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

FAULT_KINDS: tuple[str, ...] = ("5xx", "reset", "stall", "malformed", "slow")
"""Every fault kind the stub can inject, in the order of the ``--faults`` default."""

FAILING_FAULTS = frozenset({"5xx", "reset", "stall", "malformed"})
"""Fault kinds after which the request has failed (``slow`` still succeeds)."""

DEFAULT_MAX_MODEL_LEN = 4096
TOKEN_ID_OFFSET = 3
"""Token id of a prompt byte = byte value + 3 (ids 0-2 stand for special tokens)."""
VOCAB_SIZE = 256 + TOKEN_ID_OFFSET
DEFAULT_MAX_TOKENS = 16
"""``max_tokens`` when a completion request leaves it out (the OpenAI default)."""
TOKEN_TEXT = " t"
"""The text of every generated token."""

_REPO_ROOT = Path(__file__).resolve().parents[2]
_LISTENING = re.compile(r"^listening on (http://\S+:(\d+))$")


# --------------------------------------------------------------------------- faults


def _digest(request_id: str, seed: int) -> bytes:
    return hashlib.blake2b(f"{seed}\x00{request_id}".encode(), digest_size=24).digest()


def fault_for(request_id: str, seed: int, rate: float,
              kinds: tuple[str, ...] = FAULT_KINDS) -> str | None:
    """The fault the stub injects into the request ``request_id``, or None.

    Deterministic across processes and runs (a keyed BLAKE2b digest of ``seed`` and the
    id, not Python's salted ``hash``): the first 8 bytes give a uniform number in [0, 1)
    and the request is faulty when it is below ``rate`` (so about ``rate`` of all ids are;
    ``rate`` <= 0 never, >= 1 always); the next 8 bytes pick one of ``kinds`` evenly.
    ``kinds`` empty means no faults. The stub server calls this with its ``--seed``,
    ``--fault-rate`` and ``--faults``, so a client that knows those can predict which of
    its requests will fail.
    """
    if rate <= 0 or not kinds:
        return None
    digest = _digest(request_id, seed)
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u >= rate:
        return None
    return kinds[int.from_bytes(digest[8:16], "big") % len(kinds)]


def fault_status(request_id: str, seed: int) -> int:
    """The HTTP status (500 or 503, about half each) of a ``5xx`` fault on ``request_id``.

    Deterministic per id, and independent of :func:`fault_for`'s choice of kind.
    """
    return 503 if _digest(request_id, seed)[16] & 1 else 500


def tokenize(text: str) -> list[int]:
    """The stub's token ids of ``text``: UTF-8 byte value + 3, one token per byte."""
    return [b + TOKEN_ID_OFFSET for b in text.encode("utf-8")]


# --------------------------------------------------------------------------- config


@dataclass(frozen=True)
class StubConfig:
    """Settings of one stub server (times in seconds here; the CLI takes some in ms).

    * ``token_delay_s``: time between two generated tokens (inter-token latency).
    * ``first_token_delay_s``: time from the response headers to the first token (the
      TTFT the stub adds on top of the network). Headers go out as soon as the request is
      accepted, as with vLLM, so clients should time TTFT at the first token, not at the
      headers. Streaming and non-streaming requests take the same end-to-end time:
      ``first_token_delay_s + (max_tokens - 1) * token_delay_s``.
    * ``fault_rate``, ``faults``, ``seed``: which requests get which fault
      (:func:`fault_for` on the ``X-Request-Id`` header).
    * ``stall_s``: how long a ``stall`` fault sends nothing before closing.
    * ``slow_first_byte_s``: how long a ``slow`` fault waits before sending anything.
    * ``scheduling_policy``: ``"priority"`` accepts any integer ``priority``;
      ``"fcfs"`` rejects a non-zero one with vLLM's HTTP 400.
    * ``max_model_len``: prompt plus completion tokens above this get vLLM's HTTP 400.
    """

    host: str = "127.0.0.1"
    port: int = 0
    model: str = "stub"
    fault_rate: float = 0.0
    faults: tuple[str, ...] = FAULT_KINDS
    seed: int = 0
    token_delay_s: float = 0.0
    first_token_delay_s: float = 0.0
    stall_s: float = 30.0
    slow_first_byte_s: float = 0.5
    scheduling_policy: str = "priority"
    max_model_len: int = DEFAULT_MAX_MODEL_LEN


# --------------------------------------------------------------------------- HTTP bits

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            413: "Payload Too Large", 431: "Request Header Fields Too Large",
            500: "Internal Server Error", 503: "Service Unavailable"}
_ERROR_TYPES = {400: "BadRequestError", 404: "NotFoundError",
                500: "InternalServerError", 503: "ServiceUnavailableError"}
_MAX_BODY = 64 * 1024 * 1024
_DONE = b"data: [DONE]\n\n"
_CHUNKED_END = b"0\r\n\r\n"
_BROKEN_EVENT = b'data: {"choices": [{"text": \n\n'
_BROKEN_JSON = b'{"choices": [{"text": '


class _BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _chunk(data: bytes) -> bytes:
    """``data`` framed as one HTTP/1.1 chunk (transfer-encoding: chunked)."""
    return b"%x\r\n%s\r\n" % (len(data), data)


def _head(status: int, content_type: bytes | None, *, length: int | None,
          keep_alive: bool, request_id: str | None = None) -> bytes:
    lines = [b"HTTP/1.1 %d %s" % (status, _REASONS.get(status, "Unknown").encode())]
    if content_type is not None:
        lines.append(b"content-type: " + content_type)
    if length is None:
        lines.append(b"transfer-encoding: chunked")
    else:
        lines.append(b"content-length: %d" % length)
    if request_id is not None:
        lines.append(b"x-request-id: " + request_id.encode("latin-1", "replace"))
    lines.append(b"connection: keep-alive" if keep_alive else b"connection: close")
    return b"\r\n".join(lines) + b"\r\n\r\n"


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode("utf-8")


def _error_body(status: int, message: str) -> bytes:
    """vLLM's error JSON: ``{"object":"error","message",...,"code":status}``."""
    return _json_bytes({"object": "error", "message": message,
                        "type": _ERROR_TYPES.get(status, "BadRequestError"),
                        "param": None, "code": status})


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


# --------------------------------------------------------------------------- server


class _Stub:
    """The server state: configuration, request counter and the received-request log."""

    def __init__(self, cfg: StubConfig) -> None:
        self.cfg = cfg
        self.log: list[dict[str, Any]] = []
        self.counter = 0
        self.model_json = json.dumps(cfg.model)
        self.models_body = _json_bytes({"object": "list", "data": [
            {"id": cfg.model, "object": "model", "created": int(time.time()),
             "owned_by": "stub", "max_model_len": cfg.max_model_len}]})

    # ---- connection loop

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, ConnectionError):
                    return
                except asyncio.LimitOverrunError:
                    body = _error_body(400, "request headers too large")
                    writer.write(_head(431, b"application/json", length=len(body),
                                       keep_alive=False) + body)
                    return
                try:
                    method, target, version, headers = _parse_head(head)
                    body = await _read_body(reader, writer, headers)
                except _BadRequest as exc:
                    data = _error_body(exc.status, exc.message)
                    writer.write(_head(exc.status, b"application/json", length=len(data),
                                       keep_alive=False) + data)
                    return
                keep = version == "HTTP/1.1" and headers.get("connection", "").lower() != "close"
                keep = await self.dispatch(method, target, headers, body, reader, writer, keep)
                if not keep:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            pass
        except Exception as exc:  # keep serving other connections; say why on stderr
            print(f"stub: error on a connection: {exc!r}", file=sys.stderr, flush=True)
        finally:
            transport = writer.transport
            if not transport.is_closing():
                try:
                    await writer.drain()
                except (ConnectionError, OSError):
                    pass
                transport.close()

    async def dispatch(self, method: str, target: str, headers: dict[str, str], body: bytes,
                       reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       keep: bool) -> bool:
        path = target.split("?", 1)[0]
        if path == "/v1/completions":
            if method != "POST":
                return self.reply(writer, 405, _json_bytes({"detail": "Method Not Allowed"}), keep)
            return await self.completions(headers, body, reader, writer, keep)
        if path == "/health":
            if method != "GET":
                return self.reply(writer, 405, _json_bytes({"detail": "Method Not Allowed"}), keep)
            return self.reply(writer, 200, b"", keep, content_type=None)
        if path == "/v1/models" and method == "GET":
            return self.reply(writer, 200, self.models_body, keep)
        if path == "/tokenize" and method == "POST":
            return self.tokenize(body, writer, keep)
        if path == "/stub/log":
            if method == "GET":
                return self.reply(writer, 200, _json_bytes(self.log), keep)
            if method == "DELETE":
                cleared, self.log = len(self.log), []
                return self.reply(writer, 200, _json_bytes({"cleared": cleared}), keep)
        if path in ("/v1/models", "/tokenize", "/stub/log"):
            return self.reply(writer, 405, _json_bytes({"detail": "Method Not Allowed"}), keep)
        return self.reply(writer, 404, _json_bytes({"detail": "Not Found"}), keep)

    @staticmethod
    def reply(writer: asyncio.StreamWriter, status: int, body: bytes, keep: bool, *,
              content_type: bytes | None = b"application/json",
              request_id: str | None = None) -> bool:
        writer.write(_head(status, content_type, length=len(body), keep_alive=keep,
                           request_id=request_id) + body)
        return keep

    def tokenize(self, body: bytes, writer: asyncio.StreamWriter, keep: bool) -> bool:
        try:
            req = json.loads(body)
            if not isinstance(req, dict) or not isinstance(req.get("prompt"), str):
                raise ValueError
        except ValueError:
            return self.reply(writer, 400, _error_body(
                400, "tokenize needs a JSON object with a string 'prompt'"), keep)
        ids = tokenize(req["prompt"])
        return self.reply(writer, 200, _json_bytes(
            {"count": len(ids), "max_model_len": self.cfg.max_model_len, "tokens": ids}), keep)

    # ---- completions

    def _check(self, body: bytes, entry: dict[str, Any]) -> dict[str, Any]:
        """The request object; fills ``entry`` and raises _BadRequest like vLLM's checks."""
        cfg = self.cfg
        try:
            req = json.loads(body)
        except ValueError as exc:
            raise _BadRequest(400, f"request body is not valid JSON: {exc}") from None
        if not isinstance(req, dict):
            raise _BadRequest(400, "request body must be a JSON object")
        prompt = req.get("prompt")
        if isinstance(prompt, str):
            entry["prompt_tokens"] = len(prompt.encode("utf-8"))
        elif isinstance(prompt, list) and all(_is_int(t) for t in prompt):
            entry["prompt_tokens"] = len(prompt)
        else:
            raise _BadRequest(400, "prompt must be a string or a list of token ids")
        max_tokens = req.get("max_tokens", DEFAULT_MAX_TOKENS)
        if max_tokens is None:
            max_tokens = DEFAULT_MAX_TOKENS
        if not _is_int(max_tokens):
            raise _BadRequest(400, "max_tokens must be an integer")
        entry["max_tokens"] = max_tokens
        if "priority" in req:
            priority = req["priority"]
            if not _is_int(priority):
                raise _BadRequest(400, "priority must be an integer")
            entry["priority"] = priority
            if cfg.scheduling_policy != "priority" and priority != 0:
                raise _BadRequest(400, f"Got priority {priority} but Priority scheduling "
                                       "is not enabled.")
        model = req.get("model")
        if model is not None and model != cfg.model:
            raise _BadRequest(404, f"The model `{model}` does not exist.")
        if entry["prompt_tokens"] == 0:
            raise _BadRequest(400, "The prompt cannot be empty.")
        if max_tokens < 1:
            raise _BadRequest(400, f"max_tokens must be at least 1, got {max_tokens}.")
        stream = req.get("stream", False)
        if not isinstance(stream, bool) and stream is not None:
            raise _BadRequest(400, "stream must be a boolean")
        options = req.get("stream_options")
        if options is not None:
            if not stream:
                raise _BadRequest(400, "Stream options can only be defined when `stream=True`.")
            if not isinstance(options, dict):
                raise _BadRequest(400, "stream_options must be an object")
        total = entry["prompt_tokens"] + max_tokens
        if total > cfg.max_model_len:
            raise _BadRequest(400, (
                f"This model's maximum context length is {cfg.max_model_len} tokens. "
                f"However, you requested {total} tokens ({entry['prompt_tokens']} in the "
                f"messages, {max_tokens} in the completion). Please reduce the length of "
                "the messages or completion."))
        return req

    async def completions(self, headers: dict[str, str], body: bytes,
                          reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                          keep: bool) -> bool:
        cfg = self.cfg
        self.counter += 1
        request_id = headers.get("x-request-id") or f"stub-{self.counter}"
        entry: dict[str, Any] = {"request_id": request_id, "fault": None, "status": None,
                                 "prompt_tokens": None, "max_tokens": None, "priority": None}
        self.log.append(entry)
        try:
            req = self._check(body, entry)
        except _BadRequest as exc:
            entry["status"] = exc.status
            return self.reply(writer, exc.status, _error_body(exc.status, exc.message), keep,
                              request_id=request_id)

        fault = fault_for(request_id, cfg.seed, cfg.fault_rate, cfg.faults)
        entry["fault"] = fault
        if fault == "5xx":
            status = fault_status(request_id, cfg.seed)
            entry["status"] = status
            message = ("stub: injected fault 5xx (internal server error)" if status == 500
                       else "stub: injected fault 5xx (service unavailable)")
            return self.reply(writer, status, _error_body(status, message), keep,
                              request_id=request_id)
        entry["status"] = 200
        if fault == "slow":
            await asyncio.sleep(cfg.slow_first_byte_s)
            fault = None
        if fault is not None:
            keep = False  # a broken response ends its connection
        prompt_tokens, max_tokens = entry["prompt_tokens"], entry["max_tokens"]
        if req.get("stream"):
            options = req.get("stream_options") or {}
            return await self.stream(writer, reader, request_id, prompt_tokens, max_tokens,
                                     bool(options.get("include_usage")), fault, keep)
        return await self.complete(writer, reader, request_id, prompt_tokens, max_tokens,
                                   fault, keep)

    async def stream(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                     request_id: str, prompt_tokens: int, max_tokens: int,
                     include_usage: bool, fault: str | None, keep: bool) -> bool:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        prefix = (b'data: {"id":%s,"object":"text_completion","created":%d,"model":%s,'
                  % (json.dumps("cmpl-" + request_id).encode(), int(time.time()),
                     self.model_json.encode()))
        token = _chunk(prefix + b'"choices":[{"index":0,"text":%s,"logprobs":null,'
                       b'"finish_reason":null,"stop_reason":null}],"usage":null}\n\n'
                       % json.dumps(TOKEN_TEXT).encode())
        last = _chunk(prefix + b'"choices":[{"index":0,"text":%s,"logprobs":null,'
                      b'"finish_reason":"length","stop_reason":null}],"usage":null}\n\n'
                      % json.dumps(TOKEN_TEXT).encode())
        parts = [token] * (max_tokens - 1) + [last]
        head = _head(200, b"text/event-stream; charset=utf-8", length=None, keep_alive=keep,
                     request_id=request_id)
        if fault is None:
            tail = b""
            if include_usage:
                tail = _chunk(prefix + b'"choices":[],"usage":{"prompt_tokens":%d,'
                              b'"total_tokens":%d,"completion_tokens":%d,'
                              b'"prompt_tokens_details":null}}\n\n'
                              % (prompt_tokens, prompt_tokens + max_tokens, max_tokens))
            parts[-1] = parts[-1] + tail + _chunk(_DONE) + _CHUNKED_END
            await self.send_timed(writer, head, parts, t0)
            return keep
        if fault == "reset":
            if await self.send_timed(writer, head, parts[: max_tokens // 2], t0):
                await _reset(writer)
            return False
        if fault == "stall":
            if await self.send_timed(writer, head, parts[:1], t0):
                await _stall(reader, self.cfg.stall_s)
            return False
        if fault == "malformed":
            good = parts[:2]
            good[-1] = good[-1] + _chunk(_BROKEN_EVENT) + _CHUNKED_END
            await self.send_timed(writer, head, good, t0)
            return False
        raise AssertionError(f"unknown fault {fault!r}")

    async def complete(self, writer: asyncio.StreamWriter, reader: asyncio.StreamReader,
                       request_id: str, prompt_tokens: int, max_tokens: int,
                       fault: str | None, keep: bool) -> bool:
        cfg = self.cfg
        t0 = asyncio.get_running_loop().time()
        body = _json_bytes({
            "id": "cmpl-" + request_id, "object": "text_completion",
            "created": int(time.time()), "model": cfg.model,
            "choices": [{"index": 0, "text": TOKEN_TEXT * max_tokens, "logprobs": None,
                         "finish_reason": "length", "stop_reason": None}],
            "usage": {"prompt_tokens": prompt_tokens,
                      "total_tokens": prompt_tokens + max_tokens,
                      "completion_tokens": max_tokens, "prompt_tokens_details": None}})
        done_at = t0 + cfg.first_token_delay_s + (max_tokens - 1) * cfg.token_delay_s
        if fault == "malformed":
            body = _BROKEN_JSON
        head = _head(200, b"application/json", length=len(body), keep_alive=keep,
                     request_id=request_id)
        if fault == "stall":
            await _sleep_until(done_at)
            writer.write(head)
            await _stall(reader, cfg.stall_s)
            return False
        await _sleep_until(done_at)
        if writer.transport.is_closing():
            return False
        if fault == "reset":
            writer.write(head + body[: len(body) // 2])
            await _reset(writer)
            return False
        writer.write(head + body)
        await writer.drain()
        return keep

    async def send_timed(self, writer: asyncio.StreamWriter, head: bytes, parts: list[bytes],
                         t0: float) -> bool:
        """Write ``head`` now and ``parts[i]`` at ``t0 + first_token_delay + i * token_delay``.

        Writes everything in one go when nothing is due later. False when the client has
        gone away meanwhile.
        """
        loop = asyncio.get_running_loop()
        ftd, td = self.cfg.first_token_delay_s, self.cfg.token_delay_s
        transport = writer.transport
        if td <= 0 or len(parts) <= 1:
            if ftd > 0:
                writer.write(head)
                head = b""
                await _sleep_until(t0 + ftd)
                if transport.is_closing():
                    return False
            writer.write(head + b"".join(parts))
            await writer.drain()
            return True
        for i, part in enumerate(parts):
            delay = t0 + ftd + i * td - loop.time()
            if delay > 0:
                if head:
                    writer.write(head)
                    head = b""
                await writer.drain()
                await asyncio.sleep(delay)
                if transport.is_closing():
                    return False
            writer.write(head + part)
            head = b""
        await writer.drain()
        return True


async def _sleep_until(deadline: float) -> None:
    delay = deadline - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def _reset(writer: asyncio.StreamWriter) -> None:
    """Abort the connection with a TCP RST once what was written has left the process."""
    transport = writer.transport
    for _ in range(200):  # at most ~0.2 s for a slow reader to take the partial stream
        if transport.is_closing() or transport.get_write_buffer_size() == 0:
            break
        await asyncio.sleep(0.001)
    await asyncio.sleep(0.002)  # let the partial stream reach the client before the RST
    sock = writer.get_extra_info("socket")
    if sock is not None:
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
    transport.abort()


async def _stall(reader: asyncio.StreamReader, seconds: float) -> None:
    """Send nothing for ``seconds``, or until the client closes its side."""

    async def until_eof() -> None:
        while await reader.read(65536):
            pass

    try:
        await asyncio.wait_for(until_eof(), seconds)
    except (TimeoutError, ConnectionError, OSError):
        pass


def _parse_head(head: bytes) -> tuple[str, str, str, dict[str, str]]:
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
        raise _BadRequest(400, "malformed request line")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep:
            raise _BadRequest(400, "malformed header line")
        headers[name.strip().lower()] = value.strip()
    return parts[0], parts[1], parts[2], headers


async def _read_body(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                     headers: dict[str, str]) -> bytes:
    if headers.get("expect", "").lower() == "100-continue":
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
    if "chunked" in headers.get("transfer-encoding", "").lower():
        chunks = []
        size = 0
        while True:
            line = await reader.readuntil(b"\r\n")
            try:
                n = int(line.split(b";", 1)[0].strip(), 16)
            except ValueError:
                raise _BadRequest(400, "malformed chunk size") from None
            if n == 0:
                while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                    pass
                return b"".join(chunks)
            size += n
            if size > _MAX_BODY:
                raise _BadRequest(413, "request body too large")
            chunks.append(await reader.readexactly(n))
            await reader.readexactly(2)
    length = headers.get("content-length")
    if not length:
        return b""
    try:
        n = int(length)
    except ValueError:
        raise _BadRequest(400, "malformed content-length") from None
    if n < 0 or n > _MAX_BODY:
        raise _BadRequest(413 if n > 0 else 400, "bad content-length")
    return await reader.readexactly(n)


async def serve(cfg: StubConfig) -> None:
    """Run the stub until cancelled; prints ``listening on http://HOST:PORT`` first."""
    stub = _Stub(cfg)
    server = await asyncio.start_server(stub.handle, cfg.host, cfg.port, backlog=4096,
                                        reuse_address=True)
    port = server.sockets[0].getsockname()[1]
    host = f"[{cfg.host}]" if ":" in cfg.host else cfg.host
    print(f"listening on http://{host}:{port}", flush=True)
    async with server:
        await server.serve_forever()


# --------------------------------------------------------------------------- CLI


def _faults_arg(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    unknown = [k for k in kinds if k not in FAULT_KINDS]
    if unknown:
        raise argparse.ArgumentTypeError(
            f"unknown fault kind(s) {', '.join(unknown)}; known: {', '.join(FAULT_KINDS)}")
    return kinds


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m replay.testing.stub`` argument parser."""
    p = argparse.ArgumentParser(
        prog="python -m replay.testing.stub",
        description="Fault-injecting stand-in for vLLM's OpenAI-compatible /v1/completions "
                    "server. Prints 'listening on http://HOST:PORT' first.")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=0, help="0 picks a free port")
    p.add_argument("--model", default="stub", help="the one model name served")
    p.add_argument("--fault-rate", type=float, default=0.0,
                   help="share of completion requests that get a fault (0-1)")
    p.add_argument("--faults", type=_faults_arg, default=FAULT_KINDS,
                   help="comma-separated fault kinds to choose from evenly "
                        f"(default {','.join(FAULT_KINDS)})")
    p.add_argument("--seed", type=int, default=0, help="seed of fault_for")
    p.add_argument("--token-delay-ms", type=float, default=0.0,
                   help="time between generated tokens, ms")
    p.add_argument("--first-token-delay-ms", type=float, default=0.0,
                   help="time from the response headers to the first token, ms")
    p.add_argument("--stall-s", type=float, default=30.0,
                   help="how long a 'stall' fault sends nothing, s")
    p.add_argument("--slow-first-byte-s", type=float, default=0.5,
                   help="how long a 'slow' fault waits before answering, s")
    p.add_argument("--scheduling-policy", choices=("priority", "fcfs"), default="priority",
                   help="fcfs rejects non-zero priorities with HTTP 400, like vLLM")
    p.add_argument("--max-model-len", type=int, default=DEFAULT_MAX_MODEL_LEN)
    return p


def config_from_args(args: argparse.Namespace) -> StubConfig:
    """A :class:`StubConfig` from parsed CLI arguments (ms converted to seconds)."""
    return StubConfig(host=args.host, port=args.port, model=args.model,
                      fault_rate=args.fault_rate, faults=tuple(args.faults), seed=args.seed,
                      token_delay_s=args.token_delay_ms / 1000.0,
                      first_token_delay_s=args.first_token_delay_ms / 1000.0,
                      stall_s=args.stall_s, slow_first_byte_s=args.slow_first_byte_s,
                      scheduling_policy=args.scheduling_policy,
                      max_model_len=args.max_model_len)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``python -m replay.testing.stub``; runs until interrupted."""
    cfg = config_from_args(build_parser().parse_args(argv))
    try:
        asyncio.run(serve(cfg))
    except KeyboardInterrupt:
        pass
    return 0


# --------------------------------------------------------------------------- subprocess


class StubServer:
    """Runs ``python -m replay.testing.stub`` in a child process for the length of a ``with`` block.

    ``with StubServer(fault_rate=0.2, seed=1, token_delay_ms=5) as base_url:`` yields
    ``"http://127.0.0.1:PORT"`` once the server listens (port picked by the OS), and
    terminates the process on exit. Arguments mirror the CLI (delays in ms, ``stall_s`` and
    ``slow_first_byte_s`` in seconds); ``faults`` is a tuple of kinds or a comma-separated
    string. The child runs with the same interpreter (``sys.executable``) and finds the
    ``replay`` package through ``cwd`` and ``PYTHONPATH`` set to the repository root. Its
    stderr goes to a temporary file, quoted in the error if it fails to start.
    """

    def __init__(self, *, host: str = "127.0.0.1", model: str = "stub",
                 fault_rate: float = 0.0, faults: Iterable[str] | str = FAULT_KINDS,
                 seed: int = 0, token_delay_ms: float = 0.0, first_token_delay_ms: float = 0.0,
                 stall_s: float = 30.0, slow_first_byte_s: float = 0.5,
                 scheduling_policy: str = "priority",
                 max_model_len: int = DEFAULT_MAX_MODEL_LEN,
                 startup_timeout_s: float = 15.0) -> None:
        kinds = faults.split(",") if isinstance(faults, str) else list(faults)
        self.host = host
        self.args = [
            "--host", host, "--port", "0", "--model", model,
            "--fault-rate", repr(float(fault_rate)), "--faults", ",".join(kinds),
            "--seed", str(int(seed)), "--token-delay-ms", repr(float(token_delay_ms)),
            "--first-token-delay-ms", repr(float(first_token_delay_ms)),
            "--stall-s", repr(float(stall_s)), "--slow-first-byte-s", repr(float(slow_first_byte_s)),
            "--scheduling-policy", scheduling_policy, "--max-model-len", str(int(max_model_len))]
        self.startup_timeout_s = startup_timeout_s
        self.process: subprocess.Popen[bytes] | None = None
        self.base_url: str | None = None
        self.port: int | None = None
        self._stderr: Any = None

    def start(self) -> str:
        """Start the child process; returns the base URL once it listens."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(
            [str(_REPO_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        self._stderr = tempfile.TemporaryFile()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "replay.testing.stub", *self.args], cwd=str(_REPO_ROOT), env=env,
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=self._stderr)
        assert self.process.stdout is not None
        deadline = time.monotonic() + self.startup_timeout_s
        line = b""
        while not line.endswith(b"\n"):
            left = deadline - time.monotonic()
            if left <= 0 or self.process.poll() is not None:
                break
            ready, _, _ = select.select([self.process.stdout], [], [], min(left, 0.5))
            if ready:
                byte = os.read(self.process.stdout.fileno(), 1)
                if not byte:
                    break
                line += byte
        match = _LISTENING.match(line.decode("utf-8", "replace").strip())
        if match is None:
            self._terminate()
            self._stderr.seek(0)
            err = self._stderr.read().decode("utf-8", "replace")[-4000:]
            self.stop()
            raise RuntimeError(f"replay.testing.stub did not start (stdout {line!r}):\n{err}")
        self.base_url, self.port = match.group(1), int(match.group(2))
        return self.base_url

    def stop(self) -> None:
        """Terminate the child process (SIGTERM, then SIGKILL after 5 s)."""
        self._terminate()
        proc = self.process
        if proc is not None and proc.stdout is not None:
            proc.stdout.close()
        if self._stderr is not None:
            self._stderr.close()
            self._stderr = None

    def _terminate(self) -> None:
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def request_log(self) -> list[dict[str, Any]]:
        """The server's ``/stub/log``: what it received, one entry per completion request."""
        if self.base_url is None:
            raise RuntimeError("the stub server is not running")
        with urllib.request.urlopen(self.base_url + "/stub/log", timeout=10) as resp:
            return json.loads(resp.read())

    def __enter__(self) -> str:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
