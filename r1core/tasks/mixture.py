"""A weighted mixture of tasks: get_task("mixture", tasks={"reasoning_gym:leg_counting": 2, "chain_sum": 1}).

Each entry of `tasks` is a weight (> 0) or {"weight": w, "args": {…the task's options…}}; config:
`task.mixture.<name>=<weight>` (and `task.mixture.<name>.args.<option>=…`).  train(n, seed) draws each
problem's task by weight (seeded), so a batch mixes tasks in those proportions; test(n) holds each task's
own held-out problems, n split by weight (at least one each), in a fixed interleaved order.

Rows are judged by their own task's correctness reward through the reward "routed" (each example
carries `correct_by` and `subtask`), so evaluation reports pass@1 overall and per task ("pass@1/<name>").
"""
from __future__ import annotations

import dataclasses
import math
import random
from typing import Any

from r1core.tasks.base import Example, Task, check_count, get_task, register_task

_TASK_KW = ("template", "tokenizer", "system")
_ENTRY_KEYS = ("weight", "args")


def parse_mixture(spec: Any) -> list[tuple[str, float, dict]]:
    """[(task name, weight, args)] from a mixture spec; ValueError naming the bad entry.  Checks the
    names (a reasoning-gym name and its options against its generator) without building anything."""
    from r1core.tasks.base import _FAMILIES, _REGISTRY
    if not isinstance(spec, dict) or not spec:
        raise ValueError(f"task.mixture: expected a non-empty mapping task name -> weight, got {spec!r}")
    out = []
    for name, entry in spec.items():
        if isinstance(entry, dict):
            bad = set(entry) - set(_ENTRY_KEYS)
            if bad:
                raise ValueError(f"task.mixture.{name}: unknown key(s) {sorted(bad)}; have {list(_ENTRY_KEYS)}")
            weight, args = entry.get("weight", 1.0), entry.get("args", {})
        else:
            weight, args = entry, {}
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not math.isfinite(weight) or weight <= 0:
            raise ValueError(f"task.mixture.{name}: the weight must be a number > 0, got {weight!r}")
        if not isinstance(args, dict):
            raise ValueError(f"task.mixture.{name}.args: expected a mapping of options, got {args!r}")
        family, sep, member = str(name).partition(":")
        if name == "mixture":
            raise ValueError("task.mixture: a mixture cannot contain a mixture")
        if sep and family == "reasoning_gym":
            from r1core.tasks.rgym import check_options
            check_options(member, args)
        elif not (sep and family in _FAMILIES) and name not in _REGISTRY:
            raise ValueError(f"task.mixture: unknown task {name!r}; have "
                             f"{sorted(n for n in _REGISTRY if n != 'mixture') + [f + ':<name>' for f in _FAMILIES]}")
        out.append((str(name), float(weight), dict(args)))
    return out


def split_by_weight(n: int, weights: list[float]) -> list[int]:
    """n split in proportion to `weights` (largest remainders), at least 1 each when n allows."""
    total = sum(weights)
    floor = [max(1 if n >= len(weights) else 0, int(n * w / total)) for w in weights]
    rest = n - sum(floor)
    order = sorted(range(len(weights)), key=lambda i: -(n * weights[i] / total - int(n * weights[i] / total)))
    for i in order[:max(0, rest)]:
        floor[i] += 1
    while sum(floor) > n:   # the minimum of one each overshot: take back from the largest
        floor[max(range(len(floor)), key=floor.__getitem__)] -= 1
    return floor


class MixtureTask(Task):
    """Tasks mixed by weight; each row judged by its own task (the reward "routed")."""

    name = "mixture"
    default_weights = {"routed": 1.0, "format": 0.1}
    correctness = "routed"

    def __init__(self, *, tasks: dict, **kw: Any):
        super().__init__(**kw)
        sub_kw = {k: kw[k] for k in _TASK_KW if k in kw}
        self.parts = [(name, w, get_task(name, **sub_kw, **args)) for name, w, args in parse_mixture(tasks)]

    def _tag(self, name: str, task: Task, examples: list[Example]) -> list[Example]:
        return [dataclasses.replace(ex, extra={**ex.extra, "subtask": name, "correct_by": task.correctness})
                for ex in examples]

    def train(self, n: int, seed: int = 0) -> list[Example]:
        """`n` problems, each task drawn by weight (the draw and each task's problems seeded by `seed`)."""
        n = check_count(n)
        rng = random.Random(f"mixture|{[(k, w) for k, w, _ in self.parts]}|{seed}")
        picks = rng.choices(range(len(self.parts)), weights=[w for _, w, _ in self.parts], k=n)
        pools = [iter(self._tag(name, t, t.train(picks.count(i), seed=f"{seed}|{name}")))
                 for i, (name, _, t) in enumerate(self.parts)]
        return [next(pools[i]) for i in picks]

    def test(self, n: int | None = None) -> list[Example]:
        """Each task's first held-out problems, n split by weight, interleaved round-robin."""
        n = check_count(n, allow_none=True)
        counts = split_by_weight(100 if n is None else n, [w for _, w, _ in self.parts])
        lists = [self._tag(name, t, t.test(c)) for (name, _, t), c in zip(self.parts, counts)]
        out = []
        for j in range(max(counts, default=0)):
            out.extend(lst[j] for lst in lists if j < len(lst))
        return out

    def __repr__(self) -> str:
        return f"<task mixture {[(name, w) for name, w, _ in self.parts]} rewards={self.reward_weights}>"


register_task("mixture", MixtureTask)
