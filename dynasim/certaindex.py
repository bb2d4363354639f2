"""Certaindex: how sure a reasoning program already is (Dynasor paper §3.1, App. B).

Two signals, each in [0, 1] (1 = certain), and a combination rule:

* :func:`entropy_certaindex` -- H̃ = (log n − H) / log n over the clusters of the n answers
  so far, H = −Σ (|C_i|/n) log(|C_i|/n) (§3.1, eq. 1-2). Answers are clustered by an
  *equivalence* (:func:`exact_match` by default; :func:`math_equal` compares numbers and
  simple arithmetic expressions by value, the role of Dynasor's ``math_equal``).
* :func:`reward_certaindex` -- R = the normalised reward of the terminal paths, their mean
  for MCTS-like programs and their max for Rebase-like ones (§3.1, App. B).
* :func:`is_certain` -- a program is certain only if *every* signal passes its own
  threshold (App. D.2, "several signals may be combined").
* :func:`is_hopeless` -- a program is hopeless if *some* signal is at or below its low
  threshold (the abstract's "terminates unpromising queries early").

**Missing answers.** ``None``, ``"None"`` and empty/blank answers are *no answer*. They
still count in n, but each is its own singleton cluster, so they never agree with anything
(not even each other) and always lower H̃. This carries the paper's public code over to
entropy: Dynasor's ``should_early_exit`` requires every answer in its window to be
non-empty (``count_not_empty(...) == window``) before it may call a program certain. For
the same reason a missing answer can never win :func:`majority_vote`.

n = 1 is undefined in the paper (log 1 = 0); :func:`entropy_certaindex` raises for it, so
callers measure only at a detect step of 2 or more samples.
"""

from __future__ import annotations

import ast
import functools
import math
from collections.abc import Callable, Sequence
from fractions import Fraction

#: An answer equivalence: ``eq(a, b)`` is True when a and b are the same answer.
Equivalence = Callable[[str, str], bool]


def is_missing(answer: str | None) -> bool:
    """True for ``None``, ``"None"`` and blank answers (see module docstring)."""
    return answer is None or not answer.strip() or answer.strip() == "None"


def exact_match(a: str, b: str) -> bool:
    """Exact string equality after stripping surrounding whitespace (the default)."""
    return a.strip() == b.strip()


_MAX_LEN = 200


@functools.lru_cache(maxsize=65536)
def _value(text: str) -> Fraction | None:
    """Exact value of a number or + - * / expression, or None. Never executes text:
    only the AST of an arithmetic expression over numeric literals is walked."""
    text = text.strip().replace("×", "*").replace("÷", "/")
    if "=" in text:
        text = text.split("=", 1)[0]
    if not text or len(text) > _MAX_LEN:
        return None
    try:
        tree = ast.parse(text.replace(",", ""), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(node.value)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
            v = ev(node.operand)
            return -v if isinstance(node.op, ast.USub) else v
        if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Add, ast.Sub,
                                                                ast.Mult, ast.Div)):
            a, b = ev(node.left), ev(node.right)
            if isinstance(node.op, ast.Add):
                return a + b
            if isinstance(node.op, ast.Sub):
                return a - b
            if isinstance(node.op, ast.Mult):
                return a * b
            return a / b  # ZeroDivisionError caught below
        raise ValueError("not arithmetic")

    try:
        return ev(tree.body)
    except (ValueError, ZeroDivisionError, OverflowError):
        return None


def math_equal(a: str, b: str) -> bool:
    """Equal as normalised strings, or as exact numeric values.

    Numbers and arithmetic over numeric literals (``+ - * /``, parentheses, unary minus;
    an ``= rhs`` tail is ignored) are compared by exact rational value, so ``"0.5"``,
    ``"1/2"`` and ``"(3 - 2) / 2"`` are one answer. Anything else falls back to
    whitespace- and case-insensitive string equality. Untrusted text is parsed, never run.
    """
    if _norm(a) == _norm(b):
        return True
    va, vb = _value(a), _value(b)
    return va is not None and va == vb


