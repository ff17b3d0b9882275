"""The GRPO-family objectives through the public ops (grpo_loss, fused_linear_grpo_loss), the entropy
outputs (logprobs, fused_linear_logprobs, GRPOStats.entropy) and the differentiable (logp, entropy) ops,
every backend, against float64 references on fresh random inputs, with gradients.

Legend: B sequences, T positions, V vocabulary, H hidden.  The oracle: the same (rounded) inputs in
float64 through r1core.ref.grpo_oracle, which shares no code with the ops (the production objective is
held to independent formulas and to TRL's _compute_loss in test_objectives.py), autograd.  Tolerances
docs/spec.md §7 (fp32).
"""
from __future__ import annotations

import pytest
import torch

import r1core
from r1core import _backend
from r1core.ops.grpo.fused_linear import fused_linear_logp_entropy
from r1core.ops.grpo.loss import logp_entropy
from r1core.ref.grpo_oracle import oracle_entropy, oracle_logp_entropy, oracle_logprobs, oracle_objective

BACKENDS = [
    "torch",
    pytest.param("cpp", marks=pytest.mark.skipif(_backend.missing("cpp", "cpu") is not None
                                                 or not hasattr(_backend.ext(), "logprobs_entropy_cpu"),
                                                 reason="r1core._C without the entropy entry points")),
    pytest.param("triton", marks=pytest.mark.interpret),
]
TOL = dict(rtol=2e-5, atol=2e-6)

# one config per objective family (the options of docs/objectives.md)
OBJECTIVES = {
    "grpo_bias_kl": dict(beta=0.04, use_bias_correction_kl=True),
    "gspo": dict(importance_sampling_level="sequence", eps_low=3e-4, eps_high=4e-4),
    "delta": dict(delta=1.3, eps_high=0.28),
    "cispo": dict(policy="cispo", eps_high=1.2),
    "sapo": dict(policy="sapo"),
    "vespo": dict(policy="vespo"),
    "luspo": dict(importance_sampling_level="sequence", loss_agg="seq_mean_token_sum"),
    "rollout_is_seq_mask": dict(rollout_is="sequence_mask", rollout_is_min=0.5, rollout_is_max=2.0, need_roll=True),
    "rollout_is_token_trunc": dict(rollout_is="token_truncate", need_roll=True),
    "off_policy": dict(off_policy_mask_threshold=0.05, need_roll=True),
    "entropy_bonus": dict(entropy_coef=0.01, beta=0.02),
    "top_entropy": dict(top_entropy_quantile=0.5),
    "truncated": dict(mask_truncated_completions=True, need_trunc=True),
}
AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


def make(gen, B=3, T=5, V=37, dtype=torch.float32):
    big = torch.randn(B, T + 1, V, generator=gen) * 2.0
    logits = big.to(dtype)[:, :T]  # strided over T
    targets = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.rand(B, T, generator=gen) < 0.8
    mask[0, 0] = True
    mask[1] = False                 # an empty sequence
    lp = torch.log_softmax(big[:, :T].double(), -1).gather(-1, targets[..., None])[..., 0]
    inp = dict(
        advantages=torch.randn(B, generator=gen),
        old_logp=(lp + 0.2 * torch.randn(B, T, generator=gen)).float(),
        ref_logp=(lp + 0.3 * torch.randn(B, T, generator=gen)).float(),
        rollout_logp=(lp + 0.1 * torch.randn(B, T, generator=gen)).float(),
        truncated=torch.tensor([False, True, True][:B]),
    )
    return logits, targets, mask, inp


def split(cfg, inp):
    """-> (op keywords, objective keywords) for one OBJECTIVES entry."""
    cfg = dict(cfg)
    kw = {"old_logp": inp["old_logp"], "ref_logp": inp["ref_logp"]}
    if cfg.pop("need_roll", False):
        kw["rollout_logp"] = inp["rollout_logp"]
    if cfg.pop("need_trunc", False):
        kw["truncated"] = inp["truncated"]
    kw.update(cfg)
    return kw


def oracle(logits, targets, mask, adv, kw, temperature=1.0):
    """float64 loss, statistics and dlogits of docs/spec.md §2b on the same rounded logits, from
    r1core.ref.grpo_oracle (which shares no code with the ops under test)."""
    x = logits.detach().double().requires_grad_(True)
    lp, H = oracle_logp_entropy(x, targets, temperature)
    lp, H = lp * mask, H * mask
    kw = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}
    out = oracle_objective(lp, adv.double(), mask, entropy=H, **kw)
    (g,) = torch.autograd.grad(out.loss, x)
    return out, g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("name", sorted(OBJECTIVES))
