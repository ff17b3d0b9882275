"""Final-answer extraction: the last complete \\boxed{…} (nested braces), else <answer>…</answer>,
else a final "answer is …"; bounded work on any text."""
import pytest

from r1core.rewards import answer_is, answer_tag, extract_answer, last_boxed, reference_answer
from r1core.rewards.extract import MAX_ANSWER_CHARS


@pytest.mark.parametrize("text,want", [
    ("so \\boxed{42}.", "42"),
    ("\\boxed{1} then \\boxed{2}", "2"),
    ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
    ("\\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),           # escaped set braces do not group
    ("\\boxed{a{b{c}d}e}", "a{b{c}d}e"),
    ("\\boxed 7 and more", "7"),
    ("\\fbox{5}", "5"),
    ("\\boxed{1} and \\boxed{2", "1"),              # the last box is unterminated: the previous one
    ("\\boxedx{3}", None),
    ("no box", None),
])
def test_last_boxed(text, want):
    assert last_boxed(text) == want


def test_answer_tag_and_answer_is():
    assert answer_tag("<think>x</think><answer> 12 </answer>") == " 12 "
    assert answer_tag("<answer>1</answer> <answer>2</answer>") == "2"
    assert answer_tag("<answer> 42") is None           # unterminated: no answer
    assert answer_is("Thus the final answer is 17.") == "17"
    assert answer_is("The answer is: **$3/4$**.\nDone") == "3/4"            # its math span
    assert answer_is("The answer is 5 because 5 is prime.") == "5"            # its sentence
    assert answer_is("Answer: $1$, $2$, or $3$ (all work)") == "1, 2, 3"      # joined spans: one list
    assert answer_is("Answer: 9") == "9"
    assert answer_is("nothing here") is None


def test_extract_priority():
    assert extract_answer("<answer>5</answer> \\boxed{6}") == "6"          # a box wins
    assert extract_answer("<answer> \\boxed{7} </answer>") == "7"
    assert extract_answer("the answer is 3 <answer>4</answer>") == "4"     # the tag beats "answer is"
    assert extract_answer("so the answer is 3") == "3"
    assert extract_answer("\\boxed{}  <answer>  </answer>") is None        # empty answers are none
    assert extract_answer("") is None


def test_bounds():
    assert last_boxed("\\boxed{" + "x" * (MAX_ANSWER_CHARS + 10) + "}") is None
    assert last_boxed("\\boxed{" * 10_000) is None
    assert extract_answer("\\boxed{" + "{" * 100_000 + "}" * 100_000 + "}") is None


@pytest.mark.parametrize("ref,want", [
    ("Natalia sold 48/2 = 24 clips.\n#### 72", "72"), ("#### 1,234", "1234"),
    ("The area is $\\boxed{\\frac{3}{4}}$.", "\\frac{3}{4}"), (" 5 ", "5"),
])
def test_reference_answer(ref, want):
    assert reference_answer(ref) == want
