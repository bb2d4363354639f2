"""Dynasor-CoT probing rules: probe text, answer extraction, hesitation, consistency.

Source: Fu et al., arXiv 2412.20993, §2.1 (certaindex for chain of thought) and App. B;
the numbers not fixed by the paper follow the public Dynasor-CoT proxy
(hao-ai-lab/Dynasor), whose faults are avoided as noted per function.

Every ``probe_interval`` generated tokens a *probe* is decoded from a copy of the text so
far with :data:`DEFAULT_PROBE_TEXT` appended (the probe never enters the main sequence).
Its answer is the text up to the first unmatched ``}`` (:func:`extract_answer`: the probe
text opens ``\\boxed{``); a probe whose output hesitates (:func:`hesitates`) has no answer.
The consistency of probe k over a window of w probes is
C_k = (1/w) Σ_{j=k−w+1..k} 1[y_j = y_k] (:func:`consistency`) and the program stops when
C_k ≥ τ (:func:`should_stop`). The answer comparison
(:func:`dynasim.certaindex.answers_equal`, :func:`dynasim.certaindex.normalize_answer`)
and the stop rule (:mod:`dynasim.policies.cot`: :func:`consistency`, :func:`should_stop`,
:func:`probe_answer`) are dynasim's, re-exported here, so the proxy and the offline
Dynasor-CoT policy decide by one implementation. This module is pure (no I/O);
:mod:`replay.proxy.server` drives it.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

from dynasim.certaindex import answers_equal, normalize_answer
from dynasim.policies.cot import consistency, probe_answer, should_stop

#: The probe appended to a copy of the text so far (§2.1; the public proxy's text).
DEFAULT_PROBE_TEXT = ("... Oh, I suddenly got the answer to the whole problem, "
                      "**Final Answer**\n\n\\[ \\boxed{")
#: Tokens decoded per probe. The paper says ~20-32; 32 leaves room for a short
#: expression plus the closing ``}`` and the hesitation words that may follow it.
DEFAULT_PROBE_MAX_TOKENS = 32
#: Most tokens a probe may decode: a probe only reads a boxed answer (~20-32 tokens,
#: §2.1), so 4096 is far above any use while it keeps a typo such as 10**9 from asking the
#: upstream for a whole context per probe (vLLM refuses max_tokens beyond max_model_len).
MAX_PROBE_MAX_TOKENS = 4096
#: Probe sampling (§2.1 / public code: temperature 0.6, top_p 0.95).
DEFAULT_PROBE_TEMPERATURE = 0.6
DEFAULT_PROBE_TOP_P = 0.95
#: Probe every T generated tokens; window w; threshold τ (public code: T = 32, w = 2, τ = 1).
DEFAULT_PROBE_INTERVAL = 32
DEFAULT_CERTAINTY_WINDOW = 2
DEFAULT_THRESHOLD = 1.0
#: Words whose presence in a probe's output marks it hesitant (public Dynasor's list
#: ``wait, hold, but, okay, no, hmm`` plus a few of the same kind). Matched as whole
#: words, case-insensitively: the public code's substring test also rejected "not",
#: "number", "butter" (App. B note in shared docs).
HESITATION_WORDS = ("wait", "hmm", "hmmm", "hold", "but", "however", "okay", "no",
                    "actually", "alternatively")
#: What an early stop appends to the response: the model's final-answer form, the same
#: ``**Final Answer** \\[ \\boxed{..} \\]`` the probe elicits, closed.
FINAL_ANSWER_TEMPLATE = "... **Final Answer**\n\n\\[ \\boxed{{{answer}}} \\]"


def final_answer_text(answer: str) -> str:
    """The text appended to the response at an early stop (:data:`FINAL_ANSWER_TEMPLATE`)."""
    return FINAL_ANSWER_TEMPLATE.format(answer=answer)


def extract_answer(probe_output: str) -> str | None:
    """The answer in a probe's output: the text before the first unmatched ``}``
    (the probe text opened ``\\boxed{``; nested ``{..}`` as in ``\\frac{1}{2}`` are kept),
    stripped. ``None`` when the output never closes the box (a cut-off probe has no
    answer; §2.1) or the answer is blank."""
    depth = 0
    for i, ch in enumerate(probe_output):
        if ch == "{":
            depth += 1
        elif ch == "}":
            if depth == 0:
                answer = probe_output[:i].strip()
                return answer or None
            depth -= 1
    return None


def _word_pattern(words: Iterable[str]) -> re.Pattern[str]:
    alts = "|".join(re.escape(w) for w in sorted(set(words), key=len, reverse=True))
    return re.compile(rf"(?<![\w'-])(?:{alts})(?![\w'-])", re.IGNORECASE)


_DEFAULT_PATTERN = _word_pattern(HESITATION_WORDS)


def hesitates(probe_output: str, words: Sequence[str] | None = None) -> bool:
    """Whether a probe's output contains a hesitation word as a *whole word*
    (case-insensitive; "Wait," and "HMM" match, "not", "number", "butter" and "no-op"
    do not). Such a probe counts as unconfident (§2.1; public code). ``words``
    overrides :data:`HESITATION_WORDS` (an empty list disables the test)."""
    if words is None:
        pattern = _DEFAULT_PATTERN
    elif not words:
        return False
    else:
        pattern = _word_pattern(words)
    return pattern.search(probe_output) is not None


# The comparison and the stop rule live in dynasim (one implementation for the proxy and
# the offline / simulated Dynasor-CoT policy); re-exported here under their old names.
__all__ = ["DEFAULT_CERTAINTY_WINDOW", "DEFAULT_PROBE_INTERVAL", "DEFAULT_PROBE_MAX_TOKENS",
           "DEFAULT_PROBE_TEMPERATURE", "DEFAULT_PROBE_TEXT", "DEFAULT_PROBE_TOP_P",
           "DEFAULT_THRESHOLD", "FINAL_ANSWER_TEMPLATE", "HESITATION_WORDS",
           "MAX_PROBE_MAX_TOKENS", "answers_equal", "consistency", "extract_answer",
           "final_answer_text", "hesitates", "normalize_answer", "probe_answer",
           "should_stop"]
