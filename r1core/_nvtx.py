"""NVTX ranges so Nsight Systems timelines read by op name; free when CUDA is absent."""
from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def nvtx_range(name: str, enabled: bool | None = None):
    """Push an NVTX range named `r1core/<name>` around the block when CUDA is in use."""
    if enabled is None:
        enabled = torch.cuda.is_available()
    if not enabled:
        yield
        return
    torch.cuda.nvtx.range_push(f"r1core/{name}")
    try:
        yield
    finally:
        torch.cuda.nvtx.range_pop()
