"""Which backends exist on this machine, and which one an op call runs on: decided here, once.

Backends (docs/spec.md §6):
  "torch"  the plain PyTorch reference (r1core.ref), always available, the benches' baseline
  "cpp"    C++ CPU kernels in the extension r1core._C
  "cuda"   CUDA kernels in r1core._C (only in a CUDA build of the extension)
  "triton" Triton kernels (kernels/, installed as r1core._kernels); on CPU tensors they run under
           the Triton interpreter, TRITON_INTERPRET=1, which is how CI checks their logic

Every op declares one `Op` table in its module (r1core/ops/); `Op.choose` is where every backend is
chosen: `backend=`, else $R1CORE_BACKEND, else the fastest available for the tensors' device.  A
backend asked for that cannot run raises BackendUnavailable, never a silent fallback.  `missing` is
the one availability query.  docs/ops.md walks through it.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import re
import sys
from dataclasses import dataclass, field
from types import ModuleType
from typing import Callable

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
        return "triton is not installed: pip install 'r1core[triton]' (or pip install 'triton>=3.0')"
    from r1core._deps import version  # noqa: PLC0415
    found = version("triton") or version("pytorch-triton") or ""
    numbers = tuple(int(x) for x in re.findall(r"\d+", found)[:2])
    if numbers and numbers < (3, 0):
        return f"triton {found} is too old for r1core's kernels (they need triton >= 3.0): pip install 'triton>=3.0'"
    return None


@functools.cache
def _interpreter_broken() -> str | None:
    """Why this triton's CPU interpreter cannot run here, or None: triton < 3.7's interpreter calls int()
    on one-element numpy arrays, which numpy >= 2.4 refuses (seen with 3.6.0; fine with 3.9)."""
    from r1core._deps import version  # noqa: PLC0415
    tv, nv = version("triton") or "", version("numpy") or ""
    t = tuple(int(x) for x in re.findall(r"\d+", tv)[:2])
    n = tuple(int(x) for x in re.findall(r"\d+", nv)[:2])
    if t and n and t < (3, 7) and n >= (2, 4):
        return (f"triton {tv}'s CPU interpreter fails with numpy {nv}: pip install 'numpy<2.4' "
                "(or a triton >= 3.7)")
    return None


def missing(backend: str, device_type: str = "cuda" if torch.cuda.is_available() else "cpu",
            needs: tuple[str, ...] = ()) -> str | None:
    """Why `backend` cannot run on tensors of `device_type`, or None when it can.  `needs`: the
    r1core._C functions the caller's cpp/cuda backend calls (an older build may lack them)."""
    if backend == "torch":
        return None
    if backend in ("cpp", "cuda"):
        if device_type != ("cpu" if backend == "cpp" else "cuda"):
            return f"the {backend} backend runs on {'CPU' if backend == 'cpp' else 'CUDA'} tensors only"
        mod, why = _load_ext()
        if mod is None:
            return why
        if backend == "cuda" and not getattr(mod, "with_cuda", False):
            return "r1core._C was built without CUDA kernels (CPU-only torch or no nvcc at build time)"
        lacking = [n for n in needs if not hasattr(mod, n)]
        if lacking:
            return f"r1core._C lacks {', '.join(lacking)} (rebuild the extension)"
        return None
    if backend == "triton":
        why = _triton_missing()
        if why:
            return why
        if device_type == "cpu" and not _interpreter_possible():
            return ("triton on CPU tensors needs the interpreter: set TRITON_INTERPRET=1 before triton or "
                    "r1core's Triton kernels are first imported (importing r1core first does it)")
        if device_type == "cpu" and _interpreter_broken():
            return _interpreter_broken()
        if device_type not in ("cpu", "cuda"):
            return f"triton has no {device_type} support here"
        return None
    raise ValueError(f"backend must be one of {BACKENDS} or None, got {backend!r}")


def _interpreter_possible() -> bool:
    # Triton reads TRITON_INTERPRET when a function is decorated with @triton.jit: our kernels when
    # kernels/ is imported, and triton.language's own helpers (tl.max, tl.sum, ...) when triton is
    # first imported.  Both must have seen the variable.
    if os.environ.get("TRITON_INTERPRET") == "1":
        return True
    # Without a GPU we may switch the interpreter on ourselves, as long as neither triton's helpers
    # nor a kernel of ours were decorated for the GPU yet.
    return (not torch.cuda.is_available() and "triton.language" not in sys.modules
            and not any(m.startswith("r1core._kernels.") for m in sys.modules))


def _interpreter_early() -> None:
    """Without a GPU, switch the Triton interpreter on when r1core is imported, before anything
    imports triton: torch imports it lazily (torch._dynamo, reached by any torch.library custom op's
    autograd), and a triton imported without the variable has GPU-only helpers that the interpreter
    cannot call ("Cannot call @triton.jit'd outside of the scope of a kernel")."""
    if (os.environ.get("TRITON_INTERPRET") is None and "triton" not in sys.modules
            and not torch.cuda.is_available() and importlib.util.find_spec("triton") is not None):
        os.environ["TRITON_INTERPRET"] = "1"


_interpreter_early()


