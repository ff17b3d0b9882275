"""The table of answer-equivalence decisions (docs/rewards.md lists them): positive and negative
cases for numbers, fractions, LaTeX, units, percentages, intervals, sets and expressions."""
import pytest

from r1core.rewards import accuracy, is_equivalent, normalize

# (prediction, reference, equal?) — the prediction is the extracted answer
TABLE = [
    # numbers and fractions
    ("0.5", "\\frac{1}{2}", True),
    ("1/2", "\\frac{1}{2}", True),
    ("\\dfrac{1}{2}", "0.5", True),
    ("\\tfrac12", "1/2", True),
    ("\\frac12", "0.5", True),
    (".5", "0.5", True),
    ("0.50", "1/2", True),
    ("2/4", "1/2", True),
    ("-\\frac{3}{4}", "-0.75", True),
    ("\\frac{-3}{4}", "-0.75", True),
    ("0.333", "\\frac{1}{3}", False),
    ("0.5", "0.05", False),
    ("1/3", "3", False),
    ("3", "-3", False),
    ("+3", "3", True),
    ("3.0", "3", True),
    ("003", "3", True),
    # thousands separators, scientific notation
    ("1,000", "1000", True),
    ("1,234,567", "1234567", True),
    ("1,000.5", "1000.5", True),
    ("1,00", "100", False),
    ("1.5e3", "1500", True),
    ("1.5\\times10^{3}", "1500", True),
    ("2.5 \\cdot 10^{-2}", "0.025", True),
    ("10^{3}", "1000", True),
    ("2^{10}", "1024", True),
    ("1e3", "100", False),
    # assignments, delimiters, LaTeX noise
    ("x = 3", "3", True),
    ("x=3", "x = 3", True),
    ("3", "y=3", True),
    ("x = 4", "3", False),
    ("$3$", "3", True),
    ("\\(7\\)", "7", True),
    ("\\left(2\\right)", "2", True),
    ("\\text{5}", "5", True),
    ("\\mathbf{12}", "12", True),
    ("42.", "42", True),
    # units and currency
    ("5 cm", "5", True),
    ("5cm", "5", True),
    ("12 apples", "12", True),
    ("\\text{12 apples}", "12", True),
    ("3 hours", "3", True),
    ("\\$18", "18", True),
    ("$18.00", "18", True),
    ("90^\\circ", "90", True),
    ("90°", "90", True),
    ("5 cm", "6", False),
    # percentages: "p%" stands for p or p/100 (documented decision)
    ("50\\%", "50", True),
    ("50%", "0.5", True),
    ("50%", "50%", True),
    ("0.5", "50", False),
    ("50%", "5", False),
    # intervals, tuples, sets, lists
    ("(1, 2)", "(1,2)", True),
    ("[1, 2)", "[1,2)", True),
    ("(1, 2]", "[1, 2]", False),
    ("(0.5, 1)", "(\\frac{1}{2}, 1)", True),
    ("(1, 2)", "(2, 1)", False),
    ("\\{1, 2\\}", "\\{2, 1\\}", True),
    ("1, 2", "2, 1", True),
    ("1, 2", "1, 2, 3", False),
    ("x \\in [1, 2]", "[1,2]", True),
    ("(-\\infty, 1) \\cup (2, \\infty)", "(-\\infty,1)\\cup(2,\\infty)", True),
    ("(-\\infty, 1) \\cup (2, \\infty)", "(-\\infty, 1)", False),
    # expressions (sympy in the worker)
    ("2x + 2", "2(x+1)", True),
    ("x^2 - 1", "(x-1)(x+1)", True),
    ("x^2 + 1", "(x+1)^2", False),
    ("\\frac{\\sqrt{2}}{2}", "\\frac{1}{\\sqrt{2}}", True),
    ("\\sqrt{8}", "2\\sqrt{2}", True),
    ("\\sqrt{2}", "1.41421356", False),
    ("2\\pi", "\\pi \\cdot 2", True),
    ("\\pi", "3.14159", False),
    ("\\frac{\\pi}{2}", "\\pi/2", True),
    ("3+4i", "4i+3", True),
    ("\\sin^2 x + \\cos^2 x", "1", True),
    ("e^{2}", "e^2", True),
    ("\\log_2 8", "3", True),
    ("\\sqrt[3]{27}", "3", True),
    ("x_1 + x_2", "x_2 + x_1", True),
    ("a+b", "a-b", False),
    # text answers
    ("Yes", "yes", True),
    ("\\text{(A)}", "(A)", True),
    ("B", "C", False),
    ("", "3", False),
]


@pytest.mark.parametrize("pred,ref,same", TABLE, ids=[f"{i}:{p}|{r}" for i, (p, r, _) in enumerate(TABLE)])
def test_equivalence_table(pred, ref, same):
    assert is_equivalent(pred, ref) is same
    assert accuracy(f"<think>work</think> The result is \\boxed{{{pred}}}.", answer=ref) == (1.0 if same else 0.0)


def test_table_has_no_duplicate_or_contradictory_rows():
    """A pair listed twice (either order) is a copy-paste slip, and with two answers a contradiction."""
    seen = {}
    for pred, ref, same in TABLE:
        key = frozenset((pred, ref))
        assert key not in seen, f"{pred!r} | {ref!r} listed twice" + (" with opposite answers" if seen[key] != same else "")
        seen[key] = same


def test_equivalence_is_symmetric_on_the_table():
    for pred, ref, same in TABLE:
        if pred:
            assert is_equivalent(ref, pred) is same, (pred, ref)


@pytest.mark.parametrize("raw,canon", [
    ("$\\dfrac{1}{2}$", "\\frac{1}{2}"), ("1,000,000", "1000000"), ("x = 3", "3"), ("\\$1,000.50", "1000.50"),
    ("\\left( 1,2 \\right)", "(1,2)"), ("50\\%", "50%"), ("\\text{\\textbf{5}}", "5"), ("3.", "3"),
])
def test_normalize(raw, canon):
    assert normalize(raw) == canon


def test_reference_with_gsm8k_marker_and_boxed_solution():
    assert accuracy("\\boxed{72}", answer="She sold 48/2 = 24 clips... 48+24 = 72\n#### 72") == 1.0
    assert accuracy("\\boxed{1,072}", answer="#### 1,072") == 1.0
    assert accuracy("\\boxed{\\frac{1}{2}}", answer="so the answer is $\\boxed{\\dfrac12}$.") == 1.0
    assert accuracy("\\boxed{3}", answer=3) == 1.0