@functools.lru_cache(maxsize=65536)
def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def clusters(answers: Sequence[str | None],
             equivalent: Equivalence = exact_match) -> list[list[int]]:
    """Group answer indexes into equivalence clusters, in order of first appearance.

    Each missing answer (:func:`is_missing`) is a singleton. Shape: a list of clusters,
    each a list of indexes into ``answers``; together they partition ``range(n)``.
    """
    out: list[list[int]] = []
    reps: list[str] = []
    for i, ans in enumerate(answers):
        if is_missing(ans):
            out.append([i])
            reps.append("")
            continue
        for c, rep in zip(out, reps):
            if rep and equivalent(ans, rep):  # type: ignore[arg-type]
                c.append(i)
                break
        else:
            out.append([i])
            reps.append(ans)  # type: ignore[arg-type]
    return out


def entropy_certaindex(answers: Sequence[str | None],
                       equivalent: Equivalence = exact_match) -> float:
    """H̃ = (log n − H) / log n in [0, 1] over the answer clusters (§3.1).

    1 when all n answers agree, 0 when all are distinct (or all missing).

    Raises:
        ValueError: fewer than 2 answers (H̃ is undefined at n = 1).
    """
    n = len(answers)
    if n < 2:
        raise ValueError(f"entropy certaindex needs n >= 2 answers, got {n}")
    h = -sum((len(c) / n) * math.log(len(c) / n) for c in clusters(answers, equivalent))
    return max(0.0, min(1.0, (math.log(n) - h) / math.log(n)))


def reward_certaindex(rewards: Sequence[float], mode: str = "mean") -> float:
    """R in [0, 1]: the mean (MCTS-like) or max (Rebase-like) of normalised rewards of
    the terminal paths so far (§3.1, App. B).

    Raises:
        ValueError: no rewards, a reward outside [0, 1], or an unknown mode.
    """
    if not rewards:
        raise ValueError("reward certaindex needs at least one reward")
    if any(not 0.0 <= r <= 1.0 for r in rewards):
        raise ValueError("rewards must be normalised to [0, 1]")
    if mode == "mean":
        return sum(rewards) / len(rewards)
    if mode == "max":
        return max(rewards)
    raise ValueError(f"unknown reward mode {mode!r} (mean or max)")


def is_certain(signals: dict[str, float], thresholds: dict[str, float]) -> bool:
    """True when every thresholded signal reaches its threshold (App. D.2).

    Args:
        signals: measured certaindex values by name, e.g. ``{"entropy": 0.8}``.
        thresholds: the threshold per signal name, e.g. ``{"entropy": 0.7, "reward": 0.4}``.

    Raises:
        KeyError: a thresholded signal was not measured.
    """
    return all(signals[name] >= t for name, t in thresholds.items())


def is_hopeless(signals: dict[str, float], floors: dict[str, float]) -> bool:
    """True when some measured signal is at or below its floor (low threshold): the
    mirror image of :func:`is_certain`, the "terminate unpromising queries early" side of
    Dynasor (abstract; §3.1's H̃ = 0 when every answer differs). Signals without a
    measurement are ignored; no floors means never hopeless.

    Args:
        signals: measured certaindex values by name, e.g. ``{"entropy": 0.1}``.
        floors: the low threshold per signal name, e.g. ``{"entropy": 0.2}``.
    """
    return any(signals[name] <= f for name, f in floors.items() if name in signals)


def majority_vote(answers: Sequence[str | None], correct: Sequence[bool | None],
                  equivalent: Equivalence = exact_match) -> tuple[str | None, bool]:
    """Self-consistency's final answer: the largest cluster wins, ties to the cluster
    seen first; missing answers never win.

    Returns:
        (answer, correct): the first-drawn member of the winning cluster and its recorded
        correctness (``(None, False)`` when every answer is missing).
    """
    best: list[int] | None = None
    for c in clusters(answers, equivalent):
        if is_missing(answers[c[0]]):
            continue
        if best is None or len(c) > len(best):
            best = c
    if best is None:
        return None, False
    return answers[best[0]], bool(correct[best[0]])
