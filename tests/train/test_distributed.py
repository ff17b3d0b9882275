"""Data parallelism: 2 gloo processes reach the same losses and weights after 3 steps as 1 process
with the same global batch (FSDP2 and DDP, and FSDP2 on r1core's own Llama with r1core.generate),
with awkward micro-batches, 2 mini-batches, mu = 2, beta > 0, batch-std advantages and dropped
zero-variance groups (so ranks hold different numbers of rows); a checkpoint written by 2 ranks
resumes bit-for-bit."""
import json
import os
import socket
import sys

import pytest
import torch
import torch.multiprocessing as mp

sys.path.insert(0, os.path.dirname(__file__))

COMMON = ["steps=3", "rollout.prompts=4", "rollout.group_size=4", "rollout.gen_batch=1", "optim.micro_batch=3",
          "optim.mini_batches=2", "grpo.mu=2", "grpo.drop_zero_variance=true", "grpo.loss_agg=seq_mean_token_mean",
          "grpo.beta=0.02", "optim.lr=0.003", "grpo.scale=batch"]
KEYS = ("loss", "reward_mean", "kl_mean", "grad_norm", "zero_var_groups", "optimizer_steps")
RUNS = {"fsdp": ("fsdp", False), "ddp": ("ddp", False), "fsdp-llama": ("fsdp", True)}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _deps(llama: bool, out: str):
    from tinyrl import llama_deps, tiny_deps
    return llama_deps(f"{out}/llama") if llama else tiny_deps()


def _run(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from r1core.train import distributed as D
    from r1core.train.grpo import GRPOTrainer
    from tinyrl import tiny_config
    info = D.init("cpu")
    try:
        for name, (kind, llama) in RUNS.items():
            deps = _deps(llama, out)
            cfg = tiny_config(f"{out}/{name}", *COMMON, f"run.dist={kind}")
            t = GRPOTrainer(cfg, deps=deps, info=info)
            metrics = [t.step(1), t.step(2)]
            t.save(2)
            metrics.append(t.step(3))
            with D.full_params(t.policy):
                state = {k: v.detach().clone() for k, v in t.model.named_parameters()}
            resumed = GRPOTrainer(tiny_config(f"{out}/{name}", *COMMON, f"run.dist={kind}", "resume=true"),
                                  deps=deps, info=info)
            again = resumed.step(3)
            assert resumed.start_step == 2 and all(again[k] == metrics[2][k] for k in KEYS), (name, again)
            if rank == 0:
                torch.save(state, f"{out}/{name}-weights.pt")
                with open(f"{out}/{name}-metrics.json", "w") as f:
                    json.dump([{k: m[k] for k in KEYS} for m in metrics], f)
    finally:
        D.shutdown(info)


def test_two_gloo_ranks_match_one_process(tmp_path):
    from r1core.train.grpo import GRPOTrainer
    from tinyrl import make_tiny_llama, tiny_config
    make_tiny_llama(tmp_path / "llama")                  # once, before the ranks read it
    mp.spawn(_run, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    for name, (_, llama) in RUNS.items():
        single = GRPOTrainer(tiny_config(tmp_path / f"single-{name}", *COMMON), deps=_deps(llama, str(tmp_path)))
        ref = [single.step(s) for s in (1, 2, 3)]
        assert any(0 < m["zero_var_groups"] < 4 for m in ref), "the test wants ranks with different numbers of rows"
        got = json.loads((tmp_path / f"{name}-metrics.json").read_text())
        for m_ref, m in zip(ref, got):
            for k, v in m.items():
                assert v == pytest.approx(m_ref[k], rel=1e-4, abs=1e-6), (name, k)
        w = torch.load(tmp_path / f"{name}-weights.pt")
        for k, v in single.model.named_parameters():
            assert not isinstance(w[k], torch.distributed.tensor.DTensor)
            assert torch.allclose(w[k], v, rtol=1e-4, atol=1e-6), (name, k)
