"""r1core: a low-level, custom-kernel GRPO engine (the RL machinery behind DeepSeek-R1).

The public API is the names in __all__ (the contract: docs/spec.md).  They are imported lazily so that
`import r1core` is fast and never imports Triton, the models or the extension until one is used.
Without the compiled extension r1core._C, everything still works on the "torch" (and "triton")
backends, and a warning says which backends are missing.
"""
from __future__ import annotations

import importlib
import warnings

from r1core._backend import BackendUnavailable, backends

__version__ = "0.1.0"

# public name -> module that defines it
_LAZY = {
    "grpo_advantages": "r1core.ops.advantage",
    "grpo_loss": "r1core.ops.grpo.loss",
    "logprobs": "r1core.ops.grpo.loss",
    "GRPOStats": "r1core.ops.grpo.loss",
    "fused_linear_grpo_loss": "r1core.ops.grpo.fused_linear",
    "fused_linear_logprobs": "r1core.ops.grpo.fused_linear",
    "logp_entropy": "r1core.ops.grpo.loss",
    "fused_linear_logp_entropy": "r1core.ops.grpo.fused_linear",
    "moe_route": "r1core.ops.moe",
    "moe_experts": "r1core.ops.moe",
    "load_model": "r1core.models",
    "load_tokenizer": "r1core.models",
    "generate": "r1core.rollout",
}

# subpackages reachable as attributes after a plain `import r1core` (r1core.rewards.trl_reward(...)),
# imported on first access like the names above
_SUBMODULES = ("rewards", "tasks", "models", "rollout", "train", "integrations", "ops", "ref")

__all__ = sorted([*_LAZY, "backends", "BackendUnavailable", "__version__"])


def __getattr__(name: str):
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value  # cache: the next access skips __getattr__
        return value
    if name in _SUBMODULES:
        return importlib.import_module(f"r1core.{name}")  # the import system sets r1core.<name> itself
    raise AttributeError(f"module 'r1core' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY) | set(_SUBMODULES))


class MissingBackendWarning(UserWarning):
    """The compiled extension is absent: the cpp/cuda backends are unavailable."""


def _chose_no_extension() -> bool:
    """An install made with R1CORE_NO_EXT=1 (a pure-Python wheel: its WHEEL says Root-Is-Purelib) chose
    to go without the extension: no warning on every import then (`r1core info` still lists it)."""
    import importlib.metadata as md
    import os
    if os.environ.get("R1CORE_NO_EXT") == "1":
        return True
    try:
        dist = md.distribution("r1core")
        ours = os.path.realpath(str(dist.locate_file("r1core/__init__.py"))) == os.path.realpath(__file__)
        return ours and "Root-Is-Purelib: true" in (dist.read_text("WHEEL") or "")
    except (md.PackageNotFoundError, OSError):
        return False


def _say_missing_backends() -> None:
    if _chose_no_extension():
        return
    status = backends()
    gone = {k: v for k, v in status.items() if k in ("cpp",) and v.startswith("missing")}
    if gone:
        warnings.warn("r1core: " + "; ".join(f"{k} backend {v}" for k, v in gone.items())
                      + ". Ops fall back to the torch/triton backends.", MissingBackendWarning, stacklevel=2)


_say_missing_backends()
