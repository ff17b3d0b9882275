"""countdown: each given number at most once, exact value equals the target, our own parser."""
from fractions import Fraction

import pytest

from r1core.rewards import countdown, evaluate_expression
from r1core.rewards.countdown import CountdownError

NUMS, TARGET = [25, 5, 4, 3], 26


def ans(expr: str) -> str:
    return f"<think>try</think><answer>{expr}</answer>"


@pytest.mark.parametrize("expr,want", [
    ("25 + 4 - 3", 1.0),
    ("(25 + 5) - 4", 1.0),
    ("25 + 5 / 5", 0.0),                 # 5 used twice
    ("25 * 4 / (3 + 5) * 2", 0.0),       # 2 is not given
    ("25 + 4 - 3 = 26", 1.0),            # an equation whose right side is the target
    ("26 = 25 + 4 - 3", 1.0),
    ("25 + 4 - 3 = 27", 0.0),            # wrong claimed target
    ("25 + 5 - 4", 1.0),                 # another right answer
    ("(25 - 5) / 4 + 3 * 7", 0.0),       # 7 not given
    ("25 + 4 / 4", 0.0),                 # 4 reused
    ("(5 - 3) * (25 - 4) / 2", 0.0),     # 2 not given
    ("25 + 3 * (5 - 4)", 0.0),           # = 28
    ("25 \\times 4 / 4", 0.0),           # reuse via LaTeX operator
    ("[25 + (5 - 4)]", 1.0),             # brackets are parentheses
    ("25 + 4 - 3 + 0", 0.0),             # 0 not given
    ("-3 + 25 + 4", 0.0),                # no unary minus
    ("25 + 4 - 3;", 0.0),                # invalid character
    ("25 + 4 - 3 import os", 0.0),
    ("25 + 4 − 3", 1.0),                 # Unicode minus
    ("25 ++ 4", 0.0),
    ("", 0.0),
])
def test_countdown_cases(expr, want):
    assert countdown(ans(expr), numbers=NUMS, target=TARGET) == want


def test_countdown_division_is_exact_and_zero_is_wrong():
    assert countdown(ans("7 / 2 * 2"), numbers=[7, 2, 2], target=7) == 1.0
    assert countdown(ans("(7 / 2) * 4"), numbers=[7, 2, 4], target=14) == 1.0
    assert countdown(ans("7 / 2"), numbers=[7, 2], target=3) == 0.0      # 3.5, not 3
    assert countdown(ans("7 / (2 - 2)"), numbers=[7, 2, 2], target=1) == 0.0


def test_countdown_use_all_and_duplicates():
    assert countdown(ans("25 + 4 - 3"), numbers=NUMS, target=TARGET, use_all=True) == 0.0
    assert countdown(ans("25 + 5 - 4"), numbers=NUMS, target=TARGET, use_all=False) == 1.0
    assert countdown(ans("(25 + 5) - 4 + 3 - 3"), numbers=[25, 5, 4, 3, 3], target=26, use_all=True) == 1.0
    assert countdown(ans("3 + 3"), numbers=[3], target=6) == 0.0


def test_countdown_no_answer_and_boxed():
    assert countdown("25 + 4 - 3", numbers=NUMS, target=TARGET) == 0.0
    assert countdown("\\boxed{25 + 4 - 3}", numbers=NUMS, target=TARGET) == 1.0


def test_evaluate_expression():
    assert evaluate_expression("(1 + 2) * 3 / 4") == (Fraction(9, 4), [1, 2, 3, 4])
    for bad in ("1 +", "(1 + 2", "1 2", "1 ** 2", "1.5 + 2", "(" * 40 + "1" + ")" * 40, "1" * 13, "x"):
        with pytest.raises(CountdownError):
            evaluate_expression(bad)
