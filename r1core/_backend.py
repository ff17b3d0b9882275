"""Which backends exist on this machine, and which one an op call runs on: decided here, once.

Backends (SPEC §6):
  "torch"  the plain PyTorch reference (r1core.ref), always available, the benches' baseline
  "cpp"    C++ CPU kernels in the extension r1core._C
  "cuda"   CUDA kernels in r1core._C (only in a CUDA build of the extension)
  "triton" Triton kernels (kernels/, installed as r1core._kernels); on CPU tensors they run under
           the Triton interpreter, TRITON_INTERPRET=1, which is how CI checks their logic

The choice: the op's `backend=` argument, else the environment variable R1CORE_BACKEND, else the
fastest available for the tensors' device (CUDA: the op's GPU order; CPU: "cpp", else "torch").
A backend that is asked for and cannot run raises BackendUnavailable: never a silent fallback.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import sys
from types import ModuleType

import torch

BACKENDS = ("torch", "triton", "cuda", "cpp")
ENV_VAR = "R1CORE_BACKEND"


class BackendUnavailable(RuntimeError):
    """A backend was asked for that cannot run this op on these tensors."""


# ---------------------------------------------------------------------------------------------
# capability detection (each probe runs once)
# ---------------------------------------------------------------------------------------------
@functools.cache
def _load_ext() -> tuple[ModuleType | None, str | None]:
    try:
        mod = importlib.import_module("r1core._C")
    except ImportError as e:  # not built, or built against another torch
        return None, f"r1core._C is not importable ({e}); build it with `pip install -e . --no-build-isolation`"
    return mod, None


def ext() -> ModuleType:
    """The compiled extension r1core._C, or BackendUnavailable saying why it is missing."""
    mod, why = _load_ext()
    if mod is None:
        raise BackendUnavailable(why)
    return mod


@functools.cache
def _triton_missing() -> str | None:
    # find_spec, not import: importing triton here (before kernels() may set TRITON_INTERPRET=1)
    # would build triton.language's own @jit helpers (tl.max, ...) for the GPU, not the interpreter.
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed; `pip install triton`"
    return None


def missing(backend: str, device_type: str = "cuda" if torch.cuda.is_available() else "cpu") -> str | None:
    """Why `backend` cannot run on tensors of `device_type`, or None when it can."""
    if backend == "torch":
        return None
    if backend == "cpp":
        if device_type != "cpu":
            return "the cpp backend runs on CPU tensors only"
        return _load_ext()[1]
    if backend == "cuda":
        if device_type != "cuda":
            return "the cuda backend runs on CUDA tensors only"
        mod, why = _load_ext()
        if mod is None:
            return why
        if not getattr(mod, "with_cuda", False):
            return "r1core._C was built without CUDA kernels (CPU-only torch or no nvcc at build time)"
        return None
    if backend == "triton":
        why = _triton_missing()
        if why:
            return why
        if device_type == "cpu" and not _interpreter_possible():
            return ("triton on CPU tensors needs the interpreter: set TRITON_INTERPRET=1 before "
                    "r1core's Triton kernels are first imported")
        if device_type not in ("cpu", "cuda"):
            return f"triton has no {device_type} support here"
        return None
    raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")


def _interpreter_possible() -> bool:
    # Triton reads TRITON_INTERPRET when a kernel is decorated, i.e. when kernels/ is imported.
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    # Without a GPU we may switch the interpreter on ourselves, as long as no kernel of ours was
    # compiled for the GPU yet.
    return not torch.cuda.is_available() and not any(m.startswith("r1core._kernels.") for m in sys.modules)


def kernels(name: str) -> ModuleType:
    """Import the Triton kernel module r1core._kernels.<name> (switching the interpreter on when
    there is no GPU, so Triton kernels run on CPU tensors)."""
    why = _triton_missing()
    if why:
        raise BackendUnavailable(why)
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        if not _interpreter_possible():
            raise BackendUnavailable(missing("triton", "cpu"))
        os.environ["TRITON_INTERPRET"] = "1"
    return importlib.import_module(f"r1core._kernels.{name}")


# ---------------------------------------------------------------------------------------------
# the choice
# ---------------------------------------------------------------------------------------------
def resolve(op: str, device: torch.device, backend: str | None, *, implemented: tuple[str, ...],
            gpu_order: tuple[str, ...] = ("cuda", "triton", "torch")) -> str:
    """The backend that runs `op` on tensors of `device`.

    implemented: the backends this op has; gpu_order: its preference on CUDA tensors (fastest first).
    """
    requested = backend if backend is not None else (os.environ.get(ENV_VAR) or None)
    if requested is not None:
        if requested not in BACKENDS:
            src = "backend" if backend is not None else f"environment variable {ENV_VAR}"
            raise ValueError(f"{op}: {src} must be one of {BACKENDS}, got {requested!r}")
        if requested not in implemented:
            raise BackendUnavailable(f"{op}: backend {requested!r} is not implemented for this op "
                                     f"(implemented: {', '.join(implemented)})")
        why = missing(requested, device.type)
        if why:
            raise BackendUnavailable(f"{op}: backend {requested!r} is unavailable: {why}")
        return requested
    order = gpu_order if device.type == "cuda" else ("cpp", "torch")
    for name in order:
        if name in implemented and missing(name, device.type) is None:
            return name
    return "torch"


def backends() -> dict[str, str]:
    """Every backend with 'available' or the reason it is missing, for the tensors' usual device."""
    out = {}
    for name in BACKENDS:
        dev = "cuda" if name == "cuda" or (name == "triton" and torch.cuda.is_available()) else "cpu"
        why = missing(name, dev)
        out[name] = "available" + (" (interpreter, CPU tensors)" if name == "triton" and dev == "cpu" and not why else "") \
            if why is None else f"missing: {why}"
    return out
