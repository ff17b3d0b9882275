"""The "cpp" backend of moe_experts (CPU): torch.library custom ops (a registered autograd formula, so
torch.compile sees one node) around the C++ expert passes of csrc/moe/moe_cpu.cpp.

Legend: T tokens, H hidden, I intermediate, E experts, k experts per token, S = T·k assignments.

The C++ forward counting-sorts the assignments by expert, then runs one parallel region over the
experts: gather the expert's rows, one fused gate|up GEMM [n, 2I], SwiGLU, the down GEMM, scale by
the routing weight, write the rows to assignment order; y = Σ_k.  It saves the sorted order and the
pre-activations h [S, 2I] and act [S, I] for the backward, which runs the same way per expert.
The transformers loop it replaces spends most of its CPU time in `where` + `index_add_`
(scatter_add) and in ~10 small parallel ops per expert, each a fork/join.
"""
from __future__ import annotations

import torch

from r1core import _backend


def _or_empty(t, like):
    return torch.empty(0, dtype=like.dtype, device=like.device) if t is None else t


@torch.library.custom_op("r1core::moe_experts_cpu_fwd", mutates_args=())
def _experts_fwd(x_TH: torch.Tensor, w13_E2IH: torch.Tensor, w2_EHI: torch.Tensor, weights_Tk: torch.Tensor,
                 ids_Tk: torch.Tensor, save: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor,
                                                             torch.Tensor]:
    """-> (y [T, H], sorted_ids [S] int32, seg_start [E+1] int32, h [S, 2I] | [0], act [S, I] | [0])."""
    y, sorted_ids, seg, h, act = _backend.ext().moe_experts_fwd_cpu(x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk, save)
    return y, sorted_ids, seg, _or_empty(h, x_TH), _or_empty(act, x_TH)


@_experts_fwd.register_fake
def _(x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk, save):
    (T, H), (E, I2, _), S = x_TH.shape, w13_E2IH.shape, ids_Tk.numel()
    e = lambda *shape, dtype=x_TH.dtype: torch.empty(shape, dtype=dtype, device=x_TH.device)  # noqa: E731
    return (e(T, H), e(S, dtype=torch.int32), e(E + 1, dtype=torch.int32), e(S, I2) if save else e(0),
            e(S, I2 // 2) if save else e(0))


@torch.library.custom_op("r1core::moe_experts_cpu_bwd", mutates_args=())
def _experts_bwd(dy_TH: torch.Tensor, x_TH: torch.Tensor, w13_E2IH: torch.Tensor, w2_EHI: torch.Tensor,
                 weights_Tk: torch.Tensor, sorted_ids: torch.Tensor, seg_start: torch.Tensor, h_S2I: torch.Tensor,
                 act_SI: torch.Tensor, need_x: bool, need_w13: bool, need_w2: bool, need_w: bool
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (dx, dw13, dw2, dweights), each [0] when not needed."""
    out = _backend.ext().moe_experts_bwd_cpu(dy_TH, x_TH, w13_E2IH, w2_EHI, weights_Tk, sorted_ids, seg_start, h_S2I,
                                             act_SI, need_x, need_w13, need_w2, need_w)
    return tuple(_or_empty(g, t) for g, t in zip(out, (x_TH, w13_E2IH, w2_EHI, weights_Tk)))


@_experts_bwd.register_fake
def _(dy_TH, x_TH, w13_E2IH, w2_EHI, weights_Tk, sorted_ids, seg_start, h_S2I, act_SI, need_x, need_w13, need_w2,
      need_w):
    return tuple(torch.empty_like(t) if need else torch.empty(0, dtype=t.dtype, device=t.device)
                 for t, need in ((x_TH, need_x), (w13_E2IH, need_w13), (w2_EHI, need_w2), (weights_Tk, need_w)))


def _setup(ctx, inputs, output):
    x_TH, w13_E2IH, w2_EHI, weights_Tk, _, save = inputs
    if save:
        ctx.save_for_backward(x_TH, w13_E2IH, w2_EHI, weights_Tk, *output[1:])


def _backward(ctx, dy_TH, *_):
    x_TH, w13_E2IH, w2_EHI, weights_Tk, sorted_ids, seg_start, h_S2I, act_SI = ctx.saved_tensors
    need = ctx.needs_input_grad[:4]
    grads = _experts_bwd(dy_TH.to(x_TH.dtype).contiguous(), x_TH, w13_E2IH, w2_EHI, weights_Tk, sorted_ids, seg_start,
                         h_S2I, act_SI, *need)
    return (*(g if n else None for g, n in zip(grads, need)), None, None)


_experts_fwd.register_autograd(_backward, setup_context=_setup)


def needs_grad(*tensors) -> bool:
    """Whether this call will be differentiated (ctx.needs_input_grad says True even under no_grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def experts(x, w13, w2, weights, ids):
    save = needs_grad(x, w13, w2, weights)  # rollouts keep no activations
    return _experts_fwd(x.contiguous(), w13.contiguous(), w2.contiguous(), weights, ids, save)[0]
