"""The allowed range of every numeric config key, as one table (r1core.train.config.validate reads it).

Each row: dotted key -> Limit(lo, hi, lo_open, hi_open, note).  The note says what the edge values
mean, so an error names the key, the value and what is allowed in one line:

    config key 'rollout.temperature' = -1.0: must be >= 0 (0: greedy)

Choice lists live with the fields (`opt(..., choices)` in r1core.train.config); non-finite floats
(nan, inf) are refused for every float key here, before any work starts.
"""
from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Limit:
    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False      # lo itself not allowed
    hi_open: bool = False      # hi itself not allowed
    note: str = ""

    def allows(self, v: float) -> bool:
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def describe(self) -> str:
        lo = None if self.lo is None else f"{'>' if self.lo_open else '>='} {self.lo:g}"
        hi = None if self.hi is None else f"{'<' if self.hi_open else '<='} {self.hi:g}"
        if lo and hi:
            text = f"in {'(' if self.lo_open else '['}{self.lo:g}, {self.hi:g}{')' if self.hi_open else ']'}"
        else:
            text = lo or hi or "finite"
        return text + (f" ({self.note})" if self.note else "")


def at_least(lo: float, note: str = "") -> Limit:
    return Limit(lo=lo, note=note)


def above(lo: float, note: str = "") -> Limit:
    return Limit(lo=lo, lo_open=True, note=note)


LIMITS: dict[str, Limit] = {
    "model.checkpoint_every": at_least(1, "1: every block"),
    "model.train_layers": at_least(0, "0: every parameter"),
    "rollout.prompts": at_least(1),
    "rollout.group_size": at_least(2, "GRPO compares samples of one prompt"),
    "rollout.max_new_tokens": at_least(1),
    "rollout.temperature": at_least(0, "0: greedy"),
    "rollout.top_p": Limit(lo=0, hi=1, lo_open=True, note="1: off"),
    "rollout.top_k": at_least(0, "0: off"),
    "rollout.gen_batch": at_least(0, "0: all of a rank's prompts at once"),
    "rollout.max_staleness": at_least(0, "0: the synchronous trainer; 1: one-step off-policy"),
    "optim.lr": above(0),
    "optim.weight_decay": at_least(0),
    "optim.eps": above(0),
    "optim.warmup": at_least(0),
    "optim.min_lr_ratio": Limit(lo=0, hi=1),
    "optim.grad_clip": at_least(0, "0: off"),
    "optim.micro_batch": at_least(1),
    "optim.mini_batches": at_least(1),
    "grpo.beta": at_least(0, "0: no KL term"),
    "grpo.eps_low": Limit(lo=0, hi=1, hi_open=True, note="the ratio is clipped below at 1 - eps_low"),
    "grpo.eps_high": at_least(0),
    "grpo.delta": at_least(0, "0: off, else > 1"),
    "grpo.off_policy_mask_threshold": at_least(0, "0: off"),
    "grpo.rollout_is_min": at_least(0, "0: no lower bound"),
    "grpo.rollout_is_max": above(0),
    "grpo.top_entropy_quantile": Limit(lo=0, hi=1, lo_open=True, note="1: every token"),
    "grpo.sapo_temperature_pos": above(0),
    "grpo.sapo_temperature_neg": above(0),
    "grpo.mu": at_least(1),
    "grpo.chunk_size": at_least(0, "0: the op's default"),
    "sft.examples": at_least(1),
    "sft.epochs": above(0),
    "sft.lr": above(0),
    "sft.batch": at_least(1),
    "sft.max_len": at_least(2),
    "sample.prompts": at_least(0, "0: all"),
    "sample.k": at_least(1),
    "sample.keep_per_prompt": at_least(1),
    "sample.min_language": Limit(lo=0, hi=1),
    "sample.temperature": at_least(0, "0: greedy"),
    "sample.max_new_tokens": at_least(1),
    "run.steps": at_least(0),
    "run.save_every": at_least(0, "0: only at the end"),
    "run.keep_last": at_least(0, "0: keep every checkpoint"),
    "run.eval_every": at_least(0, "0: only before and after"),
    "run.eval_n": at_least(0, "0: no evaluation"),
    "run.eval_k": at_least(1),
    "run.eval_temperature": at_least(0, "0: greedy"),
    "run.threads": at_least(0, "0: torch's default"),
    "pipeline.final_steps": at_least(0, "0: a third of run.steps"),
}


def check_value(key: str, value) -> None:
    """Raise a ValueError naming `key`, `value` and the allowed range when a number is out of it."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"config key {key!r} = {value}: must be a finite number"
                         + (f", {LIMITS[key].describe()}" if key in LIMITS else ""))
    limit = LIMITS.get(key)
    if limit is not None and not limit.allows(value):
        raise ValueError(f"config key {key!r} = {value!r}: must be {limit.describe()}")
