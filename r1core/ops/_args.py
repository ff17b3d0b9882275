"""The argument checkers every public op composes, so that one kind of mistake is one exception type,
whatever the op, and the message names the argument:

    TypeError   not a tensor; a tensor of the wrong kind of dtype; a Python value of the wrong type
    ValueError  a bad value: a shape, a device, a range, an unknown option, a non-finite number

Each checker returns the (normalised) value, so a check reads as an assignment.
"""
from __future__ import annotations

import math
import operator
import os

import torch

SKIP_CHECKS_ENV = "R1CORE_SKIP_CHECKS"  # "1": skip the checks that cost a device sync (value scans)


def checks_on() -> bool:
    """Whether the data-dependent checks (one device sync each on a GPU) run: unless R1CORE_SKIP_CHECKS=1."""
    return os.environ.get(SKIP_CHECKS_ENV) != "1"


def _shape_of(x) -> str:
    return str(list(x.shape)) if isinstance(x, torch.Tensor) else type(x).__name__


def tensor(x, name: str, what: str = "") -> torch.Tensor:
    """x itself; TypeError unless it is a tensor.  `what` describes the expected one ("of shape [B, T]")."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor{' ' + what if what else ''}, got {type(x).__name__}")
    return x


def shape(x: torch.Tensor, name: str, *allowed: tuple[int, ...], what: str) -> torch.Tensor:
    """ValueError unless x.shape is one of `allowed` (`what` spells them, e.g. "[B, T] = [2, 3]")."""
    if tuple(x.shape) not in allowed:
        raise ValueError(f"{name} must have shape {what}, got {list(x.shape)}")
    return x


def dims(x: torch.Tensor, name: str, n: int, what: str) -> torch.Tensor:
    """ValueError unless x has n dimensions."""
    if x.dim() != n:
        raise ValueError(f"{name} must have shape {what}, got {list(x.shape)}")
    return x


def device(x: torch.Tensor, name: str, dev: torch.device, of: str) -> torch.Tensor:
    """ValueError unless x is on `dev` (`of` names the tensor that set it)."""
    if x.device != dev:
        raise ValueError(f"{name} must be on the {of} device {dev}, got {x.device}")
    return x


def floating(x: torch.Tensor, name: str) -> torch.Tensor:
    """TypeError unless x has a floating dtype."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating tensor, got {x.dtype}")
    return x


def integer(x: torch.Tensor, name: str) -> torch.Tensor:
    """TypeError unless x has an integer dtype (bool is not one)."""
    if x.is_floating_point() or x.is_complex() or x.dtype == torch.bool:
        raise TypeError(f"{name} must be an integer tensor, got {x.dtype}")
    return x


def dtype_in(x: torch.Tensor, name: str, dtypes: tuple[torch.dtype, ...], what: str) -> torch.Tensor:
    """TypeError unless x.dtype is one of `dtypes` (`what` lists them for the message)."""
    if x.dtype not in dtypes:
        raise TypeError(f"{name} must be {what}, got {x.dtype}")
    return x


def real(value, name: str, *, low: float | None = None, open_low: bool = False, finite: bool = True) -> float:
    """A Python real number (or a 1-element tensor without grad) -> float.  TypeError for another type;
    ValueError when not finite (finite=True) or below `low` (at `low` too when open_low)."""
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if math.isnan(value) or (finite and math.isinf(value)):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value < low or (open_low and value == low)):
        raise ValueError(f"{name} must be {'>' if open_low else '>='} {low:g}, got {value}")
    return value


def integer_value(value, name: str, *, low: int | None = None, high: int | None = None) -> int:
    """A Python int (not bool) -> int.  TypeError for another type; ValueError outside [low, high]."""
    if isinstance(value, bool):
        raise TypeError(f"{name} must be an int, got bool")
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name} must be an int, got {type(value).__name__}") from None
    if (low is not None and value < low) or (high is not None and value > high):
        bounds = f"in [{low}, {high}]" if low is not None and high is not None else \
            (f">= {low}" if low is not None else f"<= {high}")
        raise ValueError(f"{name} must be an int {bounds}, got {value}")
    return value


def choice(value, name: str, options: tuple[str, ...]) -> str:
    """ValueError unless value is one of the option strings."""
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")
    return value


def flag(value, name: str) -> bool:
    """TypeError unless value is a bool."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be a bool, got {value!r}")
    return value
