"""The chunked fused linear GRPO loss: forward and all gradients in one pass over token chunks.

Legend: n tokens (the unmasked ones: masked tokens are dropped before we get here), H hidden,
V vocabulary, C tokens per chunk.  For each chunk of C tokens:

    logits_CV  = h_CH @ W_VH.T (+ b_V)                 one GEMM, in the inputs' dtype, into a reused buffer
    row kernel (forward): lse, logp, GRPO terms, dlogp = w · dl/dlogp    (one read of the chunk)
    row kernel (backward): dlogits_CV = (onehot - softmax(logits/T)) · dlogp / T, IN PLACE over the chunk
    dh_CH      = dlogits_CV @ W_VH                     one GEMM, written into the gradient of hidden
    dW_VH     += dlogits_CV.T @ h_CH                   one GEMM, accumulated in float32 (float64 for float64)
    db_V      += dlogits_CV.sum(0)

Why all gradients in the forward: the aggregation weights w depend only on the mask and a token's
loss depends only on its own row, so dl/dlogp is known as soon as the chunk's log-sum-exp is.
Computing the gradients now costs 3 GEMMs per chunk (6·n·H·V FLOPs in all, no logits recomputed);
waiting for backward would cost a fourth. backward() then only scales the stashed gradients by
grad_output.  Peak extra memory: one [C, V] logits buffer in the inputs' dtype (plus, for bf16/fp16
on CPU, a [V, H] product per chunk), the float32 [V, H] weight-gradient accumulator and the [n, H]
hidden gradient: O(C·V), independent of n.

The row kernels are the GRPO loss's own (r1core.ops.grpo_loss: C++ on CPU, Triton on GPU) applied to
the chunk viewed as [1, C, V]; the PyTorch version (the "torch" backend's chunk loop) computes the
per-token GRPO math with r1core.ops.grpo.math, the one definition of it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from r1core.ops import _grpo_kernels as K
from r1core.ops._grpo_args import GRPOOptions
from r1core.ops.grpo import math as grpo_math
from r1core.ops.grpo.math import N_TERMS, stack_terms

# Bytes of one chunk's logits buffer that the default chunk size aims at (see default_chunk_size).
CPU_CHUNK_BYTES = 64 << 20
GPU_CHUNK_BYTES = 512 << 20


def default_chunk_size(n: int, V: int, dtype: torch.dtype, device: torch.device) -> int:
    """Tokens per chunk so that one chunk's logits buffer is about CPU_CHUNK_BYTES (64 MiB: large
    enough that the GEMMs run at full speed, small enough to stay in a large L3 and far below any
    memory limit) or GPU_CHUNK_BYTES (512 MiB: GEMMs with >= 1k rows keep an H100 busy).  A multiple
    of 16 (GEMM tiles), at least 16, at most n."""
    budget = GPU_CHUNK_BYTES if device.type == "cuda" else CPU_CHUNK_BYTES
    itemsize = 4 if device.type != "cuda" and dtype == torch.float32 else dtype.itemsize
    c = budget // max(1, V * itemsize)
    c = max(16, (c // 16) * 16)
    return max(1, min(c, n))


# ---------------------------------------------------------------------------------------------
# row kernels: (logits [1, C, V], per-token [C] tensors) -> per-token results; backward in place
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class RowKernels:
    """The GRPO-loss row kernels the chunk loop calls (all take logits as [1, C, V])."""
    name: str
    # fwd(logits, targets, adv, mask, w, old|None, ref|None, opts) -> (logp, lse, dlogp, terms[5, C])
    fwd: Callable
    # bwd_(logits, targets, lse, dlogp, temperature): dlogits written over the logits
    bwd_: Callable
    # logprobs(logits, targets, temperature) -> logp [C] float32 (0 where target < 0)
    logprobs: Callable
    # fwd_entropy(same as fwd) -> (logp, lse, dlogp, terms, entropy [C]): fwd plus one more running sum
    fwd_entropy: Callable | None = None


def token_terms(logp, tok: "Tokens", opts: GRPOOptions, cdt: torch.dtype | None = None) -> grpo_math.TokenTerms:
    """r1core.ops.grpo.math.token_terms on the tokens' per-token inputs (cast to `cdt` if given)."""
    cast = (lambda t: t) if cdt is None else (lambda t: None if t is None else t.to(cdt))  # noqa: E731
    return grpo_math.token_terms(logp, cast(tok.adv), cast(tok.old), cast(tok.ref), beta=opts.beta,
                                 eps_low=opts.eps_low, eps_high=opts.eps_high)


