"""The GRPO math of docs/spec.md §2, defined once: per-token terms, each token's aggregation weight, and the
layout of the per-token terms every loss implementation writes.

Legend: B sequences, T positions, n tokens (any flat selection of them).  Everything here works on
tensors of any float dtype without a host sync, and is what the reference loss (autograd
differentiates it), the fused linear op's PyTorch row math and on-chip path, the kernels' weights and
statistics, the trainer's normaliser and verl's policy loss all use (docs/ops.md).  No test oracle
uses it: r1core/ref holds independent ones.  The Triton and
C++ kernels implement the same per-token formulas independently; the tests hold them to it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import torch

from .options import LOSS_AGGS

# Rows of the per-token terms [N_TERMS, n] every loss implementation writes: row 0 is l·w (its sum
# is the loss), the others x·m (their sums over the mask's total are GRPOStats' means).  The C++
# kTerms (csrc/grpo_loss/grpo_loss_cpu.cpp) and the Triton N_TERMS (kernels/grpo_loss.py) point here;
# tests/ops/test_grpo_loss.py checks that they agree.
TERMS = ("loss", "ratio", "kl", "clip_low", "clip_high")
N_TERMS = len(TERMS)


@dataclass(frozen=True)
class GRPOStats:
    """Detached statistics of one GRPO loss call (token means over unmasked tokens)."""
    logp: torch.Tensor            # [B, T] float32 log-prob of each target (reusable as old_logp), 0 where masked
    kl_mean: torch.Tensor         # 0-d; k3 KL to the reference, 0 when ref_logp is None
    ratio_mean: torch.Tensor      # 0-d; exp(logp - old_logp)
    clip_low_frac: torch.Tensor   # 0-d; share with ratio < 1 - eps_low and A < 0 (gradient cut)
    clip_high_frac: torch.Tensor  # 0-d; share with ratio > 1 + eps_high and A > 0 (gradient cut)
    # [B, T] float32 entropy of softmax(logits / temperature), 0 at masked positions; None unless the op
    # was asked for it (entropy=True).  Per token, not its mean: top-entropy masks and the trainers'
    # logging need the tokens (its mean is entropy.sum() / mask.sum()).
    entropy: torch.Tensor | None = None


class TokenTerms(NamedTuple):
    """Per-token GRPO quantities (same shape as logp)."""
    loss: torch.Tensor       # l = -min(ratio·A, clip(ratio, 1-eps_low, 1+eps_high)·A) + beta·kl
    dlogp: torch.Tensor      # dl/dlogp (0 where the clip cuts the gradient)
    ratio: torch.Tensor      # exp(logp - old_logp); 1 on-policy
    kl: torch.Tensor         # k3 estimator exp(ref - logp) - (ref - logp) - 1; 0 without ref_logp
    clip_low: torch.Tensor   # bool: ratio < 1 - eps_low and A < 0
    clip_high: torch.Tensor  # bool: ratio > 1 + eps_high and A > 0


def token_terms(logp: torch.Tensor, adv: torch.Tensor, old: torch.Tensor | None, ref: torch.Tensor | None, *,
                beta: float, eps_low: float, eps_high: float) -> TokenTerms:
    """The per-token GRPO math (docs/spec.md §2; the kernels' grpo_token_math).  old None: on-policy, ratio 1
    (pass old = logp.detach() instead to keep d ratio / d logp = 1 for autograd)."""
    ratio = torch.exp(logp - old) if old is not None else torch.ones_like(logp)
    clip_low = (ratio < 1 - eps_low) & (adv < 0)
    clip_high = (ratio > 1 + eps_high) & (adv > 0)
    clipped = ratio.clamp(1 - eps_low, 1 + eps_high)
    loss = -torch.minimum(ratio * adv, clipped * adv)
    dlogp = torch.where(clip_low | clip_high, 0.0, -adv * ratio)
    if ref is not None:
        d = ref - logp
        e = torch.exp(d)
        kl = e - d - 1
        if beta > 0:  # only then: an infinite kl never meets beta = 0 as 0·inf
            loss = loss + beta * kl
            dlogp = dlogp + beta * (1 - e)
    else:
        kl = torch.zeros_like(logp)
    return TokenTerms(loss, dlogp, ratio, kl, clip_low, clip_high)


def _float(mask: torch.Tensor) -> torch.Tensor:
    return mask if mask.is_floating_point() else mask.to(torch.float32)


def agg_denominator(mask_BT: torch.Tensor, loss_agg: str) -> torch.Tensor:
    """What `loss_agg` divides a batch's summed loss by (0-d): the unmasked tokens ("token_mean"),
    the sequences with >= 1 token ("seq_mean_token_mean"), the rows B ("seq_mean_token_sum_norm",
    times the constant max_len).  A batch split into micro-batches keeps its objective when each
    micro-batch's loss is scaled by its denominator over the batch's (r1core/train/grpo.py)."""
    m = _float(mask_BT)
    if loss_agg == "token_mean":
        return m.sum()
    if loss_agg == "seq_mean_token_mean":
        return (m.sum(dim=1) != 0).sum().to(m.dtype)
    if loss_agg == "seq_mean_token_sum_norm":
        return torch.tensor(float(m.shape[0]), dtype=m.dtype, device=m.device)
    raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {loss_agg!r}")


def token_weights(mask_BT: torch.Tensor, loss_agg: str, max_len: int | None = None) -> torch.Tensor:
    """Each token's weight w in loss = sum(l · w): the aggregation of docs/spec.md §2 as a [B, T] tensor in
    the mask's float dtype (float32 for a bool/integer mask).  No unmasked token: w = 0 everywhere."""
    m = _float(mask_BT)
    B, T = m.shape
    tiny = torch.finfo(m.dtype).tiny
    if loss_agg == "token_mean":
        return m / agg_denominator(m, loss_agg).clamp_min(tiny)
    if loss_agg == "seq_mean_token_mean":  # mean over sequences of sum_t(l·m) / sum_t(m)
        n_B1 = m.sum(dim=1, keepdim=True)
        n_seq = agg_denominator(m, loss_agg).clamp_min(1)
        return m / (n_B1.masked_fill(n_B1 == 0, 1.0) * n_seq)
    if loss_agg == "seq_mean_token_sum_norm":
        return m / float(B * (T if max_len is None else max_len))
    raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {loss_agg!r}")


def stack_terms(t: TokenTerms, mask: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    """The per-token terms in the TERMS layout: [l·w, ratio·m, kl·m, clip_low·m, clip_high·m]."""
    m = mask.to(t.loss.dtype)
    return torch.stack([t.loss * w.to(t.loss.dtype), t.ratio * m, t.kl * m, t.clip_low * m, t.clip_high * m])


def term_means(sums: torch.Tensor, n_tokens: torch.Tensor) -> dict[str, torch.Tensor]:
    """GRPOStats' means from the summed terms [N_TERMS] and the mask's total: 0 when no token."""
    means = torch.where(n_tokens > 0, sums[1:] / n_tokens.clamp_min(torch.finfo(sums.dtype).tiny), 0.0)
    return {"ratio_mean": means[0], "kl_mean": means[1], "clip_low_frac": means[2], "clip_high_frac": means[3]}
