"""The accuracy reward's conventions of docs/rewards.md ("Conventions shared with a real verifier"):
equation golds, decimal commas, repeating fractions against decimal expansions, several boxes
against one set/tuple; the verdict cache; verdicts that do not depend on machine load.  Expected
verdicts are computed here with Fraction arithmetic, sharing no code with the reward."""
import os
import subprocess
import sys
import time
from fractions import Fraction

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1core.rewards import get
from r1core.rewards.accuracy import accuracy_cache

BACKENDS = ("auto", "builtin")
SETTINGS = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def acc(pred: str, gold: str, backend: str = "auto") -> float:
    return get("accuracy")(f"\\boxed{{{pred}}}", answer=gold, backend=backend, timeout=30.0)


# -- 1. an equation gold ---------------------------------------------------------------------------
@pytest.mark.parametrize("pred,gold,want", [
    ("11a+c", "7 = 11a+c", 0.0), ("7 = 11a + c", "7 = 11a+c", 1.0), ("11a+c=7", "7 = 11a+c", 1.0),
    ("7", "7 = 11a+c", 0.0), ("42", "6\\cdot7=42", 1.0), ("5", "x = 5", 1.0), ("x^2+1", "f(x)=x^2+1", 1.0),
])
def test_equation_gold_cases(pred, gold, want):
    for backend in BACKENDS:
        assert acc(pred, gold, backend) == want, (pred, gold, backend)


@SETTINGS
@given(c=st.integers(-99, 99), a=st.integers(1, 30), b=st.integers(1, 30), names=st.sampled_from(["ab", "xy", "pq", "mn"]))
def test_equation_gold_never_matched_by_one_side(c, a, b, names):
    """`c = a·u + b·v` (two unknowns): its right side alone, or its left (a number), is no answer;
    the equation written the other way round is."""
    u, v = names
    gold = f"{c} = {a}{u}+{b}{v}"
    for backend in BACKENDS:
        assert acc(f"{a}{u}+{b}{v}", gold, backend) == 0.0
        assert acc(str(c), gold, backend) == 0.0
        assert acc(f"{b}{v}+{a}{u} = {c}", gold, backend) == 1.0


# -- 2. the decimal comma --------------------------------------------------------------------------
@SETTINGS
@given(i=st.integers(0, 99_999), f=st.integers(0, 10**6), width=st.integers(1, 6))
def test_decimal_comma(i, f, width):
    frac = str(f % 10**width).zfill(width)
    gold = f"{i}.{frac}"
    pred = f"{i},{frac}"
    thousands = width == 3 and 1 <= len(str(i)) <= 3 and i != 0   # "12,345" may group thousands
    want = 0.0 if thousands else 1.0
    for backend in BACKENDS:
        assert acc(pred, gold, backend) == want, (pred, gold, backend)
        assert acc(gold, pred, backend) == want, (gold, pred, backend)
        other = f"{i + 1}.{frac}"                      # a different decimal is never matched
        assert acc(pred, other, backend) == 0.0, (pred, other, backend)


def test_decimal_comma_cases():
    for pred, gold, want in [("1000,99", "1000.99", 1.0), ("1,22", "1.22", 1.0), ("0,111", "0.111", 1.0),
                             ("1,234", "1.234", 0.0), ("1,234", "1234", 1.0), ("3,5", "3, 5", 1.0),
                             ("3,5", "3.6", 0.0)]:
        assert acc(pred, gold) == want, (pred, gold)


# -- 3. a repeating fraction against its decimal expansion ------------------------------------------
def _digits(v: Fraction, d: int, mode: str) -> str:
    """v (> 0) to d decimals, rounded ("round"), cut ("cut") or two units off ("off")."""
    q = {"round": round(v * 10**d), "cut": (v * 10**d).numerator // (v * 10**d).denominator,
         "off": round(v * 10**d) + 2}[mode]
    return f"{q // 10**d}.{q % 10**d:0{d}d}"


def _significant(s: str) -> int:
    return len(s.replace(".", "").lstrip("0"))


@SETTINGS
@given(p=st.integers(1, 10**4), q=st.sampled_from([3, 6, 7, 9, 11, 12, 13, 15, 21, 24, 30, 60, 99]),
       d=st.integers(1, 17), mode=st.sampled_from(["round", "cut", "off"]))
