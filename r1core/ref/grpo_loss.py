"""Reference GRPO loss on logits (docs/spec.md §2), plain PyTorch with autograd, self-contained.

Legend: B sequences, T positions, V vocabulary.  Computes in float32 for fp32/bf16/fp16 logits and
in float64 for float64 logits (the test oracle).  It materialises log_softmax over [B, T, V] and lets
autograd derive dlogits: simple, slow, memory-hungry, and obviously right.  It shares no code with the
production path (r1core/ops/grpo/math.py, the kernels): an aggregation or masking bug there cannot
cancel out of a test that uses this as its oracle.
"""
from __future__ import annotations

from typing import NamedTuple

import torch

__all__ = ["RefStats", "grpo_loss_ref", "logprobs_ref"]


class RefStats(NamedTuple):
    """The reference's statistics (the fields of r1core's GRPOStats, detached)."""
    logp: torch.Tensor            # [B, T] float32
    kl_mean: torch.Tensor         # 0-d float32, token mean over m != 0 (weighted by m)
    ratio_mean: torch.Tensor
    clip_low_frac: torch.Tensor
    clip_high_frac: torch.Tensor


def logprobs_ref(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / temperature)[target] -> [B, T] (float32, or float64 for float64 logits).
    Targets outside [0, V) (e.g. -100) give an arbitrary value; mask them."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    lsm = torch.log_softmax(x / temperature, dim=-1)
    return lsm.gather(-1, targets.long().clamp(0, logits.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)


def grpo_loss_ref(logits, targets, advantages, mask=None, *, old_logp=None, ref_logp=None,
                  beta: float = 0.0, eps_low: float = 0.2, eps_high: float = 0.2,
                  temperature: float = 1.0, loss_agg: str = "token_mean", max_len: int | None = None):
    """The GRPO loss of docs/spec.md §2 -> (loss 0-d, RefStats); differentiable in `logits`."""
    B, T, _ = logits.shape
    logp = logprobs_ref(logits, targets, temperature=temperature)
    dt = logp.dtype
    m = torch.ones(B, T, dtype=dt, device=logits.device) if mask is None else mask.to(dt)
    A = advantages.to(dt)
    if A.dim() == 1:
        A = A.unsqueeze(1).expand(B, T)
    # on-policy: the ratio is 1 with d ratio / d logp = 1
    ratio = torch.exp(logp - (logp.detach() if old_logp is None else old_logp.to(dt)))
    lo, hi = 1.0 - eps_low, 1.0 + eps_high
    per_tok = -torch.minimum(ratio * A, ratio.clamp(lo, hi) * A)
    kl = torch.zeros_like(logp)
    if ref_logp is not None:
        gap = ref_logp.to(dt) - logp
        kl = gap.exp() - gap - 1.0
        if beta > 0:
            per_tok = per_tok + beta * kl
    # the aggregation, written out per loss_agg (docs/spec.md §2's table)
    masked_sum = (per_tok * m).sum(dim=1)                               # [B]
    tokens_B = m.sum(dim=1)
    if loss_agg == "token_mean":          # no token at all: masked_sum is 0, and so is the loss
        loss = masked_sum.sum() / tokens_B.sum().clamp_min(1e-30)
    elif loss_agg == "seq_mean_token_mean":
        live = tokens_B != 0
        per_seq = torch.where(live, masked_sum / tokens_B.clamp_min(1e-30), 0.0)
        loss = per_seq.sum() / live.sum().clamp_min(1)
    elif loss_agg == "seq_mean_token_sum_norm":
        loss = masked_sum.sum() / (B * (T if max_len is None else max_len))
    else:
        raise ValueError(f"loss_agg must be one of token_mean, seq_mean_token_mean, seq_mean_token_sum_norm, "
                         f"got {loss_agg!r}")
    with torch.no_grad():
        n = m.sum().clamp_min(1e-30)    # no token: every sum is 0, and so is every mean

        def mean(x):
            return ((x.to(dt) * m).sum() / n).float()
        stats = RefStats(logp=logp.detach().float(), kl_mean=mean(kl), ratio_mean=mean(ratio),
                         clip_low_frac=mean((ratio < lo) & (A < 0)), clip_high_frac=mean((ratio > hi) & (A > 0)))
    return loss, stats
