"""Weighted masks (docs/spec.md §2: a non-binary mask acts as per-token weights) through every loss op,
every objective of §2b and every backend, against r1core.ref.grpo_oracle — a float64 oracle that
imports nothing from r1core, so no weighting rule can cancel out of the comparison.

Legend: B sequences, T positions, V vocabulary, H hidden.  Regression for issue 31: the general path of
grpo_loss applied the mask weight twice to the gradient on the cpp and triton backends.
"""
from __future__ import annotations

import pytest
import torch

import r1core
from r1core import _backend
from r1core.ref.grpo_oracle import oracle_loss

BACKENDS = [
    "torch",
    pytest.param("cpp", marks=pytest.mark.skipif(_backend.missing("cpp", "cpu") is not None,
                                                 reason="r1core._C not built")),
    pytest.param("triton", marks=pytest.mark.interpret),
]
TOL = dict(rtol=2e-5, atol=2e-6)

# the plain clip objective (single pass) and one config per §2b family (general path)
OBJECTIVES = {
    "clip": dict(),
    "clip_kl": dict(beta=0.04),
    "grpo_bias_kl": dict(beta=0.04, use_bias_correction_kl=True),
    "gspo": dict(importance_sampling_level="sequence", eps_low=3e-4, eps_high=4e-4),
    "gspo_trl": dict(importance_sampling_level="sequence", beta=0.04, use_bias_correction_kl=True),
    "delta": dict(delta=1.3, eps_high=0.28),
    "cispo": dict(policy="cispo", eps_high=1.2),
    "sapo": dict(policy="sapo"),
    "vespo": dict(policy="vespo"),
    "luspo": dict(importance_sampling_level="sequence", loss_agg="seq_mean_token_sum"),
    "rollout_is_seq_mask": dict(rollout_is="sequence_mask", rollout_is_min=0.5, rollout_is_max=2.0, roll=True),
    "rollout_is_token_trunc": dict(rollout_is="token_truncate", roll=True),
    "off_policy": dict(off_policy_mask_threshold=0.05, roll=True),
    "entropy_bonus": dict(entropy_coef=0.01, beta=0.02),
    "top_entropy": dict(top_entropy_quantile=0.5),
    "truncated": dict(mask_truncated_completions=True, trunc=True),
}


def make(gen, B=3, T=5, V=37, H=8):
    """Random inputs (never zeros) with a weighted mask: 0, 0.5, 1, 2, 3 and an empty sequence."""
    big = torch.randn(B, T + 1, V, generator=gen) * 2.0
    logits = big[:, :T]                                   # strided over T
    targets = torch.randint(0, V, (B, T), generator=gen)
    levels = torch.tensor([0.0, 0.5, 1.0, 2.0, 3.0])
    mask = levels[torch.randint(0, 5, (B, T), generator=gen)]
    mask[0, 0], mask[0, 1], mask[2, 0] = 3.0, 0.5, 2.0
    mask[1] = 0.0                                         # an empty sequence
    lp = torch.log_softmax(big[:, :T].double(), -1).gather(-1, targets[..., None])[..., 0]
    inp = dict(advantages=torch.randn(B, generator=gen),
               old_logp=(lp + 0.2 * torch.randn(B, T, generator=gen)).float(),
               ref_logp=(lp + 0.3 * torch.randn(B, T, generator=gen)).float(),
               rollout_logp=(lp + 0.1 * torch.randn(B, T, generator=gen)).float(),
               truncated=torch.tensor([False, True, False][:B]))
    hidden = torch.randn(B, T, H, generator=gen)
    weight = torch.randn(V, H, generator=gen) * 0.5
    return logits, targets, mask, inp, hidden, weight


def keywords(cfg, inp):
    cfg = dict(cfg)
    kw = {"old_logp": inp["old_logp"], "ref_logp": inp["ref_logp"]}
    if cfg.pop("roll", False):
        kw["rollout_logp"] = inp["rollout_logp"]
    if cfg.pop("trunc", False):
        kw["truncated"] = inp["truncated"]
    kw.update(cfg)
    return kw


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_grpo_loss_weighted_mask(name, backend, gen):
    logits, targets, mask, inp, _, _ = make(gen)
    kw = keywords(OBJECTIVES[name], inp)
    x = logits.detach().clone().requires_grad_(True)
    loss, _ = r1core.grpo_loss(x, targets, inp["advantages"], mask, backend=backend, **kw)
    loss.backward()
    want, g = oracle_loss(logits, targets, inp["advantages"], mask, **kw)
    torch.testing.assert_close(loss.double(), want, **TOL)
    torch.testing.assert_close(x.grad.double(), g, **TOL)
    assert g.abs().sum() > 0


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_fused_linear_weighted_mask(name, backend, gen):
    _, targets, mask, inp, hidden, weight = make(gen)
    kw = keywords(OBJECTIVES[name], inp)
    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    loss, _ = r1core.fused_linear_grpo_loss(h, w, targets, inp["advantages"], mask, backend=backend, **kw)
    loss.backward()
    h64 = hidden.double().requires_grad_(True)
    w64 = weight.double().requires_grad_(True)
    logits64 = h64 @ w64.T
    want, g = oracle_loss(logits64, targets, inp["advantages"], mask, **kw)
    gh, gw = torch.autograd.grad(logits64, (h64, w64), g)
    torch.testing.assert_close(loss.double(), want, **TOL)
    torch.testing.assert_close(h.grad.double(), gh, **TOL)
    torch.testing.assert_close(w.grad.double(), gw, **TOL)


def test_issue_reproducer_cpp_equals_torch():
    """The issue's reproducer: cispo with a mask of 3s, the cpp gradient was 3x torch's."""
    if _backend.missing("cpp", "cpu") is not None:
        pytest.skip("r1core._C not built")
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2, 6, 11, generator=g)
    ids = torch.randint(0, 11, (2, 6), generator=g)
    adv = torch.randn(2, generator=g)
    m = torch.full((2, 6), 3.0)
    grads = []
    for b in ("torch", "cpp"):
        xx = x.clone().requires_grad_(True)
        r1core.grpo_loss(xx, ids, adv, m, policy="cispo", eps_high=5.0, backend=b)[0].backward()
        grads.append(xx.grad)
    torch.testing.assert_close(grads[1], grads[0], **TOL)