def test_grpo_loss_objectives_match_float64(name, agg, backend, gen):
    logits, targets, mask, inp = make(gen)
    kw = split(OBJECTIVES[name], inp)
    if name == "luspo":
        if agg != "token_mean":
            pytest.skip("luspo has its own aggregation")
    else:
        kw["loss_agg"] = agg
    if "max_len" not in kw and agg == "seq_mean_token_sum_norm":
        kw["max_len"] = 7
    x = logits.detach().clone().requires_grad_(True)
    loss, stats = r1core.grpo_loss(x, targets, inp["advantages"], mask, entropy=True, backend=backend, **kw)
    loss.backward()
    want, g = oracle(logits, targets, mask, inp["advantages"], kw)
    assert loss.dtype == torch.float32 and loss.dim() == 0
    torch.testing.assert_close(loss.double(), want.loss.detach(), **TOL)
    torch.testing.assert_close(x.grad.double(), g, **TOL)
    # the statistics, like the trainer logs them
    torch.testing.assert_close(stats.ratio_mean.double(), want.token_mean(want.ratio), **TOL)
    torch.testing.assert_close(stats.kl_mean.double(), want.token_mean(want.kl), **TOL)
    H = oracle_entropy(logits.double()) * mask
    torch.testing.assert_close(stats.entropy.double(), H, **TOL)
    assert g.abs().sum() > 0  # the case exercises a gradient


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("name", ["gspo", "cispo", "sapo", "vespo", "entropy_bonus", "rollout_is_seq_mask",
                                  "luspo", "truncated"])
