"""Reference MoE routing and experts (docs/spec.md §4), plain PyTorch with autograd.

Legend: T tokens, H hidden, I expert intermediate size, E experts, k experts per token.

`moe_route_ref` scores, picks and weighs experts exactly as docs/spec.md §4 states; `moe_experts_ref` is the
Hugging Face `transformers`-style baseline (Qwen3-MoE / DeepSeek-V3 modelling code): a Python loop
over experts, `index_select` of the expert's tokens, three matmuls, `index_add_` back into the
output.  Both compute in float64 for float64 inputs (the test oracle).  The loop is what the
benches call "torch": simple, obviously right, and slow on a GPU (one small GEMM per expert, most
of the GPU idle, plus ~E host round trips for the `where`).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

SCORINGS = ("softmax", "sigmoid")


def route_scores_ref(logits_TE: torch.Tensor, scoring: str) -> torch.Tensor:
    """s = softmax(logits) or sigmoid(logits), float32 (float64 for float64 logits)."""
    x = logits_TE if logits_TE.dtype == torch.float64 else logits_TE.float()
    if scoring == "softmax":
        return torch.softmax(x, dim=-1)
    if scoring == "sigmoid":
        return torch.sigmoid(x)
    raise ValueError(f"scoring must be one of {SCORINGS}, got {scoring!r}")


def route_choice_ref(s_TE: torch.Tensor, top_k: int, *, n_group: int = 1, topk_group: int = 1,
                     correction_bias: torch.Tensor | None = None) -> torch.Tensor:
    """The chosen expert ids [T, k] int64 (the choice is not differentiable).

    c = s + correction_bias; with n_group > 1 the experts form n_group equal groups, a group scores the
    sum of its two largest c (its largest c when there is no correction bias) and only the topk_group
    best groups stay eligible; then the top-k of c among eligible experts, in descending order.
    """
    T, E = s_TE.shape
    c_TE = s_TE.detach()
    if correction_bias is not None:
        c_TE = c_TE + correction_bias.to(c_TE.dtype)
    if n_group > 1:
        c_TGe = c_TE.view(T, n_group, E // n_group)
        if correction_bias is not None:
            group_TG = c_TGe.topk(2, dim=-1).values.sum(-1)
        else:
            group_TG = c_TGe.amax(dim=-1)
        keep_TG = torch.zeros_like(group_TG, dtype=torch.bool)
        keep_TG.scatter_(1, group_TG.topk(topk_group, dim=-1).indices, True)
        c_TE = c_TGe.masked_fill(~keep_TG.unsqueeze(-1), float("-inf")).view(T, E)
    return c_TE.topk(top_k, dim=-1).indices


def route_weights_ref(s_TE: torch.Tensor, ids_Tk: torch.Tensor, *, scoring: str = "softmax",
                      norm_topk: bool = True, routed_scale: float = 1.0) -> torch.Tensor:
    """The kept weights s[t, ids[t, j]], normalised over k when norm_topk, times routed_scale.

    The sigmoid normaliser adds 1e-20 to the sum as DeepSeek-V3 does (a sigmoid can underflow to 0);
    a softmax's top-k sum is never 0.  Differentiable in s.
    """
    w_Tk = s_TE.gather(1, ids_Tk.long())
    if norm_topk:
        denom_T1 = w_Tk.sum(dim=-1, keepdim=True)
        if scoring == "sigmoid":
            denom_T1 = denom_T1 + 1e-20
        w_Tk = w_Tk / denom_T1
    return w_Tk * routed_scale


def moe_route_ref(router_logits: torch.Tensor, top_k: int, *, scoring: str = "softmax", n_group: int = 1,
                  topk_group: int = 1, correction_bias: torch.Tensor | None = None, norm_topk: bool = True,
                  routed_scale: float = 1.0, replay_ids: torch.Tensor | None = None):
    """docs/spec.md §4 routing -> (weights [T, k] float32 (float64 for float64 logits), ids [T, k] int64).

    replay_ids [T, k]: skip the choice and weigh exactly these experts (routing replay).
    """
    s_TE = route_scores_ref(router_logits, scoring)
    if replay_ids is None:
        ids_Tk = route_choice_ref(s_TE, top_k, n_group=n_group, topk_group=topk_group,
                                  correction_bias=correction_bias)
    else:
        ids_Tk = replay_ids.long()
    return route_weights_ref(s_TE, ids_Tk, scoring=scoring, norm_topk=norm_topk,
                             routed_scale=routed_scale), ids_Tk


def expert_mlp_ref(x_nH: torch.Tensor, w13_2IH: torch.Tensor, w2_HI: torch.Tensor) -> torch.Tensor:
    """One SwiGLU expert: w2 @ (silu(w1 @ x) * (w3 @ x)), w1 = w13[:I] (gate), w3 = w13[I:] (up)."""
    I = w2_HI.shape[1]
    gate_nI = x_nH @ w13_2IH[:I].t()
    up_nI = x_nH @ w13_2IH[I:].t()
    return (F.silu(gate_nI) * up_nI) @ w2_HI.t()


def moe_experts_ref(x_TH: torch.Tensor, w13_E2IH: torch.Tensor, w2_EHI: torch.Tensor,
                    weights_Tk: torch.Tensor, ids_Tk: torch.Tensor) -> torch.Tensor:
    """y[t] = sum_j weights[t, j] * expert_{ids[t, j]}(x[t])  -> [T, H] in x's dtype.

    The transformers loop: for each expert with tokens, gather them, run the SwiGLU MLP in x's dtype,
    scale by the routing weight (cast to x's dtype, as HF does) and index_add_ into the output.
    Experts without tokens are skipped (they get no gradient: autograd sees no use).
    """
    T, H = x_TH.shape
    E = w13_E2IH.shape[0]
    y_TH = torch.zeros_like(x_TH)
    ids_Tk = ids_Tk.long()
    w_Tk = weights_Tk.to(x_TH.dtype)
    hit_E = torch.bincount(ids_Tk.flatten(), minlength=E).tolist()  # one host sync, as HF's expert mask
    for e in range(E):
        if hit_E[e] == 0:
            continue
        tok_n, slot_n = torch.where(ids_Tk == e)
        out_nH = expert_mlp_ref(x_TH[tok_n], w13_E2IH[e], w2_EHI[e]) * w_Tk[tok_n, slot_n, None]
        y_TH.index_add_(0, tok_n, out_nH)
    return y_TH


def moe_experts_dense_ref(x_TH, w13_E2IH, w2_EHI, weights_Tk, ids_Tk) -> torch.Tensor:
    """The same y computed densely (every expert on every token, weights scattered to [T, E]):
    an independent second oracle for small tests, O(T·E) work."""
    T, _ = x_TH.shape
    E, twoI, _ = w13_E2IH.shape
    I = twoI // 2
    h_ETI2 = torch.einsum("th,eih->eti", x_TH, w13_E2IH)
    a_ETI = F.silu(h_ETI2[..., :I]) * h_ETI2[..., I:]
    o_ETH = torch.einsum("eti,ehi->eth", a_ETI, w2_EHI)
    dense_TE = torch.zeros(T, E, dtype=x_TH.dtype, device=x_TH.device)
    dense_TE = dense_TE.scatter_add(1, ids_Tk.long(), weights_Tk.to(x_TH.dtype))
    return torch.einsum("te,eth->th", dense_TE, o_ETH)


def moe_align_ref(ids_Tk: torch.Tensor, num_experts: int, block: int):
    """The MoE permutation in PyTorch (same layout as csrc/moe/moe_align.h; no host sync on a GPU):
    -> (sorted_ids [P_max], inverse [S], block_expert [P_max/block], seg_start [E+1], counts [E]),
    int32.  Assignment s = t·k + j sits at padded row inverse[s] of its expert's segment; each segment
    is padded to a multiple of `block` with the sentinel S; block_expert is -1 past the end."""
    S = ids_Tk.numel()
    E, B = num_experts, block
    dev = ids_Tk.device
    flat_S = ids_Tk.reshape(-1).long()
    counts_E = torch.zeros(E, dtype=torch.long, device=dev).scatter_add_(0, flat_S, torch.ones_like(flat_S))
    padded_E = (counts_E + B - 1) // B * B
    seg_start = torch.zeros(E + 1, dtype=torch.long, device=dev)
    seg_start[1:] = torch.cumsum(padded_E, 0)
    order_S = torch.argsort(flat_S, stable=True)
    e_sorted = flat_S[order_S]
    first_unpadded_E = torch.cumsum(counts_E, 0) - counts_E
    pos_S = seg_start[e_sorted] + torch.arange(S, device=dev) - first_unpadded_E[e_sorted]
    P_max = (S + E * (B - 1) + B - 1) // B * B
    sorted_ids = torch.full((P_max,), S, dtype=torch.int32, device=dev)
    sorted_ids[pos_S] = order_S.to(torch.int32)
    inverse = torch.empty(S, dtype=torch.int32, device=dev)
    inverse[order_S] = pos_S.to(torch.int32)
    row0 = torch.arange(0, P_max, B, device=dev)
    block_expert = torch.searchsorted(seg_start[1:], row0, right=True)
    block_expert = torch.where(row0 < seg_start[E], block_expert, -1).to(torch.int32)
    return sorted_ids, inverse, block_expert, seg_start.to(torch.int32), counts_E.to(torch.int32)
