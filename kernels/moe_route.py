"""MoE routing (docs/spec.md §4) as one Triton kernel: scores, group-limited top-k, normalised weights.

Legend: T tokens, E experts, k experts per token, G = n_group groups of E/G experts.

One program per BLOCK_T tokens holds their [BLOCK_T, BLOCK_E] router logits in registers (E ≤ 1024;
BLOCK_E = next power of two of E, padded columns read -inf):
    s = softmax(logits) | sigmoid(logits)                         float32
    c = s + correction_bias                                       (the choice score only)
    G > 1: group score = sum of a group's two largest c (its largest when there is no bias); the
           topk_group best groups stay eligible, other experts get c = -inf
    k rounds of argmax over c (ties: the lowest expert id), each kept weight is s (not c) there
    w = w / Σ_k w (+1e-20 for sigmoid, as DeepSeek-V3) when norm_topk; w = w · routed_scale
With REPLAY the k ids are read instead of chosen (routing replay) and only the weights are computed.

Bytes: the logits are read once (4·T·E for float32 logits), k ids (8 bytes) and k weights (4 bytes)
written per token: routing is memory-bound and ~free next to the expert GEMMs.  The backward (the
gradient of the kept weights w.r.t. the logits) is computed in PyTorch by r1core.ops (it is O(T·E)
elementwise work on a tensor the size of the logits).
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

SCORING_IDS = {"softmax": 0, "sigmoid": 1}
MAX_EXPERTS = 1024


@triton.jit
def _moe_route_kernel(
    logits_ptr,   # [T, E] router logits (any float dtype), row stride stride_lt, unit column stride
    bias_ptr,     # [E] float32 correction bias (read only when HAS_BIAS)
    weights_ptr,  # [T, k] float32 out: the kept weights
    ids_ptr,      # [T, k] int64 in (REPLAY) or out: the chosen experts
    T, E, stride_lt, routed_scale,
    TOP_K: tl.constexpr, N_GROUP: tl.constexpr, TOPK_GROUP: tl.constexpr,
    SCORING: tl.constexpr, HAS_BIAS: tl.constexpr, NORM: tl.constexpr, REPLAY: tl.constexpr,
    BLOCK_T: tl.constexpr, BLOCK_E: tl.constexpr, BLOCK_G: tl.constexpr, BLOCK_K: tl.constexpr,
):
    pid = tl.program_id(0)
    rows = pid * BLOCK_T + tl.arange(0, BLOCK_T)
    cols = tl.arange(0, BLOCK_E)
    row_ok = rows < T
    col_ok = cols < E
    rows64 = rows.to(tl.int64)
    x = tl.load(logits_ptr + rows64[:, None] * stride_lt + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :], other=0.0).to(tl.float32)
    x = tl.where(col_ok[None, :], x, float("-inf"))  # padded columns; padded rows stay finite
    if SCORING == 0:
        m = tl.max(x, axis=1)
        p = tl.exp(x - m[:, None])
        s = p / tl.sum(p, axis=1)[:, None]
    else:
        s = tl.where(col_ok[None, :], tl.sigmoid(x), 0.0)

    c = s  # the choice score (unused with REPLAY)
    if not REPLAY:
        if HAS_BIAS:
            c = c + tl.load(bias_ptr + cols, mask=col_ok, other=0.0)[None, :]
        c = tl.where(col_ok[None, :], c, float("-inf"))
        if N_GROUP > 1:
            group_size = E // N_GROUP
            gid = cols // group_size
            gcols = tl.arange(0, BLOCK_G)
            gscore = tl.full((BLOCK_T, BLOCK_G), float("-inf"), tl.float32)
            for g in tl.static_range(N_GROUP):
                cg = tl.where((gid == g)[None, :], c, float("-inf"))
                best = tl.max(cg, axis=1)
                if HAS_BIAS:  # sum of the two largest: drop one copy of the max, take the max again
                    first = tl.min(tl.where(cg == best[:, None], cols[None, :], BLOCK_E), axis=1)
                    cg = tl.where(cols[None, :] == first[:, None], float("-inf"), cg)
                    best = best + tl.max(cg, axis=1)
                gscore = tl.where(gcols[None, :] == g, best[:, None], gscore)
            keep_g = tl.zeros((BLOCK_T, BLOCK_G), tl.int32)  # 1 = the group stays eligible
            for _ in tl.static_range(TOPK_GROUP):
                gbest = tl.max(gscore, axis=1)
                gpick = tl.min(tl.where(gscore == gbest[:, None], gcols[None, :], BLOCK_G), axis=1)
                hit = gcols[None, :] == gpick[:, None]
                keep_g = tl.where(hit, 1, keep_g)
                gscore = tl.where(hit, float("-inf"), gscore)
            keep_e = tl.zeros((BLOCK_T, BLOCK_E), tl.int32)
            for g in tl.static_range(N_GROUP):
                kept = tl.max(tl.where(gcols[None, :] == g, keep_g, 0), axis=1)
                keep_e = tl.where((gid == g)[None, :], kept[:, None], keep_e)
            c = tl.where(keep_e > 0, c, float("-inf"))

    # k picks, kept in registers as [BLOCK_T, BLOCK_K] and stored once at the end
    kcols = tl.arange(0, BLOCK_K)
    w_tk = tl.zeros((BLOCK_T, BLOCK_K), tl.float32)
    id_tk = tl.zeros((BLOCK_T, BLOCK_K), tl.int64)
    out_off = rows64[:, None] * TOP_K + kcols[None, :]
    out_ok = row_ok[:, None] & (kcols < TOP_K)[None, :]
    if REPLAY:
        id_tk = tl.load(ids_ptr + out_off, mask=out_ok, other=0)
    for j in tl.static_range(TOP_K):
        if REPLAY:
            pick = tl.sum(tl.where(kcols[None, :] == j, id_tk, 0), axis=1).to(tl.int32)
        else:
            best = tl.max(c, axis=1)
            pick = tl.min(tl.where(c == best[:, None], cols[None, :], BLOCK_E), axis=1)
            c = tl.where(cols[None, :] == pick[:, None], float("-inf"), c)
            id_tk = tl.where(kcols[None, :] == j, pick[:, None].to(tl.int64), id_tk)
        w = tl.sum(tl.where(cols[None, :] == pick[:, None], s, 0.0), axis=1)
        w_tk = tl.where(kcols[None, :] == j, w[:, None], w_tk)
    if NORM:
        total = tl.sum(w_tk, axis=1)
        if SCORING == 1:
            total += 1e-20
        w_tk = w_tk / total[:, None]
    tl.store(weights_ptr + out_off, w_tk * routed_scale, mask=out_ok)
    if not REPLAY:
        tl.store(ids_ptr + out_off, id_tk, mask=out_ok)


def moe_route(logits_TE: torch.Tensor, top_k: int, *, scoring: str, n_group: int, topk_group: int,
              correction_bias: torch.Tensor | None, norm_topk: bool, routed_scale: float,
              replay_ids: torch.Tensor | None = None):
    """Launch the routing kernel -> (weights [T, k] float32, ids [T, k] int64).  Inputs are validated
    by the caller (r1core.ops.moe); logits need a unit column stride."""
    T, E = logits_TE.shape
    if E > MAX_EXPERTS:
        raise ValueError(f"the Triton router holds a token's E logits in registers: E <= {MAX_EXPERTS}, got {E}")
    if logits_TE.stride(1) != 1:
        logits_TE = logits_TE.contiguous()
    weights = torch.empty(T, top_k, dtype=torch.float32, device=logits_TE.device)
    if replay_ids is None:
        ids = torch.empty(T, top_k, dtype=torch.int64, device=logits_TE.device)
    else:
        ids = replay_ids.to(torch.int64).contiguous()
    if T == 0:
        return weights, ids
    BLOCK_E = triton.next_power_of_2(E)
    BLOCK_T = max(1, min(64, 4096 // BLOCK_E))  # ~4k float32 scores per program in registers
    bias = correction_bias.to(torch.float32).contiguous() if correction_bias is not None else weights
    _moe_route_kernel[(triton.cdiv(T, BLOCK_T),)](
        logits_TE, bias, weights, ids, T, E, logits_TE.stride(0), float(routed_scale),
        TOP_K=top_k, N_GROUP=n_group, TOPK_GROUP=topk_group, SCORING=SCORING_IDS[scoring],
        HAS_BIAS=correction_bias is not None, NORM=bool(norm_topk), REPLAY=replay_ids is not None,
        BLOCK_T=BLOCK_T, BLOCK_E=BLOCK_E, BLOCK_G=triton.next_power_of_2(n_group), BLOCK_K=triton.next_power_of_2(top_k),
        num_warps=4 if BLOCK_E <= 256 else 8,
    )
    return weights, ids
