"""How a bench case is timed and measured: wall time (CUDA events on a GPU) and peak extra memory."""
from __future__ import annotations

import ctypes
import gc
import statistics
import time
from typing import Any, Callable

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_fn(fn: Callable[[], Any], device: torch.device, *, warmup: int = 2, min_reps: int = 5,
            budget_s: float = 2.0) -> list[float]:
    """Wall times in seconds of repeated calls (CUDA: events around each call, L2 not flushed)."""
    for _ in range(warmup):
        fn()
    sync(device)
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < min_reps or (time.perf_counter() - start < budget_s and len(times) < 200):
        if device.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            fn()
            b.record()
            b.synchronize()
            times.append(a.elapsed_time(b) / 1e3)
        else:
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
    return times


def quantiles(times: list[float]) -> tuple[float, float, float]:
    """p20, p50, p80 (Liger's convention)."""
    if len(times) == 1:
        return times[0], times[0], times[0]
    q = statistics.quantiles(times, n=10, method="inclusive")
    return q[1], statistics.median(times), q[7]


# ---------------------------------------------------------------------------------------------
# peak memory: CUDA from the caching allocator; CPU from the kernel's resident-set high-water mark
# ---------------------------------------------------------------------------------------------
_M_MMAP_THRESHOLD = -3


def _pin_malloc() -> None:
    """Make glibc serve every allocation over 1 MiB with mmap and give it back on free, so the
    RSS high-water mark measures what a call really holds (torch's CPU allocator uses malloc)."""
    try:
        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except OSError:
        pass


_pin_malloc()


def _rss_bytes(field_name: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) * 1024
    return 0


def peak_extra_bytes(fn: Callable[[], Any], device: torch.device) -> int | None:
    """Peak memory one call holds beyond what existed before it (its outputs included)."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        before = torch.cuda.memory_allocated(device)
        out = fn()
        torch.cuda.synchronize(device)
        peak = torch.cuda.max_memory_allocated(device) - before
        del out
        return peak
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset VmHWM to the current RSS
    except OSError:
        return None
    before = _rss_bytes("VmRSS")
    out = fn()
    peak = _rss_bytes("VmHWM") - before
    del out
    return max(peak, 0)
