"""The grpo_loss kernels (Triton, C++) as torch.library custom ops with a registered autograd
formula, so that torch.compile traces r1core.grpo_loss as one opaque op instead of breaking the graph.

    r1core::grpo_loss_fwd   logits [B, T, V] + per-token [N] inputs -> logp, lse, w·dl/dlogp, terms
    r1core::grpo_loss_bwd   dlogits = (onehot - softmax(logits / T)) · scale / T, a new tensor
    r1core::grpo_loss_bwd_  the same, written over the logits (inplace_backward=True)

Inputs are already checked and normalised (r1core.ops._grpo_args); `backend` is "triton" or "cpp".
"""
from __future__ import annotations

from typing import Optional

import torch

from r1core._backend import ext, kernels
from r1core.ref.grpo_math import N_TERMS


@torch.library.custom_op("r1core::grpo_loss_fwd", mutates_args=())
def _grpo_loss_fwd(logits: torch.Tensor, targets: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                   w: torch.Tensor, old: Optional[torch.Tensor], ref: Optional[torch.Tensor], beta: float,
                   eps_low: float, eps_high: float, temperature: float, backend: str,
                   inplace_backward: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (logp [N], lse [N], w·dl/dlogp [N], terms [N_TERMS, N] in the layout of r1core.ref.grpo_math.TERMS).
    inplace_backward only travels to the backward (see _setup_context)."""
    if backend == "triton":
        out = kernels("grpo_loss").grpo_fwd(logits, targets, adv, mask, w, old, ref, beta=beta, eps_low=eps_low,
                                            eps_high=eps_high, temperature=temperature)
    elif backend == "cpp":
        out = ext().grpo_loss_fwd_cpu(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature)
    else:
        raise AssertionError(backend)
    return tuple(out)


@_grpo_loss_fwd.register_fake
def _(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, backend, inplace_backward):
    N = targets.numel()
    f32 = dict(dtype=torch.float32, device=logits.device)
    return torch.empty(N, **f32), torch.empty(N, **f32), torch.empty(N, **f32), torch.empty(N_TERMS, N, **f32)


def _launch_bwd(logits, targets, lse, scale, temperature: float, backend: str, inplace: bool) -> torch.Tensor:
    if backend == "triton":
        one = torch.ones(1, dtype=torch.float32, device=logits.device)
        return kernels("grpo_loss").grpo_bwd(logits, targets, lse, scale, one, temperature=temperature,
                                             inplace=inplace)
    if backend == "cpp":
        return ext().grpo_loss_bwd_cpu(logits, targets, lse, scale, 1.0, temperature, inplace)
    raise AssertionError(backend)


@torch.library.custom_op("r1core::grpo_loss_bwd", mutates_args=())
def _grpo_loss_bwd(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                   temperature: float, backend: str) -> torch.Tensor:
    """dlogits = (onehot - softmax(logits / T)) · scale / T, a new tensor (scale = w·dl/dlogp·grad)."""
    return _launch_bwd(logits, targets, lse, scale, temperature, backend, inplace=False)


@_grpo_loss_bwd.register_fake
def _(logits, targets, lse, scale, temperature, backend):
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


@torch.library.custom_op("r1core::grpo_loss_bwd_", mutates_args=("logits",))
def _grpo_loss_bwd_(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                    temperature: float, backend: str) -> None:
    """The same, written over the logits (their version counter is bumped, so another autograd node
    that saved them fails loudly instead of reading the gradient)."""
    _launch_bwd(logits, targets, lse, scale, temperature, backend, inplace=True)


def _setup_context(ctx, inputs, output):
    logits, targets = inputs[0], inputs[1]
    ctx.temperature, ctx.backend, ctx.inplace = inputs[10], inputs[11], inputs[12]
    _, lse, dlogp, _ = output
    ctx.save_for_backward(logits, targets, lse, dlogp)


def _backward(ctx, _g_logp, _g_lse, _g_dlogp, g_terms):
    logits, targets, lse, dlogp = ctx.saved_tensors
    scale = dlogp * g_terms[0]  # d loss / d (l·w) per token: the upstream gradient (a broadcast scalar)
    if ctx.inplace:
        _grpo_loss_bwd_(logits, targets, lse, scale, ctx.temperature, ctx.backend)
        dlogits = logits.detach()
    else:
        dlogits = _grpo_loss_bwd(logits, targets, lse, scale, ctx.temperature, ctx.backend)
    return dlogits, *([None] * 12)


_grpo_loss_fwd.register_autograd(_backward, setup_context=_setup_context)
