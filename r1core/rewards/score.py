"""Score a batch of completions with several weighted rewards -> RewardBatch.

    batch = score({"accuracy": 1.0, "format": 0.1}, completions, answer=answers)
    batch.per_reward  # [N, K] float32 tensor, columns in batch.names order
    batch.total       # [N] = per_reward @ weights

Columns: each keyword is a per-completion sequence of length N (answer=[…], numbers=[[…], …]) or
a scalar (str, number, bool, None) given to every completion.  A reward receives the columns it
declares as keywords (accuracy: answer, timeout, backend; countdown: numbers, target, use_all; …);
a column no reward uses is ignored, a column a reward requires and nobody passed is a ValueError.

Parallelism: a batch of at least PARALLEL_MIN_ITEMS completions × rewards, with only built-in
rewards, is spread over the worker pool (pool.py) in chunks; a completion whose item runs past
`timeout` + 0.5 s there is recomputed here, where every slow check has its own killable limit.
Smaller batches, and batches with rewards registered at run time, run serially in this process
(sympy still goes to a worker).  `parallel=True/False` forces the choice.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Sequence

from .registry import as_text, get

BUILTIN = frozenset({"accuracy", "format", "tag_count", "language", "countdown", "length", "reasoning_gym", "routed"})
PARALLEL_MIN_ITEMS = 512
_SCALARS = (str, bytes, int, float, bool, type(None))


@dataclass
class RewardBatch:
    names: list[str]
    weights: list[float]
    per_reward: Any   # [N, K] float32 torch.Tensor (nested lists when torch is not installed)
    total: Any        # [N]

    def means(self) -> dict[str, float]:
        """Mean of each reward over the batch (for logging)."""
        rows = self.per_reward.tolist() if hasattr(self.per_reward, "tolist") else self.per_reward
        n = max(1, len(rows))
        return {name: sum(r[k] for r in rows) / n for k, name in enumerate(self.names)}


def _columns(columns: dict[str, Any], n: int) -> dict[str, Any]:
    """Validate columns: sequences of length n stay lists, scalars are broadcast later."""
    out = {}
    for key, value in columns.items():
        if isinstance(value, _SCALARS):
            out[key] = value
            continue
        if hasattr(value, "tolist"):  # numpy arrays, tensors
            value = value.tolist()
        if not hasattr(value, "__len__") or isinstance(value, dict):
            raise ValueError(f"column {key!r}: expected a sequence of length {n} or a scalar, "
                             f"got {type(value).__name__}")
        if len(value) != n:
            raise ValueError(f"column {key!r}: expected {n} values (one per completion), got {len(value)}")
        out[key] = list(value)
    return out


def _plan(names: list[str], columns: dict[str, Any]) -> list[tuple[str, ...]]:
    """For each reward, the column names it receives; raise when a required one is missing."""
    plan = []
    for name in names:
        required, allowed, var_kw = get(name).keywords
        missing = required - columns.keys()
        if missing:
            raise ValueError(f"reward {name!r} needs column(s) {sorted(missing)}; got {sorted(columns)}")
        plan.append(tuple(sorted(columns.keys() if var_kw else allowed & columns.keys())))
    return plan


def _kwargs(plan_k: tuple[str, ...], columns: dict[str, Any], i: int) -> dict[str, Any]:
    return {c: columns[c][i] if isinstance(columns[c], list) else columns[c] for c in plan_k}


def score(weights: dict[str, float], completions: Sequence[Any], *, timeout: float = 1.0,
          parallel: bool | None = None, **columns: Any) -> RewardBatch:
    """Rewards `weights` (name -> weight) of every completion, and their weighted sum."""
    if not isinstance(weights, dict) or not weights:
        raise ValueError(f"weights: expected a non-empty dict reward name -> weight, got {weights!r}")
    names = list(weights)
    ws = []
    for name in names:
        get(name)  # ValueError for an unknown reward
        w = weights[name]
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w):
            raise ValueError(f"weights[{name!r}]: expected a finite number, got {w!r}")
        ws.append(float(w))
    if not isinstance(timeout, (int, float)) or not timeout > 0:
        raise ValueError(f"timeout: expected seconds > 0, got {timeout!r}")
    texts = [as_text(c) for c in completions]
    n = len(texts)
    cols = _columns(columns, n)
    if any("timeout" in get(name).keywords[1] for name in names):
        cols.setdefault("timeout", timeout)
    plan = _plan(names, cols)
    fns = [get(name) for name in names]

    use_pool = parallel
    if use_pool is None:
        from .pool import default_size
        use_pool = n * len(names) >= PARALLEL_MIN_ITEMS and default_size() > 1 and set(names) <= BUILTIN
    elif use_pool and not set(names) <= BUILTIN:
        raise ValueError(f"parallel=True: only built-in rewards run in workers, not {sorted(set(names) - BUILTIN)}")

    rows: list[list[float] | None] = [None] * n
    if use_pool and n:
        from .pool import WorkerError, get_pool, warn_once
        items = [(t, {name: _kwargs(plan[k], cols, i) for k, name in enumerate(names)}) for i, t in enumerate(texts)]
        try:
            rows = get_pool().score_items(names, items, limit=timeout + 0.5)
        except WorkerError as e:
            warn_once(f"r1core.rewards: worker pool unavailable ({e}); scoring serially")
    for i, row in enumerate(rows):
        if row is None:
            rows[i] = [fn(texts[i], **_kwargs(plan[k], cols, i)) for k, fn in enumerate(fns)]
    totals = [sum(w * v for w, v in zip(ws, row)) for row in rows]
    try:
        import torch
    except ImportError:
        return RewardBatch(names, ws, rows, totals)
    per_reward = torch.tensor(rows, dtype=torch.float32).reshape(n, len(names))
    return RewardBatch(names, ws, per_reward, torch.tensor(totals, dtype=torch.float32))
