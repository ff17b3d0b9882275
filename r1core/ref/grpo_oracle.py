"""An independent float64 oracle for every GRPO-family loss, written from docs/spec.md §2 and §2b.

Legend: B sequences, T positions, V vocabulary.  Test oracle only: it imports nothing from r1core, so
no aggregation, masking or objective rule it checks can cancel out of a test (issue 31 found a doubled
mask weight that slipped through because the old oracles called the production weighting code).

Deliberately plain: per-sequence Python loops over [T] vectors, the spec's formulas in its order
(1. truncation mask, 2. importance weight, 3. rollout weight, 4. KL, 5. policy term, 6. keep masks,
7. rollout weight applied, 8. KL added, 9. aggregation, 10. entropy bonus).  Slow, obvious, float64.
The mask may hold real weights (docs/spec.md §2: a non-binary mask acts as per-token weights; m != 0
decides which tokens count as unmasked).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import torch

__all__ = ["OracleOut", "oracle_logp_entropy", "oracle_logprobs", "oracle_entropy", "oracle_objective", "oracle_loss"]


class OracleOut(NamedTuple):
    loss: torch.Tensor          # 0-d float64, differentiable
    policy_loss: torch.Tensor   # 0-d float64: the loss before the entropy bonus
    ratio: torch.Tensor         # [B, T] importance weight as the stats report it (after the delta cap)
    kl: torch.Tensor            # [B, T] k3 KL (times ρ with the bias correction); 0 without ref_logp
    mask: torch.Tensor          # [B, T] the mask used (after mask_truncated_completions)
    clip_low: torch.Tensor      # [B, T] bool: the clip policy's lower clip is active (ρ < 1 - eps_low, A < 0)
    clip_high: torch.Tensor     # [B, T] bool: ρ > 1 + eps_high and A > 0 (clip); ρ > eps_high and A > 0 (cispo)
    logp: torch.Tensor          # [B, T] the log-probs the objective saw

    def token_mean(self, x: torch.Tensor) -> torch.Tensor:
        """Σ x·m / Σ m over the mask (docs/spec.md §2's statistics), 0 without tokens."""
        n = self.mask.sum()
        return (x.detach().double() * self.mask).sum() / n if float(n) != 0 else n * 0.0


def oracle_logp_entropy(logits, targets, temperature: float = 1.0):
    """float64 (logp [B, T], entropy [B, T]) of softmax(logits / temperature), differentiable in logits.
    A target outside [0, V) gives logp 0 (such tokens must be masked)."""
    x = logits.double() / temperature
    V = x.shape[-1]
    mx = x.max(dim=-1, keepdim=True).values.detach()
    z = (x - mx).exp()
    lse = z.sum(-1).log() + mx[..., 0]
    logq = x - lse[..., None]
    q = logq.exp()
    ent = -(q * torch.where(q > 0, logq, torch.zeros_like(logq))).sum(-1)
    ok = (targets >= 0) & (targets < V)
    picked = logq.gather(-1, torch.where(ok, targets, 0).long()[..., None])[..., 0]
    return torch.where(ok, picked, torch.zeros_like(picked)), ent


def oracle_logprobs(logits, targets, *, temperature: float = 1.0):
    """float64 log_softmax(logits / temperature)[targets] [B, T]; 0 where the target is outside [0, V)."""
    return oracle_logp_entropy(logits, targets, temperature)[0]


def oracle_entropy(logits, *, temperature: float = 1.0):
    """float64 entropy of softmax(logits / temperature) over the last dimension, differentiable."""
    return oracle_logp_entropy(logits, torch.zeros(logits.shape[:-1], dtype=torch.long, device=logits.device),
                               temperature)[1]


def _mmean(x, m):
    """Σ_t m·x / max(Σ_t m, 1) of one sequence's [T] vectors."""
    return (m * x).sum() / torch.clamp((m).sum(), min=1.0)


def _quantile_linear(vals, q: float):
    """The q-quantile of a 1-D float64 tensor with linear interpolation between order statistics."""
    s = torch.sort(vals).values
    pos = q * (s.numel() - 1)
    lo, hi = math.floor(pos), math.ceil(pos)
    return s[lo] + (s[hi] - s[lo]) * (pos - lo)


def oracle_objective(logp, adv, mask=None, *, old_logp=None, ref_logp=None, rollout_logp=None, entropy=None,
                     truncated=None, policy="clip", loss_agg="token_mean", max_len=None,
                     importance_sampling_level="token", beta=0.0, eps_low=0.2, eps_high=0.2, delta=None,
                     use_bias_correction_kl=False, sapo_temperature_pos=1.0, sapo_temperature_neg=1.05,
                     vespo_k_pos=2.0, vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0,
                     rollout_is=None, rollout_is_weight=None, rollout_is_min=None, rollout_is_max=3.0,
                     off_policy_mask_threshold=None, entropy_coef=0.0, top_entropy_quantile=1.0,
                     mask_truncated_completions=False):
    """docs/spec.md §2b on float64 [B, T] log-probs (differentiable) -> OracleOut."""
    f64 = lambda t: None if t is None else t.detach().double()  # noqa: E731
    B, T = logp.shape
    lp = logp.double()
    A = adv.detach().double()
    A = A[:, None].expand(B, T) if A.dim() == 1 else A
    m = torch.ones(B, T, dtype=torch.float64) if mask is None else mask.detach().double()
    old = lp.detach() if old_logp is None else f64(old_logp)
    ref, roll, H = f64(ref_logp), f64(rollout_logp), entropy
    H = None if H is None else H.double()

    # 1. truncated completions leave the loss entirely
    if mask_truncated_completions:
        m = m * (~truncated.bool()).double()[:, None]

    # 6b. the top-entropy threshold is global over the batch's unmasked tokens
    thr = None
    if top_entropy_quantile < 1.0:
        unmasked = H.detach()[m != 0]
        thr = None if unmasked.numel() == 0 else _quantile_linear(unmasked, 1.0 - top_entropy_quantile)

    rows, bonus_num, bonus_den = [], lp.new_zeros(()), 0.0
    shown_rows, kl_rows, low_rows, high_rows = [], [], [], []
    for b in range(B):
        mb, Ab, lpb, oldb = m[b], A[b], lp[b], old[b]
        # 2. importance weight
        if importance_sampling_level == "sequence":
            rho = torch.exp(_mmean(lpb - oldb, mb)).expand(T)
        else:
            rho = torch.exp(lpb - oldb)
        # 3. rollout correction (no gradient)
        if rollout_is_weight is not None:
            isw = rollout_is_weight.detach().double()[b].expand(T)
        elif rollout_is is not None:
            d = torch.nan_to_num((oldb - roll[b]) * mb, nan=0.0)
            r = torch.exp(d.sum()).expand(T) if rollout_is.startswith("sequence") else torch.exp(d)
            lo = -math.inf if rollout_is_min is None else rollout_is_min
            hi = math.inf if rollout_is_max is None else rollout_is_max
            if rollout_is.endswith("truncate"):
                isw = torch.clamp(r, min=lo, max=hi)
            else:
                isw = torch.where((r < lo) | (r > hi), torch.zeros_like(r), r)
        else:
            isw = torch.ones(T, dtype=torch.float64)
        # 4. KL (k3), times ρ with the bias correction
        kl = torch.zeros(T, dtype=torch.float64)
        if ref is not None:
            kl = torch.exp(ref[b] - lpb) - (ref[b] - lpb) - 1
            if use_bias_correction_kl:
                kl = kl * rho
        kl_rows.append(kl.detach())
        shown_rows.append((rho if policy != "clip" or delta is None else torch.clamp(rho, max=delta)).detach())
        r_shown = shown_rows[-1]
        low = (r_shown < 1 - eps_low) & (Ab < 0) if policy == "clip" else torch.zeros(T, dtype=torch.bool)
        high = {"clip": (r_shown > 1 + eps_high) & (Ab > 0), "cispo": (rho.detach() > eps_high) & (Ab > 0)}.get(
            policy, torch.zeros(T, dtype=torch.bool))
        low_rows.append(low)
        high_rows.append(high)
        # 5. policy term
        if policy == "clip":
            capped = rho if delta is None else torch.clamp(rho, max=delta)
            pg = -torch.minimum(capped * Ab, torch.clamp(rho, 1 - eps_low, 1 + eps_high) * Ab)
        elif policy == "cispo":
            pg = -torch.clamp(rho, max=eps_high).detach() * Ab * lpb
        elif policy == "sapo":
            tau = torch.where(Ab > 0, torch.full_like(Ab, sapo_temperature_pos),
                              torch.full_like(Ab, sapo_temperature_neg))
            pg = -torch.sigmoid(tau * (rho - 1)) * (4.0 / tau) * Ab
        elif policy == "vespo":
            s = (mb * torch.clamp(lpb - oldb, -20.0, 20.0)).sum().detach()
            if rollout_is is not None:
                s = s + torch.clamp(torch.log(isw), math.log(1e-8), 20.0).sum()
            logw = torch.clamp(s, math.log(1e-8), 20.0)
            pos = Ab >= 0
            k = torch.where(pos, torch.full_like(Ab, vespo_k_pos), torch.full_like(Ab, vespo_k_neg))
            lam = torch.where(pos, torch.full_like(Ab, vespo_lambda_pos), torch.full_like(Ab, vespo_lambda_neg))
            lam = torch.clamp(lam, min=1e-4)
            phi = torch.exp(lam + k * logw - lam * torch.exp(logw))
            phi = torch.where(torch.isfinite(phi), phi, torch.zeros_like(phi))
            pg = -phi * Ab * lpb
        else:
            raise ValueError(policy)
        # 6. keep masks (no gradient)
        keep = torch.ones(T, dtype=torch.float64)
        if off_policy_mask_threshold is not None:
            beh = roll[b] if roll is not None else oldb
            gap = _mmean(torch.nan_to_num(beh - lpb.detach(), nan=0.0), mb)
            if gap > off_policy_mask_threshold:
                keep = keep * (Ab >= 0).double()
        ent_keep = torch.ones(T, dtype=torch.float64)
        if top_entropy_quantile < 1.0:
            ent_keep = torch.zeros(T, dtype=torch.float64) if thr is None else \
                ((H.detach()[b] * mb >= thr) & (mb != 0)).double()
            keep = keep * ent_keep
        l_t = pg * keep
        # 7. rollout weight (vespo's φ already holds it)
        if rollout_is is not None and policy != "vespo":
            l_t = l_t * isw
        # 8. KL term
        if beta > 0:
            l_t = l_t + beta * kl
        rows.append(l_t)
        if H is not None:
            eff = mb * ent_keep
            bonus_num = bonus_num + (H[b] * eff).sum()
            bonus_den += float(eff.sum())

    # 9. aggregation
    n_tok = m.sum(-1)
    if loss_agg == "token_mean":
        total = float(m.sum())
        pol = sum((rows[b] * m[b]).sum() for b in range(B)) / total if total else lp.new_zeros(())
    elif loss_agg == "seq_mean_token_mean":
        live = [b for b in range(B) if float(n_tok[b]) != 0]
        pol = sum((rows[b] * m[b]).sum() / n_tok[b] for b in live) / len(live) if live else lp.new_zeros(())
    elif loss_agg == "seq_mean_token_sum_norm":
        L = T if max_len is None else max_len
        pol = sum((rows[b] * m[b]).sum() for b in range(B)) / (B * L)
    elif loss_agg == "seq_mean_token_sum":
        pol = sum((rows[b] * m[b]).sum() for b in range(B)) / B
    else:
        raise ValueError(loss_agg)
    pol = pol * lp.new_ones(())   # a 0-d tensor even when no row counted
    # 10. entropy bonus
    loss = pol
    if entropy_coef != 0.0:
        loss = pol - entropy_coef * bonus_num / max(bonus_den, 1.0)
    return OracleOut(loss, pol, torch.stack(shown_rows), torch.stack(kl_rows), m, torch.stack(low_rows),
                     torch.stack(high_rows), lp.detach())


def oracle_loss(logits, targets, advantages, mask=None, *, temperature: float = 1.0, **kw):
    """The loss of grpo_loss(logits, ...) (§2 or §2b) in float64 and its gradient to the logits ->
    (loss 0-d float64, dlogits float64 [B, T, V])."""
    x = logits.detach().double().requires_grad_(True)
    lp, H = oracle_logp_entropy(x, targets, temperature)
    m = torch.ones(lp.shape, dtype=torch.float64) if mask is None else mask.double()
    live = m != 0   # masked positions: logp and entropy 0, not read
    lp = torch.where(live, lp, torch.zeros_like(lp))
    H = torch.where(live, H, torch.zeros_like(H))
    out = oracle_objective(lp, advantages, mask, entropy=H, **kw)
    (g,) = torch.autograd.grad(out.loss, x, allow_unused=True)
    return out.loss.detach(), torch.zeros_like(x) if g is None else g


class OracleStats(NamedTuple):
    """GRPOStats' fields, in float64."""
    logp: torch.Tensor
    kl_mean: torch.Tensor
    ratio_mean: torch.Tensor
    clip_low_frac: torch.Tensor
    clip_high_frac: torch.Tensor


def oracle_grpo_loss(logits, targets, advantages, mask=None, *, temperature: float = 1.0, **kw):
    """grpo_loss's loss, statistics and dlogits in float64 (docs/spec.md §2, §2b) -> (loss, OracleStats,
    dlogits): logp and every statistic 0 at masked positions / without tokens."""
    x = logits.detach().double().requires_grad_(True)
    lp, _ = oracle_logp_entropy(x, targets, temperature)
    m = torch.ones(lp.shape, dtype=torch.float64) if mask is None else mask.double()
    lp = torch.where(m != 0, lp, torch.zeros_like(lp))
    kw = {k: (v.double() if isinstance(v, torch.Tensor) and v.is_floating_point() else v) for k, v in kw.items()}
    out = oracle_objective(lp, advantages, m, **kw)
    (g,) = torch.autograd.grad(out.loss, x, allow_unused=True)
    stats = OracleStats(logp=lp.detach(), kl_mean=out.token_mean(out.kl), ratio_mean=out.token_mean(out.ratio),
                        clip_low_frac=out.token_mean(out.clip_low), clip_high_frac=out.token_mean(out.clip_high))
    return out.loss.detach(), stats, torch.zeros_like(x) if g is None else g
