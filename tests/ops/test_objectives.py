"""r1core.ops.grpo.objective (docs/objectives.md): every option against (a) an independent float64 implementation
written sequence by sequence below and (b) TRL 1.16's own GRPOTrainer._compute_loss run on the same per-token
log-probs and entropies (loss, dl/dlogp and dl/dH).

Legend: B sequences, T positions.  TRL's _compute_loss is called as a plain function on a stand-in `self` that
holds exactly the attributes it reads, with `_get_per_token_logps_and_entropies` returning our leaf tensors:
so the model is out of the picture and what is compared is the objective stage alone.  Inputs are fresh random
numbers in float64: old/ref/rollout log-probs near logp so that ratios fall on both sides of every clip bound,
masks with ragged lengths and an empty row, per-sequence and per-token advantages.
"""
from __future__ import annotations

import math
import types
from collections import defaultdict

import pytest
import torch

from r1core.ops.grpo.objective import objective, objective_grads, rollout_is_weights
from r1core.ops.grpo.options import OBJECTIVE_AGGS, POLICIES, ROLLOUT_IS_MODES, TRL_LOSS_TYPES

SHAPES = [(1, 1), (3, 7), (5, 4), (2, 9)]


# ------------------------------------------------------------------------------------------------------------
# random inputs
# ------------------------------------------------------------------------------------------------------------
def make_inputs(B, T, gen, *, per_token_adv=False, empty_row=True):
    f64 = dict(dtype=torch.float64)
    logp = -3.0 * torch.rand(B, T, generator=gen, **f64) - 0.05
    lengths = torch.randint(1, T + 1, (B,), generator=gen)
    if empty_row and B > 1:
        lengths[1] = 0
    mask = (torch.arange(T)[None] < lengths[:, None]).long()
    adv = torch.randn((B, T) if per_token_adv else (B,), generator=gen, **f64)
    old = logp + 0.35 * torch.randn(B, T, generator=gen, **f64)
    return dict(
        logp=logp, mask=mask, advantages=adv, old_logp=old,
        ref_logp=logp + 0.3 * torch.randn(B, T, generator=gen, **f64),
        rollout_logp=old + 0.25 * torch.randn(B, T, generator=gen, **f64),
        entropy=3.0 * torch.rand(B, T, generator=gen, **f64) + 0.01,
        truncated=torch.rand(B, generator=gen) < 0.4,
    )


# ------------------------------------------------------------------------------------------------------------
# (a) the independent float64 implementation: one sequence at a time, every option spelled out
# ------------------------------------------------------------------------------------------------------------
def _quantile_f32(vals: torch.Tensor, q: float) -> torch.Tensor:
    """Linear-interpolation quantile of the values, in float32 (TRL gathers entropies as float32)."""
    v = torch.sort(vals.float()).values
    pos = q * (v.numel() - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, v.numel() - 1)
    return v[lo] + (pos - lo) * (v[hi] - v[lo])


def indep_is_weight(old, roll, m, mode, c_min, c_max):
    """Rollout importance weight per token, [B, T] (a sequence mode repeats its value over T)."""
    B, T = old.shape
    out = torch.ones(B, T, dtype=torch.float64)
    for b in range(B):
        d = [0.0 if m[b, t] == 0 or math.isnan(old[b, t] - roll[b, t]) else float(old[b, t] - roll[b, t])
             for t in range(T)]
        rs = [math.exp(sum(d))] * T if mode.startswith("sequence") else [math.exp(x) for x in d]
        for t, r in enumerate(rs):
            lo = -math.inf if c_min is None else c_min
            hi = math.inf if c_max is None else c_max
            out[b, t] = min(max(r, lo), hi) if mode.endswith("truncate") else (0.0 if r < lo or r > hi else r)
    return out