def test_repeating_fraction_vs_expansion(p, q, d, mode):
    v = Fraction(p, q)
    if v.denominator in (1, 2, 4, 5, 8, 10, 20, 25):  # terminates: not this class
        return
    dec = _digits(v, d, mode)
    want = 1.0 if mode != "off" and _significant(dec) >= 7 and abs(Fraction(dec) - v) < Fraction(1, 10**d) else 0.0
    for backend in BACKENDS:
        assert acc(dec, f"\\frac{{{p}}}{{{q}}}", backend) == want, (dec, p, q, backend)
        assert acc(f"{p}/{q}", dec, backend) == want, (dec, p, q, backend)


@SETTINGS
@given(p=st.integers(1, 10**6), k=st.sampled_from([2, 4, 5, 8, 16, 25, 125]), d=st.integers(1, 12))
def test_terminating_fraction_is_never_matched_by_a_rounding(p, k, d):
    v = Fraction(p, k)
    exact = _digits(v, 12, "round")                     # exact: k divides 10^12
    cut = _digits(v, d, "cut")
    want = 1.0 if Fraction(cut) == v else 0.0
    for backend in BACKENDS:
        assert acc(cut, f"\\frac{{{p}}}{{{k}}}", backend) == want, (cut, p, k)
        assert acc(exact, f"\\frac{{{p}}}{{{k}}}", backend) == 1.0


def test_expansion_cases():
    for pred, gold, want in [("0.0833333333333333", "1/12", 1.0), ("0.08333333", "\\frac{1}{12}", 1.0),
                             ("0.0833", "1/12", 0.0), ("0.333333", "\\frac{1}{3}", 0.0),
                             ("0.3333333", "\\frac{1}{3}", 1.0), ("0.6666667", "2/3", 1.0),
                             ("0.6666668", "2/3", 0.0), ("0.0000002", "0.0000001", 0.0),
                             ("3.141592653589793", "\\pi", 1.0), ("3.14159", "\\pi", 0.0)]:  # irrationals: 1e-12
        assert acc(pred, gold) == want, (pred, gold)


# -- 4. several boxed answers against one set or tuple ---------------------------------------------
GAPS = [" and ", ", ", ". Then ", " and then ", "\n\nSo the other root is ", " or maybe "]


@SETTINGS
@given(xs=st.lists(st.integers(-50, 50), min_size=2, max_size=4, unique=True),
       gaps=st.lists(st.sampled_from(GAPS), min_size=3, max_size=3), extra=st.integers(51, 99))
def test_several_boxes_vs_a_set(xs, gaps, extra):
    text = "".join(f"\\boxed{{{x}}}" + (gaps[i % 3] if i < len(xs) - 1 else "") for i, x in enumerate(xs))
    gold_set = "\\{" + ", ".join(map(str, sorted(xs))) + "\\}"
    gold_list = ", ".join(map(str, reversed(xs)))
    for backend in BACKENDS:
        for gold in (gold_set, gold_list):
            assert get("accuracy")(text, answer=gold, backend=backend) == 1.0, (text, gold)
        assert get("accuracy")(text + f" and \\boxed{{{extra}}}", answer=gold_set, backend=backend) == 0.0
        assert get("accuracy")(text, answer=gold_set[:-2] + f", {extra}\\}}", backend=backend) == 0.0
        ordered = "(" + ", ".join(map(str, xs)) + ")"
        reverse = "(" + ", ".join(map(str, reversed(xs))) + ")"
        assert get("accuracy")(text, answer=ordered, backend=backend) == 1.0
        assert get("accuracy")(text, answer=reverse, backend=backend) == 0.0
        assert get("accuracy")(text, answer=str(xs[0]), backend=backend) == 0.0  # one gold: the last box only


def test_several_boxes_cases():
    for text, gold, want in [("\\boxed{1} and \\boxed{-2}", "\\{-2,1\\}", 1.0),
                             ("The roots are \\boxed{1} and then \\boxed{-2}", "-2, 1", 1.0),
                             ("first \\boxed{1}. Later \\boxed{-2}", "-2,1", 1.0),
                             ("\\boxed{1} \\boxed{-2}", "(-2,1)", 0.0),
                             ("\\boxed{1} then \\boxed{-2} then \\boxed{5}", "-2,1", 0.0),
                             ("\\boxed{3} wait, \\boxed{5}", "5", 1.0),         # a correction, for a one-element gold
                             ("\\boxed{5} wait, \\boxed{3}", "5", 0.0)]:
        assert get("accuracy")(text, answer=gold) == want, (text, gold)


