"""The accuracy reward: is the completion's final answer the reference answer?

Decision ladder (cheap and exact first; docs/rewards.md has the table of decisions):
  1. extract the final answer (extract.py); none -> 0;
  2. normalise both (normalize.py); equal strings (or equal ignoring case) -> 1;
  3. shapes: an equation chain / "\\approx" gives its last side, a labelled answer ("(p,q)=(3,2)",
     "f(x)=1") its right side; a one-variable inequality is its interval ("x>5" = "(5,\\infty)");
     tuples/intervals "(a, b]" compare element-wise with the same brackets; sets "\\{a, b\\}", bare
     lists "a, b" and "a \\pm b" compare as sets (repeats free); matrices entry by entry; unions
     "A \\cup B" piece by piece; two equations by a-b = ±(c-d);
  4. numbers: both sides rational constants (our parser folds 0.5, 1/2, \\frac{1}{2}, 2^{10}, 1.5e3)
     -> exact Fraction equality; a percentage "p%" stands for p or p/100;
  5. symbolic: both parse as expressions -> sympy in a killable worker (symbolic.py), all checks of
     one call sharing its `timeout`;
  6. backends: "builtin" is steps 2-5 alone; "math_verify" hands every extracted pair to the
     math-verify package (in the same killable worker); "auto" (the default) decides plain numbers
     in-process by step 4 (exact: the common case costs no IPC); anything else that steps 2-5 do
     not call equal goes to math-verify, whose "equal" is vetoed when our own exact check proves
     the two different (math-verify rounds numbers to 6 decimals: 0.0000001 = 0.0000002 there).
     Answers whose evaluation could not finish (expr.too_costly) never reach math-verify.  Without
     math-verify installed, "auto" is "builtin".
`unmarked` says what a completion without any answer marker gives (extract.py): "bare" (default:
the completion itself when it is only a short answer), "none", or "last" (for evaluation).
"""
from __future__ import annotations

import functools
import importlib.util
import os
import re
import time
from fractions import Fraction

from .expr import parse, too_costly
from .extract import UNMARKED, all_boxed, answer_tag, extract_answer, reference_answer
from .normalize import normalize
from .pool import cpu_spent
from .registry import RewardOptionError, register
from . import symbolic

BACKENDS = ("auto", "builtin", "math_verify")
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


_LABEL_NAME = re.compile(r"^((?:[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?|\\[a-zA-Z]+))(?:=|\\in(?![a-zA-Z]))(?=.)")


def _item(s: str) -> str:
    """A list item without its own label: "x=3" in "x=3,x=5"."""
    return _LABEL_NAME.sub("", s, count=1) if s.count("=") == 1 else s


def _pm(s: str) -> list[str] | None:
    """"a\\pmb" -> ["a+b", "a-b"] (one top-level \\pm, outside brackets), else None."""
    parts = _split_top(s, "\\pm")
    if len(parts) != 2 or not parts[1]:
        return None
    return [f"{parts[0]}+{parts[1]}", f"{parts[0]}-{parts[1]}"] if parts[0] else [parts[1], f"-{parts[1]}"]


def _structure(s: str) -> tuple[str, list[str], str] | None:
    """(opening bracket, items, closing bracket) of a tuple/interval/set/list, else None."""
    r = _structure_raw(s)
    if r is None:
        return None
    o, items, c = r
    labels = {m.group(1) for m in map(_LABEL_NAME.match, items) if m}
    if len(labels) <= 1:  # "x=1,x=3" is the list 1, 3; "a=1,b=2" keeps its names (a mapping, not a set)
        items = [_item(x) for x in items]
    if o in ("", "\\{"):  # a \\pm item stands for two set elements
        out = []
        for x in items:
            out.extend(_pm(x) or [x])
        items = out
    return o, items, c


def _structure_raw(s: str) -> tuple[str, list[str], str] | None:
    pm = _pm(s) if "\\pm" in s else None
    if pm is not None:
        return "", pm, ""
    for o, c in _OPEN.items():
        if o in "([" and s.startswith(o) and s.endswith((")", "]")) and len(s) > 2:
            c = s[-1]  # intervals may be half-open: "(0,1]"
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


_DECIMAL_COMMA = re.compile(r"-?(\d+),(\d+)")
_DECIMAL_POINT = re.compile(r"-?\d+\.\d+")
_DECIMAL = re.compile(r"[-+]?(\d*)\.(\d+)")
MIN_EXPANSION_DIGITS = 7   # significant digits from which a decimal may stand for a repeating fraction


