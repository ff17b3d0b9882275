"""Rewards by name: `register`, `get`, `names`, and the wrapper that makes a reward safe.

A reward is a plain function `fn(completion, *, <columns>) -> float`.  Registered rewards are
wrapped so that whatever the text, they return a float in [0, 1] and never raise: an exception
inside the body, NaN or an out-of-range value gives 0.0.  A reward ignores keyword columns it does
not take, so `get(name)(completion, **example.columns())` works for every reward; a missing
required column is a programming error, not model output, and raises TypeError naming it, as does a
bad option (RewardOptionError, a ValueError).
"""
from __future__ import annotations

import functools
import inspect
import math
from typing import Any, Callable

_REWARDS: dict[str, Callable[..., float]] = {}


class RewardOptionError(ValueError):
    """A bad option (not bad model output): raised through the safe wrapper."""


def as_text(completion: Any) -> str:
    """A completion as text: a str, or a conversation (list of {"role", "content"} messages: the
    assistant contents joined), or bytes (UTF-8, errors replaced)."""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, (bytes, bytearray)):
        return bytes(completion).decode("utf-8", "replace")
    if isinstance(completion, dict):
        completion = [completion]
    if isinstance(completion, (list, tuple)) and all(isinstance(m, dict) for m in completion):
        turns = [m for m in completion if m.get("role", "assistant") == "assistant"] or list(completion)
        return "".join(str(m.get("content") or "") for m in turns)
    raise TypeError(f"completion: expected a str or a list of message dicts, got {type(completion).__name__}")


def _keywords(fn: Callable) -> tuple[frozenset[str], frozenset[str], bool]:
    """(required keyword names, all keyword names, accepts **kwargs) of a reward function."""
    params = list(inspect.signature(fn).parameters.values())[1:]
    required = frozenset(p.name for p in params if p.default is inspect.Parameter.empty
                         and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    allowed = frozenset(p.name for p in params if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD))
    return required, allowed, any(p.kind is p.VAR_KEYWORD for p in params)


def safe_reward(fn: Callable[..., float], name: str | None = None) -> Callable[..., float]:
    """Wrap `fn` so it returns a float in [0, 1] and never raises on any completion text."""
    if getattr(fn, "__r1core_safe__", False):
        return fn
    required, allowed, var_kw = _keywords(fn)
    label = name or fn.__name__

    @functools.wraps(fn)
    def reward(completion: Any, **columns: Any) -> float:
        missing = required - columns.keys()
        if missing:
            raise TypeError(f"reward {label!r}: missing column(s) {sorted(missing)}")
        if not var_kw and not columns.keys() <= allowed:  # other rewards' columns: ignored
            columns = {k: v for k, v in columns.items() if k in allowed}
        text = as_text(completion)
        try:
            value = float(fn(text, **columns))
        except RewardOptionError:
            raise
        except Exception:  # model output must never crash training
            return 0.0
        if math.isnan(value):
            return 0.0
        return min(1.0, max(0.0, value))

    reward.__r1core_safe__ = True
    reward.keywords = (required, allowed, var_kw)
    return reward


def register(name: str, fn: Callable[..., float] | None = None, *, overwrite: bool = False):
    """Register `fn` as reward `name` (also usable as a decorator).  Returns the safe wrapper."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")

    def add(f: Callable[..., float]):
        if not callable(f):
            raise TypeError(f"fn: expected a callable, got {type(f).__name__}")
        if name in _REWARDS and not overwrite and getattr(_REWARDS[name], "__wrapped__", None) is not f:
            raise ValueError(f"reward {name!r} is already registered (pass overwrite=True to replace it)")
        wrapped = safe_reward(f, name)
        _REWARDS[name] = wrapped
        return wrapped

    return add(fn) if fn is not None else add


def get(name: str) -> Callable[..., float]:
    """The registered reward called `name`."""
    try:
        return _REWARDS[name]
    except (KeyError, TypeError):
        raise ValueError(f"reward: unknown {name!r}; have {names()}") from None


def names() -> list[str]:
    return sorted(_REWARDS)
