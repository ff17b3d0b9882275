"""r1core.integrations.verl: the advantage estimator and policy loss with verl's signatures.

Always: against r1core's own references (grpo_loss_ref on explicit logits, grpo_advantages), the
aggregation modes, rollout weights, errors, and registration into a registry with verl's API.
Where verl imports (it pulls ray and pins transformers < 5.11, so CI does not install it; run with
PYTHONPATH pointing at a `pip install --target DIR --no-deps verl ray tensordict omegaconf ...`):
parity with verl's own compute_grpo_outcome_advantage, compute_policy_loss_vanilla and agg_loss.
"""
import types

import numpy as np
import pytest
import torch

import r1core
from r1core.integrations import verl as r1verl
from r1core.ref.grpo_loss import grpo_loss_ref

try:
    from omegaconf import OmegaConf
    from verl.trainer.ppo import core_algos as verl_core
except Exception:  # noqa: BLE001 - verl missing or unimportable here
    verl_core = None

needs_verl = pytest.mark.skipif(verl_core is None, reason="verl is not importable here")


def logits_batch(gen, B=4, T=6, V=11, empty_row=False):
    logits = torch.randn(B, T, V, generator=gen, dtype=torch.float64) * 2
    targets = torch.randint(0, V, (B, T), generator=gen)
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    if empty_row:
        lengths[1] = 0
    mask = torch.arange(T)[None] < lengths[:, None]
    adv = torch.randn(B, generator=gen, dtype=torch.float64)
    with torch.no_grad():
        lp = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    old = lp + 0.3 * torch.randn(B, T, generator=gen, dtype=torch.float64)
    return logits, targets, mask, adv, old


def cfg(**kw):
    base = dict(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=1e9, global_batch_info={})
    base.update(kw)
    return OmegaConf.create(base) if verl_core is not None else types.SimpleNamespace(**base)


@pytest.mark.parametrize("mode, agg", [("token-mean", "token_mean"), ("seq-mean-token-mean", "seq_mean_token_mean"),
                                       ("seq-mean-token-sum-norm", "seq_mean_token_sum_norm")])
def test_policy_loss_is_r1core_grpo(gen, mode, agg):
    logits, targets, mask, adv, old = logits_batch(gen)
    L1 = logits.clone().requires_grad_()
    want, stats = grpo_loss_ref(L1, targets, adv, mask, old_logp=old, eps_low=0.2, eps_high=0.28, loss_agg=agg)
    want.backward()
    L2 = logits.clone().requires_grad_()
    log_prob = torch.log_softmax(L2, -1).gather(-1, targets[..., None])[..., 0]
    A = adv[:, None].expand_as(log_prob)
    got, metrics = r1verl.grpo_policy_loss(old, log_prob, A, mask, mode, config=cfg())
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(L2.grad, L1.grad, rtol=1e-10, atol=1e-12)
    assert metrics["r1core/clip_low_frac"] == pytest.approx(stats.clip_low_frac.item())
    assert metrics["r1core/clip_high_frac"] == pytest.approx(stats.clip_high_frac.item())
    assert metrics["actor/pg_clipfrac"] == pytest.approx(stats.clip_low_frac.item() + stats.clip_high_frac.item())


def test_aggregation_global_batch_and_rollout_weights(gen):
    loss_mat = torch.randn(4, 5, generator=gen, dtype=torch.float64)
    mask = torch.rand(4, 5, generator=gen) > 0.3
    mask[2] = False
    m = mask.double()
    local = r1verl.aggregate(loss_mat, mask, "token-mean")
    torch.testing.assert_close(local, (loss_mat * m).sum() / m.sum())
    # two ranks with 30 tokens in all: each rank's loss is its token sum / 30 · 2 (DDP averages them)
    torch.testing.assert_close(r1verl.aggregate(loss_mat, mask, "token-mean", dp_size=2, batch_num_tokens=30),
                               (loss_mat * m).sum() / 30 * 2)
    n_seq = (m.sum(-1) > 0).sum()
    torch.testing.assert_close(r1verl.aggregate(loss_mat, mask, "seq-mean-token-sum-norm", loss_scale_factor=8),
                               (loss_mat * m).sum() / n_seq / 8)
    with pytest.raises(ValueError, match="batch_num_tokens"):
        r1verl.aggregate(loss_mat, mask, "token-mean", dp_size=2)
    with pytest.raises(ValueError, match="loss_agg_mode"):
        r1verl.aggregate(loss_mat, mask, "token-sum")
    # rollout importance weights scale each token's term
    logits, targets, mask, adv, old = logits_batch(gen)
    lp = torch.log_softmax(logits, -1).gather(-1, targets[..., None])[..., 0]
    A = adv[:, None].expand_as(lp)
    w = torch.full(lp.shape, 2.0, dtype=torch.float64)
    w[0] = 0.0                                          # sequence 0 switched off by its weights
    l_w, _ = r1verl.grpo_policy_loss(old, lp, A, mask, "token-mean", cfg(), rollout_is_weights=w)
    keep = mask.clone()
    keep[0] = False
    l_1, _ = r1verl.grpo_policy_loss(old, lp, A, keep, "token-mean", cfg())
    torch.testing.assert_close(l_w, 2 * l_1 * keep.sum() / mask.sum())