def _torch_logp(x_CV, targets, temperature: float):
    """-> (logp [C], lse [C]) in float32 (float64 for float64 logits); logp 0 where target is outside [0, V)."""
    cdt = torch.float64 if x_CV.dtype == torch.float64 else torch.float32
    lse = torch.logsumexp(x_CV.to(cdt) / temperature, dim=-1)
    valid = (targets >= 0) & (targets < x_CV.shape[-1])
    x_t = x_CV.gather(1, targets.clamp(0, x_CV.shape[-1] - 1)[:, None])[:, 0].to(cdt) / temperature
    return torch.where(valid, x_t - lse, 0.0), lse


def _torch_fwd(logits_1CV, targets, adv, mask, w, old, ref, opts: GRPOOptions):
    logp, lse = _torch_logp(logits_1CV[0], targets, opts.temperature)
    mask, w = mask.to(lse.dtype), w.to(lse.dtype)
    t = token_terms(logp, Tokens(targets, adv, mask, w, old, ref), opts, lse.dtype)
    active = mask != 0
    return logp, lse, torch.where(active, t.dlogp * w, 0.0), torch.where(active, stack_terms(t, mask, w), 0.0)


def _torch_bwd_(logits_1CV, targets, lse, dlogp, temperature: float):
    x = logits_1CV[0]
    cdt = lse.dtype
    scale = (dlogp / temperature).to(cdt)
    if x.dtype == cdt:  # in place: exp(x/T - lse) · (-scale), then + scale at the target
        x.div_(temperature).sub_(lse[:, None]).exp_().mul_(-scale[:, None])
    else:
        x.copy_(torch.exp(x.to(cdt) / temperature - lse[:, None]) * -scale[:, None])
    valid = (targets >= 0) & (targets < x.shape[-1])
    t = targets.clamp(0, x.shape[-1] - 1)[:, None]
    x.scatter_add_(1, t, torch.where(valid, scale, 0.0)[:, None].to(x.dtype))


def _torch_fwd_entropy(logits_1CV, targets, adv, mask, w, old, ref, opts: GRPOOptions):
    out = _torch_fwd(logits_1CV, targets, adv, mask, w, old, ref, opts)
    y = logits_1CV[0].to(out[1].dtype) / opts.temperature - out[1][:, None]
    return (*out, -(y.exp() * y).nan_to_num(0.0).sum(-1))


TORCH_ROWS = RowKernels("torch", _torch_fwd, _torch_bwd_,
                        lambda x, t, temperature: _torch_logp(x[0], t, temperature)[0], _torch_fwd_entropy)


def kernel_rows(backend: str) -> RowKernels:
    """The row kernels of `backend`: TORCH_ROWS, or the grpo_loss kernels' Rows object ("cpp": r1core._C,
    "triton": kernels/grpo_loss.py); an unknown backend is a ValueError."""
    if backend == "torch":
        return TORCH_ROWS
    r = K.rows(backend)
    return RowKernels(
        backend,
        lambda x, t, adv, m, w, old, ref, o: r.fwd(x, t, adv, m, w, old, ref, o.beta, o.eps_low, o.eps_high,
                                                   o.temperature),
        lambda x, t, lse, dlogp, temperature: r.bwd(x, t, lse, dlogp, temperature, True),
        lambda x, t, temperature: r.logprobs(x, t, temperature),
        lambda x, t, adv, m, w, old, ref, o: r.fwd(x, t, adv, m, w, old, ref, o.beta, o.eps_low, o.eps_high,
                                                   o.temperature, entropy=True))


# ---------------------------------------------------------------------------------------------
# the chunk loop
# ---------------------------------------------------------------------------------------------
@dataclass
class Tokens:
    """Per-token inputs of the n tokens that are processed, contiguous [n] on the hidden's device."""
    targets: torch.Tensor      # int64
    adv: torch.Tensor          # float32
    mask: torch.Tensor         # float32 (mask weight, nonzero)
    w: torch.Tensor            # float32 aggregation weight
    old: torch.Tensor | None   # float32
    ref: torch.Tensor | None   # float32


def _logits_into(buf_CV, h_CH, weight_VH, bias_V):
    if bias_V is None:
        torch.mm(h_CH, weight_VH.t(), out=buf_CV)
    else:
        torch.addmm(bias_V, h_CH, weight_VH.t(), out=buf_CV)


def _accumulate_dw(dw_VH: torch.Tensor, dl_CV: torch.Tensor, h_CH: torch.Tensor) -> None:
    """dw += dl.T @ h with dw in float32 (float64) whatever the inputs' dtype."""
    if dl_CV.dtype == dw_VH.dtype:
        dw_VH.addmm_(dl_CV.t(), h_CH)
    elif dl_CV.device.type == "cuda" and _cuda_out_dtype_ok():
        torch.addmm(dw_VH, dl_CV.t(), h_CH, out_dtype=dw_VH.dtype, out=dw_VH)  # fp32 accumulation in cuBLAS
    else:  # one rounding to bf16/fp16 per chunk, the sum in float32
        dw_VH.add_(torch.mm(dl_CV.t(), h_CH))


