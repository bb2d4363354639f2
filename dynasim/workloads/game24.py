"""Game of 24 helpers: parse, evaluate and check an answer expression, safely.

The Game of 24 gives four numbers; an answer is an arithmetic expression with ``+ - * /``
and parentheses that uses each number exactly once and equals 24. The rules and the
answer check follow Tree-of-Thoughts (Yao et al., 2023), ``Game24Task.test_output`` in
princeton-nlp/tree-of-thought-llm (``src/tot/tasks/game24.py``, commit ab40034): take the
last line of the output, drop ``"answer: "`` and everything from the first ``=``, require
the sorted digit runs (regex ``\\d+``) to equal the puzzle's, and require the value to be
24. ToT evaluates with ``sympy.simplify``; here the text is parsed with
``ast.parse(mode="eval")`` and only numbers, ``+ - * /``, unary signs and parentheses are
accepted, evaluated exactly with :class:`fractions.Fraction`. Nothing is ever passed to
``eval``/``exec``; names, calls, attributes, ``**`` and anything else are rejected, and
inputs longer than :data:`MAX_CHARS` characters are refused before parsing.
"""

from __future__ import annotations

import ast
import math
import re
from fractions import Fraction

#: Longest expression text accepted (characters); a Game-of-24 answer is ~30.
MAX_CHARS = 200
#: Deepest expression tree accepted (nodes from the root).
MAX_DEPTH = 32
#: Largest magnitude of a numeric literal accepted.
MAX_LITERAL = 10**9

_BINOPS = {ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
           ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b}
_DIGITS = re.compile(r"[0-9]+")
_ANSWER = re.compile(r"^\s*answer\s*:\s*", re.IGNORECASE)


def _evaluate(node: ast.AST, depth: int) -> Fraction | None:
    """Exact value of an accepted AST node; ``None`` for anything not accepted."""
    if depth > MAX_DEPTH:
        return None
    if isinstance(node, ast.Constant):
        value = node.value
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return None
        if not math.isfinite(value) or abs(value) > MAX_LITERAL:
            return None
        return Fraction(repr(value)) if isinstance(value, float) else Fraction(value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        inner = _evaluate(node.operand, depth + 1)
        if inner is None:
            return None
        return -inner if isinstance(node.op, ast.USub) else inner
    if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
        left = _evaluate(node.left, depth + 1)
        right = _evaluate(node.right, depth + 1)
        if left is None or right is None:
            return None
        if isinstance(node.op, ast.Div) and right == 0:
            return None
        return _BINOPS[type(node.op)](left, right)
    return None


def expression_value(text: str) -> Fraction | None:
    """Exact value of an arithmetic expression, or ``None`` when it is not one.

    Accepts integer and decimal literals, binary ``+ - * /``, unary ``-``/``+`` and
    parentheses. Returns ``None`` for anything else (names, calls, ``**``, ...), for
    a syntax error, a division by zero, text over :data:`MAX_CHARS` characters, a tree
    deeper than :data:`MAX_DEPTH` or a literal larger than :data:`MAX_LITERAL`.

    >>> expression_value("(4 + 8) * (6 - 4)")
    Fraction(24, 1)
    """
    if not isinstance(text, str) or len(text) > MAX_CHARS:
        return None
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    return _evaluate(tree.body, 0)


def answer_expression(line: str) -> str | None:
    """The expression of an answer: ``"Answer: (4 + 8) * 2 = 24"`` -> ``"(4 + 8) * 2"``.

    Like ToT's ``test_output``: the last line of ``line`` (after stripping), without a
    leading ``"Answer:"`` (any case) and without everything from the first ``=``. A bare
    expression is returned as is. ``None`` when nothing is left.
    """
    if not isinstance(line, str):
        return None
    lines = line.strip().split("\n")
    expression = _ANSWER.sub("", lines[-1]).split("=")[0].strip()
    return expression or None


def check_answer(puzzle: str, answer: str) -> bool:
    """Whether ``answer`` solves ``puzzle`` (e.g. ``"4 5 6 10"``) by ToT's rule.

    ``answer`` may be an output text, an ``"Answer: ... = 24"`` line or a bare expression
    (see :func:`answer_expression`). True when the multiset of digit runs in the
    expression equals the puzzle's numbers (compared as strings, as ToT does) and the
    expression's exact value is 24.
    """
    expression = answer_expression(answer)
    if expression is None:
        return False
    if sorted(_DIGITS.findall(expression)) != sorted(_DIGITS.findall(puzzle)):
        return False
    return expression_value(expression) == 24
