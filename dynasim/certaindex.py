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
import re
import warnings
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
        with warnings.catch_warnings():  # "2a" warns "invalid decimal literal"
            warnings.simplefilter("ignore", SyntaxWarning)
            tree = ast.parse(_THOUSANDS.sub("", text), mode="eval")
    except (SyntaxError, ValueError):
        return None

    def ev(node: ast.AST) -> Fraction:
        if isinstance(node, ast.Constant) and type(node.value) in (int, float):
            return Fraction(str(node.value))  # 0.09 is 9/100, not the nearest binary float
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
    """Equal as normalised answers (:func:`answer_key`): the same exact value, or the
    same normalised string.

    Numbers and arithmetic over numeric literals (``+ - * /``, parentheses, unary minus;
    an ``= rhs`` tail is ignored) are compared by exact rational value, so ``"0.5"``,
    ``"1/2"``, ``"\\dfrac{1}{2}"`` and ``"(3 - 2) / 2"`` are one answer; LaTeX wrappers,
    choice letters, degree and percent signs are dropped first (:func:`normalize_answer`).
    Anything else falls back to whitespace- and case-insensitive string equality.
    Untrusted text is parsed, never run. Two missing answers (:func:`is_missing`) compare
    as strings (two blanks are equal here; :func:`answers_equal` is the stricter form).
    """
    ka, kb = answer_key(a), answer_key(b)
    if ka is None or kb is None:
        return _norm(a) == _norm(b)
    return ka == kb


@functools.lru_cache(maxsize=65536)
def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def answers_equal(a: str | None, b: str | None) -> bool:
    """The indicator 1[y_j = y_k] of Dynasor-CoT's consistency rule (§2.1):
    :func:`math_equal`, except that a missing answer (``None``/blank/``"None"``) equals
    nothing, itself included, so an unanswered or hesitant probe never completes a stop."""
    ka = answer_key(a)
    return ka is not None and ka == answer_key(b)


#: One normalisation step: (pattern, replacement), applied in order by
#: :func:`normalize_answer`. Sources: the answer forms of MATH/AIME/AMC references and of
#: R1-distilled models' boxed answers (Dynasor-CoT probes, ``governor_cot_probes`` data).
_ARG = r"\{((?:[^{}]|\{[^{}]*\})*)\}"  # a {group} holding at most one level of {..}
_FRAC = re.compile(rf"\\[dt]?frac\s*{_ARG}\s*{_ARG}")
_FRAC_ARGS = [re.compile(r"(\\[dt]?frac)\s*([0-9a-z])"),             # \frac9{19}
               re.compile(r"(\\[dt]?frac\s*\{(?:[^{}]|\{[^{}]*\})*\})\s*([0-9a-z])")]
_WRAP = re.compile(r"\\(?:boxed|text|textbf|textit|textnormal|mathrm|mathbf|mbox|"
                   r"operatorname)\s*\{([^{}]*)\}")
_UNIT = re.compile(r"(?<=\d)\s*\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z ]+\}\s*$")
_NORM_SUBS = [(re.compile(p), r) for p, r in (
    (r"[ĠĊ]", " "),                                   # BPE byte marks left in decoded text
    (r"\\\\", ";"),                                  # LaTeX row break (matrices)
    (r"\\left|\\right|\\displaystyle|\\!|\\,|\\;|\\:|\\ |~|\\?\$", ""),
    (r"\\sqrt\s*(\w)", r"\\sqrt{\1}"),              # \sqrt5 -> \sqrt{5}
    (r"\^\s*\{\s*\\circ\s*\}|\^\s*\\circ|\\circ|\\degree|°", ""),  # degrees
    (r"\\%|%", ""),                                  # percent signs
    (r"\\cdot|\\times", "*"), (r"\\div", "/"),
    (r"([_^])\{(\w)\}", r"\1\2"),                    # x^{2} -> x^2, 40_{9} -> 40_9
)]
_N_FIRST = 4  # _NORM_SUBS applied before the wrapper / fraction loop
_SIMPLE_PARENS = [(re.compile(r"\((-?[\w.]+)\)(?=/)"), r"\1"),
                  (re.compile(r"(?<=/)\((-?[\w.]+)\)"), r"\1")]  # (1)/(5) -> 1/5
_LEADING_ZEROS = re.compile(r"(?<![\w.])0+(?=\d)")
_DEGREE_WORDS = re.compile(r"(?<=\d)(?:degrees?|percent)$")
_THOUSANDS = re.compile(r"(?<=\d),(?=\d{3}(?!\d))")
_CHOICE = re.compile(r"^\(?([a-e])\)?$")
_VARIABLE = re.compile(r"^[a-z](?:=|\\in)(?=.)")


@functools.lru_cache(maxsize=262144)
def normalize_answer(answer: str) -> str:
    """A canonical string for comparing math answers (pure string work; nothing runs).

    In order: BPE byte marks (``Ġ``) become spaces; ``\\left``/``\\right``, LaTeX spacing
    and ``$`` are dropped; ``\\boxed{x}``, ``\\text{x}``, ``\\mathrm{x}`` (and the like)
    become ``x``; degree marks (``^\\circ``, ``°``) and percent signs (``\\%``, ``%``)
    are dropped; ``\\frac{a}{b}``/``\\dfrac``/``\\tfrac`` (also ``\\frac12``) become
    ``(a)/(b)`` (``a/b`` for single terms); ``\\cdot``/``\\times`` → ``*``, ``\\div`` →
    ``/``; ``x^{2}`` → ``x^2``; ``\\\\`` (a matrix row break) → ``;``; a trailing unit in
    ``\\text{}`` after a number, ``\\$`` and ``$`` dropped; whitespace removed, lower case,
    a trailing full stop dropped; thousands separators (``1,000``), leading zeros
    (``073``) and a trailing "degrees"/"percent" word
    dropped; a lone choice letter ``(C)`` → ``c``; a leading ``x=`` or ``x \\in`` dropped.
    """
    text = _UNIT.sub("", answer)
    for pattern, repl in _NORM_SUBS[:_N_FIRST]:
        text = pattern.sub(repl, text)
    for _ in range(8):  # nested wrappers and fractions, innermost first
        new = _WRAP.sub(r"\1", text)
        for pattern in _FRAC_ARGS:
            new = pattern.sub(r"\1{\2}", new)
        new = _FRAC.sub(r"(\1)/(\2)", new)
        if new == text:
            break
        text = new
    for pattern, repl in _NORM_SUBS[_N_FIRST:]:
        text = pattern.sub(repl, text)
    text = "".join(text.split()).lower().rstrip(".")
    for pattern, repl in _SIMPLE_PARENS:
        text = pattern.sub(repl, text)
    text = _DEGREE_WORDS.sub("", _THOUSANDS.sub("", text))
    text = _LEADING_ZEROS.sub("", text)  # a base subscript (4210_5) is kept: it counts
    text = _CHOICE.sub(r"\1", text)
    return _VARIABLE.sub("", text)


@functools.lru_cache(maxsize=262144)
def answer_key(answer: str | None) -> tuple[str, object] | None:
    """A hashable key with ``answer_key(a) == answer_key(b)`` exactly when a and b are one
    answer under :func:`math_equal` (so the relation is an equivalence and answers can be
    grouped by key): ``("value", Fraction)`` for a number or arithmetic expression,
    ``("text", normalised string)`` otherwise, ``None`` for a missing answer
    (:func:`is_missing`)."""
    if is_missing(answer):
        return None
    text = normalize_answer(answer)  # type: ignore[arg-type]
    if not text:
        return None
    value = _value(text)
    return ("value", value) if value is not None else ("text", text)


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