def _decimal_comma(p: str, r: str) -> bool | None:
    """"1000,99" against "1000.99": the comma read as a decimal point, when the other side is a decimal
    number written with a point and the comma cannot be a thousands separator (not exactly three digits
    after it, or a first group that is 0 or longer than three digits).  None when the rule does not apply."""
    for a, b in ((p, r), (r, p)):
        m = _DECIMAL_COMMA.fullmatch(a)
        if m and _DECIMAL_POINT.fullmatch(b) and (len(m.group(2)) != 3 or m.group(1).startswith("0")
                                                  or len(m.group(1)) > 3):
            return Fraction(a.replace(",", ".")) == Fraction(b)
    return None


def _terminates(v: Fraction) -> bool:
    d = v.denominator
    for f in (2, 5):
        while d % f == 0:
            d //= f
    return d == 1


def _expansion_of(dec: str, value: Fraction) -> bool:
    """Whether the decimal string `dec` is the expansion of the repeating fraction `value` at the
    precision it gives: at least MIN_EXPANSION_DIGITS significant digits, off by less than one unit
    of its last digit (rounded or cut: "0.0833333333333333" for 1/12).  A fraction whose expansion
    terminates must be given exactly, so no rounding ever merges two numbers a decimal can write."""
    m = _DECIMAL.fullmatch(dec)
    if m is None or _terminates(value):
        return False
    digits = m.group(2)
    if len((m.group(1) + digits).lstrip("0")) < MIN_EXPANSION_DIGITS:
        return False
    return abs(Fraction(dec) - value) < Fraction(1, 10 ** len(digits))


def _same_values(p: str, r: str, pv: set, rv: set) -> bool:
    """Two constants: exactly equal, or one a long decimal expansion of the other (a repeating fraction)."""
    if pv & rv:
        return True
    if len(p) <= MIN_EXPANSION_DIGITS and len(r) <= MIN_EXPANSION_DIGITS:  # the common case: no long decimal
        return False
    return any(_expansion_of(p, v) for v in rv) or any(_expansion_of(r, v) for v in pv)


class _Budget:
    """`timeout` seconds of CPU for one verdict: this thread's CPU time plus the worker CPU its checks
    used (pool.cpu_spent), not wall time, so that machine load changes no verdict."""

    def __init__(self, timeout: float):
        self.timeout = timeout
        self.start = self._used()

    @staticmethod
    def _used() -> float:
        return time.thread_time() + cpu_spent()

    def left(self) -> float:
        return self.timeout - (self._used() - self.start)


def _scalar_equiv(p: str, r: str, budget: _Budget) -> bool:
    if p == r or p.casefold() == r.casefold():
        return True
    pv, rv = _values(p), _values(r)
    if pv is not None and rv is not None:
        return _same_values(p, r, pv, rv)
    if "%" in p or "%" in r or parse(p) is None or parse(r) is None:
        return False
    left = budget.left()
    return left > 0 and symbolic.equivalent(p, r, timeout=left)


_LABEL_SIDE = re.compile(r"[a-zA-Z\\(){}\[\],_'^+\-*/|]{1,40}"   # "(p,q)", "a+b": no digits
                         r"|[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?'*\([^=()]{1,20}\)")  # "f(x)", "g(2)": a function value
_LETTER = re.compile(r"[a-zA-Z]")
_COMMAND = re.compile(r"\\[a-zA-Z]+")
_REL = r"(<|>|\\leq?|\\geq?|\\lt|\\gt)"
_VAR = r"[a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?(?:\([a-zA-Z]\))?"
_INEQ_RIGHT = re.compile(rf"({_VAR}){_REL}([^<>=]+)")         # x>5
_INEQ_LEFT = re.compile(rf"([^<>=]+){_REL}({_VAR})")          # 5<x
_INEQ_BOTH = re.compile(rf"([^<>=]+){_REL}({_VAR}){_REL}([^<>=]+)")  # -1<t<2
_STRICT = {"<": True, ">": True, "\\lt": True, "\\gt": True}
_LESS = {"<", "\\le", "\\leq", "\\lt"}


