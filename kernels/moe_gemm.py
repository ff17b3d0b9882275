"""Grouped expert GEMMs over permuted tokens (docs/spec.md §4 `moe_experts`), forward and backward.

Legend: T tokens, H hidden, I intermediate, E experts, k experts per token, S = T·k assignments
(s = t·k + j: token t's j-th expert), P = P_max padded permuted rows (p), BM = the align block.

The permutation (csrc/moe/moe_align.cu, or its CPU/PyTorch twins) lays the S assignments out sorted
by expert, each expert's segment padded to a multiple of BM, so an M-block of BM rows belongs to one
expert (`block_expert[p // BM]`, -1 past the end; padding rows hold the sentinel s = S):

  forward
    gate_up     act[p] = silu(x[t] @ w13[e, :I].T) * (x[t] @ w13[e, I:].T)      t = s // k
                A rows gathered from x by token, two accumulators (gate, up), SwiGLU in the epilogue;
                with SAVE_H the pre-activations h[p] = gate | up are kept for the backward.
    down        out[s] = weights[s] · act[p] @ w2[e].T          (gemm_scatter, SCALE)
                rows scattered back to assignment order; y = out.view(T, k, H).sum(1) on the host.
  backward (dy [T, H])
    down_bwd    dA[p] = dy[t] @ w2[e]  (the gradient of act, unweighted); epilogue: dweights partial
                sums Σ_i dA·act per I-tile (written, summed by the host: deterministic), and the SwiGLU
                backward dh[p] = (weights[s]·dA) ⊙ [u·silu'(g), silu(g)]
    dx          dx_s[s] = dh[p] @ w13[e]                        (gemm_scatter); dx = Σ_k on the host
    dw13        dw13[e] = Σ_{p in e} dh[p]^T x[t]               (expert_wgrad: the reduction runs over
    dw2         dw2[e]  = Σ_{p in e} (weights[s]·dy[t])^T act[p]  the expert's rows; no rows: zeros)

Combine (documented choice): every (token, k) row is written once, in the activation dtype, into
out [S, H] and summed over k by torch: deterministic, no atomics and no float32 [S, H] temporary
(for float32 inputs the activation dtype is float32).  Experts with no tokens launch M-blocks that
do not exist (no work) and weight-gradient programs whose loop is empty (one store of zeros).

Precision: tl.dot with float32 accumulation; bf16/fp16 inputs run on tensor cores; float32 inputs
use input_precision="ieee" (exact float32, the 1e-5 bound of docs/spec.md §7) unless the caller asks for "tf32".
Bytes/FLOPs: 6·S·H·I useful forward FLOPs (gate_up 4·S·H·I, down 2·S·H·I), 12·S·H·I backward; the
extra traffic is act/h (3·P·I elements) and out (S·H), small next to the FLOPs at H ≥ 1024.
"""
from __future__ import annotations

import os

import torch
import triton
import triton.language as tl


@triton.jit
def _dot(a, b, acc, PRECISION: tl.constexpr, WIDEN: tl.constexpr):
    """acc + a @ b in float32.  WIDEN (set only under the interpreter for bf16): Triton 3.9's
    interpreter multiplies bf16 tiles as their raw uint16 bits, so widen them to float32 first
    (bf16 x bf16 products are exact in float32: the same numbers a tensor core produces)."""
    if WIDEN:
        return tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
    return tl.dot(a, b, acc, input_precision=PRECISION)


# ---------------------------------------------------------------------------------------------
# program -> tile, grouped so that neighbouring programs share a B (expert weight) tile in L2
# ---------------------------------------------------------------------------------------------
@triton.jit
def _tile(pid, num_m, num_n, GROUP_M: tl.constexpr):
    per_group = GROUP_M * num_n
    group = pid // per_group
    first_m = group * GROUP_M
    size_m = tl.minimum(num_m - first_m, GROUP_M)
    pid_m = first_m + (pid % per_group) % size_m
    pid_n = (pid % per_group) // size_m
    return pid_m, pid_n


