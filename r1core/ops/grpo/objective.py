"""The per-token objective stage of every GRPO-family loss (docs/objectives.md), plain PyTorch on [B, T].

Legend: B sequences, T positions.  The V-sized passes (a kernel, or the torch backend)
turn logits into per-token log-probs `logp` (and, on request, entropies `H`); everything a GRPO variant
adds is a cheap function of those [B, T] tensors, defined once here and differentiated by autograd:

    out = objective(logp, advantages, mask, old_logp=..., ref_logp=..., rollout_logp=..., entropy=...,
                    policy="clip", loss_agg="token_mean", ...)
    out.loss             # 0-d, differentiable in logp (and entropy)
    objective_grads(...) # -> (out, dl/dlogp [B, T], dl/dH [B, T] or None): what a V-sized backward needs

Per token (ρ = exp(log_iw), log_iw = logp - old per token, or the masked sequence mean of it for
importance_sampling_level="sequence"; A the advantage; m the mask):
    clip   l = -min(min(ρ, delta)·A, clamp(ρ, 1-eps_low, 1+eps_high)·A)    (PPO/GRPO/DAPO/GSPO/LUSPO)
    cispo  l = -sg(min(ρ, eps_high))·A·logp                                  (MiniMax-M1)
    sapo   l = -sigmoid(τ·(ρ-1))·(4/τ)·A,  τ = tau_pos if A > 0 else tau_neg   (soft gate)
    vespo  l = -sg(φ(w))·A·logp,  w = exp(Σ_t m·(logp-old) [+ Σ_t log is_w]),  φ(w) = e^λ·w^k·e^(-λw)
then l ·= keep (off-policy sequence mask, top-entropy mask) · is_w (rollout importance weight, not for
vespo), l += beta·kl (k3, times ρ with use_bias_correction_kl), loss = Σ l·w_agg - entropy_coef·H̄.
Everything mirrors TRL 1.16's GRPOTrainer._compute_loss term by term (tests/ops/test_objectives.py
checks it against TRL's own code); the aggregation weights w_agg are r1core.ops.grpo.math's.  objective()
is validation (r1core.ops.grpo.options.validate for the options, _tensors for the tensors) then maths
(_maths).  Computes in float64 for float64 logp, else float32.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from .math import token_weights
from .options import Options, validate

_LOG_MIN_W = math.log(1e-8)  # VESPO's clamp of log-weights from below (its reference code's value)


@dataclass(frozen=True)
class ObjectiveOut:
    """One objective call.  `loss`, `policy_loss`, `entropy_bonus` and `per_token_loss` carry autograd;
    every [B, T] statistic is detached (broadcast from [B, 1] for sequence-level quantities)."""
    loss: torch.Tensor            # 0-d: policy_loss - entropy_coef · entropy_bonus
    policy_loss: torch.Tensor     # 0-d: Σ per_token_loss · weights (policy term + beta·kl)
    entropy_bonus: torch.Tensor   # 0-d: masked mean entropy over the tokens the policy term acts on (0 without)
    per_token_loss: torch.Tensor  # [B, T] l (policy term times every mask / IS weight, plus beta·kl)
    weights: torch.Tensor         # [B, T] aggregation weight of each token
    mask: torch.Tensor            # [B, T] the loss mask actually used (after mask_truncated_completions)
    ratio: torch.Tensor           # [B, T] importance weight ρ (after the delta cap, as TRL reports it)
    kl: torch.Tensor              # [B, T] k3 KL (times ρ with use_bias_correction_kl); 0 without ref_logp
    clip_low: torch.Tensor        # [B, T] bool: ρ < 1-eps_low and A < 0 (clip); all False otherwise
    clip_high: torch.Tensor       # [B, T] bool: ρ > 1+eps_high and A > 0 (clip) / ρ > eps_high (cispo)
    keep: torch.Tensor            # [B, T] product of the off-policy and top-entropy masks (1 = kept)
    is_weight: torch.Tensor       # [B, T] rollout importance weight (1 when the correction is off)
    phi: torch.Tensor | None      # [B, T] VESPO's gamma weight φ(w); None for other policy losses

    def token_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Mean of a [B, T] statistic over the unmasked tokens (0 when there are none)."""
        m = self.mask
        return (x.to(m.dtype) * m).sum() / m.sum().clamp_min(1.0)


