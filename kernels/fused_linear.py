"""Fused linear log-sum-exp and its gradient with the logits kept on chip (Cut Cross-Entropy style).

Legend: N tokens, H hidden, V vocabulary; h [N, H] and W [V, H] have a unit stride over H;
BN × BV is one tile of logits, BK the slice of H one tl.dot consumes.

Forward (`lse_fwd`): grid (N / BN, S).  Program (i, s) owns tokens i·BN.. and the s-th of S equal
slices of the vocabulary.  For every BV-wide tile of its slice it forms the logits tile
x = (h_tile @ W_tileᵀ + b) / T in float32 registers (a loop of tl.dot over H) and folds it into a
running max m and rescaled sum s (online log-sum-exp); the target's logit is picked out of the tile
that holds it.  It writes only (m, s, x_target) per token and slice: [S, N] float32 each.  The host
combines the S slices: lse = M + log Σ_s s_s·exp(m_s - M).  No logits ever reach memory.

Backward (`grad_bwd`): grid (N / BN, V / BV), grouped so programs that run together share W tiles
in L2.  Each program recomputes its logits tile, turns it into the gradient tile
dx = (onehot(target) - exp(x - lse)) · g,   g = dl/dlogp · w · grad_output / T   (per token)
in registers, rounds it to the inputs' dtype (as an unfused backward would store dlogits) and, one
BK-slice of H at a time, adds dx @ W_tile into dh and dxᵀ @ h_tile into dW with float32 atomics
(and Σ_n dx into db).  Tiles whose tokens all have g = 0 (masked) return at once.  The atomics are
relaxed: only the sums matter, and the kernel's end orders them for the host (the default acq_rel
put a MEMBAR.ALL.GPU fence around every one: 16 per program in the sm_90 SASS).

Entropy (optional, ENTROPY / HAS_DENT): the forward keeps one more running sum per token and slice,
t = Σ 2^(x-m)·(x-m), rescaled with the max like s; the host combines H = ln2·(log2 S - T/S).  The
backward then adds -p·(log p + H)·gh per logit (gh = dl/dH · w · grad_output / T).

Cost: FLOPs 2·N·H·V forward + 6·N·H·V backward (the logits are recomputed once).  Bytes: h and W are
re-read per tile from L2 (HBM traffic ≈ N·H·(V/BV) + V·H·(N/BN) elements, amortised by the tile
sizes); no N·V term at all.  The atomics (N·H·V/BV + V·H·N/BN float32 adds) are the price of keeping
dlogits off memory and make dh/dW non-deterministic in the last bits.

Precision: bf16/fp16 inputs use the tensor cores with float32 accumulation; float32 inputs use IEEE
float32 products unless torch.backends.cuda.matmul.allow_tf32 is
set (DOT_PREC = "tf32"), as for a torch float32 matmul.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
LN2 = 0.6931471805599453


@triton.jit
def _logits_tile(h_ptr, w_ptr, b_ptr, offs_n, offs_v, N, V, H, stride_hn, stride_wv, scale2,
                 HAS_BIAS: tl.constexpr, DOT_PREC: tl.constexpr, DOT_F32: tl.constexpr,
                 BN: tl.constexpr, BV: tl.constexpr, BK: tl.constexpr):
    """(h[offs_n] @ W[offs_v]ᵀ + b[offs_v]) · scale2 as a float32 [BN, BV] tile; -inf where v >= V."""
    acc = tl.zeros((BN, BV), dtype=tl.float32)
    offs_k = tl.arange(0, BK)
    n_ok = offs_n < N
    v_ok = offs_v < V
    h_rows = h_ptr + offs_n[:, None] * stride_hn        # int64 row offsets: N·H can pass 2^31
    w_rows = w_ptr + offs_v[None, :] * stride_wv
    for k0 in range(0, H, BK):
        k = k0 + offs_k
        h_t = tl.load(h_rows + k[None, :], mask=n_ok[:, None] & (k[None, :] < H), other=0.0)       # [BN, BK]
        w_t = tl.load(w_rows + k[:, None], mask=v_ok[None, :] & (k[:, None] < H), other=0.0)       # [BK, BV]
        if DOT_F32:  # interpreter only: its bf16 tl.dot is wrong; bf16 products are exact in float32 anyway
            h_t = h_t.to(tl.float32)
            w_t = w_t.to(tl.float32)
        acc = tl.dot(h_t, w_t, acc, input_precision=DOT_PREC)
    if HAS_BIAS:
        acc += tl.load(b_ptr + offs_v, mask=v_ok, other=0.0).to(tl.float32)[None, :]
    return tl.where(v_ok[None, :], acc * scale2, float("-inf"))


@triton.jit
def _lse_fwd_kernel(
    h_ptr, stride_hn,            # [N, H] hidden, unit stride over H
    w_ptr, stride_wv,            # [V, H] lm_head weight, unit stride over H
    b_ptr,                       # [V] bias (dummy unless HAS_BIAS)
    tgt_ptr,                     # [N] int64 targets (negative or >= V: no target logit)
    m_ptr, s_ptr, xt_ptr,        # [S, N] float32 out: running max, sum (base 2) and target logit per slice
    t_ptr,                       # [S, N] float32 out: Σ 2^(x-m)·(x-m) per slice (dummy unless ENTROPY)
    N, V, H, v_per_slice,        # v_per_slice: a multiple of BV
    scale2,                      # log2(e) / temperature
    HAS_BIAS: tl.constexpr, DOT_PREC: tl.constexpr, DOT_F32: tl.constexpr,
    BN: tl.constexpr, BV: tl.constexpr, BK: tl.constexpr,
    ENTROPY: tl.constexpr = False,  # one more running sum for the entropy (host: H = ln2·(log2 s - t/s))
):
    pid_n = tl.program_id(0)
    pid_s = tl.program_id(1)
    offs_n = pid_n.to(tl.int64) * BN + tl.arange(0, BN)
    n_ok = offs_n < N
    tgt = tl.load(tgt_ptr + offs_n, mask=n_ok, other=-1)
    m = tl.full((BN,), float("-inf"), tl.float32)
    s = tl.zeros((BN,), tl.float32)
    t = tl.zeros((BN,), tl.float32)
    xt = tl.zeros((BN,), tl.float32)
    v_lo = pid_s.to(tl.int64) * v_per_slice
    v_hi = tl.minimum(v_lo + v_per_slice, V)
    for v0 in range(v_lo, v_hi, BV):
        offs_v = v0 + tl.arange(0, BV)
        x = _logits_tile(h_ptr, w_ptr, b_ptr, offs_n, offs_v, N, V, H, stride_hn, stride_wv, scale2,
                         HAS_BIAS, DOT_PREC, DOT_F32, BN, BV, BK)                       # [BN, BV], log2 units
        m_new = tl.maximum(m, tl.max(x, axis=1))
        if ENTROPY:  # t' = α·(t + s·(m - m')) as the max grows; padding / -inf logits (e = 0) add nothing
            alpha = tl.exp2(m - m_new)
            t = alpha * (t + tl.where(s > 0.0, s * (m - m_new), 0.0))
            e = tl.exp2(x - m_new[:, None])
            t += tl.sum(tl.where(e > 0.0, e * (x - m_new[:, None]), 0.0), axis=1)
            s = s * alpha + tl.sum(e, axis=1)
        else:
            s = s * tl.exp2(m - m_new) + tl.sum(tl.exp2(x - m_new[:, None]), axis=1)
        m = m_new
        xt += tl.sum(tl.where(offs_v[None, :] == tgt[:, None], x, 0.0), axis=1)
    out = pid_s.to(tl.int64) * N + offs_n
    if ENTROPY:
        tl.store(t_ptr + out, t, mask=n_ok)
    tl.store(m_ptr + out, m, mask=n_ok)
    tl.store(s_ptr + out, s, mask=n_ok)
    tl.store(xt_ptr + out, xt, mask=n_ok)


@triton.jit
def _grad_bwd_kernel(
    h_ptr, stride_hn,            # [N, H] hidden
    w_ptr, stride_wv,            # [V, H] weight
    b_ptr,                       # [V] bias (dummy unless HAS_BIAS)
    tgt_ptr,                     # [N] int64 targets
    lse2_ptr,                    # [N] float32 log2-sum-exp2 of the scaled logits (= lse · log2 e)
    g_ptr,                       # [N] float32 dl/dlogp · w · grad_output / T (0: no gradient)
    ent_ptr, gh_ptr,             # [N] float32 entropy and dl/dH · w · grad_output / T (dummies unless HAS_DENT)
    dh_ptr,                      # [N, H] float32 out (accumulated with atomics), row stride H
    dw_ptr,                      # [V, H] float32 out (atomics), row stride H
    db_ptr,                      # [V] float32 out (atomics)
    N, V, H, scale2,
    HAS_BIAS: tl.constexpr, NEED_DH: tl.constexpr, NEED_DW: tl.constexpr, NEED_DB: tl.constexpr,
    DOT_PREC: tl.constexpr, DOT_F32: tl.constexpr, GROUP_N: tl.constexpr,
    BN: tl.constexpr, BV: tl.constexpr, BK: tl.constexpr,
    HAS_DENT: tl.constexpr = False,   # add the entropy term -p·(log p + H)·gh
):
    # grouped launch order: GROUP_N token blocks sweep the vocabulary together (W tiles shared in L2)
    pid = tl.program_id(0)
    n_blocks = tl.cdiv(N, BN)
    v_blocks = tl.cdiv(V, BV)
    per_group = GROUP_N * v_blocks
    first_n = (pid // per_group) * GROUP_N
    group_n = tl.minimum(n_blocks - first_n, GROUP_N)
    pid_n = first_n + (pid % per_group) % group_n
    pid_v = (pid % per_group) // group_n

    offs_n = pid_n.to(tl.int64) * BN + tl.arange(0, BN)
    offs_v = pid_v.to(tl.int64) * BV + tl.arange(0, BV)
    n_ok = offs_n < N
    v_ok = offs_v < V
    g = tl.load(g_ptr + offs_n, mask=n_ok, other=0.0)
    g_any = tl.abs(g)
    if HAS_DENT:
        gh = tl.load(gh_ptr + offs_n, mask=n_ok, other=0.0)
        ent = tl.load(ent_ptr + offs_n, mask=n_ok, other=0.0)
        g_any += tl.abs(gh)
    if tl.max(g_any, axis=0) == 0.0:   # every token of the block masked: nothing to add
        return
    tgt = tl.load(tgt_ptr + offs_n, mask=n_ok, other=-1)
    lse2 = tl.load(lse2_ptr + offs_n, mask=n_ok, other=0.0)
    x = _logits_tile(h_ptr, w_ptr, b_ptr, offs_n, offs_v, N, V, H, stride_hn, stride_wv, scale2,
                     HAS_BIAS, DOT_PREC, DOT_F32, BN, BV, BK)
    p = tl.exp2(x - lse2[:, None])                                           # softmax tile, 0 where v >= V
    dx = (tl.where(offs_v[None, :] == tgt[:, None], 1.0, 0.0) - p) * g[:, None]
    if HAS_DENT:  # dH/dx_v = -p_v·(log p_v + H), log p = (x - lse2)·ln2; p = 0 (padding, -inf) adds nothing
        dx -= tl.where(p > 0.0, p * ((x - lse2[:, None]) * 0.6931471805599453 + ent[:, None]), 0.0) * gh[:, None]
    dx = tl.where(n_ok[:, None] & v_ok[None, :], dx, 0.0)
    if NEED_DB:
        tl.atomic_add(db_ptr + offs_v, tl.sum(dx, axis=0), mask=v_ok, sem="relaxed")
    dx_lp = dx.to(h_ptr.dtype.element_ty)          # rounded as an unfused backward stores dlogits
    offs_k = tl.arange(0, BK)
    for k0 in range(0, H, BK):
        k = k0 + offs_k
        k_ok = k < H
        if NEED_DH:
            w_t = tl.load(w_ptr + offs_v[:, None] * stride_wv + k[None, :], mask=v_ok[:, None] & k_ok[None, :],
                          other=0.0)                                          # [BV, BK]
            if DOT_F32:
                dh = tl.dot(dx_lp.to(tl.float32), w_t.to(tl.float32), input_precision=DOT_PREC)
            else:
                dh = tl.dot(dx_lp, w_t, input_precision=DOT_PREC)            # [BN, BK]
            tl.atomic_add(dh_ptr + offs_n[:, None] * H + k[None, :], dh, mask=n_ok[:, None] & k_ok[None, :],
                          sem="relaxed")
        if NEED_DW:
            h_t = tl.load(h_ptr + offs_n[:, None] * stride_hn + k[None, :], mask=n_ok[:, None] & k_ok[None, :],
                          other=0.0)                                          # [BN, BK]
            if DOT_F32:
                dw = tl.dot(tl.trans(dx_lp).to(tl.float32), h_t.to(tl.float32), input_precision=DOT_PREC)
            else:
                dw = tl.dot(tl.trans(dx_lp), h_t, input_precision=DOT_PREC)  # [BV, BK]
            tl.atomic_add(dw_ptr + offs_v[:, None] * H + k[None, :], dw, mask=v_ok[:, None] & k_ok[None, :],
                          sem="relaxed")


# ---------------------------------------------------------------------------------------------
# launch heuristics: H100 tiles by reasoning (128×128 logits tile, 64-wide H slices, 8 warps);
# under the interpreter (CPU tensors) small tiles keep the emulation fast.  tl.dot needs >= 16.
# ---------------------------------------------------------------------------------------------
def _tiles(H: int, device: torch.device, entropy: bool = False) -> dict:
    if device.type != "cuda":
        return dict(BN=16, BV=32, BK=16, num_warps=1, num_stages=1)
    # the forward's entropy sum needs one more [BN, BV] float32 temporary: at 128x128 it reaches 255
    # registers and spills (tests/sm90), so that variant takes 64-wide vocabulary tiles
    return dict(BN=128, BV=64 if entropy else 128, BK=64 if H >= 64 else max(16, triton.next_power_of_2(H)),
                num_warps=8, num_stages=3)


def _dot_precision(dtype: torch.dtype, device: torch.device) -> str:
    """tl.dot's input_precision: "ieee" for float32 operands unless torch itself would use TF32 for a
    float32 matmul (torch.backends.cuda.matmul.allow_tf32); bf16/fp16 operands take the default
    ("tf32", which only concerns float32 operands)."""
    if dtype == torch.float32 and not (device.type == "cuda" and torch.backends.cuda.matmul.allow_tf32):
        return "ieee"
    return "tf32"


def _check(h_NH: torch.Tensor, w_VH: torch.Tensor) -> None:
    assert h_NH.dim() == 2 and w_VH.dim() == 2 and h_NH.shape[1] == w_VH.shape[1]
    assert h_NH.stride(1) == 1 and w_VH.stride(1) == 1, "unit stride over H expected"
    assert h_NH.dtype == w_VH.dtype and h_NH.dtype in (torch.float32, torch.bfloat16, torch.float16)


def lse_fwd(h_NH: torch.Tensor, w_VH: torch.Tensor, b_V: torch.Tensor | None, targets_N: torch.Tensor, *,
            temperature: float, num_slices: int | None = None, entropy: bool = False):
    """-> (lse [N], x_target [N]) float32 of logits / temperature, logits = h @ Wᵀ + b never stored.
    x_target is 0 where the target is outside [0, V).  entropy=True adds a third output, the entropy [N]
    of softmax(logits / temperature), from one more running sum in the same pass."""
    _check(h_NH, w_VH)
    N, H = h_NH.shape
    V = w_VH.shape[0]
    dev = h_NH.device
    if N == 0:
        z = torch.zeros(0, dtype=torch.float32, device=dev)
        return (z, z.clone(), z.clone()) if entropy else (z, z.clone())
    cfg = _tiles(H, dev, entropy)
    BN, BV = cfg["BN"], cfg["BV"]
    n_blocks = triton.cdiv(N, BN)
    v_tiles = triton.cdiv(V, BV)
    if num_slices is None:  # enough programs for every SM a few times over, each slice >= 8 tiles
        sms = torch.cuda.get_device_properties(dev).multi_processor_count if dev.type == "cuda" else 1
        num_slices = max(1, min(triton.cdiv(4 * sms, n_blocks), v_tiles // 8))
    tiles_per_slice = triton.cdiv(v_tiles, num_slices)
    num_slices = triton.cdiv(v_tiles, tiles_per_slice)          # every slice non-empty
    m = torch.empty(num_slices, N, dtype=torch.float32, device=dev)
    s = torch.empty_like(m)
    xt = torch.empty_like(m)
    t = torch.empty_like(m) if entropy else m
    _lse_fwd_kernel[(n_blocks, num_slices)](
        h_NH, h_NH.stride(0), w_VH, w_VH.stride(0), b_V if b_V is not None else h_NH, targets_N, m, s, xt, t,
        N, V, H, tiles_per_slice * BV, LOG2E / temperature,
        HAS_BIAS=b_V is not None, DOT_PREC=_dot_precision(h_NH.dtype, dev),
        DOT_F32=dev.type != "cuda" and h_NH.dtype == torch.bfloat16, ENTROPY=entropy, **cfg)
    m_max = m.amax(0)
    scale_S = torch.exp2(m - m_max)
    s_sum = (s * scale_S).sum(0)
    lse2 = m_max + torch.log2(s_sum)
    if not entropy:
        return lse2 * LN2, xt.sum(0) * LN2
    # combine the slices' t relative to the common max: Σ_s 2^(m_s - M)·(t_s + s_s·(m_s - M))
    t_sum = (scale_S * (t + torch.where(s > 0, s * (m - m_max), 0.0))).sum(0)
    return lse2 * LN2, xt.sum(0) * LN2, (torch.log2(s_sum) - t_sum / s_sum) * LN2


def grad_bwd(h_NH: torch.Tensor, w_VH: torch.Tensor, b_V: torch.Tensor | None, targets_N: torch.Tensor,
             lse_N: torch.Tensor, g_N: torch.Tensor, *, temperature: float, need_dh: bool, need_dw: bool,
             need_db: bool, entropy_N: torch.Tensor | None = None, gh_N: torch.Tensor | None = None):
    """Gradients of sum_n g_n·T·logp_n, i.e. dx = (onehot - softmax) · g per logit, without storing logits:
    -> (dh [N, H] | None, dW [V, H] | None, db [V] | None), all float32.  g_N already includes
    dl/dlogp · w · grad_output / temperature.  With entropy_N (lse_fwd's) and gh_N (dl/dH · w · grad_output /
    temperature) the entropy term is added: the gradients of sum_n T·(g_n·logp_n + gh_n·H_n)."""
    if (entropy_N is None) != (gh_N is None):
        raise ValueError("grad_bwd: entropy_N and gh_N go together")
    _check(h_NH, w_VH)
    N, H = h_NH.shape
    V = w_VH.shape[0]
    dev = h_NH.device
    dh = torch.zeros(N, H, dtype=torch.float32, device=dev) if need_dh else None
    dw = torch.zeros(V, H, dtype=torch.float32, device=dev) if need_dw else None
    db = torch.zeros(V, dtype=torch.float32, device=dev) if need_db else None
    if N == 0 or not (need_dh or need_dw or need_db):
        return dh, dw, db
    cfg = _tiles(H, dev)
    grid = (triton.cdiv(N, cfg["BN"]) * triton.cdiv(V, cfg["BV"]),)
    dummy = torch.empty(1, dtype=torch.float32, device=dev)
    has_dent = gh_N is not None
    _grad_bwd_kernel[grid](
        h_NH, h_NH.stride(0), w_VH, w_VH.stride(0), b_V if b_V is not None else h_NH, targets_N,
        (lse_N * LOG2E).contiguous(), g_N.contiguous(),
        entropy_N.contiguous() if has_dent else dummy, gh_N.contiguous() if has_dent else dummy,
        dh if need_dh else dummy, dw if need_dw else dummy, db if need_db else dummy,
        N, V, H, LOG2E / temperature,
        HAS_BIAS=b_V is not None, NEED_DH=need_dh, NEED_DW=need_dw, NEED_DB=need_db,
        DOT_PREC=_dot_precision(h_NH.dtype, dev),
        DOT_F32=dev.type != "cuda" and h_NH.dtype == torch.bfloat16, GROUP_N=8, HAS_DENT=has_dent, **cfg)
    return dh, dw, db