@triton.jit
def _gate_up_kernel(
    x_ptr,             # [T, H] tokens, row stride stride_xt, unit column stride
    w13_ptr,           # [E, 2I, H] rows :I gate_proj, rows I: up_proj, unit stride over H
    sorted_ids_ptr,    # [P] int32 assignment at each padded row (S in padding)
    block_expert_ptr,  # [P // BLOCK_M] int32 expert of each M-block, -1 past the end
    act_ptr,           # [P, I] out: silu(gate) * up
    h_ptr,             # [P, 2I] out when SAVE_H: gate | up pre-activations
    S, H, I, num_m,
    stride_xt, stride_we, stride_wn,
    TOP_K: tl.constexpr, SAVE_H: tl.constexpr, PRECISION: tl.constexpr, WIDEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile(tl.program_id(0), num_m, tl.cdiv(I, BLOCK_N), GROUP_M)
    e = tl.load(block_expert_ptr + pid_m)
    if e < 0:
        return
    offs_p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    s = tl.load(sorted_ids_ptr + offs_p)
    row_ok = s < S
    tok = (s // TOP_K).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < I
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = x_ptr + tok[:, None] * stride_xt + offs_k[None, :]
    g_ptrs = w13_ptr + e.to(tl.int64) * stride_we + offs_n[None, :].to(tl.int64) * stride_wn + offs_k[:, None]
    u_ptrs = g_ptrs + I * stride_wn
    acc_g = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    acc_u = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k_ok = offs_k < H - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        bg = tl.load(g_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        bu = tl.load(u_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc_g = _dot(a, bg, acc_g, PRECISION, WIDEN)
        acc_u = _dot(a, bu, acc_u, PRECISION, WIDEN)
        a_ptrs += BLOCK_K
        g_ptrs += BLOCK_K
        u_ptrs += BLOCK_K
    act = acc_g * tl.sigmoid(acc_g) * acc_u
    rows = offs_p.to(tl.int64)[:, None]
    tl.store(act_ptr + rows * I + offs_n[None, :], act.to(act_ptr.dtype.element_ty), mask=n_ok[None, :])
    if SAVE_H:
        h_rows = h_ptr + rows * (2 * I) + offs_n[None, :]
        tl.store(h_rows, acc_g.to(h_ptr.dtype.element_ty), mask=n_ok[None, :])
        tl.store(h_rows + I, acc_u.to(h_ptr.dtype.element_ty), mask=n_ok[None, :])


@triton.jit
def _gemm_scatter_kernel(
    a_ptr,             # [P, K] permuted rows (act or dh), unit column stride, row stride stride_ap
    b_ptr,             # expert matrices: B_e[kk, n] at b_ptr + e·stride_be + kk·stride_bk + n·stride_bn
    sorted_ids_ptr,    # [P] int32
    block_expert_ptr,  # [P // BLOCK_M] int32
    weights_ptr,       # [S] float32 routing weights (read when SCALE)
    out_ptr,           # [S, N] out, row s = t·k + j, unit column stride
    S, K, N, num_m,
    stride_ap, stride_be, stride_bk, stride_bn,
    SCALE: tl.constexpr, PRECISION: tl.constexpr, WIDEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile(tl.program_id(0), num_m, tl.cdiv(N, BLOCK_N), GROUP_M)
    e = tl.load(block_expert_ptr + pid_m)
    if e < 0:
        return
    offs_p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    s = tl.load(sorted_ids_ptr + offs_p)
    row_ok = s < S
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + offs_p.to(tl.int64)[:, None] * stride_ap + offs_k[None, :]
    b_ptrs = (b_ptr + e.to(tl.int64) * stride_be + offs_k[:, None].to(tl.int64) * stride_bk
              + offs_n[None, :].to(tl.int64) * stride_bn)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = offs_k < K - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _dot(a, b, acc, PRECISION, WIDEN)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_bk
    if SCALE:
        acc = acc * tl.load(weights_ptr + s, mask=row_ok, other=0.0)[:, None]
    out = out_ptr + s.to(tl.int64)[:, None] * N + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & n_ok[None, :])


@triton.jit
def _down_bwd_kernel(
    dy_ptr,            # [T, H] upstream gradient, row stride stride_dyt, unit column stride
    w2_ptr,            # [E, H, I] down_proj, unit stride over I
    h_ptr,             # [P, 2I] saved gate | up pre-activations
    sorted_ids_ptr,    # [P] int32
    block_expert_ptr,  # [P // BLOCK_M] int32
    weights_ptr,       # [S] float32 routing weights
    dh_ptr,            # [P, 2I] out: d gate | d up
    dw_part_ptr,       # [cdiv(I, BLOCK_N), S] float32 out: per-I-tile partial sums of d weights
    S, H, I, num_m,
    stride_dyt, stride_we, stride_wh,
    TOP_K: tl.constexpr, PRECISION: tl.constexpr, WIDEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr,
):
    pid_m, pid_n = _tile(tl.program_id(0), num_m, tl.cdiv(I, BLOCK_N), GROUP_M)
    e = tl.load(block_expert_ptr + pid_m)
    if e < 0:
        return
    offs_p = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    s = tl.load(sorted_ids_ptr + offs_p)
    row_ok = s < S
    tok = (s // TOP_K).to(tl.int64)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    n_ok = offs_n < I
    offs_k = tl.arange(0, BLOCK_K)
    a_ptrs = dy_ptr + tok[:, None] * stride_dyt + offs_k[None, :]
    b_ptrs = w2_ptr + e.to(tl.int64) * stride_we + offs_k[:, None].to(tl.int64) * stride_wh + offs_n[None, :]
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for k0 in range(0, H, BLOCK_K):
        k_ok = offs_k < H - k0
        a = tl.load(a_ptrs, mask=row_ok[:, None] & k_ok[None, :], other=0.0)
        b = tl.load(b_ptrs, mask=k_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _dot(a, b, acc, PRECISION, WIDEN)
        a_ptrs += BLOCK_K
        b_ptrs += BLOCK_K * stride_wh
    rows = offs_p.to(tl.int64)[:, None]
    hm = row_ok[:, None] & n_ok[None, :]
    g = tl.load(h_ptr + rows * (2 * I) + offs_n[None, :], mask=hm, other=0.0).to(tl.float32)
    u = tl.load(h_ptr + rows * (2 * I) + I + offs_n[None, :], mask=hm, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    silu = g * sig
    # d weights[s] = dy[t] · out_unweighted = Σ_i dA · act  (this I-tile's share)
    tl.store(dw_part_ptr + pid_n.to(tl.int64) * S + s, tl.sum(acc * silu * u, axis=1), mask=row_ok)
    da = acc * tl.load(weights_ptr + s, mask=row_ok, other=0.0)[:, None]
    dg = da * u * sig * (1.0 + g * (1.0 - sig))
    du = da * silu
    dh_rows = dh_ptr + rows * (2 * I) + offs_n[None, :]
    tl.store(dh_rows, dg.to(dh_ptr.dtype.element_ty), mask=n_ok[None, :])
    tl.store(dh_rows + I, du.to(dh_ptr.dtype.element_ty), mask=n_ok[None, :])


@triton.jit
def _expert_wgrad_kernel(
    l_ptr,             # left operand rows: [T, M] gathered by token (L_GATHER) or [P, M] permuted
    r_ptr,             # right operand rows: [T, N] gathered by token (R_GATHER) or [P, N] permuted
    sorted_ids_ptr,    # [P] int32
    seg_start_ptr,     # [E + 1] int32 padded start of each expert's rows
    counts_ptr,        # [E] int32 rows of each expert
    weights_ptr,       # [S] float32, scales the left rows when L_SCALE
    out_ptr,           # [E, M, N] out: out[e] = Σ_{p in e} L[p]^T R[p], unit stride over N
    M, N, stride_l, stride_r, stride_oe, stride_om,
    TOP_K: tl.constexpr, L_GATHER: tl.constexpr, R_GATHER: tl.constexpr, L_SCALE: tl.constexpr,
    PRECISION: tl.constexpr, WIDEN: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
):
    num_m = tl.cdiv(M, BLOCK_M)
    num_n = tl.cdiv(N, BLOCK_N)
    pid = tl.program_id(0)
    e = pid // (num_m * num_n)
    pid_m = (pid % (num_m * num_n)) // num_n
    pid_n = pid % num_n
    start = tl.load(seg_start_ptr + e)
    end = start + tl.load(counts_ptr + e)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok = offs_m < M
    n_ok = offs_n < N
    offs_k = tl.arange(0, BLOCK_K)
    acc = tl.zeros((BLOCK_M, BLOCK_N), tl.float32)
    for p0 in range(start, end, BLOCK_K):
        offs_p = p0 + offs_k
        p_ok = offs_p < end
        s = tl.load(sorted_ids_ptr + offs_p, mask=p_ok, other=0)
        if L_GATHER:
            l_row = (s // TOP_K).to(tl.int64)
        else:
            l_row = offs_p.to(tl.int64)
        if R_GATHER:
            r_row = (s // TOP_K).to(tl.int64)
        else:
            r_row = offs_p.to(tl.int64)
        lt = tl.load(l_ptr + l_row[None, :] * stride_l + offs_m[:, None], mask=m_ok[:, None] & p_ok[None, :], other=0.0)
        if L_SCALE:
            w = tl.load(weights_ptr + s, mask=p_ok, other=0.0)
            lt = (lt.to(tl.float32) * w[None, :]).to(l_ptr.dtype.element_ty)
        r = tl.load(r_ptr + r_row[:, None] * stride_r + offs_n[None, :], mask=p_ok[:, None] & n_ok[None, :], other=0.0)
        acc = _dot(lt, r, acc, PRECISION, WIDEN)
    out = out_ptr + e.to(tl.int64) * stride_oe + offs_m.to(tl.int64)[:, None] * stride_om + offs_n[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


# ---------------------------------------------------------------------------------------------
# launch heuristics
# ---------------------------------------------------------------------------------------------
def block_m_for(S: int, E: int, device: torch.device) -> int:
    """The align block (GEMM BLOCK_M): big enough for tensor-core tiles, small enough that padding
    (up to BM-1 rows per expert) stays a small share of each expert's rows."""
    if device.type != "cuda":
        return 16  # interpreter: small tiles run fastest
    per_expert = S / max(E, 1)
    return 16 if per_expert <= 16 else 32 if per_expert <= 32 else 64 if per_expert <= 256 else 128


def _cfg(device: torch.device, BM: int, kind: str) -> dict:
    """Tile sizes per kernel (H100 guesses, untuned: the benches say how good they are)."""
    if device.type != "cuda":  # interpreter: its cost is per program and per op, so few, big tiles
        return dict(BLOCK_N=64, BLOCK_K=64, GROUP_M=4, num_warps=1, num_stages=1)
    big = BM >= 128
    if kind == "gate_up":  # two accumulators: BLOCK_N gate + BLOCK_N up columns
        return dict(BLOCK_N=64 if big else 128 if BM <= 32 else 64, BLOCK_K=64, GROUP_M=8,
                    num_warps=8 if big else 4, num_stages=4)
    if kind == "down_bwd" and BM >= 64:  # the SwiGLU epilogue holds g, u, dg, du beside the accumulator:
        # at 128 columns that spilled ~700 bytes per thread (sm_90, 255 registers); 64 columns do not
        return dict(BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=8 if big else 4, num_stages=4)
    if kind == "scatter" and 32 <= BM <= 64:  # 4 warps: a 128-wide accumulator beside the 4-stage gathered
        # loads spilled 136-144 bytes per thread on triton 3.6 (sm_90); 64 columns do not
        return dict(BLOCK_N=64, BLOCK_K=64, GROUP_M=8, num_warps=4, num_stages=4)
    return dict(BLOCK_N=128, BLOCK_K=64, GROUP_M=8, num_warps=8 if big else 4, num_stages=4)


def _wgrad_cfg(device: torch.device) -> dict:
    if device.type != "cuda":
        return dict(BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, num_warps=1, num_stages=1)
    return dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_warps=8, num_stages=3)


def _precision(dtype: torch.dtype, allow_tf32: bool) -> dict:
    # "ieee" only matters (and is only asked) for float32 operands; bf16/fp16 keep Triton's default
    return dict(PRECISION="ieee" if (dtype == torch.float32 and not allow_tf32) else "tf32",
                WIDEN=dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")


# ---------------------------------------------------------------------------------------------
# host launchers (inputs validated and aligned by r1core.ops)
# ---------------------------------------------------------------------------------------------
def gate_up(x_TH, w13_E2IH, sorted_ids, block_expert, top_k: int, BM: int, *, save_h: bool,
            allow_tf32: bool = False):
    """-> act [P, I] (x dtype), h [P, 2I] or None."""
    T, H = x_TH.shape
    E, twoI, _ = w13_E2IH.shape
    I = twoI // 2
    P = sorted_ids.numel()
    act = torch.empty(P, I, dtype=x_TH.dtype, device=x_TH.device)
    h = torch.empty(P, twoI, dtype=x_TH.dtype, device=x_TH.device) if save_h else None
    cfg = _cfg(x_TH.device, BM, "gate_up")
    num_m = P // BM
    grid = (num_m * triton.cdiv(I, cfg["BLOCK_N"]),)
    _gate_up_kernel[grid](
        x_TH, w13_E2IH, sorted_ids, block_expert, act, h if save_h else act,
        T * top_k, H, I, num_m, x_TH.stride(0), w13_E2IH.stride(0), w13_E2IH.stride(1),
        TOP_K=top_k, SAVE_H=save_h, **_precision(x_TH.dtype, allow_tf32), BLOCK_M=BM, **cfg)
    return act, h


def gemm_scatter(a_PK, b, b_strides, sorted_ids, block_expert, S: int, N: int, BM: int, *,
                 weights_S=None, out_dtype, allow_tf32: bool = False):
    """out [S, N] with out[s] = (weights[s] ·) a[p] @ B_e for every real row p (s = sorted_ids[p]).
    B_e[kk, n] = b[e·sb_e + kk·sb_k + n·sb_n] with b_strides = (sb_e, sb_k, sb_n)."""
    P, K = a_PK.shape
    out = torch.empty(S, N, dtype=out_dtype, device=a_PK.device)
    cfg = _cfg(a_PK.device, BM, "scatter")
    num_m = P // BM
    grid = (num_m * triton.cdiv(N, cfg["BLOCK_N"]),)
    _gemm_scatter_kernel[grid](
        a_PK, b, sorted_ids, block_expert, weights_S if weights_S is not None else out, out,
        S, K, N, num_m, a_PK.stride(0), *b_strides,
        SCALE=weights_S is not None, **_precision(a_PK.dtype, allow_tf32), BLOCK_M=BM, **cfg)
    return out


def down_bwd(dy_TH, w2_EHI, h_P2I, sorted_ids, block_expert, weights_S, top_k: int, BM: int, *,
             allow_tf32: bool = False):
    """-> dh [P, 2I] (x dtype), dweights [S] float32."""
    T, H = dy_TH.shape
    E, _, I = w2_EHI.shape
    P = sorted_ids.numel()
    S = weights_S.numel()
    cfg = _cfg(dy_TH.device, BM, "down_bwd")
    n_tiles = triton.cdiv(I, cfg["BLOCK_N"])
    dh = torch.empty(P, 2 * I, dtype=h_P2I.dtype, device=dy_TH.device)
    dw_part = torch.empty(n_tiles, S, dtype=torch.float32, device=dy_TH.device)
    num_m = P // BM
    _down_bwd_kernel[(num_m * n_tiles,)](
        dy_TH, w2_EHI, h_P2I, sorted_ids, block_expert, weights_S, dh, dw_part,
        S, H, I, num_m, dy_TH.stride(0), w2_EHI.stride(0), w2_EHI.stride(1),
        TOP_K=top_k, **_precision(dy_TH.dtype, allow_tf32), BLOCK_M=BM, **cfg)
    return dh, dw_part.sum(0)


def expert_wgrad(left, right, sorted_ids, seg_start, counts, E: int, top_k: int, *, l_gather: bool,
                 r_gather: bool, weights_S=None, out_dtype, allow_tf32: bool = False):
    """out [E, M, N] with out[e] = Σ_{p in expert e} (weights[s] ·) L[p]^T R[p]; zeros for idle experts."""
    M, N = left.shape[1], right.shape[1]
    out = torch.empty(E, M, N, dtype=out_dtype, device=left.device)
    cfg = _wgrad_cfg(left.device)
    grid = (E * triton.cdiv(M, cfg["BLOCK_M"]) * triton.cdiv(N, cfg["BLOCK_N"]),)
    _expert_wgrad_kernel[grid](
        left, right, sorted_ids, seg_start, counts, weights_S if weights_S is not None else out, out,
        M, N, left.stride(0), right.stride(0), out.stride(0), out.stride(1),
        TOP_K=top_k, L_GATHER=l_gather, R_GATHER=r_gather, L_SCALE=weights_S is not None,
        **_precision(left.dtype, allow_tf32), **cfg)
    return out
