"""Reference fused linear GRPO loss (docs/spec.md §3): the unfused computation, plain PyTorch with autograd.

Legend: B sequences, T positions, H hidden, V vocabulary.

    logits_BTV = hidden_BTH @ weight_VH.T (+ bias_V)      # materialised: B·T·V elements
    loss, stats = grpo_loss_ref(logits_BTV, ...)

The benches' eager-PyTorch baseline (and what torch.compile is given there); nothing in r1core calls
it.  It holds the full [B, T, V]
logits plus autograd's log_softmax and gradient buffers, i.e. about 3 logits-sized tensors: exactly
the memory the fused ops exist to avoid.
"""
from __future__ import annotations

import torch

from .grpo_loss import grpo_loss_ref


def linear_logits_ref(hidden: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """hidden [B, T, H] @ weight [V, H].T (+ bias [V]) -> logits [B, T, V] in the inputs' dtype."""
    return torch.nn.functional.linear(hidden, weight, bias)


def fused_linear_grpo_loss_ref(hidden, weight, targets, advantages, mask=None, *, bias=None, **grpo_kwargs):
    """grpo_loss_ref(hidden @ weight.T + bias, targets, advantages, mask, **grpo_kwargs) -> (loss, RefStats);
    differentiable in hidden, weight and bias."""
    return grpo_loss_ref(linear_logits_ref(hidden, weight, bias), targets, advantages, mask, **grpo_kwargs)