def independent(x, cfg):
    """The loss of docs/objectives.md -> (loss, policy_loss, bonus) from the leaf tensors in x."""
    lp, H = x["logp"], x["entropy"]
    B, T = lp.shape
    m = x["mask"].double()
    if cfg.get("mask_truncated_completions"):
        m = m * (~x["truncated"]).double()[:, None]
    A = x["advantages"].double()
    A = A[:, None].expand(B, T) if A.dim() == 1 else A
    old = x["old_logp"] if cfg.get("old", True) else lp.detach()
    ref, roll = x["ref_logp"], x["rollout_logp"]
    policy = cfg.get("policy", "clip")
    el, eh = cfg.get("eps_low", 0.2), cfg.get("eps_high", 0.2)
    beta, delta = cfg.get("beta", 0.0), cfg.get("delta")
    mode = cfg.get("rollout_is")
    isw = (indep_is_weight(old.detach(), roll, m, mode, cfg.get("rollout_is_min"), cfg.get("rollout_is_max", 3.0))
           if mode else torch.ones(B, T, dtype=torch.float64))
    q = cfg.get("top_entropy_quantile", 1.0)
    ent_keep = torch.ones(B, T, dtype=torch.float64)
    if q < 1.0:
        vals = H.detach()[m != 0]
        ent_keep = torch.zeros(B, T, dtype=torch.float64)
        if vals.numel():
            thr = _quantile_f32(vals, 1.0 - q).double()
            ent_keep = ((H.detach() >= thr) & (m != 0)).double()
    rows = []
    for b in range(B):
        n_b = float(m[b].sum())
        lr = lp[b] - old[b]
        if cfg.get("importance_sampling_level", "token") == "sequence":
            lr_seq = (lr * m[b]).sum() / max(n_b, 1.0)
            rho = torch.exp(lr_seq).expand(T)
        else:
            rho = torch.exp(lr)
        d = ref[b] - lp[b]
        kl = torch.exp(d) - d - 1.0
        if cfg.get("use_bias_correction_kl"):
            kl = kl * rho
        a = A[b]
        if policy == "clip":
            unclipped = rho if delta is None else torch.minimum(rho, torch.full_like(rho, delta))
            clipped = rho.clamp(1 - el, 1 + eh)
            pg = -torch.where(unclipped * a <= clipped * a, unclipped * a, clipped * a)
        elif policy == "cispo":
            pg = -torch.minimum(rho, torch.full_like(rho, eh)).detach() * a * lp[b]
        elif policy == "sapo":
            tau = torch.tensor([cfg.get("sapo_temperature_pos", 1.0) if float(a[t]) > 0
                                else cfg.get("sapo_temperature_neg", 1.05) for t in range(T)], dtype=torch.float64)
            pg = -a * 4.0 / tau / (1.0 + torch.exp(-tau * (rho - 1.0)))
        else:  # vespo
            with torch.no_grad():
                s = sum(min(max(float(lr[t]), -20.0), 20.0) for t in range(T) if m[b, t] != 0)
                if mode:
                    s += sum(min(max(math.log(float(w)) if w > 0 else -math.inf, math.log(1e-8)), 20.0)
                             for w in isw[b])
                lw = min(max(s, math.log(1e-8)), 20.0)
                phi = torch.empty(T, dtype=torch.float64)
                for t in range(T):
                    k, lam = ((cfg.get("vespo_k_pos", 2.0), cfg.get("vespo_lambda_pos", 3.0)) if a[t] >= 0
                              else (cfg.get("vespo_k_neg", 3.0), cfg.get("vespo_lambda_neg", 2.0)))
                    lam = max(lam, 1e-4)
                    v = math.exp(lam) * math.exp(lw) ** k * math.exp(-lam * math.exp(lw))
                    phi[t] = v if math.isfinite(v) else 0.0
            pg = -phi * a * lp[b]
        keep = ent_keep[b].clone()
        thr = cfg.get("off_policy_mask_threshold")
        if thr is not None:
            beh = roll[b] if cfg.get("opsm_rollout", True) else old[b].detach()
            seq_kl = ((beh - lp[b].detach()) * m[b]).sum() / max(n_b, 1.0)
            keep = keep * torch.where((a >= 0) | (seq_kl <= thr), 1.0, 0.0)
        l = pg * keep
        if mode and policy != "vespo":
            l = l * isw[b]
        if beta > 0:
            l = l + beta * kl
        rows.append(l)
    agg = cfg.get("loss_agg", "token_mean")
    ntok = float(m.sum())
    if agg == "token_mean":
        pol = sum((rows[b] * m[b]).sum() for b in range(B)) / ntok if ntok else lp.sum() * 0
    elif agg == "seq_mean_token_mean":
        seqs = [(rows[b] * m[b]).sum() / m[b].sum() for b in range(B) if m[b].sum() > 0]
        pol = sum(seqs) / len(seqs) if seqs else lp.sum() * 0
    elif agg == "seq_mean_token_sum_norm":
        pol = sum((rows[b] * m[b]).sum() for b in range(B)) / (B * cfg.get("max_len", T))
    else:  # seq_mean_token_sum
        pol = sum((rows[b] * m[b]).sum() for b in range(B)) / B
    eff = m * ent_keep
    bonus = (H * eff).sum() / max(float(eff.sum()), 1.0)
    coef = cfg.get("entropy_coef", 0.0)
    return pol - coef * bonus, pol, bonus


