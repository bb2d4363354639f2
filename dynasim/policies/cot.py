"""Dynasor-CoT: stop a long chain of thought once its probed answers agree (Dynasor §2.1).

Every T generated tokens a *probe* asks the model for its answer so far (the main
sequence goes on untouched). Probe k's answer is y_k; a probe whose output hesitates
("wait", "hmm", ...) or never closes its ``\\boxed{`` has no answer (``None``). The
consistency of probe k over a window of w probes is

    C_k = (1/w) Σ_{j=k−w+1..k} 1[y_j = y_k]

(:func:`consistency`; 1[·] is :func:`dynasim.certaindex.answers_equal`, under which a
missing answer equals nothing), and the chain stops at the first k ≥ w with C_k ≥ τ; the
answer is y_k (:func:`first_stop`). So with τ = 1 the last w probes must all be answered,
confident and equal: a hesitant or unanswered probe inside the window blocks the stop, as
in the live proxy (public Dynasor's ``should_early_exit`` requires all w answers
non-empty and certain). This module is the one implementation of that rule: the live
proxy (``replay/proxy/probe.py``) calls :func:`should_stop` after each probe, the offline
evaluators here call :func:`first_stop` over logged probes.

Offline evaluators of one logged trajectory (probes logged every ``data_interval`` = 64
tokens, positions 64, 128, ...), each returning a :class:`CotOutcome`:

* :func:`dynasor_cot` -- probe every T tokens (a multiple of the data's interval: the
  probes at positions divisible by T), stop by :func:`first_stop`; if no probe stops
  the chain, it runs to its logged end and its final answer counts.
* :func:`budget` -- truncation at B tokens (the paper's baseline, §2 Fig. 6): the final
  answer if the trajectory ended by B, else the answer of the last probe at or before B
  (the probe forces an answer, so its hesitation is ignored; one probe is paid).
* :func:`full` -- the whole trajectory, its final answer, no probes.
"""

from __future__ import annotations

import bisect
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from dynasim.certaindex import answer_key, is_missing


def probe_answer(answer: str | None, hesitant: bool) -> str | None:
    """What a probe contributes to the rule: its answer, or ``None`` when it hesitated
    or gave no answer (blank, ``"None"``). The live proxy and the offline readers both
    build the answer sequence through this."""
    return None if hesitant or is_missing(answer) else answer


def _check_window(window: int) -> None:
    if window < 1:
        raise ValueError(f"certainty window must be >= 1, got {window}")


def _window_consistency(keys: Sequence[Hashable | None], window: int) -> float:
    """C_k over the last ``window`` answer keys (latest last; ``None`` = no answer)."""
    last = keys[-1]
    if last is None:
        return 0.0
    return list(keys).count(last) / window


def consistency(answers: Sequence[str | None], window: int) -> float:
    """C_k = (1/w) Σ_{j=k−w+1..k} 1[y_j = y_k] for the latest probe k (§2.1).

    Args:
        answers: y_1..y_k in probe order; ``None`` for a probe with no answer
            (unclosed box, hesitant, failed; :func:`probe_answer`).
        window: w >= 1 probes.

    Returns 0.0 while fewer than w probes exist (no decision before the window is full,
    as the public code's ``len(answers) >= window`` check) or when y_k is missing.

    Raises:
        ValueError: ``window`` < 1.
    """
    _check_window(window)
    if len(answers) < window:
        return 0.0
    return _window_consistency([answer_key(a) for a in answers[-window:]], window)


def should_stop(answers: Sequence[str | None], window: int, threshold: float) -> bool:
    """The stop rule C_k ≥ τ for the latest probe (§2.1). Unlike the public
    ``should_early_exit``, which returned True even when the answers disagreed
    (hao-ai-lab/Dynasor issue #25), this is False whenever fewer than ⌈τ·w⌉ of the last w
    answers equal the latest one."""
    return consistency(answers, window) >= threshold


