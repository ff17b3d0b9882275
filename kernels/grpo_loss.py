"""Fused GRPO loss on logits (docs/spec.md §2): one forward and one backward Triton kernel, one program per
row of logits (a token).

Legend: N = B·T rows (tokens), V vocabulary; row n = (b, t) = (n // T, n % T) lives at
logits + b·stride_b + t·stride_t with unit stride over V, so views like logits[:, :-1] need no copy.

Forward, per row, in float32 whatever the logits' dtype (x = logits / temperature):
    lse   = log Σ_v exp(x_v)             one pass over V: a running max and a rescaled running sum
    logp  = x[target] - lse
    ratio = exp(logp - old_logp)         (1 when old_logp is None: on-policy)
    pg    = -min(ratio·A, clamp(ratio, 1-eps_low, 1+eps_high)·A)
    kl    = exp(ref - logp) - (ref - logp) - 1                  (k3; when ref_logp is given)
    l     = pg + beta·kl
    dl/dlogp = -A·ratio (0 where the clipped branch is the active minimum) + beta·(1 - exp(ref - logp))
On request (ENTROPY) the same pass also yields the entropy H = -Σ_v p_v log p_v of softmax(x) from one
more running sum (see _row_lse2_ent), for entropy bonuses, top-entropy masks and logging.
It stores logp, lse and dlogp = w · dl/dlogp (w: the token's aggregation weight, computed on the host
from the mask) and five per-token terms that one torch sum turns into the loss and the statistics.
Masked rows (w = 0 and mask = 0) never read their logits nor their target.

Backward, per row: dlogits_v = (onehot(target)_v - exp(x_v - lse)) · dlogp · grad_loss / temperature,
written in the logits' dtype, optionally into the logits' own storage (in place).  With an entropy
gradient dent = w · dl/dH per row (HAS_DENT) it adds -p_v·(log p_v + H)·dent · grad_loss / temperature.

Bytes moved: the forward reads the logits once (N·V·s bytes, s = 2 for bf16), the backward reads
them once more and writes the gradient once: 3·N·V·s in all, plus O(N) float32 per-token traffic.
Everything else (one exp per element in each pass) hides under that on an H100.
"""
from __future__ import annotations

import torch
import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
LN2 = tl.constexpr(0.6931471805599453)
N_TERMS = 5  # rows of the per-token terms buffer; layout: r1core/ops/grpo/math.py TERMS (l·w, ratio·m, …)


@triton.jit
def grpo_token_math(logp, old, ref, adv, beta, eps_low, eps_high,
                    HAS_OLD: tl.constexpr, HAS_REF: tl.constexpr):
    """Per-token GRPO terms (float32 tensors of any shape) -> (l, dl_dlogp, ratio, kl, clip_low, clip_high).

    old/ref are ignored unless HAS_OLD/HAS_REF; beta only enters when > 0, so an infinite kl of a
    token never turns into 0·inf = NaN when beta == 0.  Shared with the fused linear loss."""
    if HAS_OLD:
        ratio = tl.exp(logp - old)
    else:
        ratio = tl.full(logp.shape, 1.0, tl.float32)
    clip_low = (ratio < 1.0 - eps_low) & (adv < 0.0)
    clip_high = (ratio > 1.0 + eps_high) & (adv > 0.0)
    clipped_ratio = tl.minimum(tl.maximum(ratio, 1.0 - eps_low), 1.0 + eps_high)
    pg = -tl.minimum(ratio * adv, clipped_ratio * adv)
    dlogp = tl.where(clip_low | clip_high, 0.0, -adv * ratio)
    if HAS_REF:
        d = ref - logp
        e = tl.exp(d)
        kl = e - d - 1.0
        loss = tl.where(beta > 0.0, pg + beta * kl, pg)
        dlogp = tl.where(beta > 0.0, dlogp + beta * (1.0 - e), dlogp)
    else:
        kl = tl.zeros(logp.shape, tl.float32)
        loss = pg
    return loss, dlogp, ratio, kl, clip_low, clip_high


@triton.jit
def _row_lse2(row_ptr, n_cols, scale2, BLOCK_V: tl.constexpr):
    """log2 Σ_v 2^(x_v·scale2) over the first n_cols entries of one row, in float32, one pass.

    A scalar running max m (one block-wide max per step) and per-lane partial sums rescaled by the
    scalar 2^(m_old - m_new): one exp2 per element and one cross-warp reduction per step; the lanes
    are summed once at the end."""
    cols = tl.arange(0, BLOCK_V)
    m = float("-inf")
    s = tl.zeros([BLOCK_V], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_V):
        x = tl.load(row_ptr + start + cols, mask=start + cols < n_cols, other=float("-inf"))
        x = x.to(tl.float32) * scale2
        m_new = tl.maximum(m, tl.max(x, axis=0))
        s = s * tl.exp2(m - m_new) + tl.exp2(x - m_new)
        m = m_new
    # sum >= 1 on a read row (its max contributes 2^0); a masked row (n_cols = 0) gives -inf
    return m + tl.log2(tl.maximum(tl.sum(s, axis=0), 1.0))


