"""Profiling hooks: the NVTX phase ranges of a step and the cudaProfilerStart/Stop window of
`profile_steps=a:b`, observed through stand-ins for the CUDA calls (no GPU needed)."""
import torch

from r1core import _nvtx
from r1core.train.grpo import GRPOTrainer
from tinyrl import tiny_config, tiny_deps


def test_phase_ranges_and_profiler_window(tmp_path, monkeypatch):
    events = []
    monkeypatch.setattr(_nvtx, "cuda_in_use", lambda: True)  # not torch.cuda.is_available: torch itself asks it
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *a, **k: None)
    monkeypatch.setattr(torch.cuda.profiler, "start", lambda: events.append("START"))
    monkeypatch.setattr(torch.cuda.profiler, "stop", lambda: events.append("STOP"))
    monkeypatch.setattr(torch.cuda.nvtx, "range_push", lambda name: events.append(name))
    monkeypatch.setattr(torch.cuda.nvtx, "range_pop", lambda: None)
    t = GRPOTrainer(tiny_config(tmp_path, "steps=3", "profile_steps=2:3", "model.device=cpu", "grpo.beta=0.1"),
                    deps=tiny_deps())
    t.train()
    assert events.count("START") == 1 and events.count("STOP") == 1
    window = events[events.index("START"):events.index("STOP")]
    phases = [e for e in window if e.startswith("r1core/") and e.split("/")[1] in
              ("rollout", "reward", "logprobs", "forward", "backward", "optimizer")]
    assert phases[:3] == ["r1core/rollout", "r1core/reward", "r1core/logprobs"]   # beta > 0: reference log-probs
    assert phases[3:] == ["r1core/forward", "r1core/backward"] * 4 + ["r1core/optimizer"]   # 16 rows / 4 per micro
    assert "r1core/fused_linear_grpo_loss" in window                              # the op's own range inside
