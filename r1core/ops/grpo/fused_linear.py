"""The fused linear GRPO ops (docs/spec.md §3): the lm_head matmul, log-sum-exp, GRPO loss and all gradients
without ever holding the [B·T, V] logits.

Legend: B sequences, T positions, N = B·T tokens, n = unmasked tokens, H hidden, V vocabulary.

    fused_linear_grpo_loss(hidden [B, T, H], weight [V, H], targets [B, T], advantages, mask, *, bias [V], ...)
        == grpo_loss(hidden @ weight.T + bias, targets, advantages, mask, ...)  -> (loss, GRPOStats)
    fused_linear_logprobs(hidden, weight, targets, *, bias, temperature) -> logp [B, T] float32, no grad
    fused_linear_logp_entropy(hidden, weight, targets, mask, *, bias) -> (logp, entropy) [B, T], differentiable

Only unmasked tokens are computed: their rows of `hidden` are gathered first (n·H, input-sized) and
autograd scatters their gradient back; masked positions get exactly zero gradient and logp = 0.

Backends (docs/spec.md §6) and strategies: the backend supplies the row kernels (r1core/ops/grpo/rows.py),
the strategy says what happens to the lm_head; both are chosen in `plan` (the backend by the op's
table, like every op), and `strategy=` names one explicitly.
  "torch"   "reference" (backend="torch" or R1CORE_BACKEND=torch): unfused, the logits materialised
              and grpo_loss's single pass run on them (the memory-hungry baseline);
            "chunked" (the default where no kernel backend runs, and for float64): the chunk engine
              (r1core/ops/grpo/chunks.py) with the PyTorch row math (same memory bound).
  "cpp"     "chunked": the chunk engine, GEMMs by torch (MKL/oneDNN), rows by the C++ kernels.
  "triton"  "chunked" (the default when gradients are needed): cuBLAS GEMMs and the Triton row kernels
              (6·n·H·V FLOPs, dlogits of one chunk in memory);
            "onchip" (the default without gradients): kernels/fused_linear.py, Cut Cross-Entropy style,
              logits tiles only in registers (8·n·H·V FLOPs, float32 atomics for dh/dW, no [C, V] buffer).
With backend=None: CUDA tensors -> "triton", CPU tensors -> "cpp", else (and for float64) the torch
chunk engine.  As docs/spec.md §6 states, the default never falls back to the memory-hungry reference.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core._backend import Op, kernels
from r1core._nvtx import nvtx_range
from r1core.ops import _args
from r1core.ops.grpo import chunks, options
from r1core.ops.grpo import math as grpo_math
from r1core.ops.grpo.args import GRPOArgs, check_linear, check_target_range, check_targets, check_temperature, \
    grpo_args
from r1core.ops.grpo.loss import GRPOStats, _mask_N, _single_pass, general_objective
from r1core.ops.grpo.rows import ROWS, Rows, acc_dtype, logprobs_op, rows

_CPP_ROWS = ("grpo_loss_fwd_cpu", "grpo_loss_bwd_cpu", "logprobs_cpu")
FUSED_LINEAR = Op("fused_linear_grpo_loss", gpu_order=("triton", "torch"), float64="torch", needs={"cpp": _CPP_ROWS},
                  impls=dict(ROWS))
FUSED_LINEAR_LOGPROBS = Op("fused_linear_logprobs", gpu_order=("triton", "torch"), float64="torch",
                           needs={"cpp": _CPP_ROWS}, impls=dict(ROWS))
FUSED_LINEAR_LOGP_ENTROPY = Op("fused_linear_logp_entropy", gpu_order=("triton", "torch"), float64="torch",
                               needs={"cpp": ("grpo_loss_fwd_entropy_cpu", "grpo_loss_bwd_cpu")}, impls=dict(ROWS))
STRATEGIES = {"torch": ("reference", "chunked"), "cpp": ("chunked",), "triton": ("chunked", "onchip")}

__all__ = ["fused_linear_grpo_loss", "fused_linear_logprobs", "fused_linear_logp_entropy", "GRPOStats", "plan",
           "Plan", "STRATEGIES", "FUSED_LINEAR", "FUSED_LINEAR_LOGPROBS", "FUSED_LINEAR_LOGP_ENTROPY"]


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


def _unmasked(hidden, m_N):
    """-> (idx [n] of the unmasked tokens or None when all are, h_nH): one host sync, a data-dependent count."""
    B, T, _ = hidden.shape
    idx = (m_N != 0).nonzero()[:, 0]
    idx = None if idx.numel() == B * T else idx
    h_NH = hidden.flatten(0, 1)
    return idx, (h_NH if idx is None else h_NH.index_select(0, idx))


def _scatter(x_n, idx, B: int, T: int, dtype=torch.float32):
    """[n] values of the unmasked tokens -> [B, T], zeros elsewhere (differentiable)."""
    if idx is None:
        return x_n.to(dtype).view(B, T)
    return torch.zeros(B * T, dtype=dtype, device=x_n.device).index_put((idx,), x_n.to(dtype)).view(B, T)


# ---------------------------------------------------------------------------------------------
# the loss: inputs are the n unmasked rows of hidden [n, H], weight, bias
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Tokens:
    """Per-token inputs of the n tokens processed, contiguous [n] on the hidden's device, and the options."""
    targets: torch.Tensor      # int64
    adv: torch.Tensor          # float32 (float64 for float64 hidden)
    mask: torch.Tensor         # mask weight, nonzero
    w: torch.Tensor            # aggregation weight
    old: torch.Tensor | None
    ref: torch.Tensor | None
    a: GRPOArgs