@triton.jit
def _row_lse2_ent(row_ptr, n_cols, scale2, BLOCK_V: tl.constexpr):
    """(log2 Σ_v 2^y_v, H / ln 2) over one row, y = x·scale2, in one pass: _row_lse2 plus one more running
    sum t = Σ_v 2^(y_v - m)·(y_v - m), rescaled with the max like the sum s (when m grows to m',
    t' = α·(t + s·(m - m')), α = 2^(m - m')).  Then H/ln2 = log2 s - t/s: both terms O(log V), no
    cancellation of two large numbers.  A masked row (n_cols = 0) gives (-inf, 0)."""
    cols = tl.arange(0, BLOCK_V)
    m = float("-inf")
    s = tl.zeros([BLOCK_V], dtype=tl.float32)
    t = tl.zeros([BLOCK_V], dtype=tl.float32)
    for start in range(0, n_cols, BLOCK_V):
        ok = start + cols < n_cols
        x = tl.load(row_ptr + start + cols, mask=ok, other=float("-inf"))
        x = x.to(tl.float32) * scale2
        m_new = tl.maximum(m, tl.max(x, axis=0))
        alpha = tl.exp2(m - m_new)
        t = alpha * (t + tl.where(s > 0.0, s * (m - m_new), 0.0))  # s = 0 while m = -inf: no 0·inf
        e = tl.exp2(x - m_new)
        t += tl.where(e > 0.0, e * (x - m_new), 0.0)  # padding and -inf logits add nothing (no 0·inf)
        s = s * alpha + e
        m = m_new
    s_sum = tl.maximum(tl.sum(s, axis=0), 1.0)
    ent2 = tl.where(n_cols > 0, tl.log2(s_sum) - tl.sum(t, axis=0) / s_sum, 0.0)
    return m + tl.log2(s_sum), ent2


@triton.jit
def _grpo_fwd_kernel(
    logits_ptr,              # [B, T, V] fp32/bf16/fp16, unit stride over V
    stride_b, stride_t,      # element strides of logits' first two dims
    targets_ptr,             # [N] int64 target ids (any value where the mask is 0)
    adv_ptr,                 # [N] float32 advantage of each token
    mask_ptr,                # [N] float32 mask weight (0 = skip the row)
    w_ptr,                   # [N] float32 aggregation weight
    old_ptr, ref_ptr,        # [N] float32 old / reference log-probs (dummies unless HAS_OLD / HAS_REF)
    logp_ptr, lse_ptr,       # [N] float32 out: log-prob of the target, log-sum-exp of logits/temperature
    dlogp_ptr,               # [N] float32 out: w · dl/dlogp (0 for masked rows)
    terms_ptr,               # [5, N] float32 out: l·w, ratio·m, kl·m, clip_low·m, clip_high·m
    ent_ptr,                 # [N] float32 out: entropy of softmax(logits/temperature) (dummy unless ENTROPY)
    N, T, V, inv_temp, beta, eps_low, eps_high,
    LOSS: tl.constexpr,      # False: log-probs only (r1core.logprobs); terms/dlogp/w/adv unused
    HAS_OLD: tl.constexpr, HAS_REF: tl.constexpr, BLOCK_V: tl.constexpr,
    ENTROPY: tl.constexpr = False,  # also the per-token entropy: one more running sum in the same pass
):
    row = tl.program_id(0).to(tl.int64)
    b = row // T
    t = row - b * T
    row_ptr = logits_ptr + b * stride_b + t * stride_t
    tgt = tl.load(targets_ptr + row)
    if LOSS:
        m = tl.load(mask_ptr + row)
        active = m != 0.0
    else:
        active = tgt >= 0  # logprobs: negative targets (ignore_index, e.g. -100) are skipped
    n_cols = tl.where(active, V, 0)  # masked rows read nothing
    if ENTROPY:
        lse2, ent2 = _row_lse2_ent(row_ptr, n_cols, inv_temp * LOG2E, BLOCK_V)
        tl.store(ent_ptr + row, ent2 * LN2)
    else:
        lse2 = _row_lse2(row_ptr, n_cols, inv_temp * LOG2E, BLOCK_V)
    lse = lse2 * LN2
    valid = active & (tgt >= 0) & (tgt < V)
    x_t = tl.load(row_ptr + tl.where(valid, tgt, 0), mask=valid, other=0.0).to(tl.float32) * inv_temp
    logp = tl.where(valid, x_t - lse, 0.0)
    lse = tl.where(active, lse, 0.0)
    tl.store(logp_ptr + row, logp)
    tl.store(lse_ptr + row, lse)
    if LOSS:
        adv = tl.load(adv_ptr + row)
        w = tl.load(w_ptr + row)
        old = 0.0
        ref = 0.0
        if HAS_OLD:
            old = tl.load(old_ptr + row)
        if HAS_REF:
            ref = tl.load(ref_ptr + row)
        l, dl, ratio, kl, clip_lo, clip_hi = grpo_token_math(logp, old, ref, adv, beta, eps_low, eps_high,
                                                             HAS_OLD, HAS_REF)
        tl.store(dlogp_ptr + row, tl.where(active, dl * w, 0.0))
        tl.store(terms_ptr + row, tl.where(active, l * w, 0.0))
        tl.store(terms_ptr + N + row, tl.where(active, ratio * m, 0.0))
        tl.store(terms_ptr + 2 * N + row, tl.where(active, kl * m, 0.0))
        tl.store(terms_ptr + 3 * N + row, tl.where(active & clip_lo, m, 0.0))
        tl.store(terms_ptr + 4 * N + row, tl.where(active & clip_hi, m, 0.0))


