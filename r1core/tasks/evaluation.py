"""Evaluation as the R1 paper reports it: pass@1 averaged over k samples, the unbiased pass@k
estimator, and cons@k (majority vote over the extracted, normalised final answers).

Shapes: Q questions, K samples per question; `correct_QK[q][j]` says whether sample j of question q
is right.

pass@k (Chen et al. 2021, "Evaluating Large Language Models Trained on Code"): with n samples of
which c are right, the chance that k drawn without replacement contain a right one is
    1 - C(n-c, k) / C(n, k) = 1 - prod_{i=n-c+1..n} (1 - k / i),
the product form avoids the huge binomials; it is 1 exactly when n - c < k.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Hashable, Sequence


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one question with n samples, c of them correct."""
    for name, v in (("n", n), ("c", c), ("k", k)):
        if isinstance(v, bool) or not isinstance(v, int):
            raise ValueError(f"{name}: expected an int, got {v!r}")
    if not (0 <= c <= n and 1 <= k <= n):
        raise ValueError(f"pass_at_k: need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    miss = 1.0
    for i in range(n - c + 1, n + 1):
        miss *= 1.0 - k / i
    return 1.0 - miss


def _check_matrix(correct_QK: Sequence[Sequence[Any]]) -> list[list[bool]]:
    rows = [[bool(x) for x in row] for row in correct_QK]
    if not rows or any(len(r) == 0 for r in rows):
        raise ValueError("correct: expected at least one question with at least one sample each")
    return rows


def mean_pass_at_k(correct_QK: Sequence[Sequence[Any]], k: int) -> float:
    """pass@k averaged over questions (each question may have its own number of samples >= k)."""
    rows = _check_matrix(correct_QK)
    return sum(pass_at_k(len(r), sum(r), k) for r in rows) / len(rows)


def pass_at_1(correct_QK: Sequence[Sequence[Any]]) -> float:
    """The R1 paper's pass@1: each question's share of correct samples, averaged over questions."""
    return mean_pass_at_k(correct_QK, 1)


def majority_vote(keys: Sequence[Hashable | None]) -> int | None:
    """Index of the first sample holding the most common non-None key (ties: the key seen first);
    None when no sample has an answer."""
    counts = Counter(k for k in keys if k is not None)
    if not counts:
        return None
    best = max(counts.values())
    for i, k in enumerate(keys):
        if k is not None and counts[k] == best:
            return i
    return None  # unreachable


def cons_at_k(keys_QK: Sequence[Sequence[Hashable | None]], correct_QK: Sequence[Sequence[Any]]) -> float:
    """Share of questions whose majority answer is correct (keys: canonical final answers, None for
    no answer; a question where no sample answers counts as wrong)."""
    rows = _check_matrix(correct_QK)
    if len(keys_QK) != len(rows) or any(len(a) != len(b) for a, b in zip(keys_QK, rows)):
        raise ValueError("keys and correct: expected the same [Q, K] shape")
    right = 0
    for keys, correct in zip(keys_QK, rows):
        i = majority_vote(keys)
        right += i is not None and correct[i]
    return right / len(rows)


def evaluate(task: Any, examples: Sequence[Any], completions_QK: Sequence[Sequence[Any]], *,
             ks: Sequence[int] = (1,), unmarked: str | None = None) -> dict[str, float]:
    """pass@1, pass@k for each k in `ks` and cons@K of K samples per example, judged by the task's
    correctness reward (== 1 means right) and voting over canonical final answers.  Examples of a
    mixture (extra "subtask") also give "pass@1/<task>" per task.  `unmarked` (accuracy's option,
    e.g. "last" for `r1core eval`) applies to judging and voting alike; None keeps the rewards' default."""
    from r1core.rewards import answer_key, score
    if len(completions_QK) != len(examples):
        raise ValueError(f"completions: expected one list per example ({len(examples)}), got {len(completions_QK)}")
    flat = [c for comps in completions_QK for c in comps]
    rows = [ex.columns() for ex, comps in zip(examples, completions_QK) for _ in comps]
    cols = {k: [r.get(k) for r in rows] for k in sorted({k for r in rows for k in r})}
    if unmarked is not None:
        cols["unmarked"] = unmarked
    values = score({task.correctness: 1.0}, flat, **cols).per_reward[:, 0].tolist() if flat else []
    correct, at = [], 0
    for comps in completions_QK:
        correct.append([v >= 1.0 for v in values[at:at + len(comps)]])
        at += len(comps)
    keys = [[answer_key(c, *(() if unmarked is None else (unmarked,))) for c in comps] for comps in completions_QK]
    samples = min(len(r) for r in correct) if correct else 0
    out = {"questions": float(len(examples)), "samples": float(samples), "pass@1": pass_at_1(correct)}
    for k in ks:
        if k != 1:
            out[f"pass@{k}"] = mean_pass_at_k(correct, k)
    out[f"cons@{samples}"] = cons_at_k(keys, correct)
    subtasks = [(getattr(ex, "extra", None) or {}).get("subtask") for ex in examples]   # (stand-ins may lack extra)
    for name in sorted({s for s in subtasks if s is not None}):
        out[f"pass@1/{name}"] = pass_at_1([c for c, s in zip(correct, subtasks) if s == name])
    return out