def our_kwargs(cfg):
    skip = {"old", "opsm_rollout", "trl_loss_type"}
    return {k: v for k, v in cfg.items() if k not in skip}


def our_call(x, cfg):
    kw = our_kwargs(cfg)
    inputs = dict(old_logp=x["old_logp"] if cfg.get("old", True) else None, ref_logp=x["ref_logp"],
                  rollout_logp=x["rollout_logp"] if (cfg.get("rollout_is") or cfg.get("opsm_rollout", True))
                  else None, entropy=x["entropy"], truncated=x["truncated"])
    return objective(x["logp"], x["advantages"], x["mask"], **inputs, **kw)


def _grads(loss, x):
    g = torch.autograd.grad(loss, (x["logp"], x["entropy"]), allow_unused=True)
    return [torch.zeros_like(t) if gi is None else gi for gi, t in zip(g, (x["logp"], x["entropy"]))]


def leaves(x):
    y = dict(x)
    y["logp"] = x["logp"].clone().requires_grad_(True)
    y["entropy"] = x["entropy"].clone().requires_grad_(True)
    return y


OPTION_CASES = {
    "clip": dict(),
    "clip_asym_onpolicy": dict(old=False, eps_low=0.1, eps_high=0.28),
    "clip_kl": dict(beta=0.04, eps_high=0.28),
    "clip_kl_bias_corrected": dict(beta=0.1, use_bias_correction_kl=True),
    "delta": dict(delta=1.25, eps_high=0.28, beta=0.02),
    "gspo": dict(importance_sampling_level="sequence", loss_agg="seq_mean_token_mean", eps_low=0.05, eps_high=0.06),
    "gspo_kl_bias": dict(importance_sampling_level="sequence", beta=0.05, use_bias_correction_kl=True),
    "dr_grpo": dict(loss_agg="seq_mean_token_sum_norm", max_len=11),
    "luspo": dict(importance_sampling_level="sequence", loss_agg="seq_mean_token_sum"),
    "cispo": dict(policy="cispo", eps_high=1.1),
    "cispo_seq_kl": dict(policy="cispo", eps_high=1.05, importance_sampling_level="sequence", beta=0.03),
    "sapo": dict(policy="sapo", loss_agg="seq_mean_token_mean"),
    "sapo_temps": dict(policy="sapo", sapo_temperature_pos=0.6, sapo_temperature_neg=2.0, beta=0.04,
                       loss_agg="seq_mean_token_mean"),
    "vespo": dict(policy="vespo"),
    "vespo_params_is": dict(policy="vespo", vespo_k_pos=1.5, vespo_lambda_pos=2.5, vespo_k_neg=2.0,
                            vespo_lambda_neg=1.0, rollout_is="token_mask", rollout_is_min=0.7, rollout_is_max=1.3),
    "vespo_is_trunc": dict(policy="vespo", rollout_is="token_truncate", rollout_is_max=1.2),
    **{f"is_{mode}": dict(rollout_is=mode, rollout_is_min=0.6, rollout_is_max=1.4) for mode in ROLLOUT_IS_MODES},
    "is_token_mask_open_low": dict(rollout_is="token_mask", rollout_is_max=1.2),
    "is_seq_truncate_default": dict(rollout_is="sequence_truncate", beta=0.04),
    "opsm_rollout": dict(off_policy_mask_threshold=0.02),
    "opsm_old": dict(off_policy_mask_threshold=0.0, opsm_rollout=False),
    "entropy_bonus": dict(entropy_coef=0.03),
    "top_entropy": dict(top_entropy_quantile=0.3),
    "top_entropy_bonus_seq": dict(top_entropy_quantile=0.5, entropy_coef=0.1, loss_agg="seq_mean_token_mean"),
    "top_entropy_zero": dict(top_entropy_quantile=0.0),
    "truncated": dict(mask_truncated_completions=True, loss_agg="seq_mean_token_mean"),
    "everything": dict(beta=0.05, use_bias_correction_kl=True, delta=1.3, eps_high=0.28, rollout_is="token_truncate",
                       rollout_is_min=0.8, rollout_is_max=1.25, off_policy_mask_threshold=0.01, entropy_coef=0.02,
                       top_entropy_quantile=0.6, mask_truncated_completions=True),
}


