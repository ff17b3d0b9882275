"""The countdown reward: the final answer is an arithmetic expression over the given numbers, each
used at most once (all of them with use_all=True), whose exact value is the target.

Our own parser (no eval): non-negative integers, + - * / (also × ÷ \\times \\div \\cdot) and
parentheses/brackets; no unary minus, no powers, no decimals (countdown's rules).  Arithmetic is
exact (Fractions), so 7 / 2 * 2 = 7 and a division by zero is simply wrong.  An answer written as
an equation "expr = target" (or "target = expr") is accepted when the other side is the target.
Limits: MAX_CHARS characters, MAX_DEPTH nesting, numbers of up to 12 digits.
"""
from __future__ import annotations

import re
from collections import Counter
from fractions import Fraction

from .extract import extract_answer
from .registry import register

MAX_CHARS = 512
MAX_DEPTH = 32
_TOKEN = re.compile(r"\s*(?:(\d{1,12})(?!\d)|([-+*/()]))")
_REPLACE = (("\\left", ""), ("\\right", ""), ("\\times", "*"), ("\\cdot", "*"), ("\\div", "/"), ("×", "*"),
            ("÷", "/"), ("·", "*"), ("−", "-"), ("[", "("), ("]", ")"), ("{", "("), ("}", ")"), ("$", ""))


class CountdownError(ValueError):
    """Not a valid countdown expression."""


def _tokens(expr: str) -> list[str]:
    out, i = [], 0
    expr = expr.rstrip()
    while i < len(expr):
        m = _TOKEN.match(expr, i)
        if not m:
            raise CountdownError(f"unexpected {expr[i:i + 8]!r}")
        out.append(m.group(1) or m.group(2))
        i = m.end()
    return out


def evaluate_expression(expr: str) -> tuple[Fraction, list[int]]:
    """(exact value, numbers used in order) of an expression; CountdownError when invalid."""
    if len(expr) > MAX_CHARS:
        raise CountdownError("expression too long")
    for a, b in _REPLACE:
        expr = expr.replace(a, b)
    toks, pos, used = _tokens(expr), 0, []

    def peek() -> str | None:
        return toks[pos] if pos < len(toks) else None

    def take() -> str:
        nonlocal pos
        if pos >= len(toks):
            raise CountdownError("unexpected end")
        pos += 1
        return toks[pos - 1]

    def sum_(depth: int) -> Fraction:
        v = product(depth)
        while peek() in ("+", "-"):
            v = v + product(depth) if take() == "+" else v - product(depth)
        return v

    def product(depth: int) -> Fraction:
        v = atom(depth)
        while peek() in ("*", "/"):
            if take() == "*":
                v *= atom(depth)
            else:
                d = atom(depth)
                if d == 0:
                    raise CountdownError("division by zero")
                v /= d
        return v

    def atom(depth: int) -> Fraction:
        if depth > MAX_DEPTH:
            raise CountdownError("nested too deeply")
        t = take()
        if t == "(":
            v = sum_(depth + 1)
            if take() != ")":
                raise CountdownError("expected ')'")
            return v
        if t.isdigit():
            used.append(int(t))
            return Fraction(int(t))
        raise CountdownError(f"unexpected {t!r}")

    value = sum_(0)
    if pos != len(toks):
        raise CountdownError(f"unexpected {toks[pos]!r}")
    return value, used


def _candidate(answer: str, target: Fraction) -> str:
    """The expression side of an answer that may be written as an equation."""
    sides = [s for s in answer.split("=")]
    if len(sides) == 1:
        return sides[0]
    if len(sides) != 2:
        raise CountdownError("more than one '='")
    a, b = (s.strip() for s in sides)
    expr, other = (b, a) if re.fullmatch(r"\d+", a) and not re.fullmatch(r"\d+", b) else (a, b)
    if not re.fullmatch(r"\d{1,12}", other) or Fraction(int(other)) != target:
        raise CountdownError("the other side of '=' is not the target")
    return expr


@register("countdown")
def countdown(completion: str, *, numbers: list[int], target: int, use_all: bool = False) -> float:
    """1.0 when the final answer reaches `target` using `numbers` by the rules above."""
    answer = extract_answer(completion)
    if answer is None:
        return 0.0
    goal = Fraction(int(target))
    try:
        value, used = evaluate_expression(_candidate(answer, goal))
    except CountdownError:
        return 0.0
    have, want = Counter(int(x) for x in numbers), Counter(used)
    if any(want[n] > have[n] for n in want) or (use_all and want != have):
        return 0.0
    return 1.0 if value == goal else 0.0
