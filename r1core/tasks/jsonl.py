"""GSM8K/MATH-style JSONL records -> (question, final answer) pairs, and the dataset task over them.

A record is one JSON object per line with a question (`question`, else `problem`) and an answer
(`answer`, else `solution`).  The final answer is what follows the last "####" (GSM8K: worked
solution, then "#### 72"; thousands separators dropped), else the last \\boxed{…} (MATH
solutions), else the whole answer text stripped.  Bad files fail loudly with file:line.
"""
from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

from r1core.tasks.base import Example, Task, check_count, register_task
from r1core.tasks.split import check_fraction, is_test

QUESTION_KEYS = ("question", "problem")
ANSWER_KEYS = ("answer", "solution")
DATA_DIR = Path(__file__).resolve().parent / "data"


def final_answer(answer: str) -> str:
    """The final answer inside a reference answer: after the last "####", else the last \\boxed{…}."""
    if "####" in answer:
        return answer.rsplit("####", 1)[1].strip().replace(",", "")
    from r1core.rewards.extract import last_boxed
    boxed = last_boxed(answer)
    return boxed.strip() if boxed is not None else answer.strip()


def _pick(record: dict, keys: tuple[str, ...], wanted: str | None, where: str) -> str:
    names = (wanted,) if wanted else keys
    for k in names:
        if k in record:
            value = record[k]
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str):
                raise ValueError(f"{where}: {k!r} must be a string, got {type(value).__name__}")
            return value
    raise ValueError(f"{where}: missing {' or '.join(repr(k) for k in names)} (have keys {sorted(record)})")


def load_jsonl(path: str | Path, *, question_key: str | None = None, answer_key: str | None = None,
               ) -> list[dict[str, Any]]:
    """Read records -> [{"question", "answer" (final), "solution" (raw answer text), **other keys}]."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path: no JSONL file at {path}")
    out: list[dict[str, Any]] = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}:{lineno}"
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: invalid JSON ({e.msg} at column {e.colno})") from None
            if not isinstance(record, dict):
                raise ValueError(f"{where}: expected a JSON object, got {type(record).__name__}")
            question = _pick(record, QUESTION_KEYS, question_key, where)
            raw = _pick(record, ANSWER_KEYS, answer_key, where)
            answer = final_answer(raw)
            if not question.strip() or not answer:
                raise ValueError(f"{where}: empty question or final answer")
            extra = {k: v for k, v in record.items() if k not in QUESTION_KEYS + ANSWER_KEYS}
            out.append({**extra, "question": question, "answer": answer, "solution": raw})
    if not out:
        raise ValueError(f"path: {path} holds no records")
    return out


class JsonlTask(Task):
    """Problems from a JSONL file.  The held-out split is `test_path` when given, else the records
    whose question hashes under `test_fraction`."""

    name = "jsonl"

    def __init__(self, *, path: str | Path, test_path: str | Path | None = None, test_fraction: float = 0.1,
                 question_key: str | None = None, answer_key: str | None = None, **kw: Any):
        super().__init__(**kw)
        records = load_jsonl(path, question_key=question_key, answer_key=answer_key)
        if test_path is not None:
            self._train, self._test = records, load_jsonl(test_path, question_key=question_key,
                                                          answer_key=answer_key)
        else:
            frac = check_fraction(test_fraction)
            self._train = [r for r in records if not is_test(r["question"], frac, salt="jsonl")]
            self._test = [r for r in records if is_test(r["question"], frac, salt="jsonl")]
        if not self._train:
            raise ValueError(f"path: {path} leaves no training record after the held-out split")
        self.path = str(path)

    def _example(self, r: dict) -> Example:
        return self.example(r["question"], r["answer"])

    def train(self, n: int, seed: int = 0) -> list[Example]:
        """`n` records: a seeded shuffle of the train split, reshuffled each pass when n is larger."""
        n = check_count(n)
        rng = random.Random(f"{self.name}|{seed}")
        out: list[Example] = []
        while len(out) < n:
            order = list(range(len(self._train)))
            rng.shuffle(order)
            out.extend(self._example(self._train[i]) for i in order[: n - len(out)])
        return out

    def test(self, n: int | None = None) -> list[Example]:
        """The first `n` held-out records in file order (all of them when n is None)."""
        n = check_count(n, allow_none=True)
        return [self._example(r) for r in self._test[:n]]


class WordProblemsTask(JsonlTask):
    """The 20 small arithmetic word problems shipped in tasks/data/ (tests, the default run)."""

    name = "word_problems"

    def __init__(self, *, test_fraction: float = 0.25, **kw: Any):
        super().__init__(path=DATA_DIR / "word_problems.jsonl", test_fraction=test_fraction, **kw)


register_task("jsonl", JsonlTask)
register_task("gsm8k", JsonlTask)
register_task("word_problems", WordProblemsTask)
