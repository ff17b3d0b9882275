"""Reference GRPO loss on logits (docs/spec.md §2), plain PyTorch with autograd.

Legend: B sequences, T positions, V vocabulary.  Computes in float32 for fp32/bf16/fp16 logits and
in float64 for float64 logits (that is the test oracle).  It materialises log_softmax over [B, T, V]
and lets autograd derive dlogits: simple, slow, memory-hungry, and obviously right.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from .grpo_math import LOSS_AGGS, stack_terms, term_means, token_terms, token_weights

__all__ = ["GRPOStats", "LOSS_AGGS", "grpo_loss_ref", "logprobs_ref"]


@dataclass(frozen=True)
class GRPOStats:
    """Detached statistics of one GRPO loss call (token means over unmasked tokens)."""
    logp: torch.Tensor            # [B, T] float32 log-prob of each target (reusable as old_logp)
    kl_mean: torch.Tensor         # 0-d; k3 KL to the reference, 0 when ref_logp is None
    ratio_mean: torch.Tensor      # 0-d; exp(logp - old_logp)
    clip_low_frac: torch.Tensor   # 0-d; share with ratio < 1 - eps_low and A < 0 (gradient cut)
    clip_high_frac: torch.Tensor  # 0-d; share with ratio > 1 + eps_high and A > 0 (gradient cut)
    # [B, T] float32 entropy of softmax(logits / temperature), 0 at masked positions; None unless the op
    # was asked for it (entropy=True).  Per token, not its mean: top-entropy masks and the trainers'
    # logging need the tokens (its mean is entropy.sum() / mask.sum()).
    entropy: torch.Tensor | None = None


def logprobs_ref(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """log_softmax(logits / temperature)[target] -> [B, T] (float32, or float64 for float64 logits).
    Targets outside [0, V) (e.g. -100) give an arbitrary value; mask them."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    lsm = torch.log_softmax(x / temperature, dim=-1)
    return lsm.gather(-1, targets.long().clamp(0, logits.shape[-1] - 1).unsqueeze(-1)).squeeze(-1)


def grpo_loss_ref(logits, targets, advantages, mask=None, *, old_logp=None, ref_logp=None,
                  beta: float = 0.0, eps_low: float = 0.2, eps_high: float = 0.2,
                  temperature: float = 1.0, loss_agg: str = "token_mean", max_len: int | None = None):
    """The GRPO loss of docs/spec.md §2 -> (loss 0-d, GRPOStats); differentiable in `logits`."""
    B, T, _ = logits.shape
    logp = logprobs_ref(logits, targets, temperature=temperature)
    cdt = logp.dtype
    m = torch.ones(B, T, dtype=cdt, device=logits.device) if mask is None else mask.to(cdt)
    A = advantages.to(cdt)
    A = A[:, None].expand(B, T) if A.dim() == 1 else A
    old = logp.detach() if old_logp is None else old_logp.to(cdt)  # on-policy: ratio 1, d ratio/d logp 1
    t = token_terms(logp, A, old, None if ref_logp is None else ref_logp.to(cdt), beta=beta, eps_low=eps_low,
                    eps_high=eps_high)
    terms = stack_terms(t, m, token_weights(m, loss_agg, max_len))
    means = term_means(terms.detach().flatten(1).sum(dim=1), m.sum())
    return terms[0].sum(), GRPOStats(logp=logp.detach().float(), **{k: v.float() for k, v in means.items()})
