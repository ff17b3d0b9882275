"""The "torch" backend of moe_experts: the transformers-style expert loop in PyTorch, as torch.library custom
ops with a hand-written backward (so torch.compile sees one node; the loop's data-dependent row counts stay
inside it).  The test oracle, r1core/ref/moe.py, is separate code (autograd through its own loop, and a
dense second oracle).

Legend: T tokens, H hidden, I intermediate, E experts, k experts per token, n rows of one expert.

    forward, per expert e with tokens:  h = x_n @ w13[e].T = [g | u];  a = silu(g)·u;  o = a @ w2[e].T
                                        y[tok] += o · weight          (weights cast to x's dtype, as HF)
    backward, per expert:  dweight = Σ_H o·dy;  do = dy·weight;  dw2[e] = do.T @ a;  da = do @ w2[e]
                           dg = da·u·silu'(g), du = da·silu(g);  dw13[e] = [dg | du].T @ x_n;  dx[tok] += [dg | du] @ w13[e]
    silu'(g) = σ(g)·(1 + g·(1 − σ(g))).  Experts without tokens are skipped and get zero gradient.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def _assignments(ids_Tk: torch.Tensor, E: int):
    """(e, tokens [n], slots [n]) for each expert with tokens (one host sync for the counts)."""
    ids_Tk = ids_Tk.long()
    for e, c in enumerate(torch.bincount(ids_Tk.flatten(), minlength=E).tolist()):
        if c:
            tok, slot = torch.where(ids_Tk == e)
            yield e, tok, slot


@torch.library.custom_op("r1core::moe_experts_torch_fwd", mutates_args=())
def _experts_fwd(x_TH: torch.Tensor, w13_E2IH: torch.Tensor, w2_EHI: torch.Tensor, weights_Tk: torch.Tensor,
                 ids_Tk: torch.Tensor) -> torch.Tensor:
    I = w2_EHI.shape[2]
    y = torch.zeros_like(x_TH)
    w = weights_Tk.to(x_TH.dtype)
    for e, tok, slot in _assignments(ids_Tk, w13_E2IH.shape[0]):
        h = x_TH[tok] @ w13_E2IH[e].t()
        y.index_add_(0, tok, ((F.silu(h[:, :I]) * h[:, I:]) @ w2_EHI[e].t()) * w[tok, slot, None])
    return y


@_experts_fwd.register_fake
def _(x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk):
    return torch.empty_like(x_TH)


@torch.library.custom_op("r1core::moe_experts_torch_bwd", mutates_args=())
def _experts_bwd(dy_TH: torch.Tensor, x_TH: torch.Tensor, w13_E2IH: torch.Tensor, w2_EHI: torch.Tensor,
                 weights_Tk: torch.Tensor, ids_Tk: torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    I = w2_EHI.shape[2]
    dx, dw13, dw2 = torch.zeros_like(x_TH), torch.zeros_like(w13_E2IH), torch.zeros_like(w2_EHI)
    dwt = torch.zeros(weights_Tk.shape, dtype=x_TH.dtype, device=x_TH.device)
    w = weights_Tk.to(x_TH.dtype)
    for e, tok, slot in _assignments(ids_Tk, w13_E2IH.shape[0]):
        xs, dys = x_TH[tok], dy_TH[tok]
        h = xs @ w13_E2IH[e].t()
        g, u = h[:, :I], h[:, I:]
        sg = torch.sigmoid(g)
        silu = g * sg
        a = silu * u
        dwt[tok, slot] = ((a @ w2_EHI[e].t()) * dys).sum(-1)
        do = dys * w[tok, slot, None]
        dw2[e] = do.t() @ a
        da = do @ w2_EHI[e]
        dh = torch.cat([da * u * sg * (1 + g * (1 - sg)), da * silu], dim=1)
        dw13[e] = dh.t() @ xs
        dx.index_add_(0, tok, dh @ w13_E2IH[e])
    return dx, dw13, dw2, dwt.to(weights_Tk.dtype)


@_experts_bwd.register_fake
def _(dy_TH, x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk):
    return tuple(torch.empty_like(t) for t in (x_TH, w13_E2IH, w2_EHI, weights_Tk))


def _setup(ctx, inputs, output):
    ctx.save_for_backward(*inputs)


def _backward(ctx, dy_TH):
    x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk = ctx.saved_tensors
    grads = _experts_bwd(dy_TH.to(x_TH.dtype).contiguous(), x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk)
    return (*(g if need else None for g, need in zip(grads, ctx.needs_input_grad[:4])), None)


_experts_fwd.register_autograd(_backward, setup_context=_setup)


def experts(x, w13, w2, weights, ids):
    return _experts_fwd(x, w13, w2, weights, ids)
