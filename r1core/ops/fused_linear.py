"""Fused linear GRPO loss (SPEC §3): the lm_head matmul, log-sum-exp, GRPO loss and all gradients
without ever holding the [B·T, V] logits.

Legend: B sequences, T positions, N = B·T tokens, n = unmasked tokens, H hidden, V vocabulary.

    fused_linear_grpo_loss(hidden [B, T, H], weight [V, H], targets [B, T], advantages, mask, *, bias [V], ...)
        == grpo_loss(hidden @ weight.T + bias, targets, advantages, mask, ...)  -> (loss, GRPOStats)
    fused_linear_logprobs(hidden, weight, targets, *, bias, temperature) -> logp [B, T] float32, no grad

Only unmasked tokens are computed: their rows of `hidden` are gathered first (n·H, input-sized) and
autograd scatters their gradient back; masked positions get exactly zero gradient and logp = 0 in
GRPOStats.logp.

Backends (SPEC §6) and what each runs:
  "torch"   the unfused reference r1core.ref.fused_linear: materialises the logits (the bench baseline)
  "cpp"     CPU: the chunk loop of r1core.ops._fused_linear_chunked, GEMMs by torch (MKL/oneDNN) and
            the per-row log-sum-exp/GRPO/dlogits by the C++ grpo_loss row kernels of r1core._C
  "triton"  two strategies, chosen by the environment variable R1CORE_FUSED_LINEAR_TRITON:
            "chunked" (default when gradients are needed): the chunk loop with cuBLAS GEMMs and the
              Triton grpo_loss row kernels (6·n·H·V FLOPs, dlogits of one chunk in memory);
            "onchip" (always used without gradients): kernels/fused_linear.py, Cut Cross-Entropy style,
              logits tiles only in registers (8·n·H·V FLOPs, float32 atomics for dh/dW, no [C, V] buffer).
With backend=None: CUDA tensors -> "triton"; CPU tensors -> "cpp".  Deviation from SPEC §6: where
that backend is missing (no extension / no Triton) or the inputs are float64, the default is the
chunk loop with vectorised PyTorch row math (same memory bound), not the memory-hungry reference;
backend="torch" (or R1CORE_BACKEND=torch) still selects the reference exactly.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch

from r1core import _backend
from r1core._nvtx import nvtx_range
from r1core.ops import _fused_linear_chunked as chunked
from r1core.ops.grpo_loss import GRPOOptions, GRPOStats, check_grpo_args, token_weights
from r1core.ref import fused_linear as ref

IMPLEMENTED = ("torch", "cpp", "triton")
TRITON_STRATEGY_ENV = "R1CORE_FUSED_LINEAR_TRITON"
TRITON_STRATEGIES = ("chunked", "onchip")

__all__ = ["fused_linear_grpo_loss", "fused_linear_logprobs", "GRPOStats"]


# ---------------------------------------------------------------------------------------------
# validation of what grpo_loss does not see: the lm_head, the chunk size
# ---------------------------------------------------------------------------------------------
def _check_linear(hidden, weight, bias, chunk_size) -> int:
    """-> V.  ValueError naming the argument for anything check_grpo_args cannot know about."""
    if not isinstance(hidden, torch.Tensor) or hidden.dim() != 3:
        raise ValueError(f"hidden must be a [B, T, H] tensor, got "
                         f"{list(hidden.shape) if isinstance(hidden, torch.Tensor) else type(hidden).__name__}")
    if not isinstance(weight, torch.Tensor) or weight.dim() != 2:
        raise ValueError(f"weight must be the [V, H] lm_head weight, got "
                         f"{list(weight.shape) if isinstance(weight, torch.Tensor) else type(weight).__name__}")
    V, H = weight.shape
    if H != hidden.shape[-1]:
        raise ValueError(f"weight must have shape [V, H] with H = hidden.shape[-1] = {hidden.shape[-1]}, "
                         f"got {list(weight.shape)}")
    if V == 0 or H == 0:
        raise ValueError(f"weight must be non-empty, got shape {list(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise ValueError(f"weight must have the hidden states' dtype {hidden.dtype}, got {weight.dtype} "
                         f"(cast one of them, e.g. both to float32 for an fp32 lm_head)")
    if weight.device != hidden.device:
        raise ValueError(f"weight must be on the hidden states' device {hidden.device}, got {weight.device}")
    if bias is not None:
        if not isinstance(bias, torch.Tensor) or tuple(bias.shape) != (V,):
            raise ValueError(f"bias must be a [V] = [{V}] tensor or None, got "
                             f"{list(bias.shape) if isinstance(bias, torch.Tensor) else type(bias).__name__}")
        if bias.dtype != hidden.dtype or bias.device != hidden.device:
            raise ValueError(f"bias must have the hidden states' dtype and device ({hidden.dtype}, {hidden.device}), "
                             f"got ({bias.dtype}, {bias.device})")
    if chunk_size is not None and (isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1):
        raise ValueError(f"chunk_size must be a positive int or None, got {chunk_size!r}")
    return V


def _plan(op: str, hidden: torch.Tensor, backend: str | None) -> str:
    """"torch" | "cpp" | "triton" (asked for, or the default when available) | "chunked" (the
    PyTorch chunk loop: the default where neither is available, and for float64)."""
    explicit = backend is not None or bool(os.environ.get(_backend.ENV_VAR))
    if explicit:
        name = _backend.resolve(op, hidden.device, backend, implemented=IMPLEMENTED)
        if name == "cpp" and not _has_cpp_rows():
            raise _backend.BackendUnavailable(f"{op}: backend 'cpp' is unavailable: r1core._C lacks the grpo_loss "
                                              "row kernels (rebuild the extension)")
        if name != "torch" and hidden.dtype == torch.float64:
            raise ValueError(f"{op}: float64 hidden runs on the torch backend (or backend=None), not {name!r}")
        return name
    if hidden.dtype == torch.float64:
        return "chunked"
    if hidden.device.type == "cuda":
        return "triton" if _backend.missing("triton", "cuda") is None else "chunked"
    if hidden.device.type == "cpu" and _has_cpp_rows():
        return "cpp"
    return "chunked"


def _has_cpp_rows() -> bool:
    return _backend.missing("cpp", "cpu") is None and hasattr(_backend.ext(), "grpo_loss_fwd_cpu")


def _rows(plan: str) -> chunked.RowKernels:
    if plan == "cpp":
        return chunked.cpp_rows(_backend.ext())
    if plan == "triton":
        return chunked.triton_rows(_backend.kernels("grpo_loss"))
    return chunked.TORCH_ROWS


def _triton_strategy(need_grad: bool) -> str:
    s = os.environ.get(TRITON_STRATEGY_ENV) or ("chunked" if need_grad else "onchip")
    if s not in TRITON_STRATEGIES:
        raise ValueError(f"environment variable {TRITON_STRATEGY_ENV} must be one of {TRITON_STRATEGIES}, got {s!r}")
    return s if need_grad else "onchip"


# ---------------------------------------------------------------------------------------------
# the autograd Function: inputs are the n unmasked rows of hidden [n, H], weight, bias
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Call:
    """Everything the Function needs besides the differentiable tensors (constants)."""
    tok: chunked.Tokens
    opts: GRPOOptions
    plan: str          # "cpp" | "triton" | "chunked"
    strategy: str      # "chunked" | "onchip"
    chunk: int


def _onchip_forward(h, weight, bias, call: _Call):
    """lse and logp from kernels/fused_linear.py, then the per-token GRPO math on [n] vectors."""
    kmod = _backend.kernels("fused_linear")
    tok, opts = call.tok, call.opts
    lse, x_t = kmod.lse_fwd(h, weight, bias, tok.targets, temperature=opts.temperature)
    logp = x_t - lse
    l, dl, ratio, kl, lo, hi = chunked.grpo_token_terms(logp, tok.adv, tok.old, tok.ref, opts)
    m = tok.mask
    terms = torch.stack([l * tok.w, ratio * m, kl * m, lo * m, hi * m])
    return logp, lse, dl * tok.w, terms


class _FusedLinearGRPO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_nH, weight_VH, bias_V, call: _Call):
        need_dh, need_dw, need_db = ctx.needs_input_grad[:3]
        need_db = need_db and bias_V is not None
        ctx.call = call
        if call.strategy == "onchip":
            logp, lse, dlogp, terms = _onchip_forward(h_nH, weight_VH, bias_V, call)
            ctx.save_for_backward(h_nH, weight_VH, bias_V, lse, dlogp)
            ctx.need = (need_dh, need_dw, need_db)
        else:
            logp, terms, dh, dw, db = chunked.chunked_fwd_bwd(
                h_nH, weight_VH, bias_V, call.tok, call.opts, chunk=call.chunk, rows=_rows(call.plan),
                need_dh=need_dh, need_dw=need_dw, need_db=need_db)
            ctx.grads = (dh, dw, db)
            ctx.dtypes = (weight_VH.dtype, None if bias_V is None else bias_V.dtype)
        loss = terms[0].sum()
        ctx.mark_non_differentiable(logp, terms)
        return loss, logp, terms

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_terms):
        call = ctx.call
        if call.strategy == "onchip":
            h, w, b, lse, dlogp = ctx.saved_tensors
            need_dh, need_dw, need_db = ctx.need
            g = dlogp * (grad_loss.to(dlogp.dtype) / call.opts.temperature)
            kmod = _backend.kernels("fused_linear")
            dh, dw, db = kmod.grad_bwd(h, w, b, call.tok.targets, lse, g, temperature=call.opts.temperature,
                                       need_dh=need_dh, need_dw=need_dw, need_db=need_db)
            return (None if dh is None else dh.to(h.dtype), None if dw is None else dw.to(w.dtype),
                    None if db is None else db.to(b.dtype), None)
        if ctx.grads is None:
            raise RuntimeError("fused_linear_grpo_loss: backward called twice on one forward (its gradients are "
                               "computed in the forward and handed over once); run the loss again instead")
        dh, dw, db = ctx.grads
        ctx.grads = None
        w_dt, b_dt = ctx.dtypes
        # the stashed gradients are those of grad_output = 1: scale them in place (we own the buffers)
        g = grad_loss
        return (None if dh is None else dh.mul_(g), None if dw is None else dw.mul_(g).to(w_dt),
                None if db is None else db.mul_(g).to(b_dt), None)


# ---------------------------------------------------------------------------------------------
# public API
# ---------------------------------------------------------------------------------------------
def _stats_from(terms_5n, logp_n, idx, mask_N, B, T) -> GRPOStats:
    msum = mask_N.sum()
    denom = msum.clamp_min(torch.finfo(torch.float32).tiny)
    means = torch.where(msum > 0, terms_5n[1:].sum(1).float() / denom, 0.0)
    logp_N = torch.zeros(B * T, dtype=torch.float32, device=mask_N.device)
    if idx is None:
        logp_N.copy_(logp_n)
    else:
        logp_N.index_copy_(0, idx, logp_n.float())
    return GRPOStats(logp=logp_N.view(B, T), kl_mean=means[1], ratio_mean=means[0], clip_low_frac=means[2],
                     clip_high_frac=means[3])


def fused_linear_grpo_loss(hidden, weight, targets, advantages, mask=None, *, bias=None, chunk_size=None,
                           old_logp=None, ref_logp=None, beta: float = 0.0, eps_low: float = 0.2,
                           eps_high: float = 0.2, temperature: float = 1.0, loss_agg: str = "token_mean",
                           max_len: int | None = None, backend: str | None = None):
    """grpo_loss(hidden @ weight.T + bias, targets, advantages, mask, ...) without the [B·T, V] logits.

    hidden [B, T, H] (fp32/bf16/fp16, any strides), weight [V, H], bias [V] or None (same dtype and
    device), targets [B, T] int, advantages [B] or [B, T], mask [B, T] or None; the GRPO keywords as in
    r1core.grpo_loss (SPEC §2).  chunk_size: tokens per chunk (default from the shapes, see
    r1core.ops._fused_linear_chunked.default_chunk_size).  -> (loss 0-d float32, GRPOStats); gradients
    flow to hidden, weight and bias."""
    with nvtx_range("fused_linear_grpo_loss"):
        V = _check_linear(hidden, weight, bias, chunk_size)
        args = check_grpo_args(hidden, targets, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                               eps_low=eps_low, eps_high=eps_high, temperature=temperature, loss_agg=loss_agg,
                               max_len=max_len, vocab_size=V, x_name="hidden", last_dim_contiguous=False)
        plan = _plan("fused_linear_grpo_loss", hidden, backend)
        with torch.autocast(hidden.device.type, enabled=False):  # the op picks its own precisions
            return _loss(hidden, weight, bias, targets, advantages, mask, args, V, plan, chunk_size,
                         dict(old_logp=old_logp, ref_logp=ref_logp, beta=beta, eps_low=eps_low, eps_high=eps_high,
                              temperature=temperature, loss_agg=loss_agg, max_len=max_len))


def _loss(hidden, weight, bias, targets, advantages, mask, args, V, plan, chunk_size, grpo_kwargs):
    """The body of fused_linear_grpo_loss once the arguments are checked and the backend chosen."""
    if plan == "torch":
        return ref.fused_linear_grpo_loss_ref(
            hidden, weight, targets, advantages, mask, bias=bias, **grpo_kwargs)
    B, T, H = hidden.shape
    w_N = token_weights(args.mask_N, B, T, args.opts)
    # keep only the unmasked tokens (autograd scatters their gradient back into hidden)
    h_NH = hidden.flatten(0, 1)
    active = args.mask_N != 0
    n = int(active.sum())  # one host sync: the chunk loop needs the count anyway
    idx = None if n == B * T else active.nonzero()[:, 0]

    def pick(t):
        return t if t is None or idx is None else t.index_select(0, idx)

    h_nH = pick(h_NH)
    tok = chunked.Tokens(targets=pick(args.targets_N), adv=pick(args.adv_N), mask=pick(args.mask_N),
                         w=pick(w_N), old=pick(args.old_N), ref=pick(args.ref_N))
    if hidden.dtype == torch.float64:  # the PyTorch row math then runs in float64 throughout
        tok = chunked.Tokens(targets=tok.targets, adv=tok.adv.double(), mask=tok.mask.double(), w=tok.w.double(),
                             old=None if tok.old is None else tok.old.double(),
                             ref=None if tok.ref is None else tok.ref.double())
    need_grad = torch.is_grad_enabled() and any(
        t is not None and t.requires_grad for t in (hidden, weight, bias))
    strategy = _triton_strategy(need_grad) if plan == "triton" else "chunked"
    w_mat = weight
    if strategy == "onchip":
        if h_nH.stride(-1) != 1:
            h_nH = h_nH.contiguous()
        if w_mat.stride(-1) != 1:
            w_mat = w_mat.contiguous()
    chunk = chunk_size or chunked.default_chunk_size(n, V, hidden.dtype, hidden.device)
    call = _Call(tok=tok, opts=args.opts, plan=plan, strategy=strategy, chunk=chunk)
    loss, logp_n, terms = _FusedLinearGRPO.apply(h_nH, w_mat, bias, call)
    return loss, _stats_from(terms, logp_n, idx, args.mask_N, B, T)


def fused_linear_logprobs(hidden, weight, targets, *, bias=None, temperature: float = 1.0, chunk_size=None,
                          backend: str | None = None) -> torch.Tensor:
    """log_softmax((hidden @ weight.T + bias) / temperature)[target] -> [B, T] float32, no grad, without
    the [B·T, V] logits (old and reference log-probs).  Negative targets (e.g. -100) give 0; targets
    >= V raise ValueError."""
    with nvtx_range("fused_linear_logprobs"):
        V = _check_linear(hidden, weight, bias, chunk_size)
        B, T, H = hidden.shape
        if not isinstance(targets, torch.Tensor) or tuple(targets.shape) != (B, T):
            raise ValueError(f"targets must be a [B, T] = [{B}, {T}] tensor, got "
                             f"{list(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__}")
        if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
            raise ValueError(f"targets must be an integer tensor, got {targets.dtype}")
        if targets.device != hidden.device:
            raise ValueError(f"targets must be on the hidden states' device {hidden.device}, got {targets.device}")
        if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature > 0 \
                or temperature == float("inf"):
            raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
        temperature = float(temperature)
        t_N = targets.reshape(-1).to(torch.int64)
        if t_N.numel() and bool((t_N >= V).any()):
            raise ValueError(f"targets must lie in [0, V) = [0, {V}) (negative = ignored), got max {int(t_N.max())}")
        plan = _plan("fused_linear_logprobs", hidden, backend)
        with torch.no_grad():
            if plan == "torch":
                out = ref.fused_linear_logprobs_ref(hidden, weight, targets, bias=bias, temperature=temperature)
                return torch.where(targets >= 0, out, 0.0).float()
            h_NH = hidden.detach().flatten(0, 1)
            w = weight.detach()
            b = None if bias is None else bias.detach()
            if plan == "triton":
                kmod = _backend.kernels("fused_linear")
                h_NH = h_NH if h_NH.stride(-1) == 1 else h_NH.contiguous()
                w = w if w.stride(-1) == 1 else w.contiguous()
                lse, x_t = kmod.lse_fwd(h_NH, w, b, t_N, temperature=temperature)
                logp = torch.where(t_N >= 0, x_t - lse, 0.0)
            else:
                chunk = chunk_size or chunked.default_chunk_size(B * T, V, hidden.dtype, hidden.device)
                logp = chunked.chunked_logprobs(h_NH, w, b, t_N, temperature=temperature, chunk=chunk,
                                                rows=_rows(plan))
            return logp.float().view(B, T)
