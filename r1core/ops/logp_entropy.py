"""Differentiable per-token (log-prob, entropy) over logits or hidden + lm_head: the V-sized half of the
general objective path (docs/objectives.md).

Legend: B sequences, T positions, V vocabulary, N = B·T tokens, n unmasked tokens, H hidden.

    logp_entropy(logits [B, T, V], targets, mask)              -> (logp [B, T], entropy [B, T])
    fused_linear_logp_entropy(hidden [B, T, H], weight [V, H], targets, mask, bias=) -> the same

Forward: one pass over each row (the grpo_loss kernels' forward with the entropy running sum: C++
on CPU, Triton on GPU; PyTorch for backend="torch" and float64).  Backward: the kernels' backward
with dlogp = dL/dlogp and dent = dL/dH per row,
    dlogits_v = ((onehot_v - p_v)·dL/dlogp - p_v·(log p_v + H)·dL/dH) / temperature,
so any objective written in PyTorch on the [B, T] outputs (r1core.ops.grpo.objective.objective: GSPO,
cispo, sapo, vespo, rollout IS, entropy bonus, ...) is exact and costs no new kernel.  Masked
positions get logp = entropy = 0 and no gradient; they are not read.

The fused linear version runs the chunk loop twice (forward: logits, lse, logp, entropy per chunk;
backward: the logits recomputed, dlogits in place, dh/dW/db GEMMs): 8·n·H·V FLOPs against the
single-pass loss's 6·n·H·V, because dL/dlogp is only known once the whole objective (sequence-level
quantities included) has run.
"""
from __future__ import annotations

from typing import Optional

import torch

from r1core._backend import Op
from r1core._nvtx import nvtx_range
from r1core.ops import _fused_linear_chunked as chunked
from r1core.ops import _grpo_kernels as K
from r1core.ops._grpo_args import check_linear, check_target_range, check_targets, check_temperature, check_x, \
    target_range_token

__all__ = ["logp_entropy", "fused_linear_logp_entropy", "LOGP_ENTROPY", "FUSED_LINEAR_LOGP_ENTROPY"]

_CPP = ("grpo_loss_fwd_entropy_cpu", "grpo_loss_bwd_cpu")
LOGP_ENTROPY = Op("logp_entropy", gpu_order=("triton", "torch"), float64="torch", needs={"cpp": _CPP})
FUSED_LINEAR_LOGP_ENTROPY = Op("fused_linear_logp_entropy", gpu_order=("triton", "torch"), float64="torch",
                               needs={"cpp": _CPP})


def _mask_N(mask, B: int, T: int, dev, x_name: str) -> torch.Tensor:
    """-> float32 [N] 0/1 (None: all ones)."""
    if mask is None:
        return torch.ones(B * T, dtype=torch.float32, device=dev)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a [B, T] tensor or None, got {type(mask).__name__}")
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"mask must have shape [B, T] = [{B}, {T}] (from {x_name}), got {list(mask.shape)}")
    if mask.device != dev:
        raise ValueError(f"mask must be on {x_name}'s device {dev}, got {mask.device}")
    return (mask.reshape(-1) != 0).to(torch.float32)