@pytest.mark.parametrize("case", list(OPTION_CASES))
@pytest.mark.parametrize("per_token_adv", [False, True], ids=["adv_B", "adv_BT"])
def test_against_independent_float64(case, per_token_adv, gen):
    cfg = OPTION_CASES[case]
    for B, T in SHAPES:
        x = leaves(make_inputs(B, T, gen, per_token_adv=per_token_adv))
        out = our_call(x, cfg)
        want, want_pol, want_bonus = independent(x, cfg)
        scale = 1.0 + float(x["advantages"].abs().mean())
        assert abs(float(out.loss.detach() - want.detach())) <= 1e-12 * scale, (B, T, float(out.loss), float(want))
        assert abs(float(out.policy_loss - want_pol)) <= 1e-12 * scale
        assert abs(float(out.entropy_bonus - want_bonus)) <= 1e-12 * scale
        g, w = _grads(out.loss, x), _grads(want, x)
        for gi, wi in zip(g, w):
            torch.testing.assert_close(gi, wi, rtol=1e-10, atol=1e-13)
        m = out.mask
        assert torch.all(g[0][m == 0] == 0), "masked tokens get exactly zero gradient"


@pytest.mark.parametrize("policy", POLICIES)
@pytest.mark.parametrize("loss_agg", OBJECTIVE_AGGS)
def test_every_policy_by_every_aggregation(policy, loss_agg, gen):
    cfg = dict(policy=policy, loss_agg=loss_agg, beta=0.02, eps_high=1.2 if policy == "cispo" else 0.28)
    for B, T in SHAPES[1:]:
        x = leaves(make_inputs(B, T, gen))
        out = our_call(x, cfg)
        want = independent(x, cfg)[0]
        assert abs(float(out.loss - want)) <= 1e-12 * (1 + float(x["advantages"].abs().mean()))
        for gi, wi in zip(_grads(out.loss, x), _grads(want, x)):
            torch.testing.assert_close(gi, wi, rtol=1e-10, atol=1e-13)


def test_float32_matches_float64(gen):
    cfg = OPTION_CASES["everything"]
    x = make_inputs(4, 6, gen, per_token_adv=True)
    x32 = leaves({k: (v.float() if v.is_floating_point() else v) for k, v in x.items()})
    x64 = leaves({k: (v.float().double() if v.is_floating_point() else v) for k, v in x.items()})
    o32, o64 = our_call(x32, cfg), our_call(x64, cfg)
    assert o32.loss.dtype == torch.float32
    assert abs(float(o32.loss) - float(o64.loss)) <= 1e-5 * (1 + float(x["advantages"].abs().mean()))
    for g32, g64 in zip(_grads(o32.loss, x32), _grads(o64.loss, x64)):
        assert float((g32.double() - g64).norm()) <= 1e-5 * float(g64.norm().clamp_min(1e-30))


def test_objective_grads_match_autograd(gen):
    cfg = dict(beta=0.04, entropy_coef=0.05, top_entropy_quantile=0.7, rollout_is="token_truncate")
    x = leaves(make_inputs(3, 5, gen))
    out = our_call(x, cfg)
    g = _grads(out.loss, x)
    kw = our_kwargs(cfg)
    out2, dlogp, dH = objective_grads(x["logp"], x["advantages"], x["mask"], old_logp=x["old_logp"],
                                      ref_logp=x["ref_logp"], rollout_logp=x["rollout_logp"], entropy=x["entropy"],
                                      **kw)
    torch.testing.assert_close(out2.loss, out.loss.detach())
    torch.testing.assert_close(dlogp, g[0])
    torch.testing.assert_close(dH, g[1])
    assert not dlogp.requires_grad and dH is not None
    _, dlogp, dH = objective_grads(x["logp"], x["advantages"], x["mask"])
    assert dH is None and dlogp.shape == (3, 5)