@pytest.mark.parametrize("norm", [True, False])
def test_advantage_groups_by_uid_in_any_order(gen, norm):
    G, n_groups, T = 4, 3, 5
    scores = torch.randn(G * n_groups, generator=gen)
    scores[8:12] = 0.5                                  # one group of equal rewards: exactly 0
    uids = np.array([f"q{i // G}" for i in range(G * n_groups)], dtype=object)
    perm = torch.randperm(G * n_groups, generator=gen)
    lengths = torch.randint(1, T + 1, (G * n_groups,), generator=gen)
    mask = (torch.arange(T)[None] < lengths[:, None]).float()
    rewards = torch.zeros(G * n_groups, T)
    rewards[torch.arange(G * n_groups), lengths - 1] = scores   # outcome reward on the last token
    adv, ret = r1verl.grpo_advantage(rewards[perm], mask[perm], uids[perm.numpy()], epsilon=1e-6,
                                     norm_adv_by_std_in_grpo=norm)
    want = r1core.grpo_advantages(scores, G, scale="group" if norm else "none", eps=1e-6)
    torch.testing.assert_close(adv, want[perm][:, None] * mask[perm])
    assert adv is ret or torch.equal(adv, ret)
    assert (adv[(perm >= 8) & (perm < 12)] == 0).all()
    # verl's algorithm config wins over the keyword, as in verl's generic estimator path
    adv2, _ = r1verl.grpo_advantage(rewards, mask, uids, config={"norm_adv_by_std_in_grpo": not norm})
    torch.testing.assert_close(adv2, r1core.grpo_advantages(scores, G, scale="none" if norm else "group",
                                                            eps=1e-6)[:, None] * mask)


def test_advantage_errors():
    r, m = torch.randn(6, 3), torch.ones(6, 3)
    with pytest.raises(ValueError, match="same number"):
        r1verl.grpo_advantage(r, m, np.array([0, 0, 0, 1, 1, 2]))
    with pytest.raises(ValueError, match="groups of one"):
        r1verl.grpo_advantage(r, m, np.arange(6))
    with pytest.raises(ValueError, match="index"):
        r1verl.grpo_advantage(r, m, None)


def test_register_with_verls_registry_api():
    adv_reg, loss_reg = {}, {}
    fake = types.SimpleNamespace(
        register_adv_est=lambda name: (lambda fn: adv_reg.setdefault(name, fn)),
        register_policy_loss=lambda name: (lambda fn: loss_reg.setdefault(name, fn)))
    assert r1verl.register(core_algos=fake) == "r1core_grpo"
    assert adv_reg["r1core_grpo"] is r1verl.grpo_advantage
    assert loss_reg["r1core_grpo"] is r1verl.grpo_policy_loss
    assert loss_reg["r1core_gspo"] is r1verl.gspo_policy_loss


