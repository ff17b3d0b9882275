"""Symbolic equivalence of two answers with sympy, under a hard time limit.

`equivalent(a, b, timeout=1.0)` parses both with our restricted parser (expr.py: no eval, bounded
exponents and constants), converts the trees to sympy and decides equality:
  1. structurally equal sympy expressions -> equal;
  2. no free symbols: |a - b| <= 1e-12 · max(1, |a|) at 30 significant digits (so sqrt(2)/2 equals
     1/sqrt(2), and 0.7071 does not);
  3. free symbols: a and b evaluated at three fixed rational points; any finite disagreement beyond
     a relative 1e-9 -> not equal; agreement at every finite point (at least two) -> equal;
  4. otherwise sympy.simplify(a - b) == 0.
`verified(a, b)` is math-verify's verdict vetoed by `provably_different` (the "auto" backend).
The work runs in a worker process of pool.py that is killed when it has used `timeout` seconds of CPU
(a kill, not signal.alarm: it works from any thread, and a sympy call stuck in C code cannot outlive
it; CPU time, not wall time, so that a loaded machine reaches the same verdicts).  Inside
a worker (`INLINE` is set there) the check runs directly: the parent's watchdog covers it.
"""
from __future__ import annotations

from fractions import Fraction

from .expr import parse

INLINE = False  # True inside a worker process: no nested pool
_POINTS = ((Fraction(7, 5), Fraction(13, 11), Fraction(3, 7)),
           (Fraction(-5, 3), Fraction(11, 13), Fraction(17, 4)),
           (Fraction(9, 7), Fraction(-2, 9), Fraction(5, 3)))


def equivalent(a: str, b: str, *, timeout: float = 1.0) -> bool:
    """True when the normalised answers `a` and `b` are the same mathematical object; False when
    they differ, cannot be parsed, or the check runs out of time."""
    if INLINE:
        return sympy_equal(a, b)
    from .pool import get_pool
    return get_pool().call(("equiv", a, b), timeout=timeout, cpu=True) is True


def to_sympy(tree: tuple):
    """Our expression tree -> a sympy expression (only sympy constructors; nothing is eval-ed)."""
    import sympy as sp

    kind = tree[0]
    if kind == "num":
        return sp.Rational(tree[1].numerator, tree[1].denominator)
    if kind == "sym":
        return sp.Symbol(tree[1])
    if kind == "const":
        return {"pi": sp.pi, "e": sp.E, "i": sp.I, "oo": sp.oo}[tree[1]]
    if kind == "neg":
        return -to_sympy(tree[1])
    if kind in ("add", "mul", "div", "pow"):
        a, b = to_sympy(tree[1]), to_sympy(tree[2])
        return {"add": lambda: a + b, "mul": lambda: a * b, "div": lambda: a / b, "pow": lambda: a ** b}[kind]()
    if kind == "root":
        return sp.root(to_sympy(tree[1]), tree[2])
    if kind == "log":
        return sp.log(to_sympy(tree[1]), to_sympy(tree[2]))
    if kind == "func":
        fn = {"sin": sp.sin, "cos": sp.cos, "tan": sp.tan, "sec": sp.sec, "csc": sp.csc, "cot": sp.cot,
              "arcsin": sp.asin, "arccos": sp.acos, "arctan": sp.atan, "sinh": sp.sinh, "cosh": sp.cosh,
              "tanh": sp.tanh, "exp": sp.exp, "ln": sp.log, "log": sp.log, "abs": sp.Abs}[tree[1]]
        return fn(to_sympy(tree[2]))
    raise ValueError(f"unknown node {kind!r}")


def _close(x, y, rel: float) -> bool | None:
    """|x - y| <= rel · max(1, |x|, |y|) for finite complex numbers; None when either is not finite."""
    import sympy as sp

    vals = []
    for v in (x, y):
        if not v.is_number or v.has(sp.zoo, sp.nan, sp.oo, -sp.oo):
            return None
        c = complex(v)
        if c != c or abs(c) == float("inf"):
            return None
        vals.append(c)
    cx, cy = vals
    return abs(cx - cy) <= rel * max(1.0, abs(cx), abs(cy))


