"""The three ops the trainer calls, in one place: group advantages, fused linear log-probs and the
fused linear GRPO loss (SPEC §1 and §3).

They go through r1core's public ops (which dispatch to the C++/Triton/CUDA kernels, SPEC §6); the
`backend` argument is passed through (None: the op's own choice, "torch": the plain references,
which is what benches/bench_grpo_step.py uses as the baseline).  Legend: B sequences, T positions,
H hidden, V vocabulary.
"""
from __future__ import annotations

import importlib.util

import torch


def _have(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


def advantages(rewards_N: torch.Tensor, group_size: int, *, scale: str, baseline: str,
               backend: str | None = None) -> torch.Tensor:
    if backend != "torch" and _have("r1core.ops.advantage"):
        from r1core.ops.advantage import grpo_advantages
        return grpo_advantages(rewards_N, group_size, scale=scale, baseline=baseline, **_b(backend))
    from r1core.ref.advantage import grpo_advantages_ref
    return grpo_advantages_ref(rewards_N, group_size, scale=scale, baseline=baseline)


def linear_logprobs(hidden_BTH: torch.Tensor, weight_VH: torch.Tensor, targets_BT: torch.Tensor, *,
                    bias_V: torch.Tensor | None = None, temperature: float = 1.0,
                    backend: str | None = None) -> torch.Tensor:
    """log_softmax((hidden @ weight.T + bias) / temperature)[target] -> [B, T] float32, no grad."""
    if backend != "torch" and _have("r1core.ops.fused_linear"):
        from r1core.ops.fused_linear import fused_linear_logprobs
        return fused_linear_logprobs(hidden_BTH, weight_VH, targets_BT, bias=bias_V, temperature=temperature,
                                     **_b(backend))
    from r1core.ref.fused_linear import fused_linear_logprobs_ref
    return fused_linear_logprobs_ref(hidden_BTH, weight_VH, targets_BT, bias=bias_V,
                                     temperature=temperature).float()


def linear_grpo_loss(hidden_BTH: torch.Tensor, weight_VH: torch.Tensor, targets_BT: torch.Tensor,
                     adv_B: torch.Tensor, mask_BT: torch.Tensor, *, bias_V: torch.Tensor | None = None,
                     chunk_size: int | None = None, backend: str | None = None, **grpo_kwargs):
    """(loss, GRPOStats) of SPEC §3, differentiable in hidden, weight and bias."""
    if backend != "torch" and _have("r1core.ops.fused_linear"):
        from r1core.ops.fused_linear import fused_linear_grpo_loss
        return fused_linear_grpo_loss(hidden_BTH, weight_VH, targets_BT, adv_B, mask_BT, bias=bias_V,
                                      chunk_size=chunk_size, **grpo_kwargs, **_b(backend))
    from r1core.ref.fused_linear import fused_linear_grpo_loss_ref
    return fused_linear_grpo_loss_ref(hidden_BTH, weight_VH, targets_BT, adv_B, mask_BT, bias=bias_V,
                                      **grpo_kwargs)


def _b(backend: str | None) -> dict:
    return {} if backend is None else {"backend": backend}
