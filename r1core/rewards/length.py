"""Length rewards: DAPO's overlong shaping (Yu et al. 2025, "soft overlong punishment").

DAPO adds a penalty in [-1, 0] to the reward: 0 up to `max_len - buffer` tokens, then falling
linearly to -1 at `max_len`.  Rewards here live in [0, 1], so `length` returns 1 + penalty: 1 for a
short enough completion, 0 at or past `max_len`.  With a weight w this shifts every reward of a
group by the same constant w that DAPO's form would not, which group-normalised advantages
cancel, so the training signal is DAPO's.  `buffer=0` is a hard cut-off.  Length is `num_tokens`
when the trainer passes token counts, else the number of characters.
"""
from __future__ import annotations

from .registry import RewardOptionError, register


@register("length")
def length(completion: str, *, max_len: int, buffer: int = 0, num_tokens: int | None = None) -> float:
    """1.0 up to max_len - buffer, linear down to 0.0 at max_len (see the module docstring)."""
    if isinstance(max_len, bool) or not isinstance(max_len, int) or max_len < 1:
        raise RewardOptionError(f"max_len: expected an int >= 1, got {max_len!r}")
    if isinstance(buffer, bool) or not isinstance(buffer, int) or not 0 <= buffer <= max_len:
        raise RewardOptionError(f"buffer: expected an int in [0, max_len], got {buffer!r}")
    n = len(completion) if num_tokens is None else int(num_tokens)
    soft_start = max_len - buffer
    if n <= soft_start:
        return 1.0
    if n >= max_len:
        return 0.0
    return (max_len - n) / buffer
