"""Property tests (hypothesis): on any text, every reward returns a float in [0, 1] and never
raises; the equivalence relation is reflexive on whatever it accepts."""
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from r1core.rewards import answer_key, extract_answer, get, is_equivalent, last_boxed, normalize
from r1core.rewards.expr import parse

# Pieces that reach the deep code paths (boxes, tags, LaTeX, operators, big numbers) more often
# than uniformly random text would.
PIECES = st.sampled_from([
    "\\boxed{", "\\fbox{", "{", "}", "\\{", "\\}", "<think>", "</think>", "<answer>", "</answer>", "answer is ",
    "\\frac", "\\dfrac", "\\sqrt", "[", "]", "(", ")", "^", "**", "_", "+", "-", "*", "/", "=", ",", "%", "\\%",
    "$", "\\pi", "\\infty", "\\cup", "x", "y", "e", "i", "0", "1", "2", "9", "99999", ".", "1,000", "e5",
    "\\text{", "cm", " ", "\n", "\x00", "我", "λ", "\\sin", "\\log_", "!", "\\left(", "\\right)", "ª", "\ud800",
])
TEXTS = st.one_of(st.text(max_size=300), st.lists(PIECES, max_size=40).map("".join))
# derandomize: CI sees the same 120 examples every run (no flaky failures); the rewards were also
# shaken with 3,000 random examples per property during development.
SETTINGS = settings(max_examples=120, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])

CALLS = [
    ("accuracy", lambda a: {"answer": a}), ("accuracy", lambda a: {"answer": a, "unmarked": "last"}),
    ("accuracy", lambda a: {"answer": a, "backend": "builtin"}), ("format", lambda a: {}), ("format", lambda a: {"mode": "lenient"}),
    ("tag_count", lambda a: {}), ("language", lambda a: {"lang": "en"}), ("language", lambda a: {"lang": "zh"}),
    ("countdown", lambda a: {"numbers": [1, 2, 3, 4], "target": 10}),
    ("length", lambda a: {"max_len": 50, "buffer": 10}),
]


def _check(value):
    assert isinstance(value, float) and 0.0 <= value <= 1.0


@SETTINGS
@given(text=TEXTS, answer=TEXTS)
def test_rewards_never_raise_and_stay_in_range(text, answer):
    for name, columns in CALLS:
        _check(get(name)(text, **columns(answer)))


@SETTINGS
@given(text=TEXTS)
def test_helpers_never_raise(text):
    found = extract_answer(text)
    assert found is None or isinstance(found, str)
    assert isinstance(normalize(text), str)
    parse(normalize(text))
    answer_key(text)


@SETTINGS
@given(answer=st.lists(PIECES, min_size=1, max_size=12).map("".join))
def test_a_boxed_answer_matches_itself(answer):
    """Whatever is accepted as an answer equals itself (reflexivity through the whole ladder)."""
    text = f"\\boxed{{{answer}}}"
    found = extract_answer(text)
    if found is not None and normalize(found):
        assert is_equivalent(found, found)
        box = last_boxed(text)
        if box is not None and box.strip():  # the reference is reduced to its box the same way
            assert get("accuracy")(text, answer=text) == 1.0


@SETTINGS
@given(n=st.integers(-10**12, 10**12), d=st.integers(1, 10**6))
def test_numbers_in_many_spellings(n, d):
    assert is_equivalent(f"{n:,}", str(n))
    assert is_equivalent(f"\\frac{{{n}}}{{{d}}}", f"{n}/{d}")
    assert not is_equivalent(str(n), str(n + 1))


# -- a wrong answer never scores 1 (issue 15): random values in random spellings, on every backend ----
from fractions import Fraction  # noqa: E402

BACKENDS = ["auto", "builtin"]
WRONG = settings(max_examples=60, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
VALUES = st.builds(Fraction, st.integers(-10**7, 10**7), st.sampled_from([1, 1, 1, 2, 4, 5, 8, 3, 7, 100]))


def spell(v: Fraction, how: int) -> str:
    """Ways of writing the value v (all exact)."""
    n, d = v.numerator, v.denominator
    if d == 1:
        return [str(n), f"{n:,}", f"${n}$", f"x = {n}", f"{n}.0", f"{n} \\text{{ cm}}", f"\\frac{{{2 * n}}}{{2}}",
                f"{n:,}".replace(",", "{,}")][how % 8]
    dec = None
    if 10**6 % d == 0:
        dec = f"{n / d:.6f}".rstrip("0")
    forms = [f"\\frac{{{n}}}{{{d}}}", f"{n}/{d}", f"\\dfrac{{{n}}}{{{d}}}"] + ([dec] if dec else [])
    return forms[how % len(forms)]


@WRONG
@given(a=VALUES, b=VALUES, ha=st.integers(0, 7), hb=st.integers(0, 7))
def test_numbers_score_1_exactly_when_equal(a, b, ha, hb):
    for backend in BACKENDS:
        got = get("accuracy")(f"\\boxed{{{spell(a, ha)}}}", answer=spell(b, hb), backend=backend, timeout=30.0)
        assert got == (1.0 if a == b else 0.0), (spell(a, ha), spell(b, hb), backend)


def _off_by_two(v: Fraction, digits: int) -> str:
    """v to `digits` decimals, rounded, then two units of the last digit less (v > 0)."""
    q = round(v * 10**digits) - 2
    return f"{q // 10**digits}.{q % 10**digits:0{digits}d}"


@WRONG
@given(a=st.integers(1, 999), b=st.integers(0, 999), c=st.integers(0, 50), k=st.integers(1, 12),
       case=st.integers(0, 10))
def test_wrong_structures_never_score(a, b, c, k, case):
    """Tuples vs digit-concatenations, parts of lists and sets, near misses under a rounding,
    flipped intervals and relations: all wrong, all 0."""
    s = sorted({a, b, c})
    pred, gold = [
        (f"({a},{b:03d})", f"{a}{b:03d}"),                                 # "(12,102)" is not 12102
        (f"{a}", f"{a} and {a + b + 1}"),                                  # one of two answers
        (f"\\{{{a}, {a + b + 1}\\}}", f"\\{{{a}, {a + b + 1}, {a + b + c + 2}\\}}"),  # a subset
        (f"{a}.{'0' * (k - 1)}1", f"{a}"),                                 # a near miss: a + 10^-k
        (f"({a}, {a + b + 1}]", f"[{a}, {a + b + 1})"),                    # flipped half-open interval
        (f"x < {a}", f"x \\leq {a}"),                                      # strict vs not strict
        (f"x > {a}", f"x < {a}"),                                          # reversed relation
        (", ".join(map(str, s + [s[-1] + 1])), ", ".join(map(str, s))),    # one answer too many
        (f"{(7 * a + 1) / 7:.{min(k, 6 - len(str(a)))}f}", f"\\frac{{{7 * a + 1}}}{{7}}"),  # a short decimal is not the fraction
        (f"{a}.{'0' * (k + 4)}1", f"{a}"),                                 # a near miss below 10^-6
        (_off_by_two(Fraction(7 * a + 1, 7), k + 6), f"\\frac{{{7 * a + 1}}}{{7}}"),  # a long expansion, last digit wrong
    ][case]
    for backend in BACKENDS:
        assert get("accuracy")(f"\\boxed{{{pred}}}", answer=gold, backend=backend) == 0.0, (pred, gold, backend)
        assert get("accuracy")(f"\\boxed{{{gold}}}", answer=pred, backend=backend) == 0.0, (gold, pred, backend)
