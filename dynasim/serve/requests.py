"""Reading OpenAI/vLLM request bodies and writing the twin's answers (no I/O here).

Validation follows vLLM's OpenAI server (``vllm/entrypoints/openai/serving_engine.py``,
``protocol.py``), with its HTTP statuses and messages: a model name other than the
served one is 404 ``The model `X` does not exist.``; a prompt longer than
``max_model_len`` is 400 ``This model's maximum context length is N tokens. However, your
request has M input tokens. Please reduce the length of the input messages.``; a prompt
that fits but leaves too little room is 400 ``'max_tokens' or 'max_completion_tokens' is
too large: X. This model's maximum context length is N tokens and your request has M
input tokens (X > N - M).``; a non-zero ``priority`` without priority scheduling is 400
``Got priority P but Priority scheduling is not enabled.``
"""

from __future__ import annotations

from dataclasses import dataclass

from dynasim.request import Request
from dynasim.serve.tokens import VOCAB_SIZE, filler_ids, filler_text, render_chat, tokenize

#: OpenAI's default ``max_tokens`` of a completion when the server knows no context
#: length (vLLM defaults to the room left under ``max_model_len``).
DEFAULT_MAX_TOKENS = 16


class BadRequest(Exception):
    """A request the server answers with an error (HTTP ``status``, vLLM's ``kind``)."""

    def __init__(self, message: str, status: int = 400, kind: str = "BadRequestError"
                 ) -> None:
        super().__init__(message)
        self.message, self.status, self.kind = message, status, kind


@dataclass
class Completion:
    """One parsed completion or chat request.

    Attributes:
        chat: ``/v1/chat/completions`` (else ``/v1/completions``).
        prompt_ids: the prompt's token ids (given, or from the text rule).
        max_tokens: tokens to generate: the twin always generates exactly this many
            (no model, so no EOS: as vLLM with ``ignore_eos``).
        priority: vLLM's ``priority`` (lower first).
        stream, include_usage, return_token_ids: the response options.
    """

    chat: bool
    model: str
    prompt_ids: list[int]
    max_tokens: int
    priority: int = 0
    stream: bool = False
    include_usage: bool = False
    return_token_ids: bool = False
    id: str = ""

    def _base(self, created: int, chunk: bool) -> dict:
        kind = ("chat.completion" if self.chat else "text_completion") + \
            (".chunk" if chunk and self.chat else "")
        return {"id": self.id, "object": kind, "created": created, "model": self.model}

    def token_chunks(self, start: int, stop: int, last: bool, created: int) -> list[dict]:
        """The stream events of generated tokens ``start .. stop - 1``, one per token
        (a chat stream opens with vLLM's role-only chunk); ``last``: ``stop`` ends the
        answer (its chunk carries ``finish_reason: "length"``)."""
        out = []
        if self.chat and start == 0:
            out.append(dict(self._base(created, True), choices=[{
                "index": 0, "delta": {"role": "assistant", "content": ""},
                "logprobs": None, "finish_reason": None}]))
        for i in range(start, stop):
            reason = "length" if last and i == stop - 1 else None
            if self.chat:
                choice = {"index": 0, "delta": {"content": filler_text(i, i + 1)},
                          "logprobs": None, "finish_reason": reason}
            else:
                choice = {"index": 0, "text": filler_text(i, i + 1), "logprobs": None,
                          "finish_reason": reason, "stop_reason": None}
            if self.return_token_ids:
                choice["token_ids"] = filler_ids(i, i + 1)
                if i == 0:
                    choice["prompt_token_ids"] = self.prompt_ids
            out.append(dict(self._base(created, True), choices=[choice]))
        return out

    def usage(self, req: Request) -> dict:
        """OpenAI ``usage`` of a request (cached prompt tokens as vLLM's
        ``--enable-prompt-tokens-details`` reports them)."""
        return {"prompt_tokens": req.prompt_tokens, "total_tokens": req.prompt_tokens
                + req.num_generated, "completion_tokens": req.num_generated,
                "prompt_tokens_details": {"cached_tokens": req.num_cached_tokens}}

    def usage_chunk(self, req: Request, created: int) -> dict:
        """The final ``stream_options.include_usage`` event (no choices)."""
        return dict(self._base(created, True), choices=[], usage=self.usage(req))

    def whole(self, req: Request, created: int) -> dict:
        """The non-streamed body of the finished ``req``."""
        n = req.num_generated
        if self.chat:
            choice = {"index": 0, "message": {"role": "assistant",
                                              "content": filler_text(0, n)},
                      "logprobs": None, "finish_reason": "length", "stop_reason": None}
        else:
            choice = {"index": 0, "text": filler_text(0, n), "logprobs": None,
                      "finish_reason": "length", "stop_reason": None}
        if self.return_token_ids:
            choice["token_ids"] = filler_ids(0, n)
            choice["prompt_token_ids"] = self.prompt_ids
        return dict(self._base(created, False), choices=[choice], usage=self.usage(req))