def test_rollout_is_weights_independent(gen):
    for mode in ROLLOUT_IS_MODES:
        for lo, hi in ((None, 3.0), (0.7, 1.3), (0.9, None)):
            x = make_inputs(4, 6, gen)
            roll = x["rollout_logp"].clone()
            roll[0, 0] = float("nan")  # a token the sampler could not score counts as ratio 1
            got = rollout_is_weights(x["old_logp"], roll, x["mask"].double(), mode=mode, c_min=lo, c_max=hi)
            want = indep_is_weight(x["old_logp"], roll, x["mask"].double(), mode, lo, hi)
            assert got.shape == ((4, 6) if mode.startswith("token") else (4, 1))
            torch.testing.assert_close(got.expand(4, 6), want, rtol=1e-12, atol=0)


@pytest.mark.parametrize("mode", ROLLOUT_IS_MODES)
def test_precomputed_rollout_weight(mode, gen):
    """rollout_is_weight (TRL's importance_sampling_ratio, Liger's vllm_is_ratio) = computing it here."""
    x = leaves(make_inputs(4, 6, gen))
    policy = "vespo" if mode.startswith("token") else "clip"
    cfg = dict(policy=policy, rollout_is=mode, rollout_is_min=0.7, rollout_is_max=1.3, beta=0.03)
    want = our_call(x, cfg)
    wts = rollout_is_weights(x["old_logp"], x["rollout_logp"], x["mask"].double(), mode=mode, c_min=0.7, c_max=1.3)
    got = objective(x["logp"], x["advantages"], x["mask"], old_logp=x["old_logp"], ref_logp=x["ref_logp"],
                    rollout_is_weight=wts, **cfg)
    torch.testing.assert_close(got.loss, want.loss, rtol=0, atol=0)
    with pytest.raises(ValueError, match="rollout_is_weight"):
        objective(x["logp"], x["advantages"], x["mask"], rollout_is_weight=wts[:2], rollout_is=mode)


def test_statistics(gen):
    x = make_inputs(4, 6, gen)
    out = our_call(x, dict(eps_low=0.1, eps_high=0.1, beta=0.1))
    rho = torch.exp(x["logp"] - x["old_logp"])
    A = x["advantages"][:, None]
    torch.testing.assert_close(out.ratio, rho)
    assert torch.equal(out.clip_low, (rho < 0.9) & (A < 0)) and torch.equal(out.clip_high, (rho > 1.1) & (A > 0))
    assert out.clip_low.any() or out.clip_high.any()
    d = x["ref_logp"] - x["logp"]
    torch.testing.assert_close(out.kl, torch.exp(d) - d - 1)
    m = x["mask"].double()
    torch.testing.assert_close(out.token_mean(out.kl), (out.kl * m).sum() / m.sum())
    assert out.phi is None and torch.all(out.is_weight == 1) and torch.all(out.keep == 1)


def test_no_unmasked_token_gives_zero(gen):
    x = leaves(make_inputs(3, 4, gen))
    x["mask"] = torch.zeros(3, 4, dtype=torch.long)
    for agg in OBJECTIVE_AGGS:
        out = our_call(x, dict(loss_agg=agg, beta=0.1, entropy_coef=0.1, top_entropy_quantile=0.5))
        assert float(out.loss) == 0.0
        assert all(torch.all(g == 0) for g in _grads(out.loss, x))


@pytest.mark.parametrize("kwargs, exc, match", [
    (dict(policy="ppo"), ValueError, "policy"),
    (dict(loss_agg="mean"), ValueError, "loss_agg"),
    (dict(importance_sampling_level="seq"), ValueError, "importance_sampling_level"),
    (dict(rollout_is="token"), ValueError, "rollout_is"),
    (dict(rollout_is="token_mask", rollout_logp=None), ValueError, "rollout_logp"),
    (dict(rollout_is_weight=torch.ones(3, 4, dtype=torch.float64)), ValueError, "rollout_is"),
    (dict(beta=0.1, ref_logp=None), ValueError, "ref_logp"),
    (dict(beta=-1.0), ValueError, "beta"),
    (dict(delta=0.0), ValueError, "delta"),
    (dict(sapo_temperature_neg=0.0), ValueError, "sapo_temperature_neg"),
    (dict(entropy_coef=0.1, entropy=None), ValueError, "entropy"),
    (dict(top_entropy_quantile=1.5), ValueError, "top_entropy_quantile"),
    (dict(mask_truncated_completions=True, truncated=None), TypeError, "truncated"),
    (dict(mask_truncated_completions=1), TypeError, "mask_truncated_completions"),
    (dict(policy="vespo", rollout_is="sequence_mask"), ValueError, "rollout_is"),
    (dict(eps_high="0.2"), TypeError, "eps_high"),
    (dict(old_logp=torch.zeros(2, 2, dtype=torch.float64)), ValueError, "old_logp"),
])
def test_bad_arguments(kwargs, exc, match, gen):
    x = make_inputs(3, 4, gen)
    base = dict(old_logp=x["old_logp"], ref_logp=x["ref_logp"], rollout_logp=x["rollout_logp"],
                entropy=x["entropy"], truncated=x["truncated"])
    with pytest.raises(exc, match=match):
        objective(x["logp"], x["advantages"], x["mask"], **{**base, **kwargs})


