"""Fused linear GRPO loss (docs/spec.md §3): the lm_head matmul, log-sum-exp, GRPO loss and all gradients
without ever holding the [B·T, V] logits.

Legend: B sequences, T positions, N = B·T tokens, n = unmasked tokens, H hidden, V vocabulary.

    fused_linear_grpo_loss(hidden [B, T, H], weight [V, H], targets [B, T], advantages, mask, *, bias [V], ...)
        == grpo_loss(hidden @ weight.T + bias, targets, advantages, mask, ...)  -> (loss, GRPOStats)
    fused_linear_logprobs(hidden, weight, targets, *, bias, temperature) -> logp [B, T] float32, no grad

Only unmasked tokens are computed: their rows of `hidden` are gathered first (n·H, input-sized) and
autograd scatters their gradient back; masked positions get exactly zero gradient and logp = 0 in
GRPOStats.logp.

Backends (docs/spec.md §6) and strategies: the backend supplies the per-row math (log-sum-exp, GRPO terms,
dlogits), the strategy says what happens to the lm_head; both are chosen in `plan` (the backend by
the FUSED_LINEAR table through r1core._backend, like every op), and `strategy=` names one explicitly.
  "torch"   "reference" (backend="torch" or R1CORE_BACKEND=torch): the unfused r1core.ref.fused_linear,
              materialising the logits (the bench baseline);
            "chunked" (the default where no kernel backend runs, and for float64): the chunk loop of
              r1core.ops._fused_linear_chunked with vectorised PyTorch row math (same memory bound).
  "cpp"     "chunked": the chunk loop, GEMMs by torch (MKL/oneDNN), rows by the C++ grpo_loss kernels.
  "triton"  "chunked" (the default when gradients are needed): the chunk loop with cuBLAS GEMMs and the
              Triton grpo_loss row kernels (6·n·H·V FLOPs, dlogits of one chunk in memory);
            "onchip" (the default without gradients): kernels/fused_linear.py, Cut Cross-Entropy style,
              logits tiles only in registers (8·n·H·V FLOPs, float32 atomics for dh/dW, no [C, V] buffer).
With backend=None: CUDA tensors -> "triton", CPU tensors -> "cpp", else (and for float64) the torch
chunk loop.  As docs/spec.md §6 states, the default never falls back to the memory-hungry reference.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch

from r1core._backend import Op, kernels
from r1core._nvtx import nvtx_range
from r1core.ops import _args
from r1core.ops import _fused_linear_chunked as chunked
from r1core.ops._grpo_args import GRPOOptions, check_linear, check_target_range, check_targets, check_temperature, \
    grpo_args
from r1core.ops.grpo import options
from r1core.ops.grpo_loss import GRPOStats, general_objective
from r1core.ops.logp_entropy import chunked_logp_entropy, fused_linear_logp_entropy
from r1core.ref import fused_linear as ref
from r1core.ref.entropy import token_entropy_ref
from r1core.ops.grpo.math import stack_terms, term_means, token_weights

_CPP_ROWS = ("grpo_loss_fwd_cpu", "grpo_loss_bwd_cpu", "logprobs_cpu")
FUSED_LINEAR = Op("fused_linear_grpo_loss", gpu_order=("triton", "torch"), float64="torch", needs={"cpp": _CPP_ROWS})
FUSED_LINEAR_LOGPROBS = Op("fused_linear_logprobs", gpu_order=("triton", "torch"), float64="torch",
                           needs={"cpp": _CPP_ROWS})
STRATEGIES = {"torch": ("reference", "chunked"), "cpp": ("chunked",), "triton": ("chunked", "onchip")}

__all__ = ["fused_linear_grpo_loss", "fused_linear_logprobs", "GRPOStats", "plan", "Plan", "STRATEGIES"]


# the backends: each supplies the row kernels of the chunk loop (OP(name, name))
FUSED_LINEAR.impl("torch", "cpp", "triton")(chunked.kernel_rows)
FUSED_LINEAR_LOGPROBS.impl("torch", "cpp", "triton")(chunked.kernel_rows)


@dataclass(frozen=True)
class Plan:
    backend: str    # "torch" | "cpp" | "triton"
    strategy: str   # "reference" | "chunked" | "onchip" (see the module docstring)


def plan(hidden: torch.Tensor, backend: str | None = None, strategy: str | None = None, *,
         need_grad: bool = True, op: Op = FUSED_LINEAR) -> Plan:
    """How a fused linear op runs on `hidden`: the backend (op.choose), then the strategy."""
    name = op.choose(hidden, backend, arg="hidden")
    if strategy is None:
        if name == "torch":
            strategy = "reference" if op.explicit(backend) else "chunked"
        else:
            strategy = "chunked" if name == "cpp" or need_grad else "onchip"
    elif _args.choice(strategy, "strategy", ("reference", "chunked", "onchip")) not in STRATEGIES[name]:
        raise ValueError(f"strategy={strategy!r} does not run on backend {name!r} (it has {STRATEGIES[name]})")
    return Plan(name, strategy)


# ---------------------------------------------------------------------------------------------
# the autograd Function: inputs are the n unmasked rows of hidden [n, H], weight, bias
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Call:
    """Everything the Function needs besides the differentiable tensors (constants)."""
    tok: chunked.Tokens
    opts: GRPOOptions
    rows: chunked.RowKernels | None    # the chunk loop's row kernels (None: on chip)
    chunk: int
    entropy: bool = False              # also the per-token entropy (a statistic: no gradient)


def _onchip_forward(h, weight, bias, call: _Call):
    """lse and logp from kernels/fused_linear.py, then the per-token GRPO math on [n] vectors."""
    tok, opts = call.tok, call.opts
    out = kernels("fused_linear").lse_fwd(h, weight, bias, tok.targets, temperature=opts.temperature,
                                          **({"entropy": True} if call.entropy else {}))
    lse, x_t = out[0], out[1]
    logp = x_t - lse
    t = chunked.token_terms(logp, tok, opts)
    return logp, lse, t.dlogp * tok.w, stack_terms(t, tok.mask, tok.w), out[2] if call.entropy else None


class _FusedLinearGRPO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_nH, weight_VH, bias_V, call: _Call):
        need_dh, need_dw, need_db = ctx.needs_input_grad[:3]
        need_db = need_db and bias_V is not None
        ctx.call = call
        if call.rows is None:
            logp, lse, dlogp, terms, ent = _onchip_forward(h_nH, weight_VH, bias_V, call)
            ctx.save_for_backward(h_nH, weight_VH, bias_V, lse, dlogp)
            ctx.need = (need_dh, need_dw, need_db)
        else:
            logp, terms, dh, dw, db, ent = chunked.chunked_fwd_bwd(
                h_nH, weight_VH, bias_V, call.tok, call.opts, chunk=call.chunk, rows=call.rows,
                need_dh=need_dh, need_dw=need_dw, need_db=need_db, entropy=call.entropy)
            ctx.grads = (dh, dw, db)
            ctx.dtypes = (weight_VH.dtype, None if bias_V is None else bias_V.dtype)
        loss = terms[0].sum()
        ent = logp.new_zeros(0) if ent is None else ent
        ctx.mark_non_differentiable(logp, terms, ent)
        return loss, logp, terms, ent

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_terms, _grad_ent):
        call = ctx.call
        if call.rows is None:
            h, w, b, lse, dlogp = ctx.saved_tensors
            need_dh, need_dw, need_db = ctx.need
            g = dlogp * (grad_loss.to(dlogp.dtype) / call.opts.temperature)
            dh, dw, db = kernels("fused_linear").grad_bwd(h, w, b, call.tok.targets, lse, g, temperature=call.opts.temperature,
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
def fused_linear_grpo_loss(hidden, weight, targets, advantages, mask=None, *, bias=None, chunk_size=None,
                           old_logp=None, ref_logp=None, beta: float = 0.0, eps_low: float = 0.2,
                           eps_high: float = 0.2, temperature: float = 1.0, loss_agg: str = "token_mean",
                           max_len: int | None = None, backend: str | None = None, strategy: str | None = None,
                           entropy: bool = False, **objective):
    """grpo_loss(hidden @ weight.T + bias, targets, advantages, mask, ...) without the [B·T, V] logits.

    `entropy=True` reports GRPOStats.entropy from the same pass (one more running sum in the row
    kernels; no gradient).  The `**objective` options (as in r1core.grpo_loss, docs/objectives.md) run
    the general path: r1core.ops.logp_entropy.fused_linear_logp_entropy (the
    chunk loop twice, with the backend's row kernels; `strategy` is then ignored) and
    r1core.ops.grpo.objective.objective as plain autograd.

    hidden [B, T, H] (fp32/bf16/fp16, any strides), weight [V, H], bias [V] or None (same dtype and
    device), targets [B, T] int, advantages [B] or [B, T], mask [B, T] or None; the GRPO keywords as in
    r1core.grpo_loss (docs/spec.md §2).  chunk_size: tokens per chunk (default from the shapes, see
    r1core.ops._fused_linear_chunked.default_chunk_size).  strategy: see the module docstring (None:
    the default for the backend).  -> (loss 0-d float32, GRPOStats); gradients flow to hidden,
    weight and bias."""
    with nvtx_range("fused_linear_grpo_loss"):
        V = check_linear(hidden, weight, bias, chunk_size)
        options.check_names("fused_linear_grpo_loss", objective)
        _args.flag(entropy, "entropy")
        plain = options.is_plain(objective, loss_agg, beta)
        args = grpo_args(hidden, targets, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                         eps_low=eps_low, eps_high=eps_high, temperature=temperature,
                         loss_agg=loss_agg if plain or loss_agg != "seq_mean_token_sum" else "token_mean",
                         max_len=max_len, vocab_size=V, x_name="hidden", last_dim_contiguous=False,
                         finite=(("weight", weight),) + ((("bias", bias),) if bias is not None else ()))
        need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
        p = plan(hidden, backend, strategy, need_grad=need_grad)
        if not plain:
            logp, H = chunked_logp_entropy(hidden, weight, bias, args.targets_N, args.mask_N, args.opts.temperature,
                                           chunk_size, p.backend)
            want_h = entropy or options.needs_entropy(objective)
            return general_objective(logp, H if want_h else None, args, loss_agg, entropy, objective)
        with torch.autocast(hidden.device.type, enabled=False):  # the op picks its own precisions
            if p.strategy == "reference":
                loss, st = ref.fused_linear_grpo_loss_ref(
                    hidden, weight, targets, advantages, mask, bias=bias, old_logp=old_logp, ref_logp=ref_logp,
                    beta=beta, eps_low=eps_low, eps_high=eps_high, temperature=temperature, loss_agg=loss_agg,
                    max_len=max_len)
                st = GRPOStats(**st._asdict())
                if entropy:  # the reference materialises the logits anyway
                    with torch.no_grad():
                        x = hidden @ weight.T + (0 if bias is None else bias)
                        H = token_entropy_ref(x, temperature=temperature).float()
                    st = dataclasses.replace(st, entropy=H.masked_fill(args.mask_N.view(args.B, args.T) == 0, 0.0))
                return loss, st
            return _loss(hidden, weight, bias, args, V, p, chunk_size, entropy)


def _loss(hidden, weight, bias, args, V, p: Plan, chunk_size, entropy: bool = False):
    """The chunk loop or the on-chip path, on the unmasked tokens only."""
    B, T, H = hidden.shape
    w_N = token_weights(args.mask_N.view(B, T), args.opts.loss_agg, args.opts.max_len).reshape(-1)
    # keep only the unmasked tokens (autograd scatters their gradient back into hidden)
    h_NH = hidden.flatten(0, 1)
    active = args.mask_N != 0
    idx = active.nonzero()[:, 0]  # the one host sync of the loss: a data-dependent count of rows
    n = idx.numel()
    idx = None if n == B * T else idx

    def pick(t):
        t = t if t is None or idx is None else t.index_select(0, idx)
        # float64 hidden: the PyTorch row math then runs in float64 throughout
        return t.double() if t is not None and t.is_floating_point() and hidden.dtype == torch.float64 else t

    h_nH, w_mat = (h_NH if idx is None else h_NH.index_select(0, idx)), weight
    tok = chunked.Tokens(targets=pick(args.targets_N), adv=pick(args.adv_N), mask=pick(args.mask_N),
                         w=pick(w_N), old=pick(args.old_N), ref=pick(args.ref_N))
    if p.strategy == "onchip":
        h_nH = h_nH if h_nH.stride(-1) == 1 else h_nH.contiguous()
        w_mat = w_mat if w_mat.stride(-1) == 1 else w_mat.contiguous()
    chunk = chunk_size or chunked.default_chunk_size(n, V, hidden.dtype, hidden.device)
    call = _Call(tok=tok, opts=args.opts, rows=None if p.strategy == "onchip" else FUSED_LINEAR(p.backend, p.backend),
                 chunk=chunk, entropy=entropy)
    loss, logp_n, terms, ent_n = _FusedLinearGRPO.apply(h_nH, w_mat, bias, call)

    def scatter(x_n):
        out = torch.zeros(B * T, dtype=torch.float32, device=hidden.device)
        if idx is None:
            out.copy_(x_n)
        else:
            out.index_copy_(0, idx, x_n.float())
        return out.view(B, T)
    return loss, GRPOStats(logp=scatter(logp_n), entropy=scatter(ent_n) if entropy else None,
                           **term_means(terms.sum(1).float(), args.mask_N.sum()))


def fused_linear_logprobs(hidden, weight, targets, *, bias=None, temperature: float = 1.0, chunk_size=None,
                          backend: str | None = None, strategy: str | None = None, entropy: bool = False):
    """log_softmax((hidden @ weight.T + bias) / temperature)[target] -> [B, T] float32, no grad, without
    the [B·T, V] logits (old and reference log-probs).  Negative targets (e.g. -100) give 0; targets
    >= V raise ValueError (one device sync on GPU, skipped with R1CORE_SKIP_CHECKS=1).  entropy=True
    -> (logp, entropy) [B, T] float32 from the same chunk pass (the backend's row kernels with the
    entropy sum; `strategy` is then ignored), entropy 0 where the target is negative."""
    _args.flag(entropy, "entropy")
    if entropy:
        _args.tensor(targets, "targets", "of shape [B, T]")
        p = plan(hidden, backend, strategy, need_grad=False, op=FUSED_LINEAR_LOGPROBS)
        with torch.no_grad():
            logp, H = fused_linear_logp_entropy(hidden.detach(), weight.detach(), targets, targets >= 0,
                                                bias=None if bias is None else bias.detach(),
                                                temperature=temperature, chunk_size=chunk_size, backend=p.backend)
        return logp.float(), H.float()
    with nvtx_range("fused_linear_logprobs"):
        V = check_linear(hidden, weight, bias, chunk_size)
        B, T, H = hidden.shape
        t_N = check_targets(targets, B, T, hidden.device, "hidden")
        temperature = check_temperature(temperature)
        check_target_range(t_N, t_N >= 0, V, T)
        p = plan(hidden, backend, strategy, need_grad=False, op=FUSED_LINEAR_LOGPROBS)
        with torch.no_grad():
            if p.strategy == "reference":
                out = ref.fused_linear_logprobs_ref(hidden, weight, targets, bias=bias, temperature=temperature)
                return torch.where(targets >= 0, out, 0.0).float()
            h_NH, w = hidden.detach().flatten(0, 1), weight.detach()
            b = None if bias is None else bias.detach()
            if p.strategy == "onchip":
                h_NH = h_NH if h_NH.stride(-1) == 1 else h_NH.contiguous()
                w = w if w.stride(-1) == 1 else w.contiguous()
                lse, x_t = kernels("fused_linear").lse_fwd(h_NH, w, b, t_N, temperature=temperature)
                logp = torch.where(t_N >= 0, x_t - lse, 0.0)
            else:
                chunk = chunk_size or chunked.default_chunk_size(B * T, V, hidden.dtype, hidden.device)
                logp = chunked.chunked_logprobs(h_NH, w, b, t_N, temperature=temperature, chunk=chunk,
                                                rows=FUSED_LINEAR_LOGPROBS(p.backend, p.backend))
            return logp.float().view(B, T)
