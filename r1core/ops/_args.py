"""Argument checkers every public op composes: one exception type per kind of mistake, whatever the
op, and the argument named in the message (each returns the checked value).

    TypeError   not a tensor; a tensor of the wrong kind of dtype; a Python value of the wrong type
    ValueError  a bad value: a shape, a device, a range, an unknown option, a non-finite number
"""
from __future__ import annotations

import math
import operator
import os

import torch

SKIP_CHECKS_ENV = "R1CORE_SKIP_CHECKS"  # "1": skip the data-dependent checks (a device sync each on a GPU)


def checks_on() -> bool:
    return os.environ.get(SKIP_CHECKS_ENV) != "1"


def tensor(x, name: str, what: str = "") -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor{' ' + what if what else ''}, got {type(x).__name__}")
    return x


def shape(x: torch.Tensor, name: str, *allowed: tuple[int, ...], what: str) -> torch.Tensor:
    """ValueError unless x.shape is one of `allowed` (an int n in `allowed`: any n-dimensional shape)."""
    if not any(tuple(x.shape) == a if isinstance(a, tuple) else x.dim() == a for a in allowed):
        raise ValueError(f"{name} must have shape {what}, got {list(x.shape)}")
    return x


def device(x: torch.Tensor, name: str, dev: torch.device, of: str) -> torch.Tensor:
    if x.device != dev:
        raise ValueError(f"{name} must be on the {of} device {dev}, got {x.device}")
    return x


def floating(x: torch.Tensor, name: str, dtypes: tuple[torch.dtype, ...] | None = None, what: str = "") -> torch.Tensor:
    """TypeError unless x has a floating dtype (one of `dtypes`, spelled `what`, when given)."""
    if not x.is_floating_point() or (dtypes is not None and x.dtype not in dtypes):
        raise TypeError(f"{name} must be {what or 'a floating tensor'}, got {x.dtype}")
    return x


def integer(x: torch.Tensor, name: str) -> torch.Tensor:
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")
    return x


def real(value, name: str, *, low: float | None = None, open_low: bool = False,
         high: float | None = None) -> float:
    """A finite real number (or a 1-element tensor without grad), >= low (> low when open_low), <= high."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (open_low and value == low)):
        raise ValueError(f"{name} must be {'>' if open_low else '>='} {low:g}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be <= {high:g}, got {value}")
    return float(value)


def integer_value(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """A Python int (not bool) in [low, high]."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        raise ValueError(f"{name} must be an int in [{low}, {'inf' if high is None else high}], got {value}")
    return value


def choice(value, name: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def flag(value, name: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value
