"""The GRPO trainer on a tiny model: a step learns and logs; the micro-batched, accumulated loss
equals one call of the fused op on the whole batch for every aggregation; zero-variance groups;
the reference model only when beta > 0; old log-probs only when the batch is reused."""
import json

import pytest
import torch

from r1core.ops.grpo.fused_linear import fused_linear_grpo_loss
from r1core.train.grpo import Batch, GRPOTrainer
from tinyrl import VOCAB, TinyTask, tiny_config, tiny_deps

REQUIRED = ("step", "reward_mean", "reward_std", "kl_mean", "loss", "tokens_per_s")


def test_one_step_changes_weights_and_logs(tmp_path):
    cfg = tiny_config(tmp_path / "run", "steps=1", "save_every=1")
    t = GRPOTrainer(cfg, deps=tiny_deps())
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    t.train()
    after = t.model.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before), "one GRPO step left the weights unchanged"
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 1 and rows[0]["step"] == 1
    for key in REQUIRED:
        assert key in rows[0] and rows[0][key] is not None, key
    assert rows[0]["tokens"] > 0 and rows[0]["optimizer_steps"] == 1 and rows[0]["ratio_mean"] == pytest.approx(1.0)
    assert (tmp_path / "run" / "config.yaml").exists()
    assert (tmp_path / "run" / "checkpoints" / "step-1" / "model.safetensors").exists()


def _random_batch(gen, N=10, T=7):
    mask = torch.rand(N, T, generator=gen) < 0.7
    mask[2] = False                         # a sequence without any completion token
    mask[5, :] = True
    return Batch(input_ids_NT=torch.randint(0, VOCAB, (N, T), generator=gen),
                 targets_NT=torch.randint(0, VOCAB, (N, T), generator=gen), mask_NT=mask,
                 adv_N=torch.randn(N, generator=gen), rows=torch.arange(N))


def _capture_grads(trainer):
    grads = []

    def step(*_, **__):
        grads.append({n: p.grad.detach().clone() for n, p in trainer.policy.named_parameters()})
    trainer.optimizer.step = step
    return grads


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
def test_micro_batched_loss_equals_one_op_call(tmp_path, gen, loss_agg):
    # max_new_tokens=7: the random batch's sequences hold up to T=7 completion tokens (Dr. GRPO's max_len
    # must cover them)
    cfg = tiny_config(tmp_path, f"grpo.loss_agg={loss_agg}", "optim.micro_batch=3", "optim.grad_clip=0",
                      "grpo.beta=0", "rollout.max_new_tokens=7")
    t = GRPOTrainer(cfg, deps=tiny_deps())
    batch = _random_batch(gen)
    keep = torch.tensor([0, 1, 2, 4, 5, 7, 8])     # as if groups were dropped: the normaliser follows the kept rows
    batch.rows = keep
    grads = _capture_grads(t)
    upd = t._update(batch)
    assert len(grads) == 1 and upd["optimizer_steps"] == 1

    t.optimizer.zero_grad(set_to_none=True)
    model = t.model
    loss, _ = fused_linear_grpo_loss(model.hidden_states(batch.input_ids_NT[keep]), model.lm_head.weight,
                                     batch.targets_NT[keep], batch.adv_N[keep], batch.mask_NT[keep],
                                     loss_agg=loss_agg, max_len=cfg.rollout.max_new_tokens)
    loss.backward()
    assert upd["loss"] == pytest.approx(loss.item(), rel=1e-5, abs=1e-7)
    for n, p in t.policy.named_parameters():
        ref = p.grad
        assert torch.linalg.norm(grads[0][n] - ref) <= 1e-5 * torch.linalg.norm(ref) + 1e-8, n


