"""Prompts of an exact length in the server's own tokens, with the trace's shared prefixes.

A replayed request must cost the server what the traced one did, so its prompt has the
trace's prompt length *in the server's tokens*. dynasim sends prompts as lists of token
ids (``/v1/completions`` accepts ``prompt: list[int]``; vLLM then neither re-tokenizes
nor adds a BOS token, so ``usage.prompt_tokens`` equals the list's length exactly),
drawn from ids the server's tokenizer really produces: :func:`fetch_token_pool` asks the
server's ``/tokenize`` endpoint (vLLM's ``POST /tokenize``) to tokenize a fixed text.

Shared prefixes: a prompt is a chain of segments ``(content key, tokens)``
(:mod:`dynasim.workloads.call`); equal keys give equal token ids, so a program's samples share their
prompt and Mooncake requests with equal ``hash_ids`` share those 512-token blocks, and
the server's prefix cache sees exactly the sharing the simulator models. Every key is
salted with a per-run salt so one run never hits blocks cached by an earlier run.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import aiohttp

#: Tokens per Mooncake ``hash_ids`` block (Mooncake trace format; dynasim.prefix_cache).
MOONCAKE_BLOCK_TOKENS = 512

_WORDS = ("the model reads a question and thinks step by step before it answers with a "
          "number such as 24 or 3 + 5 * ( 8 - 2 ) / 4 = 9 while the scheduler keeps "
          "every request of a program together on one server under a deadline of "
          "seconds and tokens per second in a batch of prefill and decode work").split()


def corpus_text(words: int = 2000, seed: int = 0) -> str:
    """A fixed English-like text (``words`` words) whose tokenization gives the pool."""
    rnd = random.Random(seed)
    return " ".join(rnd.choice(_WORDS) for _ in range(words))


async def fetch_token_pool(session: aiohttp.ClientSession, base_url: str, model: str,
                           headers: dict | None = None) -> list[int]:
    """Distinct token ids the server's tokenizer produces for :func:`corpus_text`.

    Args:
        session: an ``aiohttp.ClientSession``.

    Raises:
        RuntimeError: the server has no working ``/tokenize`` (vLLM serves it; other
            servers may not), naming the URL and the answer.
    """
    from replay.client import post_json

    url = base_url.rstrip("/") + "/tokenize"
    try:
        status, doc = await post_json(session, url, {"model": model,
                                                     "prompt": corpus_text()},
                                      headers or {})
    except Exception as exc:  # connection refused, DNS, ...
        raise RuntimeError(f"{url}: cannot reach the server ({exc})") from exc
    if status != 200 or not isinstance(doc, dict):
        raise RuntimeError(f"{url}: HTTP {status} {str(doc)[:200]!r}; dynasim needs the "
                           "server's /tokenize to build prompts of exact length")
    pool = sorted(set(doc.get("tokens") or ()))
    if len(pool) < 16:
        raise RuntimeError(f"{url}: the tokenizer gave only {len(pool)} distinct ids")
    return pool


class PromptBuilder:
    """Token-id prompts from segments; equal (salted) keys give equal ids.

    Args:
        pool: token ids to draw from (:func:`fetch_token_pool`).
        salt: per-run salt mixed into every key.
    """

    def __init__(self, pool: Sequence[int], salt: str = "") -> None:
        self.pool = list(pool)
        self.salt = salt
        self._cache: dict[tuple[str, int], list[int]] = {}

    def segment(self, key: str, tokens: int) -> list[int]:
        """``tokens`` ids for content ``key`` (cached: shared segments cost nothing)."""
        k = (key, tokens)
        ids = self._cache.get(k)
        if ids is None:
            ids = random.Random(f"{self.salt}|{key}").choices(self.pool, k=tokens)
            self._cache[k] = ids
        return ids

    def build(self, segments: Sequence[tuple[str, int]]) -> list[int]:
        """The prompt of ``segments`` ((key, tokens) pairs, in order)."""
        out: list[int] = []
        for key, n in segments:
            out.extend(self.segment(key, n))
        return out


def trace_segments(request_id: int, prompt_tokens: int,
                   hash_ids: Sequence[int] | None) -> list[tuple[str, int]]:
    """Segments of a trace request: one 512-token block per Mooncake ``hash_ids`` entry
    (the last one cut to the prompt length), then a part unique to the request."""
    segs: list[tuple[str, int]] = []
    left = prompt_tokens
    for h in hash_ids or ():
        if left <= 0:
            break
        n = min(MOONCAKE_BLOCK_TOKENS, left)
        segs.append((f"block:{h}", n))
        left -= n
    if left > 0:
        segs.append((f"request:{request_id}", left))
    return segs
