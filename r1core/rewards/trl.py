"""TRL adapter: a registered reward as a function with TRL's reward signature
`fn(prompts, completions, **kwargs) -> list[float]` (GRPOTrainer(reward_funcs=[…])).

Completions may be strings or conversations (lists of {"role", "content"} messages).  Dataset
columns arrive as keyword lists; the reward takes the ones it declares.  `columns` renames:
trl_reward("accuracy", columns={"answer": "solution"}) reads the dataset's "solution" column (a
reference with "####" or \\boxed{…} is reduced to its final answer by accuracy itself).  Extra
keyword options are fixed for every call: trl_reward("format", mode="lenient").
"""
from __future__ import annotations

from typing import Any, Callable

from .registry import get
from .score import score


def trl_reward(name: str, *, columns: dict[str, str] | None = None, **options: Any) -> Callable[..., list[float]]:
    required, allowed, var_kw = get(name).keywords  # ValueError for an unknown reward
    aliases = dict(columns or {})
    unknown = (set(options) | set(aliases)) - allowed
    if unknown and not var_kw:
        raise ValueError(f"reward {name!r} takes {sorted(allowed)}; unknown {sorted(unknown)}")

    def reward_fn(prompts: Any, completions: list[Any], **kwargs: Any) -> list[float]:
        cols = dict(options)
        for param in allowed - options.keys():
            source = aliases.get(param, param)
            if source in kwargs:
                cols[param] = kwargs[source]
        batch = score({name: 1.0}, completions, **cols)
        return [float(v) for v in (batch.total.tolist() if hasattr(batch.total, "tolist") else batch.total)]

    reward_fn.__name__ = reward_fn.__qualname__ = f"{name}_reward"
    reward_fn.__doc__ = f"TRL reward function for r1core reward {name!r}."
    return reward_fn