@pytest.mark.parametrize("opts", [
    ("grpo.policy=cispo", "grpo.eps_high=3.0"),
    ("grpo.policy=sapo", "grpo.loss_agg=seq_mean_token_mean"),
    ("grpo.importance_sampling_level=sequence", "grpo.loss_agg=seq_mean_token_sum"),
    ("grpo.delta=1.5", "grpo.entropy_coef=0.1"),
])
def test_micro_batched_objectives_equal_one_op_call(tmp_path, gen, opts):
    """The grpo.* objective options reach the loss op, and micro-batching keeps their objective."""
    from r1core.train.config import objective_options
    cfg = tiny_config(tmp_path, *opts, "optim.micro_batch=3", "optim.grad_clip=0", "grpo.beta=0")
    kw = objective_options(cfg.grpo)
    assert kw, "the options must reach the op"
    t = GRPOTrainer(cfg, deps=tiny_deps())
    batch = _random_batch(gen)
    grads = _capture_grads(t)
    upd = t._update(batch)
    t.optimizer.zero_grad(set_to_none=True)
    model = t.model
    g = cfg.grpo
    loss, _ = fused_linear_grpo_loss(model.hidden_states(batch.input_ids_NT), model.lm_head.weight,
                                     batch.targets_NT, batch.adv_N, batch.mask_NT, loss_agg=g.loss_agg,
                                     eps_low=g.eps_low, eps_high=g.eps_high, **kw)
    loss.backward()
    assert upd["loss"] == pytest.approx(loss.item(), rel=1e-5, abs=1e-7)
    for n, p in t.policy.named_parameters():
        assert torch.linalg.norm(grads[0][n] - p.grad) <= 1e-5 * torch.linalg.norm(p.grad) + 1e-8, n
    # entropy_mean (grpo.log_entropy): the token mean of the policy's entropy over the batch
    with torch.no_grad():
        x = model.hidden_states(batch.input_ids_NT) @ model.lm_head.weight.T / t.temperature
        H = -(torch.log_softmax(x.double(), -1).exp() * torch.log_softmax(x.double(), -1)).sum(-1)
    m = batch.mask_NT.double()
    assert upd["entropy_mean"] == pytest.approx(float((H * m).sum() / m.sum()), rel=1e-5)


def test_mini_batches_split_optimizer_steps_and_reuses_old_logprobs(tmp_path, gen):
    cfg = tiny_config(tmp_path, "optim.micro_batch=2", "optim.mini_batches=3", "grpo.mu=2")
    t = GRPOTrainer(cfg, deps=tiny_deps())
    calls = []
    orig = t._logprobs
    t._logprobs = lambda *a: calls.append(1) or orig(*a)
    upd = t._update(_random_batch(gen))
    assert upd["optimizer_steps"] == 2 * 3 and calls == [1]   # 3 groups -> 3 minis; 2 passes
    assert upd["ratio_mean"] != pytest.approx(1.0, abs=1e-9)  # later mini-batches are off-policy

    cfg1 = tiny_config(tmp_path / "b", "optim.micro_batch=2")   # on-policy: one optimizer step, mu=1
    t1 = GRPOTrainer(cfg1, deps=tiny_deps())
    calls.clear()
    orig1 = t1._logprobs
    t1._logprobs = lambda *a: calls.append(1) or orig1(*a)
    assert t1._update(_random_batch(gen))["optimizer_steps"] == 1 and calls == []


class ConstantTask(TinyTask):
    def reward(self, completions, examples, *, group_size=1):
        rb = super().reward(completions, examples, group_size=group_size)
        rb.total = [float(i // group_size % 2) for i in range(len(completions))]   # every group constant
        rb.per_reward = [[x] for x in rb.total]
        return rb


def test_zero_variance_groups_are_counted_and_dropped(tmp_path):
    deps = tiny_deps()
    deps.get_task = lambda name, **kw: ConstantTask()
    for drop in (False, True):
        t = GRPOTrainer(tiny_config(tmp_path / str(drop), f"grpo.drop_zero_variance={drop}"), deps=deps)
        before = {k: v.clone() for k, v in t.model.state_dict().items()}
        m = t.step(1)
        assert m["zero_var_groups"] == 4 and m["zero_var_frac"] == 1.0
        assert m["optimizer_steps"] == (0 if drop else 1)
        if drop:
            assert all(torch.equal(before[k], v) for k, v in t.model.state_dict().items())


def test_reference_model_only_when_beta_positive(tmp_path):
    for beta, loads in ((0.0, 1), (0.1, 2)):
        deps = tiny_deps()
        seen = []
        load = deps.load_model
        deps.load_model = lambda src, **kw: seen.append(src) or load(src, **kw)
        t = GRPOTrainer(tiny_config(tmp_path / str(beta), f"grpo.beta={beta}", "optim.lr=0.02"), deps=deps)
        assert len(seen) == loads and (t.ref is None) == (beta == 0)
        m1, m2 = t.step(1), t.step(2)
        assert m1["kl_mean"] == pytest.approx(0.0, abs=1e-6)      # policy == reference at step 1
        assert (m2["kl_mean"] > 0) == (beta > 0)


def test_autocast_bf16_step(tmp_path):
    """model.autocast: parameters and AdamW stay float32, forwards run in bfloat16."""
    t = GRPOTrainer(tiny_config(tmp_path, "model.autocast=bfloat16", "optim.lr=0.01"), deps=tiny_deps())
    before = {k: v.clone() for k, v in t.model.state_dict().items()}
    m = t.step(1)
    assert all(p.dtype == torch.float32 for p in t.model.parameters())
    assert m["grad_norm"] > 0 and any(not torch.equal(before[k], v) for k, v in t.model.state_dict().items())