@pytest.mark.parametrize("mode", ["token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm"])
def test_gspo_policy_loss_is_gspo_token(gen, mode):
    """r1core_gspo against GSPO-token written out (s_i,t = sg[s_i]·π/sg[π], verl's formula) in float64."""
    logits, targets, mask, adv, old = logits_batch(gen, empty_row=True)
    old = old.detach() + 0.002 * torch.randn(old.shape, generator=gen, dtype=torch.float64)
    m = mask.double()
    L1 = logits.clone().requires_grad_()
    lp = torch.log_softmax(L1, -1).gather(-1, targets[..., None])[..., 0]
    A = adv[:, None].expand_as(lp)
    seq = ((lp.detach() - old) * m).sum(-1) / m.sum(-1).clamp_min(1)
    s_it = torch.exp(seq[:, None] + lp - lp.detach())
    pg = -torch.minimum(s_it * A, s_it.clamp(1 - 3e-4, 1 + 4e-4) * A)
    want = r1verl.aggregate(pg, mask, mode)
    want.backward()
    L2 = logits.clone().requires_grad_()
    lp2 = torch.log_softmax(L2, -1).gather(-1, targets[..., None])[..., 0]
    got, metrics = r1verl.gspo_policy_loss(old, lp2, A, mask, mode,
                                           config=cfg(clip_ratio_low=3e-4, clip_ratio_high=4e-4))
    got.backward()
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(L2.grad, L1.grad, rtol=1e-10, atol=1e-12)
    assert L1.grad.abs().sum() > 0 and 0 <= metrics["actor/pg_clipfrac"] <= 1


# ---------------------------------------------------------------------------------------------
# parity with verl itself (skipped where verl does not import)
# ---------------------------------------------------------------------------------------------
@needs_verl
def test_register_into_verl():
    r1verl.register()
    r1verl.register()  # idempotent
    assert verl_core.get_adv_estimator_fn("r1core_grpo") is r1verl.grpo_advantage
    assert verl_core.get_policy_loss_fn("r1core_grpo") is r1verl.grpo_policy_loss


@needs_verl
@pytest.mark.parametrize("mode", r1verl.LOSS_AGG_MODES)
def test_policy_loss_matches_verl_vanilla(gen, mode):
    """With the dual clip out of reach (clip_ratio_c huge) and |log ratio| < 20, verl's vanilla PPO
    loss is docs/spec.md §2's pg term: same loss, same gradient, same clip fraction and ppo_kl."""
    logits, targets, mask, adv, old = logits_batch(gen, empty_row=True)
    info = dict(dp_size=2, batch_num_tokens=int(mask.sum()) * 2, global_batch_size=8, loss_scale_factor=7)
    outs = []
    for fn in (verl_core.compute_policy_loss_vanilla, r1verl.grpo_policy_loss):
        L = logits.clone().requires_grad_()
        lp = torch.log_softmax(L, -1).gather(-1, targets[..., None])[..., 0]
        A = adv[:, None].expand_as(lp)
        loss, metrics = fn(old, lp, A, mask, mode, cfg(global_batch_info=info))
        loss.backward()
        outs.append((loss.detach(), L.grad, metrics))
    (lv, gv, mv), (lr, gr, mr) = outs
    torch.testing.assert_close(lr, lv, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(gr, gv, rtol=1e-10, atol=1e-12)
    assert mr["actor/pg_clipfrac"] == pytest.approx(mv["actor/pg_clipfrac"])
    assert mr["actor/ppo_kl"] == pytest.approx(mv["actor/ppo_kl"])


@needs_verl
@pytest.mark.parametrize("mode", r1verl.LOSS_AGG_MODES)
def test_aggregate_matches_verl_agg_loss(gen, mode):
    loss_mat = torch.randn(5, 7, generator=gen, dtype=torch.float64)
    mask = torch.rand(5, 7, generator=gen) > 0.4
    mask[3] = False
    for info in ({}, dict(dp_size=4, batch_num_tokens=77, global_batch_size=19, loss_scale_factor=9)):
        torch.testing.assert_close(r1verl.aggregate(loss_mat, mask, mode, **info),
                                   verl_core.agg_loss(loss_mat, mask, mode, **info))


@needs_verl
@pytest.mark.parametrize("norm", [True, False])
def test_advantage_matches_verl_grpo(gen, norm):
    G, n_groups, T = 5, 4, 6
    rewards = torch.zeros(G * n_groups, T)
    rewards[:, -1] = torch.randint(0, 3, (G * n_groups,), generator=gen).float()
    rewards[:G, -1] = 1.0                                # an all-equal group
    mask = (torch.rand(G * n_groups, T, generator=gen) > 0.2).float()
    uids = np.array([f"p{i % n_groups}" for i in range(G * n_groups)], dtype=object)  # interleaved groups
    want, _ = verl_core.compute_grpo_outcome_advantage(rewards.clone(), mask, uids, epsilon=1e-6,
                                                       norm_adv_by_std_in_grpo=norm)
    got, _ = r1verl.grpo_advantage(rewards, mask, uids, epsilon=1e-6, norm_adv_by_std_in_grpo=norm)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
