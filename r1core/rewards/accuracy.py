"""The accuracy reward: is the completion's final answer the reference answer?

Decision ladder (cheap and exact first; docs/rewards.md has the table of decisions):
  1. extract the final answer (extract.py); none -> 0;
  2. normalise both (normalize.py); equal strings (or equal ignoring case) -> 1;
  3. structures: tuples/intervals "(a, b]" compare element-wise with the same brackets; sets
     "\\{a, b\\}" and bare lists "a, b" compare as sets; unions "A \\cup B" piece by piece;
  4. numbers: both sides rational constants (our parser folds 0.5, 1/2, \\frac{1}{2}, 2^{10}, 1.5e3)
     -> exact Fraction equality; a percentage "p%" stands for p or p/100;
  5. symbolic: both parse as expressions -> sympy in a killable worker (symbolic.py), all checks of
     one call sharing its `timeout`;
  6. `backend="math_verify"` instead hands the raw extracted answer and reference to the optional
     math-verify package (in the same killable worker) when it is installed.
"""
from __future__ import annotations

import importlib.util
import re
import time
from fractions import Fraction

from .expr import parse
from .extract import extract_answer, reference_answer
from .normalize import normalize
from .registry import RewardOptionError, register
from . import symbolic

BACKENDS = ("builtin", "math_verify")
MAX_ITEMS = 32
_OPEN = {"(": ")", "[": "]", "\\{": "\\}"}


def _split_top(s: str, sep: str) -> list[str]:
    """Split on `sep` outside any (), [], {}, \\{ \\} nesting."""
    parts, depth, start, i = [], 0, 0, 0
    while i < len(s):
        c = s[i]
        if c == "\\" and s.startswith(("\\{", "\\}"), i):
            depth += 1 if s[i + 1] == "{" else -1
            i += 2
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif depth == 0 and s.startswith(sep, i):
            parts.append(s[start:i])
            i += len(sep)
            start = i
            continue
        i += 1
    parts.append(s[start:])
    return parts


def _structure(s: str) -> tuple[str, list[str], str] | None:
    """(opening bracket, items, closing bracket) of a tuple/interval/set/list, else None."""
    for o, c in _OPEN.items():
        if s.startswith(o) and s.endswith(c) and len(s) > len(o) + len(c):
            inner = s[len(o):-len(c)]
            items = _split_top(inner, ",")
            if len(items) > 1 or o == "\\{":
                if _split_top(s, ",") == [s]:  # the brackets enclose the whole string
                    return o, items, c
    items = _split_top(s, ",")
    if len(items) > 1:
        return "", items, ""
    return None


_SIMPLE_NUMBER = re.compile(r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:/\d+)?")


def _values(s: str) -> set[Fraction] | None:
    """The rational value(s) a string stands for: {v}, {p, p/100} for "p%", None if not a constant."""
    if len(s) < 64 and _SIMPLE_NUMBER.fullmatch(s):  # "12", "-0.5", "3/4": no parser needed
        num, _, den = s.partition("/")
        if den and int(den) == 0:
            return None
        return {Fraction(num) / int(den)} if den else {Fraction(num)}
    if s.endswith("%") and s.count("%") == 1:
        p = parse(s[:-1])
        return {p.value, p.value / 100} if p is not None and p.value is not None else None
    p = parse(s)
    return {p.value} if p is not None and p.value is not None else None


class _Budget:
    def __init__(self, timeout: float):
        self.deadline = time.monotonic() + timeout

    def left(self) -> float:
        return self.deadline - time.monotonic()


def _scalar_equiv(p: str, r: str, budget: _Budget) -> bool:
    if p == r or p.casefold() == r.casefold():
        return True
    pv, rv = _values(p), _values(r)
    if pv is not None and rv is not None:
        return bool(pv & rv)
    if "%" in p or "%" in r or parse(p) is None or parse(r) is None:
        return False
    left = budget.left()
    return left > 0 and symbolic.equivalent(p, r, timeout=left)


def _equiv(p: str, r: str, budget: _Budget, depth: int = 0) -> bool:
    if p == r or p.casefold() == r.casefold():
        return True
    if depth < 3 and ("," in p or "," in r or "\\cup" in p or "\\cup" in r):
        union_p, union_r = _split_top(p, "\\cup"), _split_top(r, "\\cup")
        if len(union_p) > 1 or len(union_r) > 1:
            return len(union_p) == len(union_r) and all(
                _equiv(a, b, budget, depth + 1) for a, b in zip(union_p, union_r))
        sp, sr = _structure(p), _structure(r)
        if sp is not None or sr is not None:
            return sp is not None and sr is not None and _same_structure(sp, sr, budget, depth)
    return _scalar_equiv(p, r, budget)


def _same_structure(sp, sr, budget: _Budget, depth: int) -> bool:
    (op, ip, cp), (orr, ir, cr) = sp, sr
    if len(ip) != len(ir) or len(ip) > MAX_ITEMS:
        return False
    unordered = {"", "\\{"}
    if op in unordered and orr in unordered:  # sets and bare lists: order does not matter
        free = list(ir)
        for a in ip:
            hit = next((k for k, b in enumerate(free) if _equiv(a, b, budget, depth + 1)), None)
            if hit is None:
                return False
            free.pop(hit)
        return True
    if (op, cp) != (orr, cr):  # intervals and tuples: the same brackets, in order
        return False
    return all(_equiv(a, b, budget, depth + 1) for a, b in zip(ip, ir))


def is_equivalent(prediction: str, reference: str, *, timeout: float = 1.0) -> bool:
    """Whether two answer strings (already extracted) mean the same thing."""
    p, r = normalize(prediction), normalize(reference)
    if not p or not r:
        return False
    return _equiv(p, r, _Budget(timeout))


def answer_key(completion: str) -> str | None:
    """A canonical key of the completion's final answer for majority voting (cons@k): the exact
    rational value when it is a number, else the normalised string; None when there is no answer."""
    from .registry import as_text
    try:
        found = extract_answer(as_text(completion))
    except TypeError:
        return None
    if found is None:
        return None
    s = normalize(found)
    if not s:
        return None
    v = _values(s) if not s.endswith("%") else None
    return f"={next(iter(v))}" if v else s


def _math_verify_available() -> bool:
    return importlib.util.find_spec("math_verify") is not None


@register("accuracy")
def accuracy(completion: str, *, answer: str, timeout: float = 1.0, backend: str = "builtin") -> float:
    """1.0 when the final answer of `completion` equals `answer` (see the module docstring)."""
    if backend not in BACKENDS:
        raise RewardOptionError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise RewardOptionError(f"timeout: expected seconds > 0, got {timeout!r}")
    if backend == "math_verify" and not _math_verify_available():
        raise RewardOptionError("backend='math_verify' needs the math-verify package (pip install math-verify)")
    if answer is None:
        return 0.0
    reference = reference_answer(str(answer))
    found = extract_answer(completion)
    if found is None:
        return 0.0
    if backend == "math_verify":
        return 1.0 if symbolic.math_verify(found, reference, timeout=timeout) else 0.0
    return 1.0 if is_equivalent(found, reference, timeout=timeout) else 0.0