def _chunked_loss(h, weight, bias, tok: _Tokens, r: Rows, chunk: int, need, entropy: bool):
    """Forward with all gradients (chunks.run: Rows.fwd, then Rows.bwd over the chunk) -> logp, terms, ent, grads."""
    o, n = tok.a.opts, h.shape[0]
    acc = acc_dtype(h)
    logp, ent = torch.empty(n, dtype=acc, device=h.device), torch.empty(n, dtype=acc, device=h.device)
    terms = torch.empty(grpo_math.N_TERMS, n, dtype=acc, device=h.device)
    any_grad = any(need)

    def visit(x, s, e):
        t, sl = tok.targets[s:e], slice(s, e)
        out = r.fwd(x[None], t, tok.adv[sl], tok.mask[sl], tok.w[sl], None if tok.old is None else tok.old[sl],
                    None if tok.ref is None else tok.ref[sl], o.beta, o.eps_low, o.eps_high, o.temperature, entropy)
        logp[sl], terms[:, sl] = out[0], out[3]
        if entropy:
            ent[sl] = out[4]
        if any_grad:
            r.bwd(x[None], t, out[1], out[2], o.temperature, True)   # x now holds dlogits
        return any_grad
    grads = chunks.run(h, weight, bias, chunk, visit, need_dh=need[0], need_dw=need[1], need_db=need[2])
    return logp, terms, ent, grads


def _onchip_loss(h, weight, bias, tok: _Tokens, entropy: bool):
    """lse and logp from kernels/fused_linear.py, then the per-token GRPO math on [n] vectors."""
    o = tok.a.opts
    out = kernels("fused_linear").lse_fwd(h, weight, bias, tok.targets, temperature=o.temperature,
                                          **({"entropy": True} if entropy else {}))
    logp = out[1] - out[0]
    t = grpo_math.token_terms(logp, tok.adv, tok.old, tok.ref, beta=o.beta, eps_low=o.eps_low, eps_high=o.eps_high)
    return logp, out[0], t.dlogp * tok.w, grpo_math.stack_terms(t, tok.mask, tok.w), (out[2] if entropy else None)


