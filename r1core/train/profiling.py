"""Where a step's time goes: NVTX ranges and wall-clock per phase, and the nsys capture window.

Phases (each an NVTX range `r1core/<phase>` on a CUDA machine): rollout, reward, logprobs, forward,
backward, optimizer.  `run.profile_steps=a:b` calls cudaProfilerStart before step a and
cudaProfilerStop after step b-1, so

    nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop \\
        r1core train ... profile_steps=3:5

records exactly those steps (the timeline shows one r1core/rollout block, then reward, logprobs, and
alternating forward/backward ranges per micro-batch, then optimizer).
"""
from __future__ import annotations

import contextlib
import time
from collections import defaultdict

import torch

from r1core import _nvtx
from r1core._nvtx import nvtx_range

PHASES = ("rollout", "reward", "logprobs", "forward", "backward", "optimizer")


class PhaseTimer:
    """Accumulate seconds per phase within one step.  On CUDA the phases are timed with CUDA events
    (the GPU's time, not the launch queue's) that are read once, in `reset`: a phase boundary never
    synchronises, so timing the micro-batch loop adds no host sync per micro-batch."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"
        self.seconds: dict[str, float] = defaultdict(float)
        self._events: list[tuple[str, object, object]] = []

    @contextlib.contextmanager
    def __call__(self, phase: str):
        if self.cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
        t0 = time.perf_counter()
        with nvtx_range(phase):
            yield
        if self.cuda:
            end.record()
            self._events.append((phase, start, end))
        else:
            self.seconds[phase] += time.perf_counter() - t0

    def reset(self) -> dict[str, float]:
        if self._events:
            torch.cuda.synchronize()       # once per step
            for phase, start, end in self._events:
                self.seconds[phase] += start.elapsed_time(end) / 1000.0
            self._events = []
        out = {f"time/{k}": v for k, v in self.seconds.items()}
        self.seconds = defaultdict(float)
        return out


class ProfileWindow:
    """cudaProfilerStart at the start of step `a`, cudaProfilerStop at the end of step `b - 1`."""

    def __init__(self, steps: tuple[int, int] | None):
        self.steps = steps
        self.active = False
        self.cuda = _nvtx.cuda_in_use()

    def before_step(self, step: int) -> None:
        if self.steps and step == self.steps[0] and self.cuda and not self.active:
            torch.cuda.synchronize()
            torch.cuda.profiler.start()
            self.active = True

    def after_step(self, step: int) -> None:
        if self.active and step >= self.steps[1] - 1:
            self.close()

    def close(self) -> None:
        if self.active:
            torch.cuda.synchronize()
            torch.cuda.profiler.stop()
            self.active = False