# -- the verdict cache ------------------------------------------------------------------------------
def test_verdict_cache_is_bounded_and_keyed_by_completion_and_answer():
    accuracy_cache.cache_clear()
    f = get("accuracy")
    assert f("\\boxed{12}", answer="12") == 1.0 and f("\\boxed{12}", answer="13") == 0.0
    assert f("\\boxed{12}", answer="12") == 1.0
    info = accuracy_cache.cache_info()
    assert info.hits == 1 and info.misses == 2 and info.maxsize is not None
    assert f("\\boxed{12}", answer="12", unmarked="last") == 1.0      # options are part of the key
    assert accuracy_cache.cache_info().misses == 3


# -- verdicts do not depend on machine load ---------------------------------------------------------
def _suite():
    from kinds_table import TABLE
    rows = [(c, g) for _, c, g, _ in TABLE]
    rows += [("\\boxed{11a+c}", "7 = 11a+c"), ("\\boxed{1000,99}", "1000.99"), ("\\boxed{0.0833333333333333}", "1/12"),
             ("first \\boxed{1}. Later \\boxed{-2}", "-2,1"), ("\\boxed{x^2-1}", "(x-1)(x+1)"),
             ("\\boxed{\\sin^2 x + \\cos^2 x}", "1"), ("\\boxed{\\sum_{k=1}^{10} k}", "55")]
    return rows


def _verdicts(rows):
    accuracy_cache.cache_clear()
    return [get("accuracy")(c, answer=g, unmarked="last") for c, g in rows]


def test_verdicts_do_not_depend_on_machine_load():
    """The same suite judged idle and with 2 busy-looping processes per core (timeouts count CPU time)."""
    rows = _suite()
    quiet = _verdicts(rows)
    n = 2 * (os.cpu_count() or 1)
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)
        loaded = _verdicts(rows)
    finally:
        for p in busy:
            p.kill()
        for p in busy:
            p.wait()
    assert loaded == quiet, [(r, a, b) for r, a, b in zip(rows, quiet, loaded) if a != b]


# -- 5. an unevaluated sum, difference or product is not the answer of a number ---------------------
@pytest.mark.parametrize("completion,gold,want", [
    ("921 + 738", "1659", 0.0), (" 921 + 738 = 609, 921 + 738 =", "1659", 0.0), ("\\boxed{921+738}", "1659", 0.0),
    ("<answer>3 \\times 4</answer>", "12", 0.0), ("<answer>10 - 3</answer>", "7", 0.0),
    ("921 + 738 = 1659", "1659", 1.0), ("<answer>1659</answer>", "1659", 1.0), ("\\boxed{2^{10}}", "1024", 1.0),
    ("\\boxed{1/12}", "1/12", 1.0), ("\\boxed{-5}", "-5", 1.0), ("\\boxed{921+738}", "921+738", 1.0),
])
def test_unevaluated_arithmetic_cases(completion, gold, want):
    for backend in BACKENDS:
        for unmarked in ("bare", "last"):
            assert get("accuracy")(completion, answer=gold, backend=backend, unmarked=unmarked, timeout=30.0) == want, \
                (completion, gold, backend, unmarked)


@SETTINGS
@given(a=st.integers(0, 9999), b=st.integers(0, 9999), op=st.sampled_from(["+", "-", "*", "\\times", "\\cdot"]),
       cut=st.booleans())
def test_the_question_restated_is_never_rewarded(a, b, op, cut):
    """The R1 study's reward hack: for "What is a op b?" the completion restates `a op b` (or runs out
    of tokens right after it); only the evaluated number is an answer."""
    value = {"+": a + b, "-": a - b}.get(op, a * b)
    restated = f"{a} {op} {b}" + (" = 1, " + f"{a} {op} {b} =" if cut else "")
    for unmarked in ("bare", "last"):
        assert get("accuracy")(restated, answer=str(value), unmarked=unmarked, timeout=30.0) == 0.0
        assert get("accuracy")(f"{a} {op} {b} = {value}", answer=str(value), unmarked=unmarked, timeout=30.0) == 1.0
