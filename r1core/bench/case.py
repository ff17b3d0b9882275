"""What a bench case is.

A case file benches/bench_<op>.py defines `cases(device: torch.device, quick: bool) -> list[Case]`.
Setup (allocating inputs) happens when the case is built; `fn` is the timed call.  Exactly one case
per (op, shape, dtype) group should have baseline=True: the reference the speed-up is taken against.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import torch


@dataclass
class Case:
    op: str                          # "grpo_loss" (add the pass: "grpo_loss fwd+bwd")
    shape: str                       # "N=4096 V=32768"
    dtype: str                       # "fp32", "bf16"
    backend: str                     # "torch", "cpp", "triton", "cuda", "torch.compile", "liger", …
    fn: Callable[[], Any]            # the timed call
    bytes: int | None = None         # bytes that must move (first-principles), for GB/s
    flops: int | None = None         # useful FLOPs, for TFLOP/s
    baseline: bool = False           # the reference that speed-ups are measured against
    note: str = ""
    extra: dict = field(default_factory=dict)


DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