# ------------------------------------------------------------------------------------------------------------
# (b) TRL 1.16's own _compute_loss on the same per-token inputs
# ------------------------------------------------------------------------------------------------------------
trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer", reason="needs trl")
ACCUM = 2  # TRL divides by the gradient-accumulation steps in training; the stand-in accumulates 2


class _Accelerator:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x


def trl_self(loss_type, trl_cfg, logp, entropy):
    """A stand-in `self` for GRPOTrainer._compute_loss holding the attributes it reads."""
    G = trl_grpo.GRPOTrainer
    args = types.SimpleNamespace(
        delta=trl_cfg.get("delta"), use_bias_correction_kl=trl_cfg.get("use_bias_correction_kl", False),
        sapo_temperature_pos=trl_cfg.get("sapo_temperature_pos", 1.0),
        sapo_temperature_neg=trl_cfg.get("sapo_temperature_neg", 1.05),
        vespo_k_pos=trl_cfg.get("vespo_k_pos", 2.0), vespo_lambda_pos=trl_cfg.get("vespo_lambda_pos", 3.0),
        vespo_k_neg=trl_cfg.get("vespo_k_neg", 3.0), vespo_lambda_neg=trl_cfg.get("vespo_lambda_neg", 2.0),
        steps_per_generation=ACCUM, entropy_target=0.2)
    s = types.SimpleNamespace(
        args=args, loss_type=loss_type, beta=trl_cfg.get("beta", 0.0), epsilon_low=trl_cfg.get("epsilon", 0.2),
        epsilon_high=trl_cfg.get("epsilon_high", trl_cfg.get("epsilon", 0.2)),
        importance_sampling_level=trl_cfg.get("importance_sampling_level", "token"),
        top_entropy_quantile=trl_cfg.get("top_entropy_quantile", 1.0),
        off_policy_mask_threshold=trl_cfg.get("off_policy_mask_threshold"),
        use_vllm=trl_cfg.get("vllm_importance_sampling_correction", False),
        vllm_importance_sampling_correction=trl_cfg.get("vllm_importance_sampling_correction", False),
        entropy_coef=trl_cfg.get("entropy_coef", 0.0), use_adaptive_entropy=False,
        _entropy_bonus_enabled=trl_cfg.get("entropy_coef", 0.0) != 0.0, _last_world_entropy=float("inf"),
        current_gradient_accumulation_steps=ACCUM, max_completion_length=trl_cfg.get("max_completion_length"),
        aux_loss_enabled=False, accelerator=_Accelerator(), model=types.SimpleNamespace(training=True),
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)},
        get_off_policy_mask=G.get_off_policy_mask, get_gamma_weights=G.get_gamma_weights)
    s.get_high_entropy_mask = types.MethodType(G.get_high_entropy_mask, s)
    s._get_per_token_logps_and_entropies = lambda *a, **k: (logp, entropy, None)
    return s


