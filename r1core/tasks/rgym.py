"""reasoning-gym generators as r1core tasks: get_task("reasoning_gym:<name>", **generator_options).

    task = get_task("reasoning_gym:leg_counting", max_animals=5)   # options: the generator's config fields
    task.train(64, seed=0); task.test(128)                          # as every r1core task

Needs the optional extra `tasks` (reasoning-gym).  A problem is reasoning-gym's item 0 of the dataset
seeded s (so it depends on (name, options, s) only); s runs through a stream seeded by our seed.
Train and held-out are split by the hash of the question text, as generated.py does, so they are
disjoint by construction and test(n) is a prefix of test(n + 1).  Generation runs in a killable
reward worker (r1core.rewards.rgym): a generator that raises or hangs loses that problem, not the
run.  Correctness is reasoning-gym's own verifier (the reward "reasoning_gym"), the answer read from
R1's <answer>…</answer>; `answer` also holds the gold string, so r1core's accuracy reward applies too.
"""
from __future__ import annotations

import dataclasses
import random
from typing import Any

from r1core.tasks.base import Task, check_count, register_task
from r1core.tasks.split import check_fraction, is_test

_TASK_KW = ("template", "tokenizer", "system", "reward_weights")
_RESERVED = ("seed", "size")         # ours to set: the split and the stream depend on them
_MAX_MISSES = 20_000                 # consecutive draws that add nothing before a split is exhausted
_MAX_FAILURES = 200                  # seeds whose generator raised or hung before we give up on it
_CHUNK_TIMEOUT = 10.0                # s per generation request (+ _ITEM_TIMEOUT per seed): generous,
_ITEM_TIMEOUT = 0.1                  #   so machine load never changes which problems exist


class MissingExtraError(ImportError, ValueError):
    """reasoning-gym is not installed (a ValueError too, so the CLI prints it as one line)."""


def _registry() -> dict:
    from r1core.rewards import rgym
    if not rgym.available():
        raise MissingExtraError(rgym.EXTRA_HINT)
    from reasoning_gym.factory import DATASETS
    return DATASETS


def dataset_names() -> list[str]:
    """Every reasoning-gym generator name (needs the extra)."""
    return sorted(_registry())


def check_options(name: str, options: dict) -> dict:
    """`options` validated by the generator's own config class; ValueError naming the bad one."""
    datasets = _registry()
    if name not in datasets:
        raise ValueError(f"task: unknown reasoning-gym task {name!r}; have "
                         f"{', '.join('reasoning_gym:' + n for n in sorted(datasets))}")
    _, config_cls = datasets[name]
    fields = [f.name for f in dataclasses.fields(config_cls) if f.name not in _RESERVED]
    for k in options:
        if k in _RESERVED:
            raise ValueError(f"reasoning_gym:{name}: option {k!r} is set by r1core (the split and seeds); "
                             f"use run.seed / test_fraction")
        if k not in fields:
            raise ValueError(f"reasoning_gym:{name}: unknown option {k!r}; have {fields}")
    try:
        config = config_cls(**options)
        if hasattr(config, "validate"):
            config.validate()
    except Exception as e:  # noqa: BLE001  (its asserts and TypeErrors: bad options, said as such)
        raise ValueError(f"reasoning_gym:{name}: bad options {options}: {type(e).__name__}: {e}") from None
    return dict(options)


class ReasoningGymTask(Task):
    """One reasoning-gym generator, judged by its score_answer (binary: 1 only for a full score)."""

    default_weights = {"reasoning_gym": 1.0, "format": 0.1}
    correctness = "reasoning_gym"

    def __init__(self, dataset: str, *, test_fraction: float = 0.1, **kw: Any):
        task_kw = {k: kw.pop(k) for k in _TASK_KW if k in kw}
        super().__init__(**task_kw)
        self.dataset = dataset
        self.options = check_options(dataset, kw)
        self.name = f"reasoning_gym:{dataset}"
        self.test_fraction = check_fraction(test_fraction)
        from r1core.rewards import rgym
        rgym.preload()   # workers import reasoning_gym before "ready", outside any time limit

    def knobs(self) -> str:
        return repr(sorted(self.options.items()))

    chunk_timeout = _CHUNK_TIMEOUT   # (class attributes: tests of a hanging generator lower them)
    item_timeout = _ITEM_TIMEOUT

    def _generate(self, seeds: list[int]) -> list[dict | None]:
        from r1core.rewards import rgym
        out = rgym.generate(self.dataset, self.options, seeds, timeout=self.chunk_timeout + self.item_timeout * len(seeds))
        if out is not None:
            return out
        # the chunk failed or hung: one seed at a time, so only the bad seeds are lost
        return [(rgym.generate(self.dataset, self.options, [s], timeout=self.chunk_timeout) or [None])[0]
                for s in seeds]

    def _stream(self, n: int, seed: Any, held_out: bool, distinct: bool) -> list:
        rng = random.Random(f"{self.name}|{self.knobs()}|{seed}")
        out, seen, misses, failures = [], set(), 0, 0
        while len(out) < n and misses < _MAX_MISSES:
            want = n - len(out)
            chunk = min(512, max(16, int(want * 1.5 / (self.test_fraction if held_out else 1 - self.test_fraction))))
            for entry in self._generate([rng.randrange(2**31) for _ in range(chunk)]):
                if len(out) == n:
                    break
                if entry is None:
                    failures += 1
                    misses += 1
                    if failures > _MAX_FAILURES:
                        raise ValueError(f"{self.name}: the generator failed (raised or hung) on {failures} "
                                         f"seeds with options {self.options}")
                    continue
                key = entry["question"]
                if is_test(key, self.test_fraction, salt=self.name) != held_out or (distinct and key in seen):
                    misses += 1
                    continue
                misses = 0
                seen.add(key)
                answer = entry["answer"]
                out.append(self.example(entry["question"], "" if answer is None else str(answer),
                                        rg_name=self.dataset, rg_options=self.options, rg_entry=entry))
        if len(out) < n:
            split = "held-out" if held_out else "train"
            raise ValueError(f"{self.name}: could only draw {len(out)} distinct {split} problems with options "
                             f"{self.options}; ask for fewer or make the task harder")
        return out

    def train(self, n: int, seed: int = 0) -> list:
        """`n` training problems for this seed (problems may repeat; none is a test problem)."""
        return self._stream(check_count(n), seed, held_out=False, distinct=False)

    def test(self, n: int | None = None) -> list:
        """The first `n` held-out problems (distinct; fixed, whatever seed training uses)."""
        n = check_count(n, allow_none=True)
        return self._stream(100 if n is None else n, "test", held_out=True, distinct=True)


register_task("reasoning_gym", ReasoningGymTask, family=True)