def _bt(x, name: str, B: int, T: int, cdt, device, *, allow_b: bool = False) -> torch.Tensor | None:
    if x is None:
        return None
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a tensor, got {type(x).__name__}")
    shapes = ((B, T), (B,)) if allow_b else ((B, T),)
    if tuple(x.shape) not in shapes:
        want = " or ".join(str(list(s)) for s in shapes)
        raise ValueError(f"{name} must have shape {want}, got {list(x.shape)}")
    if x.device != device:
        raise ValueError(f"{name} must be on logp's device {device}, got {x.device}")
    x = x.to(cdt)
    return x[:, None].expand(B, T) if x.dim() == 1 else x


def masked_seq_mean(x_BT: torch.Tensor, m_BT: torch.Tensor) -> torch.Tensor:
    """Σ_t x·m / max(Σ_t m, 1) -> [B, 1]."""
    return (x_BT * m_BT).sum(-1, keepdim=True) / m_BT.sum(-1, keepdim=True).clamp_min(1.0)


def rollout_is_weights(old_logp: torch.Tensor, rollout_logp: torch.Tensor, mask: torch.Tensor, *,
                       mode: str = "sequence_mask", c_min: float | None = None,
                       c_max: float | None = 3.0) -> torch.Tensor:
    """Importance weight of the training policy (old_logp) over the rollout engine's sampler (rollout_logp),
    no grad -> [B, T] (token modes) or [B, 1] (sequence modes).  `*_truncate` clamps to [c_min, c_max],
    `*_mask` sets weights outside it to 0 (a bound of None is open).  Tokens the sampler could not score
    (NaN) count as ratio 1.  Masked tokens count as ratio 1 in the token modes and 0 log-ratio in the sums."""
    if mode not in ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask"):
        raise ValueError(f"mode must be a rollout_is mode, got {mode!r}")
    with torch.no_grad():
        d = torch.nan_to_num((old_logp - rollout_logp) * mask, nan=0.0)
        if mode.startswith("sequence"):
            d = d.sum(-1, keepdim=True)
        r = torch.exp(d)
        if mode.endswith("truncate"):
            return torch.clamp(r, min=c_min, max=c_max)
        lo = -math.inf if c_min is None else c_min
        hi = math.inf if c_max is None else c_max
        return r.masked_fill((r < lo) | (r > hi), 0.0)


def off_policy_keep(advantages_BT: torch.Tensor, logp: torch.Tensor, behaviour_logp: torch.Tensor,
                    mask: torch.Tensor, threshold: float) -> torch.Tensor:
    """DeepSeek-V3.2's off-policy sequence mask, no grad: keep a token unless its advantage is negative and
    its sequence's masked mean of (behaviour_logp - logp) exceeds `threshold` -> [B, T] float."""
    with torch.no_grad():
        d = torch.nan_to_num(behaviour_logp - logp.detach(), nan=0.0)
        low_kl = masked_seq_mean(d, mask) <= threshold
        return ((advantages_BT >= 0) | low_kl).to(mask.dtype)


def top_entropy_keep(entropy: torch.Tensor, mask: torch.Tensor, quantile: float) -> torch.Tensor:
    """Keep the top-`quantile` share of unmasked tokens by entropy ("Beyond the 80/20 rule"), no grad: a token
    is kept when its entropy is >= the (1 - quantile) quantile (linear interpolation, torch.quantile) of the
    unmasked entropies -> [B, T] float.  No unmasked token: nothing kept."""
    with torch.no_grad():
        m = mask != 0
        vals = entropy[m].float()
        if vals.numel() == 0:
            return torch.zeros_like(mask)
        thr = torch.quantile(vals, 1.0 - quantile)
        return (((entropy * mask) >= thr) & m).to(mask.dtype)


