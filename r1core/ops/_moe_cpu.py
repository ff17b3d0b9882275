"""The "cpp" backend of moe_experts (CPU): an autograd Function around the C++ expert passes of
csrc/moe/moe_cpu.cpp.

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


class _ExpertsCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk, save):
        y_TH, sorted_ids, seg_start, h_S2I, act_SI = _backend.ext().moe_experts_fwd_cpu(
            x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk, save)
        if save:
            ctx.save_for_backward(x_TH, w13_E2IH, w2_EHI, weights_Tk, sorted_ids, seg_start, h_S2I, act_SI)
        return y_TH

    @staticmethod
    def backward(ctx, dy_TH):
        x_TH, w13_E2IH, w2_EHI, weights_Tk, sorted_ids, seg_start, h_S2I, act_SI = ctx.saved_tensors
        need_x, need_w13, need_w2, need_w = ctx.needs_input_grad[:4]
        dx, dw13, dw2, dw = _backend.ext().moe_experts_bwd_cpu(
            dy_TH.to(x_TH.dtype).contiguous(), x_TH, w13_E2IH, w2_EHI, weights_Tk, sorted_ids, seg_start,
            h_S2I, act_SI, need_x, need_w13, need_w2, need_w)
        return dx, dw13, dw2, dw, None, None


def needs_grad(*tensors) -> bool:
    """Whether this call will be differentiated (ctx.needs_input_grad says True even under no_grad)."""
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def experts(x, w13, w2, weights, ids):
    save = needs_grad(x, w13, w2, weights)  # rollouts keep no activations
    return _ExpertsCPU.apply(x.contiguous(), w13.contiguous(), w2.contiguous(), weights, ids, save)