# ---------------------------------------------------------------------------------------------
# logits [B, T, V]
# ---------------------------------------------------------------------------------------------
def logp_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, *,
                 temperature: float = 1.0, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_softmax(logits / T)[targets], entropy of softmax(logits / T)) -> two [B, T] tensors (float32;
    float64 for float64 logits), both differentiable in `logits`; 0 at masked positions."""
    with nvtx_range("logp_entropy"):
        B, T, V = check_x(logits, "logits")
        t_N = check_targets(targets, B, T, logits.device, "logits")
        temperature = check_temperature(temperature)
        m_N = _mask_N(mask, B, T, logits.device, "logits")
        ok = target_range_token(t_N, m_N, V, T)
        name = LOGP_ENTROPY.choose(logits, backend, arg="logits")
        logp, ent = LOGP_ENTROPY(name, logits, t_N, m_N, temperature, name)
        if ok is not None:   # torch.compile: the check's token joins the graph
            logp = logp * ok
        return logp.view(B, T), ent.view(B, T)


@LOGP_ENTROPY.impl("torch")
def _torch_logp_entropy(logits, t_N, m_N, temperature, _name, _want_entropy=True):
    B, T, V = logits.shape
    x = logits if logits.dtype == torch.float64 else logits.float()
    lsm = torch.log_softmax(x / temperature, dim=-1)
    t = t_N.view(B, T).clamp(0, V - 1)
    logp = lsm.gather(-1, t[..., None])[..., 0]
    ent = -(lsm.exp() * lsm).nan_to_num(0.0).sum(-1)  # p·log p = 0 where p = 0 (banned tokens)
    keep = m_N.view(B, T) != 0
    return torch.where(keep, logp, 0.0).reshape(-1), torch.where(keep, ent, 0.0).reshape(-1)


@torch.library.custom_op("r1core::logp_entropy_fwd", mutates_args=())
def _logp_entropy_fwd(logits: torch.Tensor, t_N: torch.Tensor, m_N: torch.Tensor, temperature: float, name: str,
                      want_entropy: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (logp, entropy, lse) [N] float32 from the backend's row kernels (entropy zeros when not wanted:
    then no entropy term enters the backward).  A custom op, so torch.compile sees one opaque node."""
    logp, lse, ent = K.rows(name).logp_lse(logits, t_N, m_N, temperature, entropy=want_entropy)
    return logp, (ent if want_entropy else torch.zeros_like(lse)), lse


@_logp_entropy_fwd.register_fake
def _(logits, t_N, m_N, temperature, name, want_entropy):
    return tuple(torch.empty(t_N.shape[0], dtype=torch.float32, device=logits.device) for _ in range(3))


@torch.library.custom_op("r1core::logp_entropy_bwd", mutates_args=())
def _logp_entropy_bwd(logits: torch.Tensor, t_N: torch.Tensor, lse: torch.Tensor, ent: torch.Tensor,
                      g_logp: torch.Tensor, g_ent: Optional[torch.Tensor], temperature: float, name: str) -> torch.Tensor:
    """dlogits = ((onehot - p)·g_logp - p·(log p + H)·g_ent) / temperature per row (a new tensor)."""
    return K.rows(name).bwd(logits, t_N, lse, g_logp, temperature, False, None if g_ent is None else ent, g_ent)


@_logp_entropy_bwd.register_fake
def _(logits, t_N, lse, ent, g_logp, g_ent, temperature, name):
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


def _logp_entropy_setup(ctx, inputs, output):
    logits, t_N, m_N, ctx.temperature, ctx.name, ctx.want_entropy = inputs
    _, ent, lse = output
    ctx.save_for_backward(logits, t_N, m_N, lse, ent)


def _logp_entropy_backward(ctx, g_logp, g_ent, _g_lse):
    logits, t_N, m_N, lse, ent = ctx.saved_tensors
    # masked rows have lse 0 (never read): their gradient must stay exactly 0.  The 0/1 indicator,
    # not m_N itself: a weighted mask's weight is already inside g_logp (the objective applied it)
    live = (m_N != 0).to(torch.float32)
    g_logp = torch.zeros_like(lse) if g_logp is None else g_logp.float() * live
    g_ent = None if g_ent is None or not ctx.want_entropy else (g_ent.float() * live).contiguous()
    dlogits = _logp_entropy_bwd(logits, t_N, lse, ent, g_logp.contiguous(), g_ent, ctx.temperature, ctx.name)
    return dlogits, None, None, None, None, None


_logp_entropy_fwd.register_autograd(_logp_entropy_backward, setup_context=_logp_entropy_setup)


@LOGP_ENTROPY.impl("triton", "cpp")
def _kernel_logp_entropy(logits, t_N, m_N, temperature, name, want_entropy=True):
    logp, ent, _ = _logp_entropy_fwd(logits, t_N, m_N, temperature, name, want_entropy)
    return logp, ent


