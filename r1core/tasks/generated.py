"""Seeded problem generators: countdown, multi-digit arithmetic, chain sums.

Each generator draws one problem from a `random.Random`; `GeneratedTask` turns the draws into train
and held-out test examples.  Determinism: the stream depends only on (task, knobs, seed).  Splits:
a problem is held out iff the hash of its canonical key is below `test_fraction` (split.py), so
train and test are disjoint by construction and `test(n)` is a prefix of `test(n + 1)`.
"""
from __future__ import annotations

import random
from typing import Any

from r1core.tasks.base import Example, Task, check_count, register_task
from r1core.tasks.split import check_fraction, is_test

_MAX_MISSES = 20_000  # consecutive draws that add nothing before a split is declared exhausted


def _check_int(value: Any, name: str, lo: int, hi: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise ValueError(f"{name}: expected an int in [{lo}, {hi}], got {value!r}")
    return value


class GeneratedTask(Task):
    """A task whose problems come from `draw(rng) -> (key, question, answer, extra)`."""

    def __init__(self, *, test_fraction: float = 0.1, **kw: Any):
        super().__init__(**kw)
        self.test_fraction = check_fraction(test_fraction)

    def knobs(self) -> str:
        raise NotImplementedError

    def draw(self, rng: random.Random) -> tuple[str, str, str, dict]:
        raise NotImplementedError

    def _stream(self, n: int, seed: Any, held_out: bool, distinct: bool) -> list[Example]:
        rng = random.Random(f"{self.name}|{self.knobs()}|{seed}")
        out: list[Example] = []
        seen: set[str] = set()
        misses = 0
        while len(out) < n and misses < _MAX_MISSES:
            key, question, answer, extra = self.draw(rng)
            if is_test(key, self.test_fraction, salt=self.name) != held_out or (distinct and key in seen):
                misses += 1
                continue
            misses = 0
            seen.add(key)
            out.append(self.example(question, answer, **extra))
        if len(out) < n:
            split = "held-out" if held_out else "train"
            raise ValueError(f"{self.name}: could only draw {len(out)} distinct {split} problems with "
                             f"{self.knobs()}; ask for fewer or raise the difficulty")
        return out

    def train(self, n: int, seed: int = 0) -> list[Example]:
        """`n` training problems for this seed (problems may repeat; none is a test problem)."""
        return self._stream(check_count(n), seed, held_out=False, distinct=False)

    def test(self, n: int | None = None) -> list[Example]:
        """The first `n` held-out problems (distinct; fixed, whatever seed training uses)."""
        n = check_count(n, allow_none=True)
        return self._stream(100 if n is None else n, "test", held_out=True, distinct=True)


# ------------------------------------------------------------------------------------------------
class ArithmeticTask(GeneratedTask):
    """"What is 483 * 27?": two `digits`-digit operands, one operator from `ops`; division is exact."""

    name = "arithmetic"

    def __init__(self, *, digits: int = 3, ops: str = "+-*", **kw: Any):
        super().__init__(**kw)
        self.digits = _check_int(digits, "digits", 1, 18)
        if not isinstance(ops, str) or not ops or set(ops) - set("+-*/"):
            raise ValueError(f"ops: expected a non-empty string over '+-*/', got {ops!r}")
        self.ops = "".join(sorted(set(ops), key="+-*/".index))

    def knobs(self) -> str:
        return f"digits={self.digits} ops={self.ops}"

    def draw(self, rng):
        lo, hi = 10 ** (self.digits - 1) if self.digits > 1 else 0, 10 ** self.digits - 1
        op = rng.choice(self.ops)
        a, b = rng.randint(lo, hi), rng.randint(lo, hi)
        if op == "/":
            b = max(b, 1)
            a = b * rng.randint(lo, hi)  # exact division: the quotient has `digits` digits
        value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if op == "/" else 0}[op]
        expr = f"{a} {op} {b}"
        return expr, f"What is {expr}?", str(value), {}