def to_trl(cfg):
    """Our options -> (TRL loss_type, GRPOConfig-named settings): the mapping the integration uses."""
    by_pair = {v: k for k, v in TRL_LOSS_TYPES.items() if k not in ("bnpo",)}
    loss_type = cfg.get("trl_loss_type") or by_pair[(cfg.get("policy", "clip"), cfg.get("loss_agg", "token_mean"))]
    t = dict(beta=cfg.get("beta", 0.0), epsilon=cfg.get("eps_low", 0.2), epsilon_high=cfg.get("eps_high", 0.2),
             delta=cfg.get("delta"), use_bias_correction_kl=cfg.get("use_bias_correction_kl", False),
             importance_sampling_level=cfg.get("importance_sampling_level", "token"),
             top_entropy_quantile=cfg.get("top_entropy_quantile", 1.0), entropy_coef=cfg.get("entropy_coef", 0.0),
             off_policy_mask_threshold=cfg.get("off_policy_mask_threshold"),
             vllm_importance_sampling_correction=cfg.get("rollout_is") is not None,
             max_completion_length=cfg.get("max_len"))
    for k in ("sapo_temperature_pos", "sapo_temperature_neg", "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg",
              "vespo_lambda_neg"):
        if k in cfg:
            t[k] = cfg[k]
    return loss_type, t


def trl_scale(loss_type, m, num_items):
    """TRL's aggregated policy loss over ours (the caller's rescale; see TRL_LOSS_TYPES)."""
    if loss_type in ("dapo", "cispo", "vespo"):
        return m.sum() / (num_items.clamp(min=1.0) * ACCUM / ACCUM)
    if loss_type in ("grpo", "sapo"):
        return float((m.sum(-1) > 0).sum()) / (m.shape[0] * ACCUM)
    return 1.0 / ACCUM


TRL_CASES = {
    **{f"{lt}_{k}": dict(OPTION_CASES[k], trl_loss_type=lt, loss_agg=TRL_LOSS_TYPES[lt][1],
                         policy=TRL_LOSS_TYPES[lt][0])
       for lt in TRL_LOSS_TYPES for k in ("clip", "clip_kl_bias_corrected", "entropy_bonus", "truncated")},
    "dr_grpo": dict(OPTION_CASES["dr_grpo"], trl_loss_type="dr_grpo"),
    **{k: OPTION_CASES[k] for k in ("clip_asym_onpolicy", "clip_kl", "delta", "gspo", "gspo_kl_bias", "luspo",
                                    "cispo", "cispo_seq_kl", "sapo", "sapo_temps", "vespo", "vespo_params_is",
                                    "vespo_is_trunc", "is_token_truncate", "is_token_mask", "is_sequence_truncate",
                                    "is_sequence_mask", "is_token_mask_open_low", "is_seq_truncate_default",
                                    "opsm_rollout", "opsm_old", "top_entropy", "top_entropy_bonus_seq",
                                    "top_entropy_zero", "everything")},
}