# ---------------------------------------------------------------------------------------------
# hidden [B, T, H] + weight [V, H] (+ bias [V]): the chunk loop, unmasked rows only
# ---------------------------------------------------------------------------------------------
def _torch_rows_fwd(x_CV, targets, temperature):
    """-> (logp, lse, entropy) [C] in float32 (float64 for float64)."""
    cdt = torch.float64 if x_CV.dtype == torch.float64 else torch.float32
    y = x_CV.to(cdt) / temperature
    lse = torch.logsumexp(y, dim=-1)
    lsm = y - lse[:, None]
    ent = -(lsm.exp() * lsm).nan_to_num(0.0).sum(-1)
    valid = (targets >= 0) & (targets < x_CV.shape[-1])
    logp = lsm.gather(1, targets.clamp(0, x_CV.shape[-1] - 1)[:, None])[:, 0]
    return torch.where(valid, logp, 0.0), lse, ent


def _torch_rows_bwd_(x_CV, targets, lse, g_logp, ent, g_ent, temperature):
    """dlogits written over x_CV (see the module docstring)."""
    cdt = lse.dtype
    lsm = x_CV.to(cdt) / temperature - lse[:, None]
    p = lsm.exp()
    d = -p * g_logp.to(cdt)[:, None]
    if g_ent is not None:
        d = d - (p * (lsm + ent[:, None])).nan_to_num(0.0) * g_ent.to(cdt)[:, None]
    valid = (targets >= 0) & (targets < x_CV.shape[-1])
    d.scatter_add_(1, targets.clamp(0, x_CV.shape[-1] - 1)[:, None], torch.where(valid, g_logp.to(cdt), 0.0)[:, None])
    x_CV.copy_(d / temperature)


def _rows(name: str):
    """-> (fwd(x_CV, targets, T) -> (logp, lse, ent), bwd_(x_CV, targets, lse, g_logp, ent, g_ent, T))."""
    if name == "torch":
        return _torch_rows_fwd, _torch_rows_bwd_

    r = K.rows(name)

    def fwd(x, t, temperature):
        one = torch.ones(t.shape[0], device=x.device)
        return r.logp_lse(x[None], t, one, temperature, entropy=True)

    def bwd_(x, t, lse, g_logp, ent, g_ent, temperature):
        r.bwd(x[None], t, lse, g_logp.float().contiguous(), temperature, True,
              None if g_ent is None else ent, None if g_ent is None else g_ent.float().contiguous())
    return fwd, bwd_


FUSED_LINEAR_LOGP_ENTROPY.impl("torch", "cpp", "triton")(_rows)


