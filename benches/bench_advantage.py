"""Bench: group-normalised advantage (r1core.grpo_advantages), every backend on the machine against
the PyTorch reference (backend "torch": float64 eager ops), torch.compile of the reference on GPU.

Bytes counted: 4N read (float32 rewards) + 4N written (float32 advantages) = 8N, the minimum any
implementation must move; scale "batch" must in fact read the rewards twice (its second read comes
from L2 at 1M rewards), which is not counted.  The default call includes the finiteness check: on
GPU a 4-byte memset plus a device sync to read the flag; the "(no check)" rows set
R1CORE_SKIP_CHECKS=1 and show the kernel alone (one launch for scale "group").

Predictions.  H100, N = 1M, G = 16: 8 MB at ~3 TB/s is ~3 us of DRAM time, so the kernel is bound
by launch latency (~3-5 us per launch) and the checked call by its sync (~15-20 us); the reference
runs ~10 float64 kernels (~100 us).  CPU (2 shared cores here): the C++ kernel does ~15 scalar double
operations per reward, ~2-4 ms per 1M; the reference makes ~10 float64 passes, ~10-20 ms.
"""
from __future__ import annotations

import os

import torch

import r1core
from r1core.bench import Case
from r1core._backend import missing
from r1core.ref.advantage import grpo_advantages_ref

G = 16


def _without_checks(fn):
    def run():
        os.environ["R1CORE_SKIP_CHECKS"] = "1"
        try:
            return fn()
        finally:
            del os.environ["R1CORE_SKIP_CHECKS"]
    return run


def cases(device: torch.device, quick: bool) -> list[Case]:
    gen = torch.Generator().manual_seed(0)
    sizes = [4096] if quick else [1 << 20, 1 << 16]
    out: list[Case] = []
    for N in sizes:
        rewards = (torch.rand(N, generator=gen) < 0.4).float().add_(torch.randn(N, generator=gen) * 0.1).to(device)
        scales = ["group", "batch"] if N == sizes[0] else ["group"]
        for scale in scales:
            op = "grpo_advantages" + ("" if scale == "group" else f" {scale}")
            shape = f"N={N} G={G}"

            def add(backend, fn, **kw):
                out.append(Case(op=op, shape=shape, dtype="fp32", backend=backend, fn=fn, bytes=8 * N, **kw))

            def call(backend, r=rewards, scale=scale):
                return lambda: r1core.grpo_advantages(r, G, scale=scale, backend=backend)

            add("torch", call("torch"), baseline=True, note="float64 eager reference + isfinite check")
            if device.type == "cpu":
                if missing("cpp", "cpu") is None:
                    add("cpp", call("cpp"))
                continue  # the Triton interpreter is a correctness tool, not benched
            compiled = torch.compile(grpo_advantages_ref)
            add("torch.compile", lambda r=rewards, scale=scale: compiled(r, G, scale=scale),
                note="compiled reference (no finiteness check)")
            for backend in ("triton", "cuda"):
                if missing(backend, "cuda") is None:
                    add(backend, call(backend), note="with finiteness check (memset + sync)")
                    add(f"{backend} (no check)", _without_checks(call(backend)),
                        note="R1CORE_SKIP_CHECKS=1: kernel launch(es) only")
    return out
