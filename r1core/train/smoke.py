"""`r1core train --quick`'s verdict: did the smoke run train, or only run?

A working install makes at least one real update: a GRPO step whose rewards differ within a group
(else every advantage is 0) and whose gradient is nonzero.  A run that only ran shows reward_std 0
and grad_norm 0 on every step, which a user cannot tell from a broken install without this line.
"""
from __future__ import annotations

from pathlib import Path

from r1core.train.logging import read_metrics


def rl_rows(out: str | Path) -> list[dict]:
    """The GRPO step rows of every metrics.jsonl under a run folder."""
    rows = []
    for f in sorted(Path(out).rglob("metrics.jsonl")):
        rows += [r for r in read_metrics(f) if "grad_norm" in r and "reward_std" in r]
    return rows


def health_line(out: str | Path, *, judge: bool = True) -> tuple[bool, str]:
    """(healthy, the final line of a smoke run).  judge=False (another model than the embedded
    recipe's): the line reports what happened without calling the install healthy or not."""
    rows = rl_rows(out)
    if not judge:
        g = max([(r.get("grad_norm") or 0) for r in rows] or [0])
        sd = max([(r.get("reward_std") or 0) for r in rows] or [0])
        return g > 0 and sd > 0, (f"r1core train --quick: {len(rows)} RL steps, grad_norm up to {g:.3g}, reward std "
                                  f"up to {sd:.3g} (the install check is `r1core train --quick` on the default model)")
    if not rows:
        return False, f"r1core train --quick: no RL step was logged under {out}: the install is NOT healthy"
    updated = [r for r in rows if (r.get("grad_norm") or 0) > 0]
    varied = [r for r in rows if (r.get("reward_std") or 0) > 0]
    top_g = max((r.get("grad_norm") or 0) for r in rows)
    top_s = max((r.get("reward_std") or 0) for r in rows)
    if updated and varied:
        return True, (f"r1core train --quick: the install is healthy: {len(updated)} of {len(rows)} RL steps updated "
                      f"the policy (grad_norm up to {top_g:.3g}) on rewards that varied (std up to {top_s:.3g})")
    why = "no reward varied within a group (every advantage 0)" if not varied else "every gradient was 0"
    return False, (f"r1core train --quick: the install is NOT healthy: {why} in {len(rows)} RL steps "
                   f"(see {out}/*/metrics.jsonl)")
