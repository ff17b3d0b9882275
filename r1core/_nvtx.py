"""NVTX ranges so Nsight Systems timelines read by op name; free when CUDA is absent."""
from __future__ import annotations

import contextlib

import torch


def cuda_in_use() -> bool:
    """Whether the NVTX ranges and the profiler window talk to CUDA (one place, so tests can
    pretend without mocking torch.cuda.is_available for all of torch: torch 2.11's optimizer
    then makes real CUDA calls)."""
    return torch.cuda.is_available()


@contextlib.contextmanager
def nvtx_range(name: str, enabled: bool | None = None):
    """Push an NVTX range named `r1core/<name>` around the block when CUDA is in use."""
    if enabled is None:
        enabled = cuda_in_use()
    if not enabled:
        yield
        return
    torch.cuda.nvtx.range_push(f"r1core/{name}")
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()
