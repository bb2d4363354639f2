"""The per-request ``dynasor`` object of the proxy and its validation.

A client enables Dynasor-CoT early exit for one request by sending a ``dynasor`` JSON
object, top-level in the body or, through the openai SDK, as
``extra_body={"dynasor": {...}}`` (the SDK merges ``extra_body`` into the top level, so
the proxy sees the same field either way). Fields (defaults from the proxy's flags, whose
own defaults are those of :mod:`replay.proxy.probe`, Dynasor §2.1):

=====================  =====================================================  =========
field                  meaning                                                default
=====================  =====================================================  =========
``probe_interval``     T: generated tokens between probes (int >= 1)          32
``certainty_window``   w: probes in the consistency window (int >= 1)         2
``threshold``          τ: stop when C_k >= τ (0 < τ <= 1)                     1.0
``probe_text``         text appended to the copy of the text so far           Dynasor's
``probe_max_tokens``   tokens decoded per probe (1 <= int <= 4096)            32
``probe_temperature``  probe sampling temperature (finite, >= 0)              0.6
``probe_top_p``        probe nucleus mass (0 < p <= 1)                        0.95
``hesitation_words``   list of words that make a probe hesitant               see :mod:`replay.proxy.probe`
=====================  =====================================================  =========

``"dynasor": true`` or ``{}`` takes every default; ``null``/``false`` or no field at all
is a plain pass-through. A bad field raises :class:`BadField`, which the proxy answers
with HTTP 400 and an OpenAI-style error naming ``dynasor.<field>``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

from replay.proxy import probe as cot_probe


class BadField(ValueError):
    """Bad request input; the proxy answers HTTP 400 with ``param`` = :attr:`field`."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass(frozen=True, slots=True)
class DynasorConfig:
    """Probing settings of one request (fields and units: module doc)."""

    probe_interval: int = cot_probe.DEFAULT_PROBE_INTERVAL
    certainty_window: int = cot_probe.DEFAULT_CERTAINTY_WINDOW
    threshold: float = cot_probe.DEFAULT_THRESHOLD
    probe_text: str = cot_probe.DEFAULT_PROBE_TEXT
    probe_max_tokens: int = cot_probe.DEFAULT_PROBE_MAX_TOKENS
    probe_temperature: float = cot_probe.DEFAULT_PROBE_TEMPERATURE
    probe_top_p: float = cot_probe.DEFAULT_PROBE_TOP_P
    hesitation_words: tuple[str, ...] = cot_probe.HESITATION_WORDS

    def validated(self, prefix: str = "dynasor") -> DynasorConfig:
        """Self, after checking every range (module table; raises :class:`BadField`).

        Numbers must be finite (Python's JSON reader accepts ``Infinity``/``NaN``; vLLM's
        ``SamplingParams`` wants temperature >= 0 and top_p in (0, 1]);
        ``probe_max_tokens`` is at most :data:`replay.proxy.probe.MAX_PROBE_MAX_TOKENS`.
        """
        for name in ("probe_interval", "certainty_window", "probe_max_tokens"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise BadField(f"{prefix}.{name}", f"must be an integer >= 1, got {v!r}")
        if self.probe_max_tokens > cot_probe.MAX_PROBE_MAX_TOKENS:
            raise BadField(f"{prefix}.probe_max_tokens", "must be <= "
                           f"{cot_probe.MAX_PROBE_MAX_TOKENS} (a probe reads one boxed "
                           f"answer), got {self.probe_max_tokens!r}")
        for name, lo, hi in (("threshold", "> 0", 1.0), ("probe_top_p", "> 0", 1.0),
                             ("probe_temperature", ">= 0", None)):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float)) \
                    or not math.isfinite(v) or (v <= 0 if lo == "> 0" else v < 0) \
                    or (hi is not None and v > hi):
                rng = f"in (0, {hi:g}]" if hi is not None else ">= 0"
                raise BadField(f"{prefix}.{name}", f"must be a finite number {rng}, "
                               f"got {v!r}")
        if not isinstance(self.probe_text, str) or not self.probe_text:
            raise BadField(f"{prefix}.probe_text",
                           f"must be a non-empty string, got {self.probe_text!r}")
        words = self.hesitation_words
        if not isinstance(words, (list, tuple)) or not all(
                isinstance(w, str) and w.strip() for w in words):
            raise BadField(f"{prefix}.hesitation_words",
                           f"must be a list of non-empty strings, got {words!r}")
        return dataclasses.replace(self, hesitation_words=tuple(words))

    def merged(self, obj: object, prefix: str = "dynasor") -> DynasorConfig | None:
        """This config (the server's defaults) overridden by a request's ``dynasor``
        value; ``None`` when the value disables probing (``None``/``False``).

        Raises:
            BadField: not an object, an unknown field, or a value out of range.
        """
        if obj is None or obj is False:
            return None
        if obj is True:
            return self
        if not isinstance(obj, dict):
            raise BadField(prefix, f"must be an object, got {type(obj).__name__}")
        known = {f.name for f in dataclasses.fields(self)}
        for key in obj:
            if key not in known:
                raise BadField(f"{prefix}.{key}", "unknown field (known: "
                               + ", ".join(sorted(known)) + ")")
        return dataclasses.replace(self, **obj).validated(prefix)
