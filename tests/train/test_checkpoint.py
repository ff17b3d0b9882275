"""Checkpoints: resume continues bit-for-bit, writes are atomic, only the newest N are kept."""
import json

import pytest
import torch

from r1core.train import checkpoint as ckpt
from r1core.train.grpo import GRPOTrainer
from tinyrl import tiny_config, tiny_deps

TIMING = ("tokens_per_s", "step_time", "cpu_time")  # wall and CPU clocks differ run to run


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING and not k.startswith("time/")} for r in rows]


def test_resume_is_bit_for_bit(tmp_path):
    # cosine schedule, warm-up, mu=2 and grad accumulation: every piece of optimizer state matters
    common = ["steps=3", "save_every=1", "optim.schedule=cosine", "optim.warmup=1", "grpo.mu=2",
              "optim.micro_batch=4", "optim.mini_batches=2", "grpo.beta=0.05", "optim.lr=0.03"]
    whole = GRPOTrainer(tiny_config(tmp_path / "a", *common), deps=tiny_deps())
    whole.train()
    first = GRPOTrainer(tiny_config(tmp_path / "b", *common), deps=tiny_deps())
    first.train(stop_after=2)                                  # "killed" after checkpoint 2
    assert ckpt.latest_checkpoint(tmp_path / "b").name == "step-2"
    resumed = GRPOTrainer(tiny_config(tmp_path / "b", *common, "resume=true"), deps=tiny_deps())
    assert resumed.start_step == 2
    resumed.train()
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    a, b = whole.model.state_dict(), resumed.model.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    sa, sb = whole.optimizer.state_dict()["state"], resumed.optimizer.state_dict()["state"]
    assert all(torch.equal(sa[i]["exp_avg_sq"], sb[i]["exp_avg_sq"]) for i in sa)


def test_failed_save_leaves_no_partial_checkpoint(tmp_path):
    t = GRPOTrainer(tiny_config(tmp_path, "steps=2"), deps=tiny_deps())
    t.step(1)
    t.save(1)
    t.step(2)

    def boom(folder):
        raise OSError("disk full")
    t.model.save_pretrained = boom
    with pytest.raises(OSError):
        t.save(2)
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step-1"]   # the partial .tmp is not a checkpoint
    assert (tmp_path / "checkpoints" / ".tmp-step-2").exists()
    del t.model.save_pretrained
    t.save(2)                                                              # the next save clears leftovers
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["step-1", "step-2"]
    files = {p.name for p in (tmp_path / "checkpoints" / "step-2").iterdir()}
    assert {"model.safetensors", "config.json", "trainer.json", "rng"} <= files
    # the final step's checkpoint leaves out the optimizer state (checkpoint.final_optimizer=false)
    assert "optimizer.pt" not in files and (tmp_path / "checkpoints" / "step-1" / "optimizer.pt").exists()


def test_keep_last_n(tmp_path):
    t = GRPOTrainer(tiny_config(tmp_path, "steps=4", "save_every=1", "keep_last=2"), deps=tiny_deps())
    t.train()
    assert [p.name for p in ckpt.checkpoint_dirs(tmp_path)] == ["step-3", "step-4"]


def test_rng_state_round_trip():
    import random

    import numpy as np
    state = ckpt.rng_state()
    x = (torch.rand(3), np.random.rand(3), random.random())
    ckpt.set_rng_state(state)
    y = (torch.rand(3), np.random.rand(3), random.random())
    assert torch.equal(x[0], y[0]) and (x[1] == y[1]).all() and x[2] == y[2]
