"""The reward "routed": each row's own correctness reward, named by its `correct_by` column.

A mixture of tasks (r1core.tasks.mixture) has rows whose correctness is judged by different rewards
(arithmetic: accuracy, countdown: countdown, a reasoning-gym task: reasoning_gym).  One batch is
scored by one weight dict, so the mixture's correctness reward forwards each row to the reward its
task names, with the row's columns; the other tasks' columns are there as None and ignored.
"""
from __future__ import annotations

from .registry import get, register


@register("routed")
def routed(completion: str, *, correct_by: str, timeout: float = 1.0, **columns) -> float:
    """get(correct_by)(completion, **columns): 0.0 for a row without a name (or naming itself)."""
    if not isinstance(correct_by, str) or correct_by == "routed":
        return 0.0
    return get(correct_by)(completion, timeout=timeout, **columns)