def first_stop(answers: Sequence[str | None], window: int, threshold: float) -> int | None:
    """The 0-based index k of the first probe at which :func:`should_stop` holds on
    ``answers[:k + 1]`` (so k ≥ w − 1), or ``None`` if none does. Same rule, computed
    once per probe on the answers' keys (:func:`dynasim.certaindex.answer_key`).

    Raises:
        ValueError: ``window`` < 1.
    """
    _check_window(window)
    keys = [answer_key(a) for a in answers]
    for k in range(window - 1, len(keys)):
        if _window_consistency(keys[k - window + 1:k + 1], window) >= threshold:
            return k
    return None


@dataclass(frozen=True)
class CotOutcome:
    """One trajectory under one offline policy.

    Attributes:
        tokens: main-stream tokens generated (tokens; the stop probe's position, B, or
            the logged length).
        probe_tokens: tokens decoded by the probes sent (tokens; prefill not counted).
        probes: probes sent.
        answer: the answer the policy returns (``None``: no answer).
        stopped: True when the policy cut the trajectory before its logged end.
    """

    tokens: int
    probe_tokens: int
    probes: int
    answer: str | None
    stopped: bool


def _check_interval(probe_interval: int, data_interval: int) -> None:
    if probe_interval < data_interval or probe_interval % data_interval:
        raise ValueError(f"probe interval {probe_interval} must be a positive multiple of "
                         f"the data's probe interval {data_interval} tokens")


def dynasor_cot(positions: Sequence[int], answers: Sequence[str | None],
                hesitant: Sequence[bool], probe_tokens: Sequence[int], length: int,
                final_answer: str | None, *, probe_interval: int, window: int,
                threshold: float = 1.0, data_interval: int = 64) -> CotOutcome:
    """Dynasor-CoT on one logged trajectory (module docstring).

    Args:
        positions: generated tokens at each logged probe (tokens, increasing, ≤ length).
        answers, hesitant, probe_tokens: per logged probe, its answer, whether it
            hesitated, and the tokens it decoded.
        length: the trajectory's generated tokens (tokens).
        final_answer: the answer at its logged end.
        probe_interval: T (tokens), a multiple of ``data_interval``.
        window, threshold: w and τ.

    Raises:
        ValueError: T not a positive multiple of ``data_interval``; ``window`` < 1.
    """
    _check_interval(probe_interval, data_interval)
    idx = [i for i, p in enumerate(positions) if p % probe_interval == 0]
    seq = [probe_answer(answers[i], hesitant[i]) for i in idx]
    k = first_stop(seq, window, threshold)
    if k is None:
        return CotOutcome(length, sum(probe_tokens[i] for i in idx), len(idx),
                          final_answer, False)
    used = idx[:k + 1]
    return CotOutcome(positions[idx[k]], sum(probe_tokens[i] for i in used), len(used),
                      seq[k], positions[idx[k]] < length)


def budget(positions: Sequence[int], answers: Sequence[str | None],
           probe_tokens: Sequence[int], length: int, final_answer: str | None,
           tokens: int) -> CotOutcome:
    """Truncation at a budget of ``tokens`` (B): the final answer if ``length`` ≤ B, else
    the answer of the last logged probe at a position ≤ B (``None`` if there is none),
    paying that one probe's decoded tokens.

    Raises:
        ValueError: B < 0.
    """
    if tokens < 0:
        raise ValueError(f"token budget must be >= 0, got {tokens}")
    if length <= tokens:
        return CotOutcome(length, 0, 0, final_answer, False)
    last = bisect.bisect_right(positions, tokens) - 1
    if last < 0:
        return CotOutcome(tokens, 0, 0, None, True)
    return CotOutcome(tokens, probe_tokens[last], 1, answers[last], True)


def full(length: int, final_answer: str | None) -> CotOutcome:
    """The whole trajectory: its logged length and final answer, no probes."""
    return CotOutcome(length, 0, 0, final_answer, False)