@triton.jit
def _grpo_bwd_kernel(
    logits_ptr, stride_b, stride_t,       # [B, T, V] as in the forward
    dlogits_ptr, dstride_b, dstride_t,    # [B, T, V] out, logits' dtype (may alias logits_ptr: in place)
    targets_ptr,                          # [N] int64
    lse_ptr,                              # [N] float32 from the forward
    dlogp_ptr,                            # [N] float32 w · dl/dlogp from the forward
    grad_ptr,                             # [1] float32 dloss (read on device: no host sync)
    ent_ptr, dent_ptr,                    # [N] float32 entropy and w · dl/dH (dummies unless HAS_DENT)
    T, V, inv_temp,
    BLOCK_V: tl.constexpr,
    HAS_DENT: tl.constexpr = False,       # add the entropy term -p·(log p + H)·dl/dH
):
    row = tl.program_id(0).to(tl.int64)
    b = row // T
    t = row - b * T
    row_ptr = logits_ptr + b * stride_b + t * stride_t
    out_ptr = dlogits_ptr + b * dstride_b + t * dstride_t
    dlogp = tl.load(dlogp_ptr + row)
    grad = tl.load(grad_ptr)
    active = dlogp != 0.0  # masked rows (and tokens with no gradient) write zeros, read nothing
    if HAS_DENT:
        dent = tl.load(dent_ptr + row)
        active = active | (dent != 0.0)
        scale_h = dent * grad * inv_temp
        ent = tl.load(ent_ptr + row)
    scale = dlogp * grad * inv_temp
    scale2 = inv_temp * LOG2E
    lse2 = tl.load(lse_ptr + row) * LOG2E
    tgt = tl.load(targets_ptr + row)
    tgt = tl.where((tgt >= 0) & (tgt < V), tgt, -1).to(tl.int32)  # 32-bit compares below; -1 matches no column
    n_read = tl.where(active, V, 0)
    cols = tl.arange(0, BLOCK_V)
    for start in range(0, V, BLOCK_V):
        c = start + cols
        inb = c < V
        x = tl.load(row_ptr + c, mask=c < n_read, other=0.0).to(tl.float32)
        y2 = x * scale2 - lse2                       # log2 p
        p = tl.exp2(y2)
        g = (tl.where(c == tgt, 1.0, 0.0) - p) * scale
        if HAS_DENT:  # dH/dx_v = -p_v·(log p_v + H) / temperature
            g -= tl.where(p > 0.0, p * (y2 * LN2 + ent), 0.0) * scale_h  # p = 0 (-inf logit): no 0·inf
        g = tl.where(active, g, 0.0)
        tl.store(out_ptr + c, g.to(dlogits_ptr.dtype.element_ty), mask=inb)