def sympy_equal(a: str, b: str) -> bool:
    import sympy as sp

    pa, pb = parse(a), parse(b)
    if pa is None or pb is None:
        return False
    if pa.value is not None and pb.value is not None:
        return pa.value == pb.value
    A, B = to_sympy(pa.tree), to_sympy(pb.tree)
    if A == B:
        return True
    symbols = sorted(A.free_symbols | B.free_symbols, key=str)
    if not symbols:
        same = _close(A.evalf(30), B.evalf(30), 1e-12)
        if same is not None:
            return same
    else:
        agree = 0
        for point in _POINTS:
            subs = {s: sp.Rational(point[k % 3].numerator, point[k % 3].denominator) + k // 3
                    for k, s in enumerate(symbols)}
            same = _close(A.evalf(30, subs=subs), B.evalf(30, subs=subs), 1e-9)
            if same is False:
                return False
            agree += same is True
        if agree >= 2:
            return True
    try:
        return sp.simplify(A - B) == 0
    except Exception:
        return False


def math_verify(prediction: str, reference: str, *, timeout: float = 1.0) -> bool:
    """The optional math-verify package's verdict, in a killable worker like ours."""
    if INLINE:
        return math_verify_equal(prediction, reference)
    from .pool import get_pool
    return get_pool().call(("math_verify", prediction, reference), timeout=timeout, cpu=True) is True


def verified(prediction: str, reference: str, *, timeout: float = 1.0) -> bool:
    """math-verify's verdict with our veto (`verified_equal`), in a killable worker."""
    if INLINE:
        return verified_equal(prediction, reference)
    from .pool import get_pool
    return get_pool().call(("verify", prediction, reference), timeout=timeout, cpu=True) is True


def _math_text(s: str) -> str:
    """math-verify reads LaTeX inside math delimiters or a box: give it a bare answer in $…$."""
    return s if "$" in s or "\\boxed" in s or "\\(" in s or "\\[" in s else f"${s}$"


def math_verify_equal(prediction: str, reference: str) -> bool:
    from math_verify import parse as mv_parse, verify
    gold = mv_parse(_math_text(reference), parsing_timeout=None)
    pred = mv_parse(_math_text(prediction), parsing_timeout=None)
    return bool(verify(gold, pred, timeout_seconds=None))


_SET_OPEN = ("\\{",)
_PAREN_OPEN = ("(", "[")


def provably_different(p: str, r: str) -> bool:
    """True when our own exact reading of two normalised answers shows they differ: both are
    constants (no symbols) whose values differ beyond 1e-12 relative (math-verify rounds to six
    decimals), or one is a set and the other a tuple/interval."""
    import sympy as sp

    if (p.startswith(_SET_OPEN) and r.startswith(_PAREN_OPEN)) or (r.startswith(_SET_OPEN) and p.startswith(_PAREN_OPEN)):
        return True
    pa, pb = parse(p), parse(r)
    if pa is None or pb is None:
        return False
    if pa.value is not None and pb.value is not None:
        return pa.value != pb.value
    A, B = to_sympy(pa.tree), to_sympy(pb.tree)
    if A.free_symbols or B.free_symbols:
        return False
    same = _close(A.evalf(30), B.evalf(30), 1e-12)
    return same is False


def verified_equal(prediction: str, reference: str) -> bool:
    """math-verify says equal and our exact check does not prove them different."""
    from .normalize import normalize

    if not math_verify_equal(prediction, reference):
        return False
    try:
        return not provably_different(normalize(prediction), normalize(reference))
    except Exception:  # noqa: BLE001  (our reading failed: math-verify's verdict stands)
        return True
