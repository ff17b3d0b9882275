"""Data parallelism: 2 gloo processes reach the same losses and weights after 3 steps as 1 process
with the same global batch (FSDP2 and DDP), with awkward micro-batches, gradient accumulation,
mu = 2 and dropped zero-variance groups (so ranks hold different numbers of rows)."""
import json
import os
import socket

import pytest
import torch
import torch.multiprocessing as mp

COMMON = ["steps=3", "rollout.prompts=4", "rollout.group_size=4", "rollout.gen_batch=1", "optim.micro_batch=3",
          "optim.mini_batches=2", "grpo.mu=2", "grpo.drop_zero_variance=true", "grpo.loss_agg=seq_mean_token_mean",
          "grpo.beta=0.02", "optim.lr=0.003", "grpo.scale=batch"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(rank: int, world: int, port: int, out: str) -> None:
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from r1core.train import distributed as D
    from r1core.train.grpo import GRPOTrainer
    from tinyrl import tiny_config, tiny_deps
    info = D.init("cpu")
    try:
        for kind in ("fsdp", "ddp"):
            cfg = tiny_config(f"{out}/{kind}", *COMMON, f"run.dist={kind}")
            t = GRPOTrainer(cfg, deps=tiny_deps(), info=info)
            losses = [t.step(s) for s in (1, 2, 3)]
            with D.full_params(t.policy):
                state = {k: v.detach().clone() for k, v in t.model.named_parameters()}
            if rank == 0:
                torch.save(state, f"{out}/{kind}-weights.pt")
                with open(f"{out}/{kind}-metrics.json", "w") as f:
                    json.dump([{k: m[k] for k in ("loss", "reward_mean", "kl_mean", "grad_norm", "zero_var_groups",
                                                   "optimizer_steps")} for m in losses], f)
    finally:
        D.shutdown(info)


def test_two_gloo_ranks_match_one_process(tmp_path):
    import sys
    sys.path.insert(0, os.path.dirname(__file__))
    from r1core.train.grpo import GRPOTrainer
    from tinyrl import tiny_config, tiny_deps
    single = GRPOTrainer(tiny_config(tmp_path / "single", *COMMON), deps=tiny_deps())
    ref = [single.step(s) for s in (1, 2, 3)]
    assert any(0 < m["zero_var_groups"] < 4 for m in ref), "the test wants ranks with different numbers of rows"
    ref_w = dict(single.model.named_parameters())
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for kind in ("fsdp", "ddp"):
        got = json.loads((tmp_path / f"{kind}-metrics.json").read_text())
        for m_ref, m in zip(ref, got):
            for k, v in m.items():
                assert v == pytest.approx(m_ref[k], rel=1e-4, abs=1e-6), (kind, k)
        w = torch.load(tmp_path / f"{kind}-weights.pt")
        for k, v in ref_w.items():
            assert not isinstance(w[k], torch.distributed.tensor.DTensor)
            assert torch.allclose(w[k], v, rtol=1e-4, atol=1e-6), (kind, k)