class _FusedLinearGRPO(torch.autograd.Function):
    @staticmethod
    def forward(ctx, h_nH, weight_VH, bias_V, tok: _Tokens, name: str, strategy: str, chunk: int, entropy: bool):
        need = (ctx.needs_input_grad[0], ctx.needs_input_grad[1], ctx.needs_input_grad[2] and bias_V is not None)
        ctx.onchip, ctx.temperature, ctx.need = strategy == "onchip", tok.a.opts.temperature, need
        if ctx.onchip:
            logp, lse, dlogp, terms, ent = _onchip_loss(h_nH, weight_VH, bias_V, tok, entropy)
            ctx.save_for_backward(h_nH, weight_VH, bias_V, tok.targets, lse, dlogp)
        else:
            logp, terms, ent, ctx.grads = _chunked_loss(h_nH, weight_VH, bias_V, tok, rows(name), chunk, need, entropy)
            ctx.dtypes = (weight_VH.dtype, None if bias_V is None else bias_V.dtype)
        ent = logp.new_zeros(0) if not entropy else ent
        ctx.mark_non_differentiable(logp, terms, ent)
        return terms[0].sum(), logp, terms, ent

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_terms, _grad_ent):
        nones = (None,) * 5
        if ctx.onchip:
            h, w, b, targets, lse, dlogp = ctx.saved_tensors
            g = dlogp * (grad_loss.to(dlogp.dtype) / ctx.temperature)
            dh, dw, db = kernels("fused_linear").grad_bwd(h, w, b, targets, lse, g, temperature=ctx.temperature,
                                                          need_dh=ctx.need[0], need_dw=ctx.need[1], need_db=ctx.need[2])
            return (None if dh is None else dh.to(h.dtype), None if dw is None else dw.to(w.dtype),
                    None if db is None else db.to(b.dtype), *nones)
        if ctx.grads is None:
            raise RuntimeError("fused_linear_grpo_loss: backward called twice on one forward (its gradients are "
                               "computed in the forward and handed over once); run the loss again instead")
        (dh, dw, db), ctx.grads = ctx.grads, None
        w_dt, b_dt = ctx.dtypes
        # the stashed gradients are those of grad_output = 1: scale them in place (we own the buffers)
        return (None if dh is None else dh.mul_(grad_loss), None if dw is None else dw.mul_(grad_loss).to(w_dt),
                None if db is None else db.mul_(grad_loss).to(b_dt), *nones)


def fused_linear_grpo_loss(hidden, weight, targets, advantages, mask=None, *, bias=None, chunk_size=None,
                           old_logp=None, ref_logp=None, beta: float = 0.0, eps_low: float = 0.2,
                           eps_high: float = 0.2, temperature: float = 1.0, loss_agg: str = "token_mean",
                           max_len: int | None = None, backend: str | None = None, strategy: str | None = None,
                           entropy: bool = False, **objective):
    """grpo_loss(hidden @ weight.T + bias, targets, advantages, mask, ...) without the [B·T, V] logits.

    `entropy=True` reports GRPOStats.entropy from the same pass (one more running sum in the row
    kernels; no gradient).  The `**objective` options (as in r1core.grpo_loss, docs/objectives.md) run
    the general path: fused_linear_logp_entropy (the chunk engine twice, with the backend's row
    kernels; `strategy` is then ignored) and r1core.ops.grpo.objective.objective as plain autograd.

    hidden [B, T, H] (fp32/bf16/fp16, any strides), weight [V, H], bias [V] or None (same dtype and
    device), targets [B, T] int, advantages [B] or [B, T], mask [B, T] or None; the GRPO keywords as in
    r1core.grpo_loss (docs/spec.md §2).  chunk_size: tokens per chunk (default from the shapes, see
    r1core.ops.grpo.chunks.default_chunk_size).  strategy: see the module docstring (None: the
    default for the backend).  -> (loss 0-d float32, GRPOStats); gradients flow to hidden, weight
    and bias."""
    with nvtx_range("fused_linear_grpo_loss"):
        V = check_linear(hidden, weight, bias, chunk_size)
        options.check_names("fused_linear_grpo_loss", objective)
        _args.flag(entropy, "entropy")
        plain = options.is_plain(objective, loss_agg, beta)
        a = grpo_args(hidden, targets, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                      eps_low=eps_low, eps_high=eps_high, temperature=temperature,
                      loss_agg=loss_agg if plain or loss_agg != "seq_mean_token_sum" else "token_mean",
                      max_len=max_len, vocab_size=V, x_name="hidden", last_dim_contiguous=False,
                      finite=(("weight", weight),) + ((("bias", bias),) if bias is not None else ()))
        need_grad = torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (hidden, weight, bias))
        p = plan(hidden, backend, strategy, need_grad=need_grad)
        if not plain:
            logp, H = _logp_entropy(hidden, weight, bias, a.targets_N, a.mask_N, a.opts.temperature, chunk_size,
                                    p.backend)
            want_h = entropy or options.needs_entropy(objective)
            return general_objective(logp, H if want_h else None, a, loss_agg, entropy, objective)
        with torch.autocast(hidden.device.type, enabled=False):  # the op picks its own precisions
            if p.strategy == "reference":
                return _reference_loss(hidden, weight, bias, a, entropy)
            return _loss(hidden, weight, bias, a, V, p, chunk_size, entropy)


