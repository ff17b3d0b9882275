"""The three ops the trainer calls, in one place: group advantages, fused linear log-probs and the
fused linear GRPO loss (SPEC §1 and §3), through r1core's dispatch (SPEC §6).

`backend` is passed through: None lets each op pick its fastest kernel for the tensors' device;
"torch" runs the plain PyTorch references (what benches/bench_grpo_step.py uses as the baseline).
Legend: B sequences, T positions, H hidden, V vocabulary.
"""
from __future__ import annotations

import torch

from r1core.ops.advantage import grpo_advantages
from r1core.ops.fused_linear import fused_linear_grpo_loss, fused_linear_logprobs


def advantages(rewards_N: torch.Tensor, group_size: int, *, scale: str, baseline: str,
               backend: str | None = None) -> torch.Tensor:
    return grpo_advantages(rewards_N, group_size, scale=scale, baseline=baseline, backend=backend)


def linear_logprobs(hidden_BTH: torch.Tensor, weight_VH: torch.Tensor, targets_BT: torch.Tensor, *,
                    bias_V: torch.Tensor | None = None, temperature: float = 1.0,
                    backend: str | None = None) -> torch.Tensor:
    """log_softmax((hidden @ weight.T + bias) / temperature)[target] -> [B, T] float32, no grad
    (negative targets are skipped and give 0)."""
    return fused_linear_logprobs(hidden_BTH, weight_VH, targets_BT, bias=bias_V, temperature=temperature,
                                 backend=backend)


def linear_grpo_loss(hidden_BTH: torch.Tensor, weight_VH: torch.Tensor, targets_BT: torch.Tensor,
                     adv_B: torch.Tensor, mask_BT: torch.Tensor, *, bias_V: torch.Tensor | None = None,
                     chunk_size: int | None = None, backend: str | None = None, **grpo_kwargs):
    """(loss, GRPOStats) of SPEC §3, differentiable in hidden, weight and bias."""
    return fused_linear_grpo_loss(hidden_BTH, weight_VH, targets_BT, adv_B, mask_BT, bias=bias_V,
                                  chunk_size=chunk_size, backend=backend, **grpo_kwargs)
