"""reasoning-gym's own verifiers as the reward "reasoning_gym", and its generators, both run in a
killable worker of pool.py.

reasoning-gym (optional extra `tasks`) ships procedural generators, each with a `score_answer(answer,
entry)` verifier.  Neither is ours to trust with time: a generator or verifier may loop or raise on a
hostile answer.  So, as with sympy (symbolic.py), the main process never runs them: it sends
("rg_score", …) / ("rg_generate", …) to a worker that is killed when the request passes its limit.
A verifier that raises or times out scores 0 (one reward lost); a generator that does so yields no
problem for that seed (the task draws another).  Inside a worker (`INLINE`) they run directly, under
the parent's watchdog.  Workers import reasoning_gym before they say "ready" once `preload()` has
run, so the import never counts against a request's limit.

The reward is binary: 1.0 when score_answer gives 1.0 (R1's accuracy reward is 0/1; reasoning-gym's
default verifier gives partial credit to an answer that merely contains the gold one, which a policy
learns to exploit by writing many candidates).  `partial=True` passes the raw score through.
"""
from __future__ import annotations

import os
from typing import Any

from .extract import answer_tag, last_boxed
from .registry import RewardOptionError, register

INLINE = False          # True inside a worker process (set by _worker.py)
PRELOAD_ENV = "R1CORE_REWARD_PRELOAD"
EXTRA_HINT = "reasoning-gym tasks need the optional extra `tasks`: pip install 'r1core[tasks]' (reasoning-gym)"
_CACHE_MAX = 64
_datasets: dict[tuple, Any] = {}   # (name, options, seed) -> dataset instance, in a worker


def available() -> bool:
    import importlib.util
    return importlib.util.find_spec("reasoning_gym") is not None


def require() -> None:
    """Raise a one-line ImportError naming the extra when reasoning-gym is not installed."""
    if not available():
        raise ImportError(EXTRA_HINT)


def preload() -> None:
    """Make reward workers import reasoning_gym before "ready".  Workers already running without it
    are closed (a new pool starts on demand), so no request ever pays the ~2 s import in its limit."""
    names = set(filter(None, os.environ.get(PRELOAD_ENV, "").split(",")))
    if "reasoning_gym" in names:
        return
    os.environ[PRELOAD_ENV] = ",".join(sorted(names | {"reasoning_gym"}))
    from . import pool
    if pool._POOL is not None and not pool._POOL.closed:
        pool._POOL.close()


def _key(options: dict) -> tuple:
    return tuple(sorted((k, repr(v)) for k, v in (options or {}).items()))


def _dataset(name: str, options: dict, seed: int = 0):
    key = (name, _key(options), seed)
    ds = _datasets.get(key)
    if ds is None:
        import reasoning_gym
        if len(_datasets) >= _CACHE_MAX:
            _datasets.clear()
        ds = _datasets[key] = reasoning_gym.create_dataset(name, seed=seed, size=1, **(options or {}))
    return ds


# -- worker side ------------------------------------------------------------------------------------
def generate_inline(name: str, options: dict, seeds: list[int]) -> list[dict | None]:
    """The problem of each seed ({question, answer, metadata}), None where the generator raised.
    One dataset per seed with size 1: item 0 of seed s is the same problem whatever else was drawn."""
    import reasoning_gym
    out: list[dict | None] = []
    for s in seeds:
        try:
            ds = reasoning_gym.create_dataset(name, seed=int(s), size=1, **(options or {}))
            e = ds[0]
            out.append({"question": str(e["question"]), "answer": e["answer"], "metadata": e.get("metadata", {})})
        except Exception:  # noqa: BLE001  (a broken generator costs this problem only)
            out.append(None)
    return out


def score_inline(name: str, options: dict, answer: str | None, entry: dict) -> float:
    return float(_dataset(name, options).score_answer(answer, entry))


# -- main-process side ------------------------------------------------------------------------------
def generate(name: str, options: dict, seeds: list[int], *, timeout: float) -> list[dict | None] | None:
    """generate_inline in a worker; None when the whole request failed or passed `timeout`."""
    if INLINE:
        return generate_inline(name, options, seeds)
    from .pool import get_pool
    return get_pool().call(("rg_generate", name, options, list(seeds)), timeout=timeout)


def final_answer(completion: str) -> str | None:
    """The answer a reasoning-gym verifier judges: the last <answer>…</answer> (R1's template),
    unwrapped from a \\boxed{…} inside it; else the last \\boxed{…}; None when neither is there."""
    found = answer_tag(completion)
    if found is None:
        found = last_boxed(completion)
    elif "\\boxed" in found:
        found = last_boxed(found) or found
    return None if found is None else found.strip()


@register("reasoning_gym")
def reasoning_gym(completion: str, *, rg_name: str, rg_entry: dict, rg_options: dict | None = None,
                  timeout: float = 1.0, partial: bool = False) -> float:
    """reasoning-gym's score_answer for dataset `rg_name` (options `rg_options`) on the final answer."""
    if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or not timeout > 0:
        raise RewardOptionError(f"timeout: expected seconds > 0, got {timeout!r}")
    if rg_name is None or rg_entry is None:   # a row of another task in a mixture
        return 0.0
    answer = final_answer(completion)
    if answer is None:
        return 0.0
    if INLINE:
        value = score_inline(rg_name, rg_options or {}, answer, rg_entry)
    else:
        from .pool import get_pool
        value = get_pool().call(("rg_score", rg_name, rg_options or {}, answer, rg_entry), timeout=timeout,
                                cpu=True)
        if value is None:  # raised, or passed its limit (the worker was killed)
            return 0.0
    value = float(value)
    return value if partial else float(value >= 1.0 - 1e-9)
