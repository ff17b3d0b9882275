"""Test tiers (pytest markers): plain CPU tests always run; `interpret` runs Triton kernels on CPU
tensors under TRITON_INTERPRET=1 (set here, before any of our kernels is imported); `gpu` needs
CUDA; `nvcc` compile-checks the .cu sources.  Every test seeds its own generator."""
import os
import shutil

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")


def _has_triton() -> bool:
    try:
        import triton  # noqa: F401
    except ImportError:
        return False
    return True


def _interpreter_broken() -> str | None:
    """Why this triton's CPU interpreter cannot run here (triton < 3.7 with numpy >= 2.4), or None:
    r1core's own check, which also turns the triton backend away on CPU with that line."""
    if not _has_triton():
        return None
    from r1core._backend import _interpreter_broken as broken
    return broken()


def pytest_collection_modifyitems(config, items):
    skip_gpu = pytest.mark.skip(reason="needs a CUDA device")
    skip_interp = pytest.mark.skip(reason="needs triton and TRITON_INTERPRET=1 (CPU tensors)")
    skip_nvcc = pytest.mark.skip(reason="nvcc not found")
    interp_ok = _has_triton() and os.environ.get("TRITON_INTERPRET") == "1"
    broken = _interpreter_broken() if interp_ok else None
    if broken:
        interp_ok, skip_interp = False, pytest.mark.skip(reason=broken)
    for item in items:
        if "gpu" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_gpu)
        if "interpret" in item.keywords and not interp_ok:
            item.add_marker(skip_interp)
        if "nvcc" in item.keywords and shutil.which("nvcc") is None:
            item.add_marker(skip_nvcc)


@pytest.fixture
def gen():
    """A fresh, seeded generator per test: random inputs, reproducible failures."""
    return torch.Generator().manual_seed(1234)