def _as_interval(s: str) -> str | None:
    """A one-variable inequality as the interval of its solutions: "x>5" -> "(5,\\infty)",
    "-1<t\\le2" -> "(-1,2]"; None for anything else."""
    m = _INEQ_BOTH.fullmatch(s)
    if m:
        a, r1, _, r2, b = m.groups()
        if (r1 in _LESS) != (r2 in _LESS):
            return None
        if r1 not in _LESS:  # 2>t>-1
            a, b, r1, r2 = b, a, r2, r1
        return ("(" if _STRICT.get(r1) else "[") + f"{a},{b}" + (")" if _STRICT.get(r2) else "]")
    m = _INEQ_RIGHT.fullmatch(s)
    if m:
        _, rel, a = m.groups()
    else:
        m = _INEQ_LEFT.fullmatch(s)
        if not m:
            return None
        a, rel, _ = m.groups()
        rel = {"<": ">", ">": "<", "\\le": "\\ge", "\\leq": "\\geq", "\\ge": "\\le", "\\geq": "\\leq",
               "\\lt": "\\gt", "\\gt": "\\lt"}[rel]
    if rel in _LESS:  # x<a
        return "(-\\infty," + a + (")" if _STRICT.get(rel) else "]")
    return ("(" if _STRICT.get(rel) else "[") + a + ",\\infty)"


def _last_side(s: str) -> str:
    """An equation chain "2+3=5", "\\pi\\approx3.14" answers with its last side; a labelled answer
    whose left side is not a value ("(p,q)=(3,2)", "f(x)=1") with its right side."""
    if "=" not in s and "\\approx" not in s or len(_split_top(s, ",")) > 1:  # "x=2,x=-5" is a list
        return s
    sides = [x for part in _split_top(s, "=") for x in _split_top(part, "\\approx")]
    if len(sides) < 2 or not sides[-1] or any(x.endswith(("<", ">", "\\le", "\\ge", "!")) for x in sides):
        return s
    if _LETTER.search(_COMMAND.sub("", sides[-1])) and not _LETTER.search(_COMMAND.sub("", sides[0])):
        return s  # "7=11a+c": an equation the unknowns must satisfy, not a computation whose result is 11a+c
    if len(sides) > 2 or "\\approx" in s or _LABEL_SIDE.fullmatch(sides[0]) or not _LETTER.search(
            _COMMAND.sub("", sides[0])):  # "6\\cdot7=42": a computation, then its result
        return sides[-1]
    return s


_MAT_OPEN, _MAT_CLOSE = "\\begin{matrix}", "\\end{matrix}"


def _matrix(s: str) -> list[list[str]] | None:
    """Rows of entries of "\\begin{matrix}a&b\\\\c&d\\end{matrix}" (normalised), else None."""
    if not (s.startswith(_MAT_OPEN) and s.endswith(_MAT_CLOSE)):
        return None
    body = s[len(_MAT_OPEN):-len(_MAT_CLOSE)]
    if _MAT_OPEN in body or len(body) > 2000:
        return None
    rows = [row.split("&") for row in body.split("\\\\") if row]
    return rows if rows and len(rows) <= MAX_ITEMS and all(len(r) <= MAX_ITEMS for r in rows) else None


def _equation(p: str, r: str, budget: _Budget) -> bool:
    """Two equations "a=b", "c=d" with the same solutions: a-b = ±(c-d) (sympy)."""
    (a, b), (c, d) = p.split("="), r.split("=")
    if not all((a, b, c, d)) or any(parse(x) is None for x in (a, b, c, d)):
        return False
    lhs, rhs = f"({a})-({b})", f"({c})-({d})"
    left = budget.left()
    if left > 0 and symbolic.equivalent(lhs, rhs, timeout=left):
        return True
    left = budget.left()
    return left > 0 and symbolic.equivalent(lhs, f"-({rhs})", timeout=left)


def _equiv(p: str, r: str, budget: _Budget, depth: int = 0) -> bool:
    if p == r or p.casefold() == r.casefold():
        return True
    if depth == 0 and "," in p + r:
        comma = _decimal_comma(p, r)
        if comma is not None:
            return comma
    if depth == 0 and ("=" in p) != ("=" in r) or "\\approx" in p or "\\approx" in r:
        p, r = _last_side(p), _last_side(r)
        if p == r:
            return True
    if depth == 0 and any(c in p or c in r for c in "<>\\"):  # inequalities: as intervals
        ip, ir = _as_interval(p), _as_interval(r)
        if ip is not None or ir is not None:
            p, r = ip or p, ir or r
            if p == r:
                return True
    if p.startswith(_MAT_OPEN) or r.startswith(_MAT_OPEN):
        mp, mr = _matrix(p), _matrix(r)
        return mp is not None and mr is not None and len(mp) == len(mr) and all(
            len(a) == len(b) and all(_equiv(x, y, budget, depth + 1) for x, y in zip(a, b)) for a, b in zip(mp, mr))
    if depth < 3 and ("," in p or "," in r or "\\cup" in p or "\\cup" in r or "\\pm" in p or "\\pm" in r):
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
    if len(ip) > MAX_ITEMS or len(ir) > MAX_ITEMS:
        return False
    unordered = {"", "\\{"}
    if op in unordered and orr in unordered:  # sets and bare lists: order and repeats do not matter
        return all(any(_equiv(a, b, budget, depth + 1) for b in ir) for a in ip) and \
            all(any(_equiv(a, b, budget, depth + 1) for a in ip) for b in ir)
    if (op, cp) != (orr, cr) or len(ip) != len(ir):  # intervals and tuples: the same brackets, in order
        return False
    return all(_equiv(a, b, budget, depth + 1) for a, b in zip(ip, ir))


