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
    ("accuracy", lambda a: {"answer": a}), ("format", lambda a: {}), ("format", lambda a: {"mode": "lenient"}),
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
