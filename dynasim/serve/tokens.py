"""The twin's tokenizer and generated text: a documented deterministic rule, no model.

* **Text -> tokens.** A text is cut into pieces by the regular expression
  :data:`PIECE` (a run of letters/digits/underscore, or one other non-space character,
  each with the whitespace before it); each piece is one token, whose id is
  ``3 + crc32(piece) % (VOCAB_SIZE - 3)`` (ids 0-2 stand for special tokens, as in
  Llama's vocabulary). ``"Hello, world!"`` is 4 tokens: ``Hello``, ``,``, `` world``,
  ``!``. For English prose this is somewhat fewer tokens than a BPE tokenizer gives
  (which splits rare words); token-id prompts (what the replay harness sends) are
  counted exactly, one token per id.
* **Chat messages -> tokens.** The messages are rendered as ``"<role>: <content>\\n"``
  each, followed by ``"assistant:"`` (the generation prompt), then tokenized as text.
* **Generated tokens.** Token ``i`` of every answer is the word
  ``FILLER[i % len(FILLER)]`` with a leading space; its id is that piece's id under the
  text rule, so tokenizing an answer's text gives back its token ids.

``/tokenize`` (:mod:`dynasim.serve.app`) answers with exactly these ids and counts.
"""

from __future__ import annotations

import re
import zlib
from collections.abc import Sequence

#: Size of the twin's vocabulary: token ids are in ``[0, VOCAB_SIZE)`` (Llama-2's 32000).
VOCAB_SIZE = 32000
#: One token: a word (letters, digits, underscore) or one other non-space character,
#: with the whitespace before it.
PIECE = re.compile(r"\s*(?:\w+|[^\w\s])")
#: The words of generated answers, in order (then again from the start).
FILLER = ("the", "twin", "streams", "tokens", "at", "the", "times", "that", "the",
          "simulated", "engine", "computes", "for", "each", "step", "of", "the", "batch")


def token_id(piece: str) -> int:
    """The id of one piece of text (module docstring); in ``[3, VOCAB_SIZE)``."""
    return 3 + zlib.crc32(piece.encode("utf-8")) % (VOCAB_SIZE - 3)


def tokenize(text: str) -> list[int]:
    """Token ids of ``text`` under the twin's rule (module docstring); ``[]`` for a text
    of whitespace only (trailing whitespace is not a token)."""
    return [token_id(p) for p in PIECE.findall(text)]


def render_chat(messages: Sequence[dict]) -> str:
    """The prompt text of chat ``messages`` (module docstring). A message's content may
    be a string or OpenAI's list of parts (the ``text`` of each ``type: text`` part).

    Raises:
        ValueError: a message that is not an object with a string ``role``, or content
            of another type (the server answers HTTP 400 with this message).
    """
    lines = []
    for k, msg in enumerate(messages):
        if not isinstance(msg, dict) or not isinstance(msg.get("role"), str):
            raise ValueError(f"messages[{k}] must be an object with a string 'role'")
        content = msg.get("content") or ""
        if isinstance(content, list):
            content = " ".join(str(part.get("text", "")) for part in content
                               if isinstance(part, dict) and part.get("type") == "text")
        if not isinstance(content, str):
            raise ValueError(f"messages[{k}].content must be a string or a list of parts")
        lines.append(f"{msg['role']}: {content}\n")
    return "".join(lines) + "assistant:"


def filler_piece(i: int) -> str:
    """The text of generated token ``i`` (0-based) of any answer: a space and a word."""
    return " " + FILLER[i % len(FILLER)]


def filler_ids(start: int, stop: int) -> list[int]:
    """Token ids of generated tokens ``start .. stop - 1`` (module docstring)."""
    return [token_id(filler_piece(i)) for i in range(start, stop)]


def filler_text(start: int, stop: int) -> str:
    """Text of generated tokens ``start .. stop - 1``."""
    return "".join(filler_piece(i) for i in range(start, stop))


def prompt_segments(ids: Sequence[int], block_size: int) -> tuple[tuple[str, int], ...]:
    """The prompt of token ``ids`` as the engine's content segments
    (:class:`~dynasim.request.Request` ``prompt``): one segment per ``block_size``
    ids, keyed by a hash of those ids, so that two prompts with the same leading
    blocks of ids share those blocks in the simulated prefix cache (the engine chains
    the keys of all blocks before, as vLLM's block hash does)."""
    out = []
    for k in range(0, len(ids), block_size):
        chunk = tuple(ids[k:k + block_size])
        out.append((f"ids:{hash(chunk):x}", len(chunk)))
    return tuple(out)
