"""Verifier edge cases by kind (written for r1core; the kinds are those of issue 15): each row is
(kind, completion, gold, expected verdict).  Expected verdicts are mathematical truth as a grader
would mark it, not any checker's output; a "False" row is a wrong answer that must never score 1.
Used by tests/rewards/test_rewards_kinds.py and benches/bench_rewards.py (agreement per backend)."""

# (kind, completion, gold, right?)
TABLE = [
    # several boxes in the prediction: consecutive boxes joined by and / , / or are one list answer
    ("boxes_pred", "The solutions are \\boxed{(1, 3)} and \\boxed{(5, 2)}.", "$(1,3),(5,2)$", True),
    ("boxes_pred", "So $x=\\boxed{-1}$ or $x=\\boxed{4}$.", "-1, 4", True),
    ("boxes_pred", "\\boxed{7}, \\boxed{2}, \\boxed{9}", "$2, 7, 9$", True),
    ("boxes_pred", "\\boxed{1} and \\boxed{5}", "$1, 4$", False),
    ("boxes_pred", "\\boxed{1}, \\boxed{4}, \\boxed{6}", "$1, 4$", False),
    ("boxes_pred", "First I got \\boxed{4}. Checking again, the answer is \\boxed{9}.", "9", True),
    ("boxes_pred", "First I got \\boxed{9}. Checking again, the answer is \\boxed{4}.", "9", False),
    ("boxes_pred", "\\boxed{2} and \\boxed{3}", "2", False),
    # several boxes in the gold
    ("boxes_gold", "\\boxed{3, 8}", "$\\boxed{3}$ and $\\boxed{8}$", True),
    ("boxes_gold", "\\boxed{8} or \\boxed{3}", "\\boxed{3}, \\boxed{8}", True),
    ("boxes_gold", "\\boxed{3}", "$\\boxed{3}$ and $\\boxed{8}$", False),
    ("boxes_gold", "\\boxed{3, 9}", "\\boxed{3} and \\boxed{8}", False),
    # labelled answers whose left side is not one variable
    ("labelled", "\\boxed{(4,1)}", "$(m,n)=(4,1)$", True),
    ("labelled", "\\boxed{(m, n) = (4, 1)}", "(4,1)", True),
    ("labelled", "\\boxed{-3}", "$g(2)=-3$", True),
    ("labelled", "\\boxed{12}", "$a+b=12$", True),
    ("labelled", "\\boxed{(1,4)}", "$(m,n)=(4,1)$", False),
    ("labelled", "\\boxed{3}", "$g(2)=-3$", False),
    ("labelled", "\\boxed{2}", "$f(2)=5$", False),
    # answers joined by and / or / semicolons
    ("joined", "\\boxed{x=2 \\text{ or } x=-5}", "-5, 2", True),
    ("joined", "\\boxed{3; 11}", "$3, 11$", True),
    ("joined", "\\boxed{4 \\text{ and } 9}", "9, 4", True),
    ("joined", "\\boxed{3}", "$3$ and $11$", False),
    ("joined", "\\boxed{3}", "3 or 11", False),
    ("joined", "\\boxed{3; 12}", "$3, 11$", False),
    # inequalities and relations
    ("inequality", "\\boxed{x \\geq 7}", "$7 \\leq x$", True),
    ("inequality", "\\boxed{y < -2}", "$-2 > y$", True),
    ("inequality", "\\boxed{x \\leq 7}", "$x \\geq 7$", False),
    ("inequality", "\\boxed{x < 7}", "$x \\leq 7$", False),
    ("inequality", "\\boxed{x > 3}", "$x > 4$", False),
    # inequality vs interval
    ("ineq_interval", "\\boxed{(-1, 2)}", "$-1 < t < 2$", True),
    ("ineq_interval", "\\boxed{x > 5}", "$(5, \\infty)$", True),
    ("ineq_interval", "\\boxed{[-1, 2]}", "$-1 < t < 2$", False),
    ("ineq_interval", "\\boxed{x \\geq 5}", "$(5, \\infty)$", False),
    # equation chains and \approx: the last side counts
    ("chain", "\\boxed{6 \\cdot 7 = 42}", "42", True),
    ("chain", "\\boxed{\\frac{10}{4} = \\frac{5}{2} = 2.5}", "$\\frac52$", True),
    ("chain", "\\boxed{\\sqrt{2} \\approx 1.414}", "1.414", True),
    ("chain", "\\boxed{6 \\cdot 7 = 43}", "42", False),
    ("chain", "\\boxed{x = 3 + 4 = 8}", "7", False),
    # equivalent equations
    ("equation", "\\boxed{y = 3x - 2}", "$3x - y - 2 = 0$", True),
    ("equation", "\\boxed{x^2 + y^2 = 9}", "$y^2 + x^2 = 9$", True),
    ("equation", "\\boxed{y = 3x + 2}", "$y = 3x - 2$", False),
    ("equation", "\\boxed{x^2 + y^2 = 9}", "$x^2 + y^2 = 3$", False),
    # matrices in other environments
    ("matrix", "\\boxed{\\begin{bmatrix} 2 & 0 \\\\ 1 & 5 \\end{bmatrix}}", "$\\begin{pmatrix} 2 & 0 \\\\ 1 & 5 \\end{pmatrix}$", True),
    ("matrix", "\\boxed{\\begin{pmatrix} 1 \\\\ -3 \\end{pmatrix}}", "$\\begin{bmatrix} 1 \\\\ -3 \\end{bmatrix}$", True),
    ("matrix", "\\boxed{\\begin{bmatrix} 2 & 0 \\\\ 5 & 1 \\end{bmatrix}}", "$\\begin{pmatrix} 2 & 0 \\\\ 1 & 5 \\end{pmatrix}$", False),
    ("matrix", "\\boxed{\\begin{pmatrix} 1 \\\\ 3 \\end{pmatrix}}", "$\\begin{bmatrix} 1 \\\\ -3 \\end{bmatrix}$", False),
    # decimal commas (LaTeX {,} between digits that are not a group of three)
    ("decimal_comma", "\\boxed{2{,}75}", "2.75", True),
    ("decimal_comma", "\\boxed{0{,}5}", "$\\frac{1}{2}$", True),
    ("decimal_comma", "\\boxed{2{,}75}", "275", False),
    ("decimal_comma", "\\boxed{2.75}", "2.57", False),
    # LaTeX thousands separators
    ("thousands", "\\boxed{27{,}504}", "27504", True),
    ("thousands", "\\boxed{61,\\!238}", "61238", True),
    ("thousands", "\\boxed{1,000,000}", "$10^6$", True),
    ("thousands", "\\boxed{(31,415)}", "31415", False),
    ("thousands", "\\boxed{27{,}504}", "2750.4", False),
    ("thousands", "\\boxed{1,000,001}", "1000000", False),
    # units after a LaTeX value
    ("units", "\\boxed{12\\text{ meters}}", "12", True),
    ("units", "\\boxed{45 \\text{ km/h}}", "$45$", True),
    ("units", "\\boxed{7\\ \\mathrm{cm}^2}", "7", True),
    ("units", "\\boxed{12\\text{ meters}}", "13", False),
    ("units", "\\boxed{7}", "7 and 9", False),
    # \cfrac and sums
    ("cfrac_sum", "\\boxed{\\cfrac{3}{4}}", "0.75", True),
    ("cfrac_sum", "\\boxed{1 + \\cfrac{1}{2}}", "$\\frac{3}{2}$", True),
    ("cfrac_sum", "\\boxed{\\cfrac{3}{5}}", "0.75", False),
    ("cfrac_sum", "\\boxed{\\sum_{k=1}^{4} k}", "10", True),
    ("cfrac_sum", "\\boxed{\\sum_{k=1}^{4} k}", "11", False),
    # half-open intervals
    ("interval", "\\boxed{[2, 5)}", "$[2,5)$", True),
    ("interval", "\\boxed{(-\\infty, 3]}", "$(-\\infty,3]$", True),
    ("interval", "\\boxed{\\left( 0, \\frac{1}{2} \\right]}", "$(0, 0.5]$", True),
    ("interval", "\\boxed{(2, 5]}", "$[2,5)$", False),
    ("interval", "\\boxed{[2, 5]}", "$[2,5)$", False),
    # sets with duplicates or \pm
    ("set", "\\boxed{\\{2, 2, 3\\}}", "$\\{2, 3\\}$", True),
    ("set", "\\boxed{\\pm 3}", "$-3, 3$", True),
    ("set", "\\boxed{x = \\pm\\sqrt{5}}", "$\\sqrt{5}, -\\sqrt{5}$", True),
    ("set", "\\boxed{1 \\pm \\sqrt{2}}", "$1-\\sqrt{2}, 1+\\sqrt{2}$", True),
    ("set", "\\boxed{3}", "$\\pm 3$", False),
    ("set", "\\boxed{\\{2, 3, 4\\}}", "$\\{2, 3\\}$", False),
    ("set", "\\boxed{\\pm 2}", "$-3, 3$", False),
    # "answer is ..." with more text after it on the line
    ("answer_is", "Therefore, the answer is 14 because both cases agree.", "14", True),
    ("answer_is", "The final answer is $\\frac{2}{3}$. I hope it is correct.", "2/3", True),
    ("answer_is", "Answer: 8 apples, since each basket holds 2.", "8", True),
    ("answer_is", "The final answer is $\\frac{3}{2}$. I hope it is correct.", "2/3", False),
    ("answer_is", "Therefore, the answer is 15 because both cases agree.", "14", False),
    # no marker: evaluation mode (unmarked="last") reads the last expression
    ("no_marker", "Adding them up, the total comes to $56$.", "56", True),
    ("no_marker", "So there are 17 marbles left in the jar.", "17", True),
    ("no_marker", "We get $x = \\frac{1}{4}$", "0.25", True),
    ("no_marker", "Adding them up, the total comes to $57$.", "56", False),
    ("no_marker", "So there are 16 marbles left in the jar.", "17", False),
    # conventions: mixed numbers, named sets, a sentence inside the answer block
    ("convention", "\\boxed{2\\frac{1}{3}}", "$\\frac{7}{3}$", True),
    ("convention", "\\boxed{2\\frac{1}{3}}", "$\\frac{2}{3}$", False),
    ("convention", "\\boxed{(-\\infty, \\infty)}", "$\\mathbb{R}$", True),
    ("convention", "\\boxed{\\varnothing}", "$\\emptyset$", True),
    ("convention", "<answer>The total is 42 dollars</answer>", "42", True),
    ("convention", "<answer>It is 42, not 43</answer>", "43", False),
    ("convention", "<answer>It is 42, not 43</answer>", "42", False),
    # false positives reported against the old checker, and rounding traps
    ("trap", "\\boxed{(12,102)}", "12102", False),
    ("trap", "\\boxed{6}", "6 and 8", False),
    ("trap", "\\boxed{1}", "$1$ and $2$ and $3$", False),
    ("trap", "\\boxed{0.0000002}", "0.0000001", False),
    ("trap", "\\boxed{0.333333}", "$\\frac{1}{3}$", False),
    ("trap", "\\boxed{6.283185}", "$2\\pi$", False),
    ("trap", "\\boxed{\\{1, 2\\}}", "$(1, 2)$", False),
    ("trap", "\\boxed{1.0000001}", "1", False),
    ("trap", "\\boxed{x^2}", "$y^2$", False),
    ("trap", "\\boxed{-\\infty}", "$\\infty$", False),
]

KINDS = sorted({k for k, *_ in TABLE})