def _reference_loss(hidden, weight, bias, a: GRPOArgs, entropy: bool):
    """strategy="reference": the logits materialised, then grpo_loss's single pass on the torch rows."""
    return _single_pass(torch.nn.functional.linear(hidden, weight, bias), a, "torch", False, entropy)


def _loss(hidden, weight, bias, a: GRPOArgs, V: int, p: Plan, chunk_size, entropy: bool = False):
    """The chunk engine or the on-chip path, on the unmasked tokens only."""
    B, T, _ = hidden.shape
    acc = acc_dtype(hidden)   # float64 hidden: the PyTorch row math then runs in float64 throughout
    w_N = grpo_math.token_weights(a.mask_N.view(B, T).to(acc), a.opts.loss_agg, a.opts.max_len).reshape(-1)
    idx, h_nH = _unmasked(hidden, a.mask_N)

    def pick(t):
        t = t if t is None or idx is None else t.index_select(0, idx)
        return t.to(acc) if t is not None and t.is_floating_point() else t
    tok = _Tokens(targets=pick(a.targets_N), adv=pick(a.adv_N), mask=pick(a.mask_N), w=pick(w_N),
                  old=pick(a.old_N), ref=pick(a.ref_N), a=a)
    w_mat = weight
    if p.strategy == "onchip":
        h_nH = h_nH if h_nH.stride(-1) == 1 else h_nH.contiguous()
        w_mat = w_mat if w_mat.stride(-1) == 1 else w_mat.contiguous()
    chunk = chunk_size or chunks.default_chunk_size(h_nH.shape[0], V, hidden.dtype, hidden.device)
    loss, logp_n, terms, ent_n = _FusedLinearGRPO.apply(h_nH, w_mat, bias, tok, p.backend, p.strategy, chunk, entropy)
    means = grpo_math.term_means(terms.sum(1).float(), a.mask_N.sum())
    return loss, GRPOStats(logp=_scatter(logp_n, idx, B, T), entropy=_scatter(ent_n, idx, B, T) if entropy else None,
                           **means)


# ---------------------------------------------------------------------------------------------
# log-probs and entropy
# ---------------------------------------------------------------------------------------------
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
        B, T, _ = hidden.shape
        t_N = check_targets(targets, B, T, hidden.device, "hidden")
        temperature = check_temperature(temperature)
        check_target_range(t_N, t_N >= 0, V, T)
        p = plan(hidden, backend, strategy, need_grad=False, op=FUSED_LINEAR_LOGPROBS)
        with torch.no_grad():
            if p.strategy == "reference":
                x = torch.nn.functional.linear(hidden, weight, bias)
                return logprobs_op(x, t_N, temperature, "torch", False)[0].view(B, T)
            h_NH, w = hidden.detach().flatten(0, 1), weight.detach()
            b = None if bias is None else bias.detach()
            if p.strategy == "onchip":
                h_NH = h_NH if h_NH.stride(-1) == 1 else h_NH.contiguous()
                w = w if w.stride(-1) == 1 else w.contiguous()
                lse, x_t = kernels("fused_linear").lse_fwd(h_NH, w, b, t_N, temperature=temperature)
                return torch.where(t_N >= 0, x_t - lse, 0.0).float().view(B, T)
            logp, r = torch.empty(B * T, dtype=torch.float32, device=hidden.device), rows(p.backend)

            def visit(x, s, e):
                logp[s:e] = r.logprobs(x[None], t_N[s:e], temperature)
                return False
            chunks.run(h_NH, w, b, chunk_size or chunks.default_chunk_size(B * T, V, hidden.dtype, hidden.device), visit)
            return logp.view(B, T)


