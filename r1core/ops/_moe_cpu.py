"""The CPU MoE expert path ("cpp" backend of moe_experts): sort once, one GEMM pair per expert.

Legend: T tokens, H hidden, I intermediate, E experts, k experts per token, S = T·k assignments
(assignment s = t·k + j is token t's j-th expert), n = tokens of one expert.

Versus the transformers loop (r1core.ref.moe.moe_experts_ref), which per expert scans all ids with
`where`, gathers its tokens, runs three matmuls and `index_add_`s back:
  * the assignments are counting-sorted by expert once (C++ `moe_align_cpu`, O(S));
  * x is gathered once into expert order, gate and up are one [n, 2I] matmul per expert, the
    down projection writes straight into its slice of the sorted output (`out=`), no temporaries;
  * the combine is a [T, 1, k] x [T, k, H] batched product with the weights (no index_add_);
  * the backward is explicit (saved pre-activations, the same per-expert GEMMs), not autograd
    through the loop.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from r1core import _backend


def align(ids_Tk: torch.Tensor, E: int):
    """Stable counting sort of the assignments by expert (C++) -> (order_S (sorted position -> s),
    inverse_S (s -> sorted position), counts_E), int64."""
    order_S, inverse_S, _, _, counts_E = _backend.ext().moe_align_cpu(ids_Tk, E, 1)
    return order_S.long(), inverse_S.long(), counts_E


def _segments(counts_E: torch.Tensor):
    """(expert, start, end) of every non-empty expert segment in sorted order."""
    out, start = [], 0
    for e, n in enumerate(counts_E.tolist()):
        if n:
            out.append((e, start, start + n))
            start += n
    return out


class _ExpertsCPU(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk):
        T, H = x_TH.shape
        E, twoI, _ = w13_E2IH.shape
        I = twoI // 2
        k = ids_Tk.shape[1]
        order_S, inverse_S, counts_E = align(ids_Tk, E)
        segs = _segments(counts_E)
        xs_SH = x_TH.index_select(0, order_S // k)             # tokens in expert order
        h_S2I = torch.empty(T * k, twoI, dtype=x_TH.dtype)     # gate|up pre-activations, saved
        a_SI = torch.empty(T * k, I, dtype=x_TH.dtype)
        o_SH = torch.empty(T * k, H, dtype=x_TH.dtype)
        for e, s0, s1 in segs:
            torch.mm(xs_SH[s0:s1], w13_E2IH[e].t(), out=h_S2I[s0:s1])
            torch.mul(F.silu(h_S2I[s0:s1, :I]), h_S2I[s0:s1, I:], out=a_SI[s0:s1])
            torch.mm(a_SI[s0:s1], w2_EHI[e].t(), out=o_SH[s0:s1])
        o_TkH = o_SH.index_select(0, inverse_S).view(T, k, H)  # back to token order
        w_T1k = weights_Tk.to(x_TH.dtype).view(T, 1, k)
        y_TH = torch.bmm(w_T1k, o_TkH).view(T, H)
        ctx.save_for_backward(x_TH, w13_E2IH, w2_EHI, weights_Tk, order_S, inverse_S, h_S2I, a_SI)
        ctx.segs = segs
        return y_TH

    @staticmethod
    def backward(ctx, dy_TH):
        x_TH, w13_E2IH, w2_EHI, weights_Tk, order_S, inverse_S, h_S2I, a_SI = ctx.saved_tensors
        T, H = x_TH.shape
        E, twoI, _ = w13_E2IH.shape
        I = twoI // 2
        k = weights_Tk.shape[1]
        tok_S = order_S // k
        dy_SH = dy_TH.to(x_TH.dtype).contiguous().index_select(0, tok_S)
        w_S = weights_Tk.reshape(-1).index_select(0, order_S).to(x_TH.dtype)
        need_x, need_w13, need_w2, need_w = ctx.needs_input_grad[:4]
        xs_SH = x_TH.index_select(0, tok_S) if need_w13 else None
        dw13 = torch.zeros_like(w13_E2IH) if need_w13 else None
        dw2 = torch.zeros_like(w2_EHI) if need_w2 else None
        dxs_SH = torch.empty(T * k, H, dtype=x_TH.dtype) if need_x else None
        dws_S = torch.empty(T * k, dtype=x_TH.dtype)
        for e, s0, s1 in ctx.segs:
            dyw_nH = dy_SH[s0:s1] * w_S[s0:s1, None]
            a_nI = a_SI[s0:s1]
            if need_w2:
                torch.mm(dyw_nH.t(), a_nI, out=dw2[e])
            dA_nI = dy_SH[s0:s1] @ w2_EHI[e]                    # d(out)/d(a), unweighted
            dws_S[s0:s1] = (dA_nI * a_nI).sum(1)                # d weight = dy · o = (dy @ w2) · a
            g_nI, u_nI = h_S2I[s0:s1, :I], h_S2I[s0:s1, I:]
            sig_nI = torch.sigmoid(g_nI)
            da_nI = dA_nI * w_S[s0:s1, None]
            dh_n2I = torch.cat([da_nI * u_nI * sig_nI * (1 + g_nI * (1 - sig_nI)), da_nI * g_nI * sig_nI], dim=1)
            if need_w13:
                torch.mm(dh_n2I.t(), xs_SH[s0:s1], out=dw13[e])
            if need_x:
                torch.mm(dh_n2I, w13_E2IH[e], out=dxs_SH[s0:s1])
        dx = dxs_SH.index_select(0, inverse_S).view(T, k, H).sum(1) if need_x else None
        dw = dws_S.index_select(0, inverse_S).view(T, k).to(weights_Tk.dtype) if need_w else None
        return dx, dw13, dw2, dw, None


def experts(x, w13, w2, weights, ids):
    return _ExpertsCPU.apply(x.contiguous(), w13.contiguous(), w2.contiguous(), weights, ids)
