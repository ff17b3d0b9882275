"""The "triton" backend of moe_route and moe_experts: autograd Functions around kernels/moe_route.py
and kernels/moe_gemm.py, and the token permutation they share.

Legend: T tokens, H hidden, I intermediate, E experts, k experts per token, S = T·k, P padded rows.

Permutation (`align`): the CUDA kernel of r1core._C (csrc/moe/moe_align.cu) on CUDA tensors when the
extension was built with CUDA, the C++ counting sort on CPU tensors, else the PyTorch twin
r1core.ref.moe.moe_align_ref (sync-free on a GPU).  All three return the same layout.
"""
from __future__ import annotations

import torch

from r1core import _backend
from r1core.ref import moe as ref


# ---------------------------------------------------------------------------------------------
# permutation
# ---------------------------------------------------------------------------------------------
MOE_ALIGN = _backend.Op("moe_align", gpu_order=("cuda", "torch"),
                       needs={"cpp": ("moe_align_cpu",), "cuda": ("moe_align_cuda",)})
MOE_ALIGN.impl("torch")(ref.moe_align_ref)
MOE_ALIGN.impl("cpp")(lambda ids_Tk, E, block: tuple(_backend.ext().moe_align_cpu(ids_Tk, E, block)))
MOE_ALIGN.impl("cuda")(lambda ids_Tk, E, block: tuple(_backend.ext().moe_align_cuda(ids_Tk, E, block)))


def align(ids_Tk: torch.Tensor, E: int, block: int, *, impl: str | None = None):
    """-> (sorted_ids, inverse, block_expert, seg_start, counts), int32 (layout: csrc/moe/moe_align.h).
    impl: a backend of MOE_ALIGN (None: the fastest available; R1CORE_BACKEND is the experts' choice,
    not the permutation's, so it is not consulted here)."""
    return MOE_ALIGN(impl or MOE_ALIGN.fastest(ids_Tk.device.type), ids_Tk, E, block)


# ---------------------------------------------------------------------------------------------
# routing: Triton forward, PyTorch backward
# ---------------------------------------------------------------------------------------------
class _Route(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits_TE, top_k, scoring, n_group, topk_group, correction_bias, norm_topk,
                routed_scale, replay_ids):
        K = _backend.kernels("moe_route")
        w_Tk, ids_Tk = K.moe_route(logits_TE, top_k, scoring=scoring, n_group=n_group, topk_group=topk_group,
                                   correction_bias=correction_bias, norm_topk=norm_topk,
                                   routed_scale=routed_scale, replay_ids=replay_ids)
        ctx.save_for_backward(logits_TE, ids_Tk)
        ctx.opts = (scoring, norm_topk, routed_scale)
        ctx.mark_non_differentiable(ids_Tk)
        return w_Tk, ids_Tk

    @staticmethod
    def backward(ctx, dw_Tk, _dids):
        # d weights / d logits through the kept weights: O(T·E) elementwise, done by autograd on the
        # reference formulas at the chosen ids (the choice itself has no gradient).
        logits_TE, ids_Tk = ctx.saved_tensors
        scoring, norm_topk, routed_scale = ctx.opts
        with torch.enable_grad():
            lg = logits_TE.detach().requires_grad_()
            w = ref.route_weights_ref(ref.route_scores_ref(lg, scoring), ids_Tk, scoring=scoring,
                                      norm_topk=norm_topk, routed_scale=routed_scale)
            (dlogits,) = torch.autograd.grad(w, lg, dw_Tk.to(w.dtype))
        return dlogits, None, None, None, None, None, None, None, None


def route(logits_TE, top_k, *, scoring, n_group, topk_group, correction_bias, norm_topk, routed_scale,
          replay_ids):
    return _Route.apply(logits_TE, top_k, scoring, n_group, topk_group, correction_bias, norm_topk,
                        routed_scale, replay_ids)