def kernels(name: str) -> ModuleType:
    """Import the Triton kernel module r1core._kernels.<name> (switching the interpreter on when
    there is no GPU, so Triton kernels run on CPU tensors)."""
    why = _triton_missing()
    if why:
        raise BackendUnavailable(why)
    if not torch.cuda.is_available() and _interpreter_broken():
        raise BackendUnavailable(_interpreter_broken())
    if not torch.cuda.is_available() and os.environ.get("TRITON_INTERPRET") != "1":
        if not _interpreter_possible():
            raise BackendUnavailable(missing("triton", "cpu"))
        os.environ["TRITON_INTERPRET"] = "1"
    return importlib.import_module(f"r1core._kernels.{name}")


# ---------------------------------------------------------------------------------------------
# the choice
# ---------------------------------------------------------------------------------------------
OPS: dict[str, "Op"] = {}  # every declared op by name (r1core.train.config checks grpo.backend with it)


@dataclass(frozen=True, eq=False)
class Op:
    """One op's dispatch table.

    gpu_order: backends to try on CUDA tensors, fastest first (CPU tensors: "cpp", else "torch").
    float64:   "any" (every backend computes float64) or "torch" (float64 runs on "torch" only: the
               default picks it, another backend asked for by name is a ValueError).
    needs:     backend -> the r1core._C functions it calls.
    impls:     backend -> function, filled by `@OP.impl(backend)`; its keys are the backends the op has.
    """
    name: str
    gpu_order: tuple[str, ...]
    float64: str = "any"
    needs: dict[str, tuple[str, ...]] = field(default_factory=dict)
    impls: dict[str, Callable] = field(default_factory=dict)

    def __post_init__(self):
        OPS[self.name] = self

    def impl(self, *backends: str) -> Callable[[Callable], Callable]:
        """Decorator: register `fn` as this op's implementation on each of `backends`."""
        assert set(backends) <= set(BACKENDS), backends

        def register(fn: Callable) -> Callable:
            self.impls.update(dict.fromkeys(backends, fn))
            return fn
        return register

    @property
    def backends(self) -> tuple[str, ...]:
        return tuple(self.impls)

    def missing(self, backend: str, device_type: str) -> str | None:
        """Why this op cannot run on `backend` for tensors of `device_type`, or None."""
        if backend not in self.impls:
            return f"backend {backend!r} is not implemented for this op (implemented: {', '.join(self.impls)})"
        return missing(backend, device_type, self.needs.get(backend, ()))

    def choose(self, x: torch.Tensor, backend: str | None, *, arg: str = "inputs") -> str:
        """The backend that runs this op on `x` (the tensor whose device and dtype decide; `arg` names
        it in errors)."""
        return _choose(self.name, x.device.type, x.dtype == torch.float64, backend,
                       os.environ.get(ENV_VAR) or None, arg)

    def fastest(self, device_type: str) -> str:
        """The first available backend of the preference order for tensors of `device_type`."""
        order = self.gpu_order if device_type == "cuda" else ("cpp", "torch")
        return next((b for b in order if self.missing(b, device_type) is None), "torch")

    def explicit(self, backend: str | None) -> bool:
        """Whether the caller named the backend (argument or R1CORE_BACKEND)."""
        return backend is not None or bool(os.environ.get(ENV_VAR))

    def __call__(self, backend: str, *args, **kwargs):  # run the implementation `choose` picked
        return self.impls[backend](*args, **kwargs)


def _choose(name: str, device_type: str, is_float64: bool, backend: str | None, env: str | None, arg: str) -> str:
    op = OPS[name]
    requested = backend if backend is not None else env
    if requested is not None:
        if requested not in BACKENDS:
            src = "backend" if backend is not None else f"environment variable {ENV_VAR}"
            raise ValueError(f"{name}: {src} must be one of {BACKENDS}, got {requested!r}")
        why = op.missing(requested, device_type)
        if why:
            raise BackendUnavailable(f"{name}: {why}" if requested not in op.impls
                                     else f"{name}: backend {requested!r} is unavailable: {why}")
        if is_float64 and op.float64 == "torch" and requested != "torch":
            raise ValueError(f"{name}: float64 {arg} run on backend='torch' only (or backend=None), "
                             f"got backend={requested!r}")
        return requested
    return "torch" if is_float64 and op.float64 == "torch" else op.fastest(device_type)


# torch.compile: the choice is made once while tracing, not traced into.  This is exactly what
# torch.compiler.assume_constant_result does, without importing torch._dynamo (and Triton with it)
# at import time; tests/ops/test_grpo_loss.py::test_torch_compile_fullgraph holds it.
_choose._dynamo_marked_constant = True


def backends() -> dict[str, str]:
    """Every backend with 'available' or the reason it is missing, for the tensors' usual device."""
    out = {}
    for name in BACKENDS:
        dev = "cuda" if name == "cuda" or (name == "triton" and torch.cuda.is_available()) else "cpu"
        why = missing(name, dev)
        out[name] = "available" + (" (interpreter, CPU tensors)" if name == "triton" and dev == "cpu" and not why else "") \
            if why is None else f"missing: {why}"
    return out