def test_fused_linear_objectives_match_float64(name, backend, gen):
    B, T, Hd, V = 3, 4, 8, 29
    hidden = torch.randn(B, T, Hd, generator=gen)
    weight = torch.randn(V, Hd, generator=gen) * 0.5
    bias = torch.randn(V, generator=gen) * 0.1
    _, targets, mask, inp = make(gen, B, T, V)
    kw = split(OBJECTIVES[name], inp)
    h, w, b = (t.clone().requires_grad_(True) for t in (hidden, weight, bias))
    loss, stats = r1core.fused_linear_grpo_loss(h, w, targets, inp["advantages"], mask, bias=b, chunk_size=5,
                                                entropy=True, backend=backend, **kw)
    loss.backward()
    h64, w64, b64 = (t.double().requires_grad_(True) for t in (hidden, weight, bias))
    x = h64 @ w64.T + b64
    lp, H = oracle_logp_entropy(x, targets)
    lp, H = lp * mask, H * mask
    kw64 = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}
    want = oracle_objective(lp, inp["advantages"].double(), mask, entropy=H, **kw64)
    want.loss.backward()
    torch.testing.assert_close(loss.double(), want.loss.detach(), **TOL)
    for got, ref in ((h.grad, h64.grad), (w.grad, w64.grad), (b.grad, b64.grad)):
        torch.testing.assert_close(got.double(), ref, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(stats.entropy.double(), H.detach(), **TOL)
    assert h.grad[~mask].abs().sum() == 0  # masked positions: exactly no gradient


@pytest.mark.parametrize("backend", BACKENDS)
def test_logp_entropy_op_gradients(backend, gen):
    """The differentiable V-sized op on its own: arbitrary upstream dL/dlogp and dL/dH."""
    logits, targets, mask, _ = make(gen, B=2, T=4, V=1500)  # V over one interpreter block
    x = logits.detach().clone().requires_grad_(True)
    lp, H = logp_entropy(x, targets, mask, temperature=0.7, backend=backend)
    a, c = torch.randn(2, 4, generator=gen), torch.randn(2, 4, generator=gen)
    ((lp * a + H * c).sum()).backward()
    x64 = logits.detach().double().requires_grad_(True)
    lp64 = oracle_logprobs(x64, targets, temperature=0.7) * mask
    H64 = oracle_entropy(x64, temperature=0.7) * mask
    ((lp64 * a + H64 * c).sum()).backward()
    torch.testing.assert_close(lp.double(), lp64.detach(), **TOL)
    torch.testing.assert_close(H.double(), H64.detach(), **TOL)
    torch.testing.assert_close(x.grad.double(), x64.grad, **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_fused_linear_logp_entropy_bf16(backend, gen):
    """bf16 lm_head: logp/entropy against float64 on the same rounded inputs (docs/spec.md §7 bf16 tolerances)."""
    hidden = torch.randn(2, 6, 16, generator=gen).bfloat16()
    weight = (torch.randn(50, 16, generator=gen) * 0.3).bfloat16()
    targets = torch.randint(0, 50, (2, 6), generator=gen)
    lp, H = fused_linear_logp_entropy(hidden, weight, targets, backend=backend, chunk_size=4)
    x64 = hidden.double() @ weight.double().T
    torch.testing.assert_close(lp.double(), oracle_logprobs(x64, targets), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(H.double(), oracle_entropy(x64), rtol=2e-2, atol=2e-2)


@pytest.mark.parametrize("backend", BACKENDS)
def test_plain_clip_keeps_single_pass_and_reports_entropy(backend, gen, monkeypatch):
    """Default options: the single-pass loss (not the general path), now with GRPOStats.entropy."""
    import r1core.ops.grpo.loss as G
    logits, targets, mask, inp = make(gen)
    called = []
    monkeypatch.setattr(G, "general_objective", lambda *a, **k: called.append(1))
    x = logits.detach().clone().requires_grad_(True)
    loss, stats = r1core.grpo_loss(x, targets, inp["advantages"], mask, old_logp=inp["old_logp"], beta=0.0,
                                   use_bias_correction_kl=True, entropy=True, backend=backend)
    assert not called
    want, _ = oracle(logits, targets, mask, inp["advantages"], dict(old_logp=inp["old_logp"]))
    torch.testing.assert_close(loss.double(), want.loss.detach(), **TOL)
    torch.testing.assert_close(stats.entropy.double(), oracle_entropy(logits.double()) * mask, **TOL)
    _, s2 = r1core.grpo_loss(logits, targets, inp["advantages"], mask, backend=backend)
    assert s2.entropy is None


@pytest.mark.parametrize("backend, strategy", [("torch", "reference"), ("torch", "chunked"),
                                               pytest.param("cpp", "chunked", marks=BACKENDS[1].marks),
                                               pytest.param("triton", "chunked", marks=pytest.mark.interpret),
                                               pytest.param("triton", "onchip", marks=pytest.mark.interpret)])
def test_fused_linear_single_pass_reports_entropy(backend, strategy, gen, monkeypatch):
    """Plain clip + entropy=True: the single-pass loss (the general path is not called), GRPOStats.entropy."""
    import r1core.ops.grpo.fused_linear as F
    monkeypatch.setattr(F, "general_objective", lambda *a, **k: pytest.fail("general path"))
    hidden = torch.randn(3, 5, 8, generator=gen)
    weight = torch.randn(37, 8, generator=gen)
    _, targets, mask, inp = make(gen)
    h = hidden.clone().requires_grad_(strategy != "onchip")
    loss, st = r1core.fused_linear_grpo_loss(h, weight, targets, inp["advantages"], mask, old_logp=inp["old_logp"],
                                             entropy=True, backend=backend, strategy=strategy, chunk_size=4)
    x = hidden.double() @ weight.double().T
    torch.testing.assert_close(st.entropy.double(), oracle_entropy(x) * mask, **TOL)
    want, _ = oracle(x, targets, mask, inp["advantages"], dict(old_logp=inp["old_logp"]))
    torch.testing.assert_close(loss.double(), want.loss.detach(), **TOL)


@pytest.mark.parametrize("backend", BACKENDS)
def test_logprobs_entropy_outputs(backend, gen):
    logits, targets, _, _ = make(gen)
    targets[0, 1] = -100
    lp, H = r1core.logprobs(logits, targets, temperature=1.3, entropy=True, backend=backend)
    keep = targets >= 0
    torch.testing.assert_close(lp.double(), oracle_logprobs(logits.double(), targets, temperature=1.3) * keep, **TOL)
    torch.testing.assert_close(H.double(), oracle_entropy(logits.double(), temperature=1.3) * keep, **TOL)
    hidden = torch.randn(3, 5, 8, generator=gen)
    weight = torch.randn(37, 8, generator=gen)
    lp, H = r1core.fused_linear_logprobs(hidden, weight, targets, entropy=True, backend=backend)
    x = hidden.double() @ weight.double().T
    torch.testing.assert_close(H.double(), oracle_entropy(x) * keep, **TOL)
    torch.testing.assert_close(lp.double(), oracle_logprobs(x, targets) * keep, **TOL)


def test_objective_option_errors(gen):
    logits, targets, mask, inp = make(gen)
    adv = inp["advantages"]
    with pytest.raises(TypeError, match="unexpected keyword argument 'polcy'"):
        r1core.grpo_loss(logits, targets, adv, mask, polcy="cispo")
    with pytest.raises(ValueError, match="policy"):
        r1core.grpo_loss(logits, targets, adv, mask, policy="ppo")
    with pytest.raises(ValueError, match="rollout_logp"):
        r1core.grpo_loss(logits, targets, adv, mask, rollout_is="token_mask")
    with pytest.raises(TypeError, match="entropy"):
        r1core.grpo_loss(logits, targets, adv, mask, entropy="yes")
    with pytest.raises(ValueError, match="loss_agg"):
        r1core.grpo_loss(logits, targets, adv, mask, policy="sapo", loss_agg="mean")
    with pytest.raises(TypeError, match="unexpected keyword argument"):
        r1core.fused_linear_grpo_loss(torch.randn(3, 5, 4), torch.randn(37, 4), targets, adv, mask, bogus=1)