_OUT_DTYPE_OK: bool | None = None


def _cuda_out_dtype_ok() -> bool:
    """Whether torch.addmm(..., out_dtype=float32) exists for bf16 inputs here (torch >= 2.8, CUDA);
    probed once on a tiny product whose answer is known."""
    global _OUT_DTYPE_OK
    if _OUT_DTYPE_OK is None:
        try:
            a = torch.ones(16, 16, dtype=torch.bfloat16, device="cuda")
            acc = torch.ones(16, 16, dtype=torch.float32, device="cuda")
            torch.addmm(acc, a, a, out_dtype=torch.float32, out=acc)
            _OUT_DTYPE_OK = bool((acc == 17).all())
        except (RuntimeError, TypeError):
            _OUT_DTYPE_OK = False
    return _OUT_DTYPE_OK


def chunked_fwd_bwd(h_nH: torch.Tensor, weight_VH: torch.Tensor, bias_V: torch.Tensor | None, tok: Tokens,
                    opts: GRPOOptions, *, chunk: int, rows: RowKernels, need_dh: bool, need_dw: bool,
                    need_db: bool, entropy: bool = False):
    """The chunk loop. -> (logp [n], terms [5, n], dh [n, H] | None, dw [V, H] f32 | None, db [V] f32 | None,
    entropy [n] | None (entropy=True: the row kernels' entropy sum, a statistic without gradient)).

    h_nH must have a unit stride over H (rows may be strided).  The gradients are those of
    loss = sum(terms[0]) (grad_output = 1)."""
    n, H = h_nH.shape
    V = weight_VH.shape[0]
    dev, dt = h_nH.device, h_nH.dtype
    acc_dt = torch.float64 if dt == torch.float64 else torch.float32
    logp = torch.empty(n, dtype=acc_dt, device=dev)
    terms = torch.empty(N_TERMS, n, dtype=acc_dt, device=dev)
    dh = torch.empty(n, H, dtype=dt, device=dev) if need_dh else None
    dw = torch.zeros(V, H, dtype=acc_dt, device=dev) if need_dw else None
    db = torch.zeros(V, dtype=acc_dt, device=dev) if need_db else None
    ent = torch.empty(n, dtype=acc_dt, device=dev) if entropy else None
    any_grad = need_dh or need_dw or need_db
    if n == 0:
        return logp, terms, dh, dw, db, ent
    buf = torch.empty(min(chunk, n), V, dtype=dt, device=dev)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        h_c = h_nH[s:e]
        x = buf[: e - s]
        _logits_into(x, h_c, weight_VH, bias_V)
        old = tok.old[s:e] if tok.old is not None else None
        ref = tok.ref[s:e] if tok.ref is not None else None
        out = (rows.fwd_entropy if entropy else rows.fwd)(x[None], tok.targets[s:e], tok.adv[s:e], tok.mask[s:e],
                                                          tok.w[s:e], old, ref, opts)
        lp, lse, dlogp, tm = out[:4]
        if entropy:
            ent[s:e] = out[4]
        logp[s:e] = lp
        terms[:, s:e] = tm
        if not any_grad:
            continue
        rows.bwd_(x[None], tok.targets[s:e], lse, dlogp, opts.temperature)  # x now holds dlogits
        if need_dh:
            torch.mm(x, weight_VH, out=dh[s:e])
        if need_dw:
            _accumulate_dw(dw, x, h_c)
        if need_db:
            db.add_(x.sum(0, dtype=acc_dt))
    return logp, terms, dh, dw, db, ent


def chunked_logprobs(h_nH, weight_VH, bias_V, targets_n, *, temperature: float, chunk: int,
                     rows: RowKernels) -> torch.Tensor:
    """log_softmax((h @ W.T + b) / T)[target] chunk by chunk -> [n] float32 (float64 for float64)."""
    n = h_nH.shape[0]
    V = weight_VH.shape[0]
    acc_dt = torch.float64 if h_nH.dtype == torch.float64 else torch.float32
    logp = torch.empty(n, dtype=acc_dt, device=h_nH.device)
    if n == 0:
        return logp
    buf = torch.empty(min(chunk, n), V, dtype=h_nH.dtype, device=h_nH.device)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        x = buf[: e - s]
        _logits_into(x, h_nH[s:e], weight_VH, bias_V)
        logp[s:e] = rows.logprobs(x[None], targets_n[s:e], temperature)
    return logp