def vespo_phi(advantages_BT, log_ratio, mask, is_weight=None, *, k_pos=2.0, lambda_pos=3.0, k_neg=3.0,
              lambda_neg=2.0) -> torch.Tensor:
    """VESPO's gamma weight φ(w) = exp(λ + k·log w - λ·w), no grad, with w the sequence importance weight
    exp(Σ_t m·clamp(logp - old, ±20) + Σ_t log is_w), log w clamped to [log 1e-8, 20]; (k, λ) by the sign of
    A (A >= 0: the pos pair); non-finite φ becomes 0 -> [B, T]."""
    with torch.no_grad():
        s = (torch.clamp(log_ratio, -20.0, 20.0) * mask).sum(-1, keepdim=True)
        if is_weight is not None:
            s = s + torch.clamp(torch.log(is_weight), _LOG_MIN_W, 20.0).sum(-1, keepdim=True)
        log_w = torch.clamp(s, _LOG_MIN_W, 20.0)
        pos = advantages_BT >= 0
        k = torch.where(pos, log_w.new_tensor(k_pos), log_w.new_tensor(k_neg))
        lam = torch.where(pos, log_w.new_tensor(lambda_pos), log_w.new_tensor(lambda_neg)).clamp_min(1e-4)
        phi = torch.exp(lam + k * log_w - lam * torch.exp(log_w))
        return phi.nan_to_num(nan=0.0, posinf=0.0, neginf=0.0)


def objective(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor | None = None, *,
              old_logp=None, ref_logp=None, rollout_logp=None, entropy=None, truncated=None,
              policy: str = "clip", loss_agg: str = "token_mean", max_len: int | None = None,
              importance_sampling_level: str = "token", beta: float = 0.0, eps_low: float = 0.2,
              eps_high: float = 0.2, delta: float | None = None, use_bias_correction_kl: bool = False,
              sapo_temperature_pos: float = 1.0, sapo_temperature_neg: float = 1.05,
              vespo_k_pos: float = 2.0, vespo_lambda_pos: float = 3.0, vespo_k_neg: float = 3.0,
              vespo_lambda_neg: float = 2.0, rollout_is: str | None = None, rollout_is_weight=None,
              rollout_is_min: float | None = None,
              rollout_is_max: float | None = 3.0, off_policy_mask_threshold: float | None = None,
              entropy_coef: float = 0.0, top_entropy_quantile: float = 1.0,
              mask_truncated_completions: bool = False) -> ObjectiveOut:
    """The GRPO-family loss on per-token log-probs (module docstring; docs/objectives.md for every option).

    logp [B, T] (differentiable), advantages [B] or [B, T], mask [B, T] (None: all ones); old_logp (None:
    on-policy, logp.detach()), ref_logp (needed when beta > 0), rollout_logp (the sampler's log-probs;
    needed by rollout_is, preferred by the off-policy mask), entropy [B, T] (differentiable; needed by
    entropy_coef and top_entropy_quantile), truncated [B] bool (needed by mask_truncated_completions).
    rollout_is_weight ([B, T] or [B, 1], no grad) passes a rollout weight computed elsewhere (e.g. TRL's
    inputs["importance_sampling_ratio"], Liger's vllm_is_ratio) instead of computing it from rollout_logp;
    rollout_is still names its mode (token or sequence, for VESPO's check)."""
    if not isinstance(logp, torch.Tensor) or logp.dim() != 2:
        raise TypeError(f"logp must be a [B, T] tensor, got "
                        f"{list(logp.shape) if isinstance(logp, torch.Tensor) else type(logp).__name__}")
    if not logp.is_floating_point():
        raise ValueError(f"logp must be a floating tensor, got {logp.dtype}")
    B, T = logp.shape
    dev = logp.device
    cdt = torch.float64 if logp.dtype == torch.float64 else torch.float32
    o = validate(policy=policy, loss_agg=loss_agg, max_len=max_len, importance_sampling_level=importance_sampling_level,
                 beta=beta, eps_low=eps_low, eps_high=eps_high, delta=delta,
                 use_bias_correction_kl=use_bias_correction_kl, sapo_temperature_pos=sapo_temperature_pos,
                 sapo_temperature_neg=sapo_temperature_neg, vespo_k_pos=vespo_k_pos, vespo_lambda_pos=vespo_lambda_pos,
                 vespo_k_neg=vespo_k_neg, vespo_lambda_neg=vespo_lambda_neg, rollout_is=rollout_is,
                 rollout_is_min=rollout_is_min, rollout_is_max=rollout_is_max,
                 off_policy_mask_threshold=off_policy_mask_threshold, entropy_coef=entropy_coef,
                 top_entropy_quantile=top_entropy_quantile, mask_truncated_completions=mask_truncated_completions)
    A, m, old, ref, roll, H, is_w_in, truncated = _tensors(logp, advantages, mask, old_logp, ref_logp, rollout_logp,
                                                          entropy, rollout_is_weight, truncated, o, cdt)
    return _maths(logp.to(cdt), A, m, old, ref, roll, H, is_w_in, truncated, o)