@pytest.mark.parametrize("case", list(TRL_CASES))
def test_against_trl_compute_loss(case, gen):
    for i, (B, T) in enumerate(SHAPES):
        cfg = dict(TRL_CASES[case])
        x = make_inputs(B, T, gen, per_token_adv=i % 2 == 1)
        if cfg.get("max_len") is None and cfg.get("loss_agg") == "seq_mean_token_sum_norm":
            cfg["max_len"] = T
        loss_type, t = to_trl(cfg)
        m = x["mask"]
        if cfg.get("mask_truncated_completions"):  # TRL zeroes truncated rows of completion_mask upstream
            m = m * (~x["truncated"]).long()[:, None]
        num_items = m.sum() * ACCUM  # the generation batch spans ACCUM micro-batches like this one
        inputs = dict(prompt_ids=torch.zeros(B, 1, dtype=torch.long), prompt_mask=torch.ones(B, 1, dtype=torch.long),
                      completion_ids=torch.zeros(B, T, dtype=torch.long), completion_mask=m,
                      advantages=x["advantages"], num_items_in_batch=num_items,
                      ref_per_token_logps=x["ref_logp"])
        if cfg.get("old", True):
            inputs["old_per_token_logps"] = x["old_logp"]
        if cfg.get("rollout_is"):
            old = x["old_logp"] if cfg.get("old", True) else x["logp"]
            inputs["importance_sampling_ratio"] = indep_is_weight(
                old, x["rollout_logp"], m.double(), cfg["rollout_is"], cfg.get("rollout_is_min"),
                cfg.get("rollout_is_max", 3.0))
            if cfg["rollout_is"].startswith("sequence"):
                inputs["importance_sampling_ratio"] = inputs["importance_sampling_ratio"][:, :1]
        if cfg.get("off_policy_mask_threshold") is not None and cfg.get("opsm_rollout", True):
            inputs["sampling_per_token_logps"] = x["rollout_logp"]

        tl = leaves(x)
        s = trl_self(loss_type, t, tl["logp"], tl["entropy"])
        want = trl_grpo.GRPOTrainer._compute_loss(s, None, inputs)
        want_g = _grads(want, tl)

        ol = leaves(x)
        out = our_call(ol, cfg)
        got = out.policy_loss * trl_scale(loss_type, out.mask, num_items) \
            - cfg.get("entropy_coef", 0.0) * out.entropy_bonus / ACCUM
        scale = 1.0 + float(x["advantages"].abs().mean())
        # TRL's torch.where(A > 0, tau_pos, tau_neg) rounds SAPO's temperatures to float32 (1.05 -> 1.0500000477);
        # ours keeps them in the compute dtype: a 1e-8-relative difference, nothing else
        tol = 1e-7 if loss_type == "sapo" else 1e-12
        assert abs(float(got - want)) <= tol * scale, (case, B, T, float(got), float(want))
        for gi, wi in zip(_grads(got, ol), want_g):
            torch.testing.assert_close(gi, wi, rtol=max(tol, 1e-10), atol=1e-13)
        # statistics TRL logs, from our per-token outputs (TRL takes the clip fractions in float32)
        mt = s._metrics["train"]
        if t["beta"] != 0.0:
            assert math.isclose(float(out.token_mean(out.kl)), mt["kl"][-1], rel_tol=1e-9, abs_tol=1e-12)
        if loss_type in ("grpo", "bnpo", "dr_grpo", "dapo", "luspo") and t["importance_sampling_level"] == "token":
            assert math.isclose(float(out.token_mean(out.clip_low)), mt["clip_ratio/low_mean"][-1], rel_tol=1e-6)
            assert math.isclose(float(out.token_mean(out.clip_high)), mt["clip_ratio/high_mean"][-1], rel_tol=1e-6)
        if loss_type == "cispo" and t["importance_sampling_level"] == "token":
            assert math.isclose(float(out.token_mean(out.clip_high)), mt["cispo_clip_ratio"][-1], rel_tol=1e-6)


def test_trl_defaults_are_covered():
    """Every GRPOConfig loss setting of TRL 1.16 has a name here (so a new TRL option fails this test)."""
    import dataclasses

    trl = pytest.importorskip("trl")
    names = {f.name for f in dataclasses.fields(trl.GRPOConfig)}
    loss_settings = {"loss_type", "beta", "epsilon", "epsilon_high", "delta", "importance_sampling_level",
                     "use_bias_correction_kl", "vllm_importance_sampling_correction", "vllm_importance_sampling_mode",
                     "vllm_importance_sampling_clip_min", "vllm_importance_sampling_clip_max",
                     "off_policy_mask_threshold", "entropy_coef", "top_entropy_quantile", "mask_truncated_completions",
                     "sapo_temperature_pos", "sapo_temperature_neg", "vespo_k_pos", "vespo_lambda_pos", "vespo_k_neg",
                     "vespo_lambda_neg"}
    assert loss_settings <= names
    assert set(TRL_LOSS_TYPES) == {"grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"}
    assert trl.GRPOConfig.__dataclass_fields__["vllm_importance_sampling_mode"].default in ROLLOUT_IS_MODES


def test_objective_options_have_one_home():
    """The option defaults of r1core.ops.grpo.options are objective()'s, and the config and the TRL
    mapping take their choice lists from there (issue 31: they were listed in four places)."""
    import dataclasses
    import inspect

    from r1core.integrations import trl as trl_map  # noqa: F401 - skipped below without TRL
    from r1core.ops.grpo import options
    from r1core.train.config import GRPOConfig
    sig = inspect.signature(objective).parameters
    assert {k: sig[k].default for k in options.DEFAULTS} == options.DEFAULTS
    own = {"logp", "advantages", "mask", "old_logp", "ref_logp", "entropy", "beta", "eps_low", "eps_high",
           "loss_agg", "max_len"}
    assert set(sig) - own == set(options.DEFAULTS)
    choices = {f.name: f.metadata.get("choices") for f in dataclasses.fields(GRPOConfig)}
    assert choices["loss_agg"] is options.OBJECTIVE_AGGS and choices["policy"] is options.POLICIES
    assert choices["importance_sampling_level"] is options.IS_LEVELS
    assert trl_map.LOSS_AGG == {k: v[1] for k, v in options.TRL_LOSS_TYPES.items()}