def _int_field(body: dict, name: str, default: int | None, low: int) -> int | None:
    value = body.get(name, default)
    if value is None:
        return default
    if isinstance(value, bool) or not isinstance(value, int):
        raise BadRequest(f"'{name}' must be an integer, got {value!r}")
    if value < low:
        raise BadRequest(f"'{name}' must be at least {low}, got {value}")
    return value


def prompt_ids(body: dict, chat: bool) -> list[int]:
    """The prompt token ids of a request body: ``messages`` (chat), or ``prompt`` as a
    text, a list of token ids, or a batch of one of either.

    Raises:
        BadRequest: no prompt, a batch of several prompts (the twin serves one per
            request), a token id outside ``[0, VOCAB_SIZE)``, an empty prompt.
    """
    if chat:
        messages = body.get("messages")
        if not isinstance(messages, list) or not messages:
            raise BadRequest("'messages' must be a non-empty list")
        try:
            ids = tokenize(render_chat(messages))
        except ValueError as exc:
            raise BadRequest(str(exc)) from None
    else:
        prompt = body.get("prompt")
        if isinstance(prompt, list) and prompt and isinstance(prompt[0], (list, str)):
            if len(prompt) != 1:
                raise BadRequest("the twin serves one prompt per request, got a batch of "
                                 f"{len(prompt)}")
            prompt = prompt[0]
        if isinstance(prompt, str):
            ids = tokenize(prompt)
        elif isinstance(prompt, list) and all(
                isinstance(t, int) and not isinstance(t, bool) for t in prompt):
            bad = [t for t in prompt if not 0 <= t < VOCAB_SIZE]
            if bad:
                raise BadRequest(f"Token id {bad[0]} is out of vocabulary")
            ids = list(prompt)
        else:
            raise BadRequest("'prompt' must be a string or a list of token ids")
    if not ids:
        raise BadRequest("The prompt cannot be empty")
    return ids


def parse_completion(body: dict, chat: bool, model: str, max_model_len: int | None,
                     priority_enabled: bool) -> Completion:
    """A validated :class:`Completion` from a request body (module docstring for the
    errors and their sources).

    ``max_tokens`` (chat: also ``max_completion_tokens``) defaults to the room left
    under ``max_model_len`` (vLLM), or :data:`DEFAULT_MAX_TOKENS` without one;
    ``min_tokens`` must lie in ``[0, max_tokens]`` and changes nothing (the answer is
    always ``max_tokens`` long); ``ignore_eos`` is accepted and changes nothing.

    Raises:
        BadRequest: a bad field, another model (404), a request over ``max_model_len``,
            a priority without priority scheduling.
    """
    name = body.get("model")
    if name is not None and name != model:
        raise BadRequest(f"The model `{name}` does not exist.", 404, "NotFoundError")
    ids = prompt_ids(body, chat)
    n = len(ids)
    if max_model_len is not None and n > max_model_len:
        raise BadRequest(f"This model's maximum context length is {max_model_len} tokens. "
                         f"However, your request has {n} input tokens. Please reduce the "
                         "length of the input messages.")
    default = max_model_len - n if max_model_len is not None else DEFAULT_MAX_TOKENS
    key = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None \
        else "max_tokens"
    max_tokens = _int_field(body, key, default, 1)
    assert max_tokens is not None
    if max_model_len is not None and n + max_tokens > max_model_len:
        raise BadRequest(f"'max_tokens' or 'max_completion_tokens' is too large: "
                         f"{max_tokens}. This model's maximum context length is "
                         f"{max_model_len} tokens and your request has {n} input tokens "
                         f"({max_tokens} > {max_model_len} - {n}).")
    min_tokens = _int_field(body, "min_tokens", 0, 0)
    if min_tokens is not None and min_tokens > max_tokens:
        raise BadRequest(f"min_tokens must be less than or equal to max_tokens={max_tokens},"
                         f" got {min_tokens}.")
    priority = _int_field(body, "priority", 0, -(1 << 62))
    if priority and not priority_enabled:
        raise BadRequest(f"Got priority {priority} but Priority scheduling is not enabled.")
    opts = body.get("stream_options") or {}
    if not isinstance(opts, dict):
        raise BadRequest("'stream_options' must be an object")
    return Completion(chat=chat, model=model, prompt_ids=ids, max_tokens=max_tokens,
                      priority=priority or 0, stream=bool(body.get("stream")),
                      include_usage=bool(opts.get("include_usage")),
                      return_token_ids=bool(body.get("return_token_ids")))


def tokenize_body(body: dict) -> list[int]:
    """Token ids for vLLM's ``/tokenize`` body (``prompt`` or chat ``messages``).

    Raises:
        BadRequest: neither, or a bad one (:func:`prompt_ids`).
    """
    if "messages" in body:
        return prompt_ids(body, chat=True)
    if "prompt" not in body:
        raise BadRequest("give 'prompt' or 'messages'")
    return prompt_ids(body, chat=False)
