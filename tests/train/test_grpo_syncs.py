"""No host sync per micro-batch in GRPOTrainer's update (issue 31): the statistics accumulate on the
device and reach the host once per update.  The r1core ops the update calls are counted apart: each call
syncs at most twice, once for its value checks (R1CORE_SKIP_CHECKS=1 skips them) and once for the count of
unmasked rows it gathers (a data-dependent shape).  Syncs are counted by wrapping Tensor.item / tolist /
__bool__ / __int__ / __float__ / __index__ and nonzero (tests/train/synccount.py)."""
import pytest
import torch

import r1core.train.grpo as grpo_mod
from r1core.train.grpo import Batch, GRPOTrainer
from synccount import SyncCounter
from tinyrl import VOCAB, tiny_config, tiny_deps

OPS = ("fused_linear_grpo_loss", "fused_linear_logprobs")
OP_SYNCS = 2   # per op call: the value checks + the gather of the unmasked rows


def _batch(gen, N=12, T=7):
    mask = torch.rand(N, T, generator=gen) < 0.7
    mask[2] = False
    mask[5, :] = True
    return Batch(input_ids_NT=torch.randint(0, VOCAB, (N, T), generator=gen),
                 targets_NT=torch.randint(0, VOCAB, (N, T), generator=gen), mask_NT=mask,
                 adv_N=torch.randn(N, generator=gen), rows=torch.arange(N))


def _syncs(tmp_path, micro_batch: int, opts, monkeypatch, *, rollout_logp: bool = False) -> tuple[int, int, int]:
    """-> (syncs outside the ops, syncs inside them, op calls) during one update."""
    t = GRPOTrainer(tiny_config(tmp_path / f"mb{micro_batch}", f"optim.micro_batch={micro_batch}", *opts),
                    deps=tiny_deps())
    trainer, inside = SyncCounter(), SyncCounter()
    calls = []
    for name in OPS:
        op = getattr(grpo_mod, name)

        def counted(*a, _op=op, **k):
            calls.append(1)
            with trainer.pause(), inside.counting():
                return _op(*a, **k)
        monkeypatch.setattr(grpo_mod, name, counted)
    batch = _batch(torch.Generator().manual_seed(0))
    if rollout_logp:      # the sampler's log-probs: the gap metrics (and grpo.rollout_is, when set) use them
        batch.rollout_logp_NT = -torch.rand(batch.mask_NT.shape, generator=torch.Generator().manual_seed(1))
    with trainer.counting():
        t._update(batch)
    monkeypatch.undo()
    return trainer.count, inside.count, len(calls)


@pytest.mark.parametrize("opts", [(), ("grpo.policy=cispo", "grpo.log_entropy=true"), ("grpo.beta=0.04",),
                                  ("optim.mini_batches=2", "grpo.mu=2")])
def test_no_host_sync_per_micro_batch(tmp_path, opts, monkeypatch):
    # 12 rows: one micro-batch per mini-batch, or six (micro_batch=2); the same optimizer steps
    out1, in1, calls1 = _syncs(tmp_path, 12, opts, monkeypatch)
    out6, in6, calls6 = _syncs(tmp_path, 2, opts, monkeypatch)
    assert calls6 > calls1
    assert out6 == out1, f"the trainer syncs per micro-batch: {out1} syncs with 1 micro-batch, {out6} with 6"
    assert in1 <= OP_SYNCS * calls1 and in6 <= OP_SYNCS * calls6, (in1, calls1, in6, calls6)


@pytest.mark.parametrize("opts", [(), ("grpo.rollout_is=sequence_mask",), ("grpo.mu=2", "grpo.rollout_is=token_truncate")])
def test_gap_metrics_add_no_sync_per_micro_batch(tmp_path, opts, monkeypatch):
    out1, in1, calls1 = _syncs(tmp_path, 12, opts, monkeypatch, rollout_logp=True)
    out6, in6, calls6 = _syncs(tmp_path, 2, opts, monkeypatch, rollout_logp=True)
    assert calls6 > calls1
    assert out6 == out1, f"the trainer syncs per micro-batch: {out1} syncs with 1 micro-batch, {out6} with 6"
    assert in1 <= OP_SYNCS * calls1 and in6 <= OP_SYNCS * calls6, (in1, calls1, in6, calls6)


def test_skip_checks_leaves_one_sync_per_op_call(tmp_path, monkeypatch):
    monkeypatch.setenv("R1CORE_SKIP_CHECKS", "1")
    _, inside, calls = _syncs(tmp_path, 2, ("grpo.beta=0.04", "grpo.policy=cispo"), monkeypatch)
    assert inside <= calls, (inside, calls)
