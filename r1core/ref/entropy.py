"""Reference per-token entropy of the sampling distribution, plain PyTorch with autograd.

Legend: B sequences, T positions, V vocabulary.  H[b, t] = -Σ_v p_v log p_v with p = softmax(logits[b, t] /
temperature), in float32 for fp32/bf16/fp16 logits and float64 for float64 logits (the test oracle).  Its
gradient, dH/dlogits_v = -p_v·(log p_v + H) / temperature, is what the kernels' backward adds when an
entropy bonus (or any loss term in H) is used.
"""
from __future__ import annotations

import torch


def token_entropy_ref(logits: torch.Tensor, *, temperature: float = 1.0) -> torch.Tensor:
    """Entropy of softmax(logits / temperature) over the last dimension -> [B, T]; differentiable."""
    x = logits if logits.dtype == torch.float64 else logits.float()
    lsm = torch.log_softmax(x / temperature, dim=-1)
    p = lsm.exp()
    # a -inf logit (a banned token) has p = 0 and log p = -inf: 0·log 0 counts 0 (and so does its gradient)
    return -(p * torch.where(p > 0, lsm, 0.0)).sum(-1)