class _ChunkedLogpEntropy(torch.autograd.Function):
    """(logp, entropy) of the n unmasked rows: chunks.run forward (Rows.logp_lse), and again backward in
    recompute mode (Rows.bwd with the objective's dL/dlogp and dL/dH)."""

    @staticmethod
    def forward(ctx, h_nH, weight_VH, bias_V, t_n, temperature: float, chunk: int, name: str):
        r, n = rows(name), h_nH.shape[0]
        logp, lse, ent = (torch.empty(n, dtype=acc_dtype(h_nH), device=h_nH.device) for _ in range(3))
        ones = torch.ones(n, dtype=torch.float32, device=h_nH.device)

        def visit(x, s, e):
            logp[s:e], lse[s:e], ent[s:e] = r.logp_lse(x[None], t_n[s:e], ones[s:e], temperature, entropy=True)
            return False
        chunks.run(h_nH, weight_VH, bias_V, chunk, visit)
        ctx.save_for_backward(h_nH, weight_VH, bias_V, t_n, lse, ent)
        ctx.temperature, ctx.chunk, ctx.name = temperature, chunk, name
        return logp, ent

    @staticmethod
    def backward(ctx, g_logp, g_ent):
        h, w, b, t_n, lse, ent = ctx.saved_tensors
        r = rows(ctx.name)
        g_logp = (torch.zeros_like(lse) if g_logp is None else g_logp.to(lse.dtype)).contiguous()
        g_ent = None if g_ent is None else g_ent.to(lse.dtype).contiguous()

        def visit(x, s, e):   # the logits recomputed: dL/dlogp was unknown in the forward
            r.bwd(x[None], t_n[s:e], lse[s:e], g_logp[s:e], ctx.temperature, True,
                  None if g_ent is None else ent[s:e], None if g_ent is None else g_ent[s:e])
            return True
        need_db = ctx.needs_input_grad[2] and b is not None
        dh, dw, db = chunks.run(h, w, b, ctx.chunk, visit, need_dh=ctx.needs_input_grad[0],
                                need_dw=ctx.needs_input_grad[1], need_db=need_db)
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
        B, T, _ = hidden.shape
        t_N = check_targets(targets, B, T, hidden.device, "hidden")
        temperature = check_temperature(temperature)
        m_N = _mask_N(mask, B, T, hidden.device, "hidden")
        check_target_range(t_N, m_N, V, T)
        name = FUSED_LINEAR_LOGP_ENTROPY.choose(hidden, backend, arg="hidden")
        return _logp_entropy(hidden, weight, bias, t_N, m_N, temperature, chunk_size, name)


def _logp_entropy(hidden, weight, bias, t_N, m_N, temperature: float, chunk_size, name: str):
    """fused_linear_logp_entropy on checked arguments (the general path of fused_linear_grpo_loss calls
    it after its own checks, so they run once per call)."""
    B, T, _ = hidden.shape
    idx, h_nH = _unmasked(hidden, m_N)
    t_n = t_N if idx is None else t_N.index_select(0, idx)
    chunk = chunk_size or chunks.default_chunk_size(h_nH.shape[0], weight.shape[0], hidden.dtype, hidden.device)
    with torch.autocast(hidden.device.type, enabled=False):
        logp_n, ent_n = _ChunkedLogpEntropy.apply(h_nH, weight, bias, t_n, temperature, chunk, name)
    dt = logp_n.dtype
    return _scatter(logp_n, idx, B, T, dt), _scatter(ent_n, idx, B, T, dt)