# ---------------------------------------------------------------------------------------------
# launch heuristics (chosen by reasoning about H100 occupancy; the benches are where to retune)
# ---------------------------------------------------------------------------------------------
def _config(V: int, dtype: torch.dtype, device: torch.device) -> tuple[int, int]:
    """(BLOCK_V, num_warps): 8-16 KiB of logits per loop step and per program; small V, small block.
    Under the interpreter (CPU tensors) a big block keeps the Python loop short."""
    if device.type != "cuda":
        return min(triton.next_power_of_2(V), 1024), 1
    block = min(triton.next_power_of_2(V), 8192 if dtype.itemsize == 2 else 4096)
    return block, max(1, min(16, block // 512))


def _rows(logits_BTV: torch.Tensor) -> tuple[int, int, int]:
    B, T, _ = logits_BTV.shape
    return B * T, logits_BTV.stride(0), logits_BTV.stride(1)


def grpo_fwd(logits_BTV, targets_N, adv_N, mask_N, w_N, old_N, ref_N, *,
             beta: float, eps_low: float, eps_high: float, temperature: float, entropy: bool = False):
    """Launch the forward kernel -> (logp_N, lse_N, dlogp_N, terms_5N), all float32, plus entropy_N
    (0 on masked rows) as a fifth output when entropy=True.
    Inputs must already be checked (r1core/ops/grpo/args.py)."""
    N, sb, st = _rows(logits_BTV)
    T, V = logits_BTV.shape[1], logits_BTV.shape[2]
    dev = logits_BTV.device
    logp = torch.empty(N, dtype=torch.float32, device=dev)
    lse = torch.empty(N, dtype=torch.float32, device=dev)
    dlogp = torch.empty(N, dtype=torch.float32, device=dev)
    terms = torch.empty(N_TERMS, N, dtype=torch.float32, device=dev)
    ent = torch.empty(N, dtype=torch.float32, device=dev) if entropy else None
    out = (logp, lse, dlogp, terms) + ((ent,) if entropy else ())
    if N == 0:
        return out
    block, warps = _config(V, logits_BTV.dtype, dev)
    _grpo_fwd_kernel[(N,)](
        logits_BTV, sb, st, targets_N, adv_N, mask_N, w_N,
        old_N if old_N is not None else logp, ref_N if ref_N is not None else logp,
        logp, lse, dlogp, terms, ent if entropy else logp, N, T, V, 1.0 / temperature, beta, eps_low, eps_high,
        LOSS=True, HAS_OLD=old_N is not None, HAS_REF=ref_N is not None, BLOCK_V=block, ENTROPY=entropy,
        num_warps=warps)
    return out


def logprobs_fwd(logits_BTV, targets_N, *, temperature: float, entropy: bool = False):
    """log_softmax(logits / temperature)[target] -> [N] float32 (0 where the target is negative); with
    entropy=True -> (logp_N, entropy_N), the entropy of softmax(logits / temperature) (0 where the target
    is negative: such rows are not read)."""
    N, sb, st = _rows(logits_BTV)
    T, V = logits_BTV.shape[1], logits_BTV.shape[2]
    dev = logits_BTV.device
    logp = torch.empty(N, dtype=torch.float32, device=dev)
    ent = torch.empty(N, dtype=torch.float32, device=dev) if entropy else None
    if N == 0:
        return (logp, ent) if entropy else logp
    lse = torch.empty_like(logp)
    block, warps = _config(V, logits_BTV.dtype, dev)
    _grpo_fwd_kernel[(N,)](
        logits_BTV, sb, st, targets_N, logp, logp, logp, logp, logp, logp, lse, logp, logp,
        ent if entropy else logp, N, T, V, 1.0 / temperature, 0.0, 0.0, 0.0,
        LOSS=False, HAS_OLD=False, HAS_REF=False, BLOCK_V=block, ENTROPY=entropy, num_warps=warps)
    return (logp, ent) if entropy else logp


def grpo_bwd(logits_BTV, targets_N, lse_N, dlogp_N, grad_loss, *, temperature: float,
             inplace: bool = False, entropy_N=None, dent_N=None) -> torch.Tensor:
    """Launch the backward kernel -> dlogits [B, T, V] in the logits' dtype.  inplace=True writes it
    into the logits' storage (and returns the logits tensor itself, now holding the gradient).
    With dent_N (w · dl/dH per row) and entropy_N (the forward's entropy) the entropy term
    -p·(log p + H)·dent is added: dlogits = ((onehot - p)·dlogp - p·(log p + H)·dent) · grad / T."""
    if (entropy_N is None) != (dent_N is None):
        raise ValueError("grpo_bwd: entropy_N and dent_N go together")
    N, sb, st = _rows(logits_BTV)
    T, V = logits_BTV.shape[1], logits_BTV.shape[2]
    dlogits = logits_BTV if inplace else torch.empty(logits_BTV.shape, dtype=logits_BTV.dtype,
                                                      device=logits_BTV.device)
    if N == 0:
        return dlogits
    grad = grad_loss.detach().reshape(1).to(torch.float32)
    block, warps = _config(V, logits_BTV.dtype, logits_BTV.device)
    has_dent = dent_N is not None
    _grpo_bwd_kernel[(N,)](
        logits_BTV, sb, st, dlogits, dlogits.stride(0), dlogits.stride(1), targets_N, lse_N, dlogp_N, grad,
        entropy_N if has_dent else lse_N, dent_N if has_dent else lse_N,
        T, V, 1.0 / temperature, BLOCK_V=block, HAS_DENT=has_dent, num_warps=warps)
    return dlogits