_NAMED = re.compile(r"^\s*\$?\s*([a-zA-Z](?:_\{?[a-zA-Z0-9]+\}?)?)\s*=[^=]*$")


def _other_variable(prediction: str, reference: str) -> bool:
    """"x = 3" against "y = 3": both name their single variable, and the names differ."""
    mp, mr = _NAMED.match(prediction), _NAMED.match(reference)
    return bool(mp and mr and mp.group(1) != mr.group(1))


def is_equivalent(prediction: str, reference: str, *, timeout: float = 1.0) -> bool:
    """Whether two answer strings (already extracted) mean the same thing."""
    if _other_variable(prediction, reference):
        return False
    p, r = normalize(prediction), normalize(reference)
    if not p or not r:
        return False
    budget = _Budget(timeout)
    if _equiv(p, r, budget):
        return True
    if "=" in prediction and "=" in reference:  # "y=3x-2" against "3x-y-2=0": as equations
        pe, re_ = normalize(prediction, strip_label=False), normalize(reference, strip_label=False)
        return pe.count("=") == 1 and re_.count("=") == 1 and _equation(pe, re_, budget)
    return False


def answer_key(completion: str, unmarked: str = "bare") -> str | None:
    """A canonical key of the completion's final answer for majority voting (cons@k): the exact
    rational value when it is a number, else the normalised string; None when there is no answer.
    `unmarked` is accuracy()'s, with the same default, so that cons@k votes over the answers pass@1
    judges (a bare "85" is right for pass@1 and must be a vote too)."""
    from .registry import as_text
    _check_unmarked(unmarked)
    try:
        found = extract_answer(as_text(completion), unmarked)
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
    global _HAVE_MV
    if _HAVE_MV is None:  # R1CORE_REWARD_MATH_VERIFY=0: workers do not load it, so neither do we use it
        _HAVE_MV = (os.environ.get("R1CORE_REWARD_MATH_VERIFY", "1") != "0"
                    and importlib.util.find_spec("math_verify") is not None)
    return _HAVE_MV


_HAVE_MV: bool | None = None


def fast_verdict(p: str, r: str) -> bool | None:
    """The in-process verdict on two normalised answers when it is final: equal strings, or two
    rational constants compared exactly; None when a fuller check must decide."""
    if p == r:
        return True
    pv = _values(p)
    if pv is None:
        return None
    rv = _values(r)
    return None if rv is None else _same_values(p, r, pv, rv)


def _check_unmarked(unmarked) -> None:
    if unmarked not in UNMARKED:
        raise RewardOptionError(f"unmarked: expected one of {UNMARKED}, got {unmarked!r}")


def _check_options(timeout, backend, unmarked) -> None:
    if backend not in BACKENDS:
        raise RewardOptionError(f"backend: expected one of {BACKENDS}, got {backend!r}")
    _check_unmarked(unmarked)
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise RewardOptionError(f"timeout: expected seconds > 0, got {timeout!r}")
    if backend == "math_verify" and not _math_verify_available():
        raise RewardOptionError("backend='math_verify' needs the math-verify package (pip install math-verify; "
                                "and R1CORE_REWARD_MATH_VERIFY not 0)")


def verdict(found: str, reference: str, *, timeout: float = 1.0, backend: str = "auto") -> bool:
    """Whether the extracted answer `found` means the reference answer `reference` (both strings)."""
    if backend == "builtin":
        return is_equivalent(found, reference, timeout=timeout)
    p, r = normalize(found), normalize(reference)
    if not p or not r:
        return False
    if backend == "auto":
        fast = fast_verdict(p, r)  # bounded: our parser's limits
        if fast is not None:
            return fast
    if too_costly(found) or too_costly(reference):
        return p == r  # never handed to math-verify: it would only run into the kill
    if backend == "math_verify":
        return symbolic.math_verify(found, reference, timeout=timeout)
    if backend == "auto":
        budget = _Budget(timeout)
        if is_equivalent(found, reference, timeout=timeout):
            return True
        left = budget.left()
        return _math_verify_available() and left > 0 and symbolic.verified(found, reference, timeout=left)
    return is_equivalent(found, reference, timeout=timeout)


