"""Reference GRPO loss on logits (SPEC §2), plain PyTorch with autograd.

Legend: B sequences, T positions, V vocabulary.  Computes in float32 for fp32/bf16/fp16 logits and
in float64 for float64 logits (that is the test oracle).  It materialises log_softmax over [B, T, V]
and lets autograd derive dlogits: simple, slow, memory-hungry, and obviously right.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")


@dataclass(frozen=True)
class GRPOStats:
    """Detached statistics of one GRPO loss call (token means over unmasked tokens)."""
    logp: torch.Tensor            # [B, T] float32 log-prob of each target (reusable as old_logp)
    kl_mean: torch.Tensor         # 0-d; k3 KL to the reference, 0 when ref_logp is None
    ratio_mean: torch.Tensor      # 0-d; exp(logp - old_logp)
    clip_low_frac: torch.Tensor   # 0-d; share with ratio < 1 - eps_low and A < 0 (gradient cut)
    clip_high_frac: torch.Tensor  # 0-d; share with ratio > 1 + eps_high and A > 0 (gradient cut)


def token_weights_ref(mask_BT: torch.Tensor, loss_agg: str, max_len: int | None = None) -> torch.Tensor:
    """Each token's weight w in loss = sum(l * w): the aggregation of SPEC §2 as a [B, T] tensor."""
    m = mask_BT.to(torch.float64)
    B, T = m.shape
    if loss_agg == "token_mean":
        n = m.sum()
        return m / n if n > 0 else torch.zeros_like(m)
    if loss_agg == "seq_mean_token_mean":
        n_b = m.sum(dim=1, keepdim=True)
        n_seq = (n_b > 0).sum()
        if n_seq == 0:
            return torch.zeros_like(m)
        return torch.where(n_b > 0, m / n_b.clamp_min(1), 0.0) / n_seq
    if loss_agg == "seq_mean_token_sum_norm":
        return m / (B * (T if max_len is None else max_len))
    raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {loss_agg!r}")


def logprobs_ref(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / temperature)[target] -> [B, T] (float32, or float64 for float64 logits).
    Targets outside [0, V) (e.g. -100) give an arbitrary value; mask them."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    lsm = torch.log_softmax(x / temperature, dim=-1)
    return lsm.gather(-1, targets.long().clamp(0, logits.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)


def grpo_loss_ref(logits, targets, advantages, mask=None, *, old_logp=None, ref_logp=None,
                  beta: float = 0.0, eps_low: float = 0.2, eps_high: float = 0.2,
                  temperature: float = 1.0, loss_agg: str = "token_mean", max_len: int | None = None):
    """The GRPO loss of SPEC §2 -> (loss 0-d, GRPOStats); differentiable in `logits`."""
    B, T, _ = logits.shape
    logp = logprobs_ref(logits, targets, temperature=temperature)
    cdt = logp.dtype
    m = torch.ones(B, T, dtype=cdt, device=logits.device) if mask is None else mask.to(cdt)
    A = advantages.to(cdt)
    A = A[:, None].expand(B, T) if A.dim() == 1 else A
    old = logp.detach() if old_logp is None else old_logp.to(cdt)
    ratio = torch.exp(logp - old)
    pg = -torch.minimum(ratio * A, ratio.clamp(1 - eps_low, 1 + eps_high) * A)
    if ref_logp is not None:
        d = ref_logp.to(cdt) - logp
        kl = torch.exp(d) - d - 1
    else:
        kl = torch.zeros_like(logp)
    l = pg + beta * kl if beta > 0 else pg
    w = token_weights_ref(m, loss_agg, max_len).to(cdt)
    loss = (l * w).sum()

    n = m.sum()
    def tmean(x):
        return (x.detach() * m).sum() / n if n > 0 else x.new_zeros(())
    stats = GRPOStats(
        logp=logp.detach().float(),
        kl_mean=tmean(kl).float(),
        ratio_mean=tmean(ratio).float(),
        clip_low_frac=tmean(((ratio < 1 - eps_low) & (A < 0)).to(cdt)).float(),
        clip_high_frac=tmean(((ratio > 1 + eps_high) & (A > 0)).to(cdt)).float(),
    )
    return loss, stats