def _tensors(logp, advantages, mask, old_logp, ref_logp, rollout_logp, entropy, rollout_is_weight, truncated,
             o: Options, cdt):
    """The tensor arguments of objective(), checked against logp's [B, T] and converted to `cdt`."""
    B, T = logp.shape
    dev = logp.device
    beta, rollout_is, rho_q = o.beta, o.rollout_is, o.top_entropy_quantile
    lp = logp.to(cdt)
    A = _bt(advantages, "advantages", B, T, cdt, dev, allow_b=True)
    if A is None:
        raise TypeError("advantages must be a tensor, got None")
    A = A.detach()
    m = torch.ones(B, T, dtype=cdt, device=dev) if mask is None else _bt(mask, "mask", B, T, cdt, dev).detach()
    old = lp.detach() if old_logp is None else _bt(old_logp, "old_logp", B, T, cdt, dev).detach()
    ref = _bt(ref_logp, "ref_logp", B, T, cdt, dev)
    roll = _bt(rollout_logp, "rollout_logp", B, T, cdt, dev)
    H = _bt(entropy, "entropy", B, T, cdt, dev)
    if beta > 0 and ref is None:
        raise ValueError("ref_logp is required when beta > 0")
    if rollout_is_weight is not None:
        if rollout_is is None:
            raise ValueError("rollout_is_weight needs rollout_is (its mode) to be set")
        if not isinstance(rollout_is_weight, torch.Tensor):
            raise TypeError(f"rollout_is_weight must be a tensor, got {type(rollout_is_weight).__name__}")
        if tuple(rollout_is_weight.shape) not in ((B, T), (B, 1)):
            raise ValueError(f"rollout_is_weight must have shape [B, T] = [{B}, {T}] or [B, 1], "
                             f"got {list(rollout_is_weight.shape)}")
    elif rollout_is is not None and roll is None:
        raise ValueError("rollout_logp (or rollout_is_weight) is required when rollout_is is set")
    if (o.entropy_coef != 0.0 or rho_q < 1.0) and H is None:
        raise ValueError("entropy is required when entropy_coef != 0 or top_entropy_quantile < 1")
    if o.mask_truncated_completions:
        if not isinstance(truncated, torch.Tensor):
            raise TypeError(f"truncated must be a [B] bool tensor when mask_truncated_completions=True, "
                            f"got {type(truncated).__name__}")
        if tuple(truncated.shape) != (B,):
            raise ValueError(f"truncated must have shape [B] = [{B}], got {list(truncated.shape)}")
    ref = None if ref is None else ref.detach()
    roll = None if roll is None else roll.detach()
    return A, m, old, ref, roll, H, rollout_is_weight, truncated