# ---------------------------------------------------------------------------------------------
# experts: grouped GEMMs forward and backward
# ---------------------------------------------------------------------------------------------
class _Experts(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk, allow_tf32, save_h):
        K = _backend.kernels("moe_gemm")
        T, H = x_TH.shape
        E, twoI, _ = w13_E2IH.shape
        k = ids_Tk.shape[1]
        S = T * k
        BM = K.block_m_for(S, E, x_TH.device)
        sorted_ids, _inverse, block_expert, seg_start, counts = align(ids_Tk, E, BM)
        w_S = weights_Tk.reshape(-1).to(torch.float32).contiguous()
        act_PI, h_P2I = K.gate_up(x_TH, w13_E2IH, sorted_ids, block_expert, k, BM, save_h=save_h,
                                  allow_tf32=allow_tf32)
        out_SH = K.gemm_scatter(act_PI, w2_EHI, (w2_EHI.stride(0), w2_EHI.stride(2), w2_EHI.stride(1)),
                                sorted_ids, block_expert, S, H, BM, weights_S=w_S, out_dtype=x_TH.dtype,
                                allow_tf32=allow_tf32)
        y_TH = out_SH.view(T, k, H).sum(1) if k > 1 else out_SH.view(T, H)
        if save_h:
            ctx.save_for_backward(x_TH, w13_E2IH, w2_EHI, w_S, sorted_ids, block_expert, seg_start, counts,
                                  act_PI, h_P2I)
            ctx.meta = (BM, k, allow_tf32, weights_Tk.dtype)
        return y_TH

    @staticmethod
    def backward(ctx, dy_TH):
        K = _backend.kernels("moe_gemm")
        x_TH, w13_E2IH, w2_EHI, w_S, sorted_ids, block_expert, seg_start, counts, act_PI, h_P2I = ctx.saved_tensors
        BM, k, tf32, w_dtype = ctx.meta
        T, H = x_TH.shape
        E = w13_E2IH.shape[0]
        S = T * k
        dy_TH = dy_TH.to(x_TH.dtype)
        if dy_TH.stride(-1) != 1:
            dy_TH = dy_TH.contiguous()
        need_x, need_w13, need_w2, need_w = ctx.needs_input_grad[:4]
        dx = dw13 = dw2 = dw = None
        if need_x or need_w13 or need_w:
            dh_P2I, dw_S = K.down_bwd(dy_TH, w2_EHI, h_P2I, sorted_ids, block_expert, w_S, k, BM, allow_tf32=tf32)
            if need_w:
                dw = dw_S.view(T, k).to(w_dtype)
            if need_x:
                dx_SH = K.gemm_scatter(dh_P2I, w13_E2IH, (w13_E2IH.stride(0), w13_E2IH.stride(1), w13_E2IH.stride(2)),
                                       sorted_ids, block_expert, S, H, BM, out_dtype=x_TH.dtype, allow_tf32=tf32)
                dx = dx_SH.view(T, k, H).sum(1) if k > 1 else dx_SH.view(T, H)
            if need_w13:
                dw13 = K.expert_wgrad(dh_P2I, x_TH, sorted_ids, seg_start, counts, E, k, l_gather=False,
                                      r_gather=True, out_dtype=w13_E2IH.dtype, allow_tf32=tf32)
        if need_w2:
            dw2 = K.expert_wgrad(dy_TH, act_PI, sorted_ids, seg_start, counts, E, k, l_gather=True,
                                 r_gather=False, weights_S=w_S, out_dtype=w2_EHI.dtype, allow_tf32=tf32)
        return dx, dw13, dw2, dw, None, None, None


def experts(x, w13, w2, weights, ids, *, allow_tf32: bool = False):
    T, H = x.shape
    if T == 0:  # nothing to route: a zero output that still belongs to the graph
        return x * 0
    save_h = torch.is_grad_enabled() and any(t.requires_grad for t in (x, w13, w2, weights))
    return _Experts.apply(x.contiguous(), w13.contiguous(), w2.contiguous(), weights, ids, allow_tf32, save_h)
