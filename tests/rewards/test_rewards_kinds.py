"""Issue 15's kinds of verifier edge cases (tests/rewards/kinds_table.py, cases written for r1core):
the default checker agrees with every expected verdict, no backend of ours rewards a wrong answer,
and the marker policy (`unmarked`) does what docs/rewards.md says."""
import importlib.util

import pytest

from kinds_table import KINDS, TABLE
from r1core.rewards import accuracy

HAVE_MV = importlib.util.find_spec("math_verify") is not None
# kinds only math-verify reads (the builtin checker has no \sum)
MV_ONLY = {("cfrac_sum", "\\boxed{\\sum_{k=1}^{4} k}", "10")}


def _call(completion, gold, backend):
    unmarked = "last" if completion and "\\boxed" not in completion and "answer" not in completion.lower() else "bare"
    # a generous limit: the suite runs on loaded CI machines; the verdicts, not the speed, are tested here
    return accuracy(completion, answer=gold, backend=backend, unmarked=unmarked, timeout=30.0)


def test_table_covers_every_kind_with_both_verdicts():
    assert len(KINDS) >= 17
    for kind in KINDS:
        verdicts = {want for k, _, _, want in TABLE if k == kind}
        assert verdicts == {True, False} or kind == "trap", kind


@pytest.mark.skipif(not HAVE_MV, reason="math-verify is not installed")
@pytest.mark.parametrize("kind,completion,gold,want", TABLE, ids=[f"{i}:{r[0]}" for i, r in enumerate(TABLE)])
def test_auto_backend_agrees(kind, completion, gold, want):
    assert _call(completion, gold, "auto") == (1.0 if want else 0.0)


@pytest.mark.parametrize("kind,completion,gold,want", TABLE, ids=[f"{i}:{r[0]}" for i, r in enumerate(TABLE)])
def test_builtin_backend_agrees_or_abstains(kind, completion, gold, want):
    got = _call(completion, gold, "builtin")
    if (kind, completion, gold) in MV_ONLY:
        assert got == 0.0  # not read: a false negative, never a false positive
    else:
        assert got == (1.0 if want else 0.0)


@pytest.mark.skipif(not HAVE_MV, reason="math-verify is not installed")
def test_auto_vetoes_math_verify_rounding_and_set_tuple():
    """math-verify alone rewards these wrong answers (it rounds to 6 decimals, and reads (1, 2) as
    the set {1, 2}); the default backend does not."""
    cases = [("\\boxed{0.0000002}", "0.0000001"), ("\\boxed{0.333333}", "$\\frac{1}{3}$"),
             ("\\boxed{6.283185}", "$2\\pi$"), ("\\boxed{\\{1, 2\\}}", "$(1, 2)$")]
    for completion, gold in cases:
        assert accuracy(completion, answer=gold, backend="math_verify", timeout=30.0) == 1.0, (completion, gold)
        assert accuracy(completion, answer=gold, timeout=30.0) == 0.0, (completion, gold)


def test_unmarked_policy():
    prose = "So there are 17 marbles left in the jar."
    assert accuracy(prose, answer="17") == 0.0                      # RL default: prose is no answer
    assert accuracy(prose, answer="17", unmarked="last") == 1.0     # evaluation: the last number
    assert accuracy(prose, answer="17", unmarked="none") == 0.0
    assert accuracy("$x = \\frac{1}{4}$", answer="0.25") == 1.0     # a bare answer is its own answer
    assert accuracy("$x = \\frac{1}{4}$", answer="0.25", unmarked="none") == 0.0
    assert accuracy("(0, 1)", answer="(0,1)") == 1.0
    # a truncated chain of thought ending in an intermediate number is not rewarded by default
    assert accuracy("<think>First, 12 + 5 = 17, then we subtract", answer="17") == 0.0
    with pytest.raises(ValueError, match="unmarked"):
        accuracy("\\boxed{1}", answer="1", unmarked="everything")


def test_backward_compatible_calls():
    assert accuracy("\\boxed{42}", answer="42") == 1.0
    assert accuracy("\\boxed{42}", answer="42", timeout=0.5, backend="builtin") == 1.0
    assert accuracy("<answer>41</answer>", answer="#### 42") == 0.0


@pytest.mark.parametrize("text,costly", [
    ("9^{9^{9^{9}}}", True), ("2**2**2**2**2**2", True), ("x^{x^{x^{x}}}", True), ("1000000!", True),
    ("1.5\\times10^{99999}", True), ("(1, 9^{9^{9^9}})", True), ("\\sum_{k=1}^{10^{12}} k", True),
    ("x^2", False), ("2^{3^2}", False), ("(2^{3^2}, 1)", False), ("\\sum_{k=1}^{4} k", False), ("5!", False),
    ("\\begin{pmatrix} 1 & 2 \\end{pmatrix}", False),
])
def test_cost_screen(text, costly):
    """What may not reach math-verify (its evaluation could not finish) -- and what must."""
    from r1core.rewards.expr import too_costly
    assert too_costly(text) is costly


@pytest.mark.skipif(not HAVE_MV, reason="math-verify is not installed")
def test_hostile_answers_never_reach_math_verify():
    from r1core.rewards.pool import get_pool
    pool = get_pool()
    pool.warm()
    before = pool.restarts
    for text in ("\\boxed{1000000!}", "\\boxed{2**2**2**2**2**2}", "\\boxed{(1, 9^{9^{9^9}})}"):
        for backend in ("auto", "math_verify"):
            assert accuracy(text, answer="x^2", backend=backend) == 0.0
    assert pool.restarts == before  # screened out: no worker had to be killed