class _ChunkedLogpEntropy(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_nH, weight_VH, bias_V, t_n, temperature: float, chunk: int, name: str):
        fwd, _ = FUSED_LINEAR_LOGP_ENTROPY(name, name)
        n, V = h_nH.shape[0], weight_VH.shape[0]
        acc = torch.float64 if h_nH.dtype == torch.float64 else torch.float32
        logp, lse, ent = (torch.empty(n, dtype=acc, device=h_nH.device) for _ in range(3))
        if n:
            buf = torch.empty(min(chunk, n), V, dtype=h_nH.dtype, device=h_nH.device)
            for s in range(0, n, chunk):
                e = min(n, s + chunk)
                x = buf[: e - s]
                chunked._logits_into(x, h_nH[s:e], weight_VH, bias_V)
                logp[s:e], lse[s:e], ent[s:e] = fwd(x, t_n[s:e], temperature)
        ctx.save_for_backward(h_nH, weight_VH, bias_V, t_n, lse, ent)
        ctx.temperature, ctx.chunk, ctx.name = temperature, chunk, name
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        h, w, b, t_n, lse, ent = ctx.saved_tensors
        need_dh, need_dw, need_db = ctx.needs_input_grad[:3]
        need_db = need_db and b is not None
        _, bwd_ = FUSED_LINEAR_LOGP_ENTROPY(ctx.name, ctx.name)
        n, H = h.shape
        V = w.shape[0]
        acc = lse.dtype
        g_logp = torch.zeros_like(lse) if g_logp is None else g_logp.to(acc)
        dh = torch.empty(n, H, dtype=h.dtype, device=h.device) if need_dh else None
        dw = torch.zeros(V, H, dtype=acc, device=h.device) if need_dw else None
        db = torch.zeros(V, dtype=acc, device=h.device) if need_db else None
        if n:
            buf = torch.empty(min(ctx.chunk, n), V, dtype=h.dtype, device=h.device)
            for s in range(0, n, ctx.chunk):
                e = min(n, s + ctx.chunk)
                x = buf[: e - s]
                chunked._logits_into(x, h[s:e], w, b)   # recomputed: dL/dlogp was unknown in the forward
                bwd_(x, t_n[s:e], lse[s:e], g_logp[s:e], ent[s:e], None if g_ent is None else g_ent[s:e],
                     ctx.temperature)
                if need_dh:
                    torch.mm(x, w, out=dh[s:e])
                if need_dw:
                    chunked._accumulate_dw(dw, x, h[s:e])
                if need_db:
                    db.add_(x.sum(0, dtype=acc))
        return (dh, None if dw is None else dw.to(w.dtype), None if db is None else db.to(b.dtype),
                None, None, None, None)


def fused_linear_logp_entropy(hidden: torch.Tensor, weight: torch.Tensor, targets: torch.Tensor,
                              mask: torch.Tensor | None = None, *, bias: torch.Tensor | None = None,
                              temperature: float = 1.0, chunk_size: int | None = None,
                              backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """logp_entropy(hidden @ weight.T + bias, targets, mask) without the [B·T, V] logits -> (logp, entropy)
    [B, T] float32 (float64 for float64), differentiable in hidden, weight and bias; 0 at masked positions."""
    with nvtx_range("fused_linear_logp_entropy"):
        V = check_linear(hidden, weight, bias, chunk_size)
        B, T, H = hidden.shape
        t_N = check_targets(targets, B, T, hidden.device, "hidden")
        temperature = check_temperature(temperature)
        m_N = _mask_N(mask, B, T, hidden.device, "hidden")
        check_target_range(t_N, m_N, V, T)
        name = FUSED_LINEAR_LOGP_ENTROPY.choose(hidden, backend, arg="hidden")
        return chunked_logp_entropy(hidden, weight, bias, t_N, m_N, temperature, chunk_size, name)


def chunked_logp_entropy(hidden, weight, bias, t_N, m_N, temperature: float, chunk_size, name: str):
    """fused_linear_logp_entropy on checked arguments (targets_N int64, m_N [N]; the general path of
    fused_linear_grpo_loss calls it after its own checks, so they run once per call)."""
    B, T, _ = hidden.shape
    V = weight.shape[0]
    active = m_N != 0
    idx = active.nonzero()[:, 0]   # one host sync: a data-dependent count of rows
    n = idx.numel()
    idx = None if n == B * T else idx
    h_NH = hidden.flatten(0, 1)
    h_nH = h_NH if idx is None else h_NH.index_select(0, idx)
    t_n = t_N if idx is None else t_N.index_select(0, idx)
    chunk = chunk_size or chunked.default_chunk_size(n, V, hidden.dtype, hidden.device)
    with torch.autocast(hidden.device.type, enabled=False):
        logp_n, ent_n = _ChunkedLogpEntropy.apply(h_nH, weight, bias, t_n, temperature, chunk, name)
    if idx is None:
        return logp_n.view(B, T), ent_n.view(B, T)
    z = torch.zeros(B * T, dtype=logp_n.dtype, device=hidden.device)
    return z.index_put((idx,), logp_n).view(B, T), z.index_put((idx,), ent_n).view(B, T)

