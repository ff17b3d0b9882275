"""The chunk engine of the fused linear ops: hidden [n, H] @ lm_head [V, H].T without the [n, V] logits.

Legend: n tokens (the unmasked ones: masked tokens are dropped before we get here), H hidden,
V vocabulary, C tokens per chunk.  For each chunk of C tokens:

    logits_CV  = h_CH @ W_VH.T (+ b_V)            one GEMM, in the inputs' dtype, into ONE reused buffer
    visit(logits_CV, s, e)                        the caller's row kernels (r1core/ops/grpo/rows.py); when
                                                  it returns True it has written dlogits over the buffer:
    dh_CH      = dlogits_CV @ W_VH                one GEMM, into the gradient of hidden
    dW_VH     += dlogits_CV.T @ h_CH              one GEMM, accumulated in float32 (float64 for float64)
    db_V      += dlogits_CV.sum(0)

Every fused linear path is one `run` with its own visit:
  the loss, forward-with-grad: Rows.fwd then Rows.bwd in place (dl/dlogp is known as soon as the
    chunk's log-sum-exp is, because a token's loss depends only on its own row): 6·n·H·V FLOPs, no
    logits recomputed, backward() only scales the stashed gradients;
  log-probs (and entropy): Rows.logprobs / Rows.logp_lse, no gradient;
  the general objective's backward, recompute mode: Rows.bwd with the objective's dL/dlogp and dL/dH
    on recomputed logits (8·n·H·V FLOPs in all: dL/dlogp needs the whole objective first).
Peak extra memory: the [C, V] buffer (plus, for bf16/fp16 on CPU, a [V, H] product per chunk), the
[V, H] accumulator and the [n, H] hidden gradient: O(C·V), independent of n.
"""
from __future__ import annotations

from typing import Callable

import torch

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


def run(h_nH: torch.Tensor, weight_VH: torch.Tensor, bias_V: torch.Tensor | None, chunk: int,
        visit: Callable[[torch.Tensor, int, int], bool], *, need_dh: bool = False, need_dw: bool = False,
        need_db: bool = False):
    """The chunk loop (see the module docstring) -> (dh [n, H] | None, dw [V, H] f32/f64 | None,
    db [V] f32/f64 | None).  h_nH must have a unit stride over H (rows may be strided)."""
    n, H = h_nH.shape
    V = weight_VH.shape[0]
    dev, dt = h_nH.device, h_nH.dtype
    acc = torch.float64 if dt == torch.float64 else torch.float32
    dh = torch.empty(n, H, dtype=dt, device=dev) if need_dh else None
    dw = torch.zeros(V, H, dtype=acc, device=dev) if need_dw else None
    db = torch.zeros(V, dtype=acc, device=dev) if need_db else None
    if n == 0:
        return dh, dw, db
    buf = torch.empty(min(chunk, n), V, dtype=dt, device=dev)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        h_c, x = h_nH[s:e], buf[: e - s]
        if bias_V is None:
            torch.mm(h_c, weight_VH.t(), out=x)
        else:
            torch.addmm(bias_V, h_c, weight_VH.t(), out=x)
        if not visit(x, s, e):
            continue
        if need_dh:
            torch.mm(x, weight_VH, out=dh[s:e])
        if need_dw:
            _accumulate_dw(dw, x, h_c)
        if need_db:
            db.add_(x.sum(0, dtype=acc))
    return dh, dw, db