def _maths(lp, A, m, old, ref, roll, H, rollout_is_weight, truncated, o: Options) -> ObjectiveOut:
    """The objective's maths, in the order of docs/spec.md §2b, on checked [B, T] tensors."""
    B, T = lp.shape
    dev, cdt = lp.device, lp.dtype
    rollout_is, opsm, rho_q = o.rollout_is, o.off_policy_mask_threshold, o.top_entropy_quantile
    eps_low, eps_high, delta, policy = o.eps_low, o.eps_high, o.delta, o.policy
    if o.mask_truncated_completions:
        m = m * (~truncated.to(dev, torch.bool)).to(cdt)[:, None]

    # importance weight ρ = exp(log_iw): per token, or one per sequence (GSPO) broadcast over T
    log_ratio = lp - old
    log_iw = masked_seq_mean(log_ratio, m).expand(B, T) if o.importance_sampling_level == "sequence" else log_ratio
    rho = torch.exp(log_iw)

    is_w = torch.ones(B, T, dtype=cdt, device=dev)
    if rollout_is_weight is not None:
        is_w = rollout_is_weight.detach().to(dev, cdt).expand(B, T)
    elif rollout_is is not None:
        is_w = rollout_is_weights(old, roll, m, mode=rollout_is, c_min=o.c_min, c_max=o.c_max).expand(B, T)

    if ref is not None:
        d = ref - lp
        kl = torch.exp(d) - d - 1
        if o.use_bias_correction_kl:
            kl = kl * rho
    else:
        kl = torch.zeros_like(lp)

    no = torch.zeros(B, T, dtype=torch.bool, device=dev)
    clip_low, clip_high, phi = no, no, None
    shown = rho
    if policy == "clip":
        rho_c = torch.clamp(rho, 1 - eps_low, 1 + eps_high)
        if delta is not None:
            rho = torch.clamp(rho, max=delta)  # INTELLECT-2's cap on the unclipped branch
        pg = -torch.minimum(rho * A, rho_c * A)
        shown = rho
        clip_low, clip_high = (rho < 1 - eps_low) & (A < 0), (rho > 1 + eps_high) & (A > 0)
    elif policy == "cispo":
        pg = -torch.clamp(rho, max=eps_high).detach() * A * lp
        clip_high = (rho > eps_high) & (A > 0)
    elif policy == "sapo":
        # the temperatures as cdt tensors: torch.where on two Python floats would round them to float32
        tau = torch.where(A > 0, A.new_tensor(o.tau_pos), A.new_tensor(o.tau_neg))
        pg = -torch.sigmoid(tau * (rho - 1)) * (4.0 / tau) * A
    else:  # vespo: its own sequence weight, which already folds in the rollout correction
        phi = vespo_phi(A, log_ratio, m, is_w if rollout_is is not None else None, **o.vespo).expand(B, T)
        pg = -phi * A * lp

    keep = torch.ones(B, T, dtype=cdt, device=dev)
    if opsm is not None:
        keep = keep * off_policy_keep(A, lp, old if roll is None else roll, m, opsm)
    ent_keep = None
    if rho_q < 1.0:
        ent_keep = top_entropy_keep(H.detach(), m, rho_q)
        keep = keep * ent_keep
    l = pg * keep
    if rollout_is is not None and policy != "vespo":
        l = l * is_w
    if o.beta > 0:
        l = l + o.beta * kl

    if o.loss_agg == "seq_mean_token_sum":
        w = token_weights(m, "seq_mean_token_sum_norm", max_len=1)
    else:
        w = token_weights(m, o.loss_agg, o.max_len)
    w = w.to(cdt)
    pol = (l * w).sum()

    if H is not None:
        eff = m if ent_keep is None else m * ent_keep
        bonus = (H * eff).sum() / eff.sum().clamp_min(1.0)
    else:
        bonus = lp.new_zeros(())
    loss = pol - o.entropy_coef * bonus if o.entropy_coef != 0.0 else pol
    return ObjectiveOut(loss=loss, policy_loss=pol, entropy_bonus=bonus, per_token_loss=l, weights=w, mask=m,
                        ratio=shown.detach(), kl=kl.detach(), clip_low=clip_low, clip_high=clip_high, keep=keep,
                        is_weight=is_w, phi=phi)


def objective_grads(logp: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor | None = None, *,
                    entropy: torch.Tensor | None = None, **kwargs):
    """objective(...) on detached copies of logp (and entropy) -> (ObjectiveOut, dl/dlogp [B, T],
    dl/dH [B, T] or None): the per-token scales a V-sized backward turns into dlogits
    (dlogits = (onehot - p)·dl/dlogp - p·(log p + H)·dl/dH, per row, divided by the temperature)."""
    lp = logp.detach().requires_grad_(True)
    H = None if entropy is None else entropy.detach().requires_grad_(True)
    with torch.enable_grad():
        out = objective(lp, advantages, mask, entropy=H, **kwargs)
        wrt = (lp,) if H is None else (lp, H)
        grads = torch.autograd.grad(out.loss, wrt, allow_unused=True)
    g_lp = torch.zeros_like(lp) if grads[0] is None else grads[0]
    g_H = None
    if H is not None:
        g_H = torch.zeros_like(H) if grads[1] is None else grads[1]
    return out, g_lp.detach(), None if g_H is None else g_H.detach()