# The verdict cache: GRPO scores a completion once per reward, but evaluation, rejection sampling and
# cons@k judge the same ones again.  Completions longer than CACHE_MAX_CHARS are not kept (memory).
CACHE_SIZE = int(os.environ.get("R1CORE_REWARD_CACHE", "4096"))   # verdicts kept; 0 turns the cache off
CACHE_MAX_CHARS = 16_384


@register("accuracy")
def accuracy(completion: str, *, answer: str, timeout: float = 1.0, backend: str = "auto",
             unmarked: str = "bare") -> float:
    """1.0 when the final answer of `completion` equals `answer` (see the module docstring).  Verdicts
    are kept in a bounded LRU cache keyed by (completion, answer, options): `accuracy_cache.cache_info()`,
    `accuracy_cache.cache_clear()`."""
    _check_options(timeout, backend, unmarked)
    if answer is None:
        return 0.0
    if len(completion) > CACHE_MAX_CHARS:
        return _judge(completion, str(answer), float(timeout), backend, unmarked)
    return accuracy_cache(completion, str(answer), float(timeout), backend, unmarked)


def _judge(completion: str, answer: str, timeout: float, backend: str, unmarked: str) -> float:
    reference = reference_answer(answer)
    found = extract_answer(completion, unmarked)
    if found is None or not reference or _unevaluated(found, reference):
        return 0.0
    if "</answer>" in completion and _tag_is_gold(completion, found, reference):
        return 1.0
    several = completion.count("\\boxed") + completion.count("\\fbox") >= 2
    budget = _Budget(timeout) if several else None   # (one box, the common case: no second reading to budget)
    if verdict(found, reference, timeout=timeout, backend=backend):
        return 1.0
    boxes = _several_boxes(completion, reference) if several else None
    left = budget.left() if budget is not None else 0.0
    return 1.0 if boxes is not None and left > 0 and verdict(boxes, reference, timeout=left, backend=backend) else 0.0


accuracy_cache = functools.lru_cache(maxsize=CACHE_SIZE)(_judge)

_NUMBER = r"\(?\s*-?\d+(?:\.\d+)?\s*\)?"
_PLAIN_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")
_ARITHMETIC = re.compile(rf"{_NUMBER}(?:\s*(?:[-+*×·]|\\times|\\cdot)\s*{_NUMBER})+")


def _unevaluated(found: str, reference: str) -> bool:
    """A sum, difference or product of numbers left unevaluated ("921 + 738", "3 \\times 4") is not the
    final answer of a plain-number gold, though it has the gold's value: it is the question restated.
    Found by the R1 study: R1-Zero learned to run out of tokens right after restating "a + b" ("921 +
    738 = 609, 921 + 738 ="), which math-verify reads as its last expression and calls equal.
    Fractions, powers and roots are kept: they are ways to write a number."""
    if not _PLAIN_NUMBER.fullmatch(normalize(reference)):
        return False
    last = [seg for seg in re.split(r"[=,;:]", found) if seg.strip()]   # what a verifier would read last
    return bool(last) and bool(_ARITHMETIC.fullmatch(last[-1].strip()))


def _tag_is_gold(completion: str, found: str, reference: str) -> bool:
    """The final <answer> block is the gold answer written out, though read as prose ("results, order,
    THIS, 1889": words, so extraction kept its only number): the whole block, normalised, is the gold."""
    tag = answer_tag(completion)
    if tag is None or tag.strip() == found or "\\boxed" in completion or "\\fbox" in completion:
        return False
    return normalize(tag) == normalize(reference) != ""


def _several_boxes(completion: str, reference: str) -> str | None:
    """All boxes of the completion read together as one answer ("\\boxed{1} … \\boxed{-2}" -> "1, -2",
    in text order; "(1, -2)" when the gold is a tuple, whose order then counts), when the gold has
    several elements (a set, list or tuple) and the completion at least two boxes; else None.  A
    one-element gold keeps the last box (a later box corrects an earlier one)."""
    if "\\boxed" not in completion and "\\fbox" not in completion:
        return None
    gold = _structure(normalize(reference))
    if gold is None or len(gold[1]) < 2:
        return None
    boxes = [b.strip() for b in all_boxed(completion) if b.strip()]
    if len(boxes) < 2:
        return None
    joined = ", ".join(boxes)
    return f"({joined})" if (gold[0], gold[2]) == ("(", ")") else joined
