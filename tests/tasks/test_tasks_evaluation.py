"""pass@k against brute-force enumeration, pass@1, majority vote / cons@k, evaluate()."""
import itertools
import math
import random

import pytest

from r1core.tasks import cons_at_k, evaluate, get_task, majority_vote, mean_pass_at_k, pass_at_1, pass_at_k


def brute_pass_at_k(n, c, k):
    outcomes = [True] * c + [False] * (n - c)
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(outcomes[i] for i in s) for s in subsets) / len(subsets)


@pytest.mark.parametrize("n", [1, 2, 5, 9])
def test_pass_at_k_matches_enumeration(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert pass_at_k(n, c, k) == pytest.approx(brute_pass_at_k(n, c, k), abs=1e-12)


def test_pass_at_k_large_n_is_stable():
    # C(1000, 500) overflows a float; the product form does not
    want = 1 - math.comb(900, 500) / math.comb(1000, 500)
    assert pass_at_k(1000, 100, 500) == pytest.approx(want, rel=1e-9)
    assert pass_at_k(64, 0, 64) == 0.0 and pass_at_k(64, 1, 64) == 1.0
    assert pass_at_k(10, 3, 1) == pytest.approx(0.3)


def test_pass_at_k_errors():
    for args in [(5, 6, 1), (5, 2, 0), (5, 2, 6), (-1, 0, 1), (5.0, 2, 1)]:
        with pytest.raises(ValueError):
            pass_at_k(*args)
    with pytest.raises(ValueError):
        pass_at_1([])


def test_pass_at_1_is_the_mean_correctness():
    rng = random.Random(0)
    rows = [[rng.random() < 0.3 for _ in range(8)] for _ in range(20)]
    assert pass_at_1(rows) == pytest.approx(sum(map(sum, rows)) / 160)
    assert mean_pass_at_k(rows, 8) == pytest.approx(sum(any(r) for r in rows) / 20)


def test_majority_vote_and_cons():
    assert majority_vote(["a", "b", "b", None, None, None]) == 1
    assert majority_vote(["a", "b", "a", "b"]) == 0          # ties: the answer seen first
    assert majority_vote([None, None]) is None
    keys = [["=2", "=3", "=2"], ["=5", "=5", "=1"], [None, None, None]]
    correct = [[True, False, True], [False, False, True], [False, False, False]]
    assert cons_at_k(keys, correct) == pytest.approx(1 / 3)
    with pytest.raises(ValueError, match="shape"):
        cons_at_k(keys[:2], correct)


def test_evaluate_votes_over_equivalent_answers():
    task = get_task("word_problems")
    exs = task.test(2)
    a0, a1 = exs[0].answer, exs[1].answer
    comps = [
        # the right answer spelt three ways outvotes two wrong answers that agree with each other
        [f"\\boxed{{{a0}}}", f"<answer>{a0}.0</answer>", f"the answer is {int(a0):,}", "\\boxed{-1}", "\\boxed{-1}"],
        ["\\boxed{-1}", "\\boxed{-1}", f"\\boxed{{{a1}}}", "no answer", "no answer"],
    ]
    out = evaluate(task, exs, comps, ks=(1, 5))
    assert out["pass@1"] == pytest.approx((3 / 5 + 1 / 5) / 2)
    assert out["pass@5"] == 1.0
    assert out["cons@5"] == 0.5
    assert out["questions"] == 2 and out["samples"] == 5


def test_cons_votes_over_the_answers_pass_at_1_judges():
    """A bare answer (no tag, no box) is right for the accuracy reward's default unmarked="bare", so
    it must be a vote too: a model that answers "85" every time has cons@k = pass@1 = 1, not 0."""
    task = get_task("arithmetic", digits=2, ops="+")
    exs = task.test(3)
    comps = [[f"{ex.answer}"] * 3 + [f"{int(ex.answer) + 1}"] for ex in exs]
    out = evaluate(task, exs, comps)
    assert out["pass@1"] == pytest.approx(0.75)
    assert out["cons@4"] == 1.0
    # an answer buried in prose is not bare: neither right nor a vote
    prose = [[f"I think it might be {ex.answer} or so, hard to say"] * 4 for ex in exs]
    out = evaluate(task, exs, prose)
    assert out["pass@1"] == 0.0 and out["cons@4"] == 0.0


def test_answer_key_options():
    from r1core.rewards import RewardOptionError, answer_key
    assert answer_key("85") == answer_key("<answer>85</answer>") == answer_key("\\boxed{85.0}")
    assert answer_key("85", unmarked="none") is None
    assert answer_key("so we get 85", unmarked="last") == answer_key("85")
    with pytest.raises(RewardOptionError, match="unmarked"):
        answer_key("85", unmarked="bogus")


def test_evaluate_unmarked_policy_reaches_judging_and_voting():
    from r1core.tasks import evaluate, get_task
    task = get_task("arithmetic", digits=1, ops="+")
    ex = task.test(1)
    prose = [[f"so the total comes to {ex[0].answer} in the end"]]
    assert evaluate(task, ex, prose)["pass@1"] == 0.0          # the training default: no marker, no answer
    result = evaluate(task, ex, prose, unmarked="last")
    assert result["pass@1"] == 1.0 and result["cons@1"] == 1.0