class ChainSumTask(GeneratedTask):
    """"Compute 12 + 45 - 7 + 88.": `length` terms of `digits` digits, + (and - when `subtract`)."""

    name = "chain_sum"

    def __init__(self, *, length: int = 5, digits: int = 2, subtract: bool = True, **kw: Any):
        super().__init__(**kw)
        self.length = _check_int(length, "length", 2, 1000)
        self.digits = _check_int(digits, "digits", 1, 18)
        if not isinstance(subtract, bool):
            raise ValueError(f"subtract: expected a bool, got {subtract!r}")
        self.subtract = subtract

    def knobs(self) -> str:
        return f"length={self.length} digits={self.digits} subtract={self.subtract}"

    def draw(self, rng):
        lo, hi = 10 ** (self.digits - 1) if self.digits > 1 else 0, 10 ** self.digits - 1
        terms = [rng.randint(lo, hi) for _ in range(self.length)]
        signs = ["+"] + [rng.choice("+-") if self.subtract else "+" for _ in range(self.length - 1)]
        total = sum(t if s == "+" else -t for s, t in zip(signs, terms))
        expr = str(terms[0]) + "".join(f" {s} {t}" for s, t in zip(signs[1:], terms[1:]))
        return expr, f"Compute {expr}.", str(total), {}


class CountdownTask(GeneratedTask):
    """Countdown: reach `target` from `n_numbers` numbers in [1, max_number] with + - * /, each
    number at most once.  Every problem is solvable: the target is the value of a random expression
    over the numbers (all of them when `use_all`), with positive integer intermediate results."""

    name = "countdown"
    default_weights = {"countdown": 1.0, "format": 0.1}
    correctness = "countdown"

    def __init__(self, *, n_numbers: int = 4, max_number: int = 100, max_target: int = 1000,
                 use_all: bool = True, **kw: Any):
        super().__init__(**kw)
        self.n_numbers = _check_int(n_numbers, "n_numbers", 2, 8)
        self.max_number = _check_int(max_number, "max_number", 2, 10**6)
        self.max_target = _check_int(max_target, "max_target", 1, 10**12)
        if not isinstance(use_all, bool):
            raise ValueError(f"use_all: expected a bool, got {use_all!r}")
        self.use_all = use_all

    def knobs(self) -> str:
        return f"n={self.n_numbers} max={self.max_number} target<={self.max_target} all={self.use_all}"

    def _combine(self, rng, items: list[tuple[int, str]]) -> tuple[int, str]:
        items = list(items)
        while len(items) > 1:
            i, j = rng.sample(range(len(items)), 2)
            (a, ea), (b, eb) = items[i], items[j]
            if a < b:
                (a, ea), (b, eb) = (b, eb), (a, ea)
            choices = ["+", "*"] + (["-"] if a > b else []) + (["/"] if b > 1 and a % b == 0 else [])
            op = rng.choice(choices)
            value = {"+": a + b, "-": a - b, "*": a * b, "/": a // b if b else 0}[op]
            items = [x for k, x in enumerate(items) if k not in (i, j)] + [(value, f"({ea} {op} {eb})")]
        value, expr = items[0]
        return value, expr[1:-1] if expr.startswith("(") else expr

    def draw(self, rng):
        while True:
            numbers = [rng.randint(1, self.max_number) for _ in range(self.n_numbers)]
            used = numbers if self.use_all else rng.sample(numbers, rng.randint(2, self.n_numbers))
            target, solution = self._combine(rng, [(x, str(x)) for x in used])
            if 1 <= target <= self.max_target:
                break
        key = f"{sorted(numbers)}->{target}"
        question = (f"Using the numbers {numbers}, create an equation that equals {target}. You may use "
                    f"+, -, * and / and parentheses, and each number at most once. Write the expression "
                    f"alone in the answer, for example <answer> (1 + 2) / 3 </answer>")
        return key, question, solution, {"numbers": numbers, "target": target}


register_task("arithmetic", ArithmeticTask)
register_task("chain_sum", ChainSumTask)
register_task("countdown", CountdownTask)

