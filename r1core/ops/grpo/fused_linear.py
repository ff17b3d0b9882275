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
              (below) with the PyTorch row math (same memory bound).
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
from typing import Callable, Optional

import torch

from r1core._backend import Op, kernels
from r1core._nvtx import nvtx_range
from r1core.ops import _args
from r1core.ops.grpo import options
from r1core.ops.grpo import math as grpo_math
from r1core.ops.grpo.args import GRPOArgs, check_linear, check_targets, check_temperature, grpo_args, \
    target_range_token
from r1core.ops.grpo.loss import GRPOStats, _mask_N, _single_pass, general_objective
from r1core.ops.grpo.rows import ROWS, acc_dtype, logprobs_op, rows

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


# ---------------------------------------------------------------------------------------------
# the chunk engine
# ---------------------------------------------------------------------------------------------
# The chunk engine of the fused linear ops: hidden [n, H] @ lm_head [V, H].T without the [n, V] logits.
#
# Legend: n tokens (the unmasked ones: masked tokens are dropped before we get here), H hidden,
# V vocabulary, C tokens per chunk.  For each chunk of C tokens:
#
#     logits_CV  = h_CH @ W_VH.T (+ b_V)            one GEMM, in the inputs' dtype, into ONE reused buffer
#     visit(logits_CV, s, e)                        the caller's row kernels (r1core/ops/grpo/rows.py); when
#                                                   it returns True it has written dlogits over the buffer:
#     dh_CH      = dlogits_CV @ W_VH                one GEMM, into the gradient of hidden
#     dW_VH     += dlogits_CV.T @ h_CH              one GEMM, accumulated in float32 (float64 for float64)
#     db_V      += dlogits_CV.sum(0)
#
# Every fused linear path is one `run` with its own visit:
#   the loss, forward-with-grad: Rows.fwd then Rows.bwd in place (dl/dlogp is known as soon as the
#     chunk's log-sum-exp is, because a token's loss depends only on its own row): 6·n·H·V FLOPs, no
#     logits recomputed, backward() only scales the stashed gradients;
#   log-probs (and entropy): Rows.logprobs / Rows.logp_lse, no gradient;
#   the general objective's backward, recompute mode: Rows.bwd with the objective's dL/dlogp and dL/dH
#     on recomputed logits (8·n·H·V FLOPs in all: dL/dlogp needs the whole objective first).
# Peak extra memory: the [C, V] buffer (plus, for bf16/fp16 on CPU, a [V, H] product per chunk), the
# [V, H] accumulator and the [n, H] hidden gradient: O(C·V), independent of n.
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


def run_chunks(h_nH: torch.Tensor, weight_VH: torch.Tensor, bias_V: torch.Tensor | None, chunk: int,
               visit: Callable[[torch.Tensor, int, int], bool], *, need_dh: bool = False, need_dw: bool = False,
               need_db: bool = False):
    """The chunk loop (see the comment above) -> (dh [n, H] | None, dw [V, H] f32/f64 | None,
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
# helpers of the custom ops: only unmasked rows are computed (a data-dependent count, inside the ops)
# ---------------------------------------------------------------------------------------------
def _live(m_N: torch.Tensor) -> torch.Tensor:
    """Indices [n] int64 of the rows with m != 0 (one host sync: the forward ops return them, so a backward
    reuses them instead of syncing again)."""
    return (m_N != 0).nonzero()[:, 0]


def _dynamic_rows() -> torch.Tensor:
    """The fake of _live's output: a data-dependent length (an unbacked size under torch.compile)."""
    return torch.empty(torch.library.get_ctx().new_dynamic_size(), dtype=torch.int64)


def _pick(x, idx, dtype=None):
    """The rows `idx` of x (no copy when idx holds every row), floating tensors cast to `dtype`."""
    if x is None:
        return None
    x = x if idx.numel() == x.shape[0] else x.index_select(0, idx)
    return x.to(dtype) if dtype is not None and x.is_floating_point() else x


def _spread(x_n, idx, N: int):
    """Rows of the unmasked tokens -> all N rows (dim 0), zeros elsewhere."""
    if idx.numel() == N:
        return x_n
    return x_n.new_zeros((N, *x_n.shape[1:])).index_copy_(0, idx, x_n)


def _empty(like: torch.Tensor, dtype=None) -> torch.Tensor:
    return torch.empty(0, dtype=dtype or like.dtype, device=like.device)


def _chunk(chunk: int, n: int, V: int, h: torch.Tensor) -> int:
    return chunk or default_chunk_size(n, V, h.dtype, h.device)


# ---------------------------------------------------------------------------------------------
# the loss: one custom op; the chunked strategy computes every gradient in the forward (run_chunks),
# the on-chip one (Triton) recomputes in the backward
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("r1core::fused_linear_grpo_fwd", mutates_args=())
def fused_linear_grpo_fwd(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                          targets: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor, w: torch.Tensor,
                          old: Optional[torch.Tensor], ref: Optional[torch.Tensor], beta: float, eps_low: float,
                          eps_high: float, temperature: float, backend: str, strategy: str, chunk: int,
                          entropy: bool, need_dh: bool, need_dw: bool, need_db: bool
                          ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden [N, H] and per-token [N] inputs (float32; float64 for float64 hidden) -> [logp [N], terms
    [N_TERMS, N], entropy [N] | [0], dh [N, H] | [0], dw [V, H] | [0], db [V] | [0], lse [N] | [0],
    dlogp [N] | [0], rows [n] | [0]]: the gradients of loss = terms[0].sum() for the chunked strategy; lse,
    w·dl/dlogp and the unmasked rows for the on-chip one (its backward); per-token outputs 0 on masked rows."""
    N, acc = hidden.shape[0], acc_dtype(hidden)
    idx = _live(mask)
    h = _pick(hidden, idx)
    tgt, m = _pick(targets, idx), _pick(mask, idx, acc)
    adv, w, old, ref = (_pick(x, idx, acc) for x in (adv, w, old, ref))
    z = lambda: _empty(hidden, acc)  # noqa: E731  (distinct tensors: outputs may not alias)
    if strategy == "onchip":
        out = kernels("fused_linear").lse_fwd(h.contiguous(), weight.contiguous(), bias, tgt, temperature=temperature,
                                              **({"entropy": True} if entropy else {}))
        logp = out[1] - out[0]
        t = grpo_math.token_terms(logp, adv, old, ref, beta=beta, eps_low=eps_low, eps_high=eps_high)
        per_tok = [logp, grpo_math.stack_terms(t, m, w).t(), out[2] if entropy else None, out[0], t.dlogp * w]
        logp_N, terms_N, ent_N, lse_N, dl_N = (None if x is None else _spread(x, idx, N) for x in per_tok)
        return (logp_N, terms_N.t().contiguous(), z() if ent_N is None else ent_N, _empty(hidden), z(), z(), lse_N, dl_N,
                idx)
    r, n = rows(backend), h.shape[0]
    logp, ent = torch.empty(n, dtype=acc, device=h.device), torch.empty(n, dtype=acc, device=h.device)
    terms = torch.empty(n, grpo_math.N_TERMS, dtype=acc, device=h.device)
    any_grad = need_dh or need_dw or need_db

    def visit(x, s, e):
        sl = slice(s, e)
        o = r.fwd(x[None], tgt[sl], adv[sl], m[sl], w[sl], None if old is None else old[sl],
                  None if ref is None else ref[sl], beta, eps_low, eps_high, temperature, entropy)
        logp[sl], terms[sl] = o[0], o[3].t()
        if entropy:
            ent[sl] = o[4]
        if any_grad:
            r.bwd(x[None], tgt[sl], o[1], o[2], temperature, True)   # x now holds dlogits
        return any_grad
    dh, dw, db = run_chunks(h, weight, bias, _chunk(chunk, n, weight.shape[0], h), visit, need_dh=need_dh,
                            need_dw=need_dw, need_db=need_db)
    return (_spread(logp, idx, N), _spread(terms, idx, N).t().contiguous(), _spread(ent, idx, N) if entropy else z(),
            _empty(hidden) if dh is None else _spread(dh, idx, N), z() if dw is None else dw, z() if db is None else db,
            z(), z(), _empty(idx))


@fused_linear_grpo_fwd.register_fake
def _(hidden, weight, bias, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, backend, strategy,
      chunk, entropy, need_dh, need_dw, need_db):
    (N, H), V, acc, chunked = hidden.shape, weight.shape[0], acc_dtype(hidden), strategy != "onchip"
    e = lambda *shape, dtype=acc: torch.empty(shape, dtype=dtype, device=hidden.device)  # noqa: E731
    return (e(N), e(grpo_math.N_TERMS, N), e(N if entropy else 0),
            e(N, H, dtype=hidden.dtype) if need_dh and chunked else e(0, dtype=hidden.dtype),
            e(V, H) if need_dw and chunked else e(0), e(V) if need_db and chunked else e(0),
            e(0 if chunked else N), e(0 if chunked else N), e(0, dtype=torch.int64) if chunked else _dynamic_rows())


def _fl_setup(ctx, inputs, output):
    (hidden, weight, bias, targets, _adv, _mask, _w, _old, _ref, _beta, _eps_low, _eps_high, ctx.temperature, _backend,
     ctx.strategy, _chunk, _entropy, _need_dh, _need_dw, _need_db) = inputs
    ctx.used = False
    if ctx.strategy == "onchip":
        ctx.save_for_backward(hidden, weight, bias, targets, output[8], output[6], output[7])
    else:
        ctx.save_for_backward(*output[3:6])
        ctx.dtypes = (weight.dtype, None if bias is None else bias.dtype)


def _fl_backward(ctx, _g_logp, g_terms, *_rest):
    if ctx.used:
        raise RuntimeError("fused_linear_grpo_loss: backward called twice on one forward (its gradients are "
                           "computed in the forward and handed over once); run the loss again instead")
    ctx.used = True
    nones = (None,) * 17   # hidden, weight, bias get gradients; the 17 other inputs none
    g = g_terms[0, :1].sum()    # terms[0] reaches the caller only as its sum: one upstream gradient for all
    if ctx.strategy == "onchip":
        h, w, b, targets, idx, lse, dlogp = ctx.saved_tensors
        need = ctx.needs_input_grad[:3]
        dh, dw, db = kernels("fused_linear").grad_bwd(
            _pick(h, idx).contiguous(), w.contiguous(), b, _pick(targets, idx), _pick(lse, idx),
            _pick(dlogp, idx) * (g / ctx.temperature), temperature=ctx.temperature, need_dh=need[0], need_dw=need[1],
            need_db=need[2] and b is not None)
        return (None if dh is None else _spread(dh.to(h.dtype), idx, h.shape[0]), None if dw is None else dw.to(w.dtype),
                None if db is None else db.to(b.dtype), *nones)
    dh, dw, db = ctx.saved_tensors   # those of grad_output = 1: scaled in place (the op's own buffers)
    w_dt, b_dt = ctx.dtypes
    return (dh.mul_(g) if dh.numel() else None, dw.mul_(g).to(w_dt) if dw.numel() else None,
            db.mul_(g).to(b_dt) if db.numel() else None, *nones)


fused_linear_grpo_fwd.register_autograd(_fl_backward, setup_context=_fl_setup)


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
    default_chunk_size).  strategy: see the module docstring (None: the
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
    """The chunk engine or the on-chip path as one custom op, on the unmasked tokens only."""
    B, T, _ = hidden.shape
    o, acc = a.opts, acc_dtype(hidden)   # float64 hidden: the PyTorch row math then runs in float64 throughout
    w_N = grpo_math.token_weights(a.mask_N.view(B, T).to(acc), o.loss_agg, o.max_len).reshape(-1)
    cast = lambda t: None if t is None else t.to(acc)  # noqa: E731
    grad = torch.is_grad_enabled()
    need = [grad and t is not None and t.requires_grad for t in (hidden, weight, bias)]
    logp, terms, ent, *_ = fused_linear_grpo_fwd(
        hidden.flatten(0, 1), weight, bias, a.targets_N, cast(a.adv_N), cast(a.mask_N), w_N, cast(a.old_N),
        cast(a.ref_N), o.beta, o.eps_low, o.eps_high, o.temperature, p.backend, p.strategy, chunk_size or 0, entropy,
        *need)
    means = grpo_math.term_means(terms.detach().sum(1).float(), a.mask_N.sum())
    return terms[0].sum(), GRPOStats(logp=logp.detach().float().view(B, T),
                                     entropy=ent.float().view(B, T) if entropy else None, **means)


# ---------------------------------------------------------------------------------------------
# log-probs and entropy
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("r1core::fused_linear_logprobs", mutates_args=())
def fused_linear_logprobs_op(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                             t_N: torch.Tensor, temperature: float, chunk: int, name: str) -> torch.Tensor:
    """hidden [N, H] -> log-probs [N] float32 (0 where the target is negative), chunk by chunk."""
    logp, r = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device), rows(name)

    def visit(x, s, e):
        logp[s:e] = r.logprobs(x[None], t_N[s:e], temperature)
        return False
    run_chunks(hidden, weight, bias, _chunk(chunk, hidden.shape[0], weight.shape[0], hidden), visit)
    return logp


@fused_linear_logprobs_op.register_fake
def _(hidden, weight, bias, t_N, temperature, chunk, name):
    return torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)


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
    with nvtx_range("fused_linear_logprobs"), torch.no_grad():
        V = check_linear(hidden, weight, bias, chunk_size)
        B, T, _ = hidden.shape
        t_N = check_targets(targets, B, T, hidden.device, "hidden")
        temperature = check_temperature(temperature)
        ok = target_range_token(t_N, t_N >= 0, V, T)   # negative targets are ignored, not checked
        p = plan(hidden, backend, strategy, need_grad=False, op=FUSED_LINEAR_LOGPROBS)
        h_NH, w = hidden.detach().flatten(0, 1), weight.detach()
        b = None if bias is None else bias.detach()
        if p.strategy == "reference":
            logp = logprobs_op(torch.nn.functional.linear(hidden, weight, bias), t_N, temperature, "torch", False)[0]
        elif p.strategy == "onchip":
            lse, x_t = kernels("fused_linear").lse_fwd(h_NH.contiguous(), w.contiguous(), b, t_N, temperature=temperature)
            logp = torch.where(t_N >= 0, x_t - lse, 0.0).float()
        else:
            logp = fused_linear_logprobs_op(h_NH, w, b, t_N, temperature, chunk_size or 0, p.backend)
        return (logp if ok is None else logp * ok).view(B, T)


@torch.library.custom_op("r1core::fused_linear_logp_entropy_fwd", mutates_args=())
def fused_linear_logp_entropy_fwd(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor],
                                  t_N: torch.Tensor, m_N: torch.Tensor, temperature: float, chunk: int,
                                  name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """hidden [N, H] -> (logp, entropy, lse) [N] (float32; float64 for float64), 0 on rows with m == 0, and the
    rows with m != 0 [n] (for the backward)."""
    N, idx, r = hidden.shape[0], _live(m_N), rows(name)
    h, t = _pick(hidden, idx), _pick(t_N, idx)
    n, acc = h.shape[0], acc_dtype(hidden)
    logp, lse, ent = (torch.empty(n, dtype=acc, device=h.device) for _ in range(3))
    ones = torch.ones(n, dtype=torch.float32, device=h.device)

    def visit(x, s, e):
        logp[s:e], lse[s:e], ent[s:e] = r.logp_lse(x[None], t[s:e], ones[s:e], temperature, entropy=True)
        return False
    run_chunks(h, weight, bias, _chunk(chunk, n, weight.shape[0], h), visit)
    return (*(_spread(x, idx, N) for x in (logp, ent, lse)), idx)


@fused_linear_logp_entropy_fwd.register_fake
def _(hidden, weight, bias, t_N, m_N, temperature, chunk, name):
    return (*(torch.empty(hidden.shape[0], dtype=acc_dtype(hidden), device=hidden.device) for _ in range(3)),
            _dynamic_rows())


@torch.library.custom_op("r1core::fused_linear_logp_entropy_bwd", mutates_args=())
def _fl_logp_entropy_bwd(hidden: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], t_N: torch.Tensor,
                         idx: torch.Tensor, lse: torch.Tensor, ent: torch.Tensor, g_logp: torch.Tensor,
                         g_ent: Optional[torch.Tensor], temperature: float, chunk: int, name: str, need_dh: bool,
                         need_dw: bool, need_db: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The recompute backward: run_chunks again, Rows.bwd with dL/dlogp and dL/dH -> [dh [N, H] | [0],
    dw [V, H] | [0] (weight's dtype), db [V] | [0]]."""
    N, r = hidden.shape[0], rows(name)
    h, t, lse, ent, g_logp, g_ent = (_pick(x, idx) for x in (hidden, t_N, lse, ent, g_logp, g_ent))
    g_logp = g_logp.to(lse.dtype).contiguous()
    g_ent = None if g_ent is None else g_ent.to(lse.dtype).contiguous()

    def visit(x, s, e):   # the logits recomputed: dL/dlogp was unknown in the forward
        r.bwd(x[None], t[s:e], lse[s:e], g_logp[s:e], temperature, True, None if g_ent is None else ent[s:e],
              None if g_ent is None else g_ent[s:e])
        return True
    dh, dw, db = run_chunks(h, weight, bias, _chunk(chunk, h.shape[0], weight.shape[0], h), visit, need_dh=need_dh,
                            need_dw=need_dw, need_db=need_db)
    return (_empty(hidden) if dh is None else _spread(dh, idx, N), _empty(weight) if dw is None else dw.to(weight.dtype),
            _empty(hidden) if db is None else db.to(bias.dtype))


@_fl_logp_entropy_bwd.register_fake
def _(hidden, weight, bias, t_N, idx, lse, ent, g_logp, g_ent, temperature, chunk, name, need_dh, need_dw, need_db):
    e = lambda like, *shape: torch.empty(shape, dtype=like.dtype, device=like.device)  # noqa: E731
    return (e(hidden, *hidden.shape) if need_dh else e(hidden, 0), e(weight, *weight.shape) if need_dw else e(weight, 0),
            e(bias, *bias.shape) if need_db else e(hidden, 0))


def _fl_logp_entropy_setup(ctx, inputs, output):
    hidden, weight, bias, t_N, m_N, ctx.temperature, ctx.chunk, ctx.name = inputs
    ctx.save_for_backward(hidden, weight, bias, t_N, output[3], output[2], output[1])


def _fl_logp_entropy_backward(ctx, g_logp, g_ent, _g_lse, _g_idx):
    h, w, b, t_N, idx, lse, ent = ctx.saved_tensors
    need = ctx.needs_input_grad
    g_logp = torch.zeros_like(lse) if g_logp is None else g_logp
    dh, dw, db = _fl_logp_entropy_bwd(h, w, b, t_N, idx, lse, ent, g_logp, g_ent, ctx.temperature, ctx.chunk, ctx.name,
                                      need[0], need[1], need[2] and b is not None)
    return (dh if need[0] else None, dw if need[1] else None, db if need[2] and b is not None else None,
            None, None, None, None, None)


fused_linear_logp_entropy_fwd.register_autograd(_fl_logp_entropy_backward, setup_context=_fl_logp_entropy_setup)


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
        ok = target_range_token(t_N, m_N, V, T)
        name = FUSED_LINEAR_LOGP_ENTROPY.choose(hidden, backend, arg="hidden")
        logp, H = _logp_entropy(hidden, weight, bias, t_N, m_N, temperature, chunk_size, name)
        return (logp if ok is None else logp * ok), H


def _logp_entropy(hidden, weight, bias, t_N, m_N, temperature: float, chunk_size, name: str):
    """fused_linear_logp_entropy on checked arguments (the general path of fused_linear_grpo_loss calls
    it after its own checks, so they run once per call)."""
    B, T, _ = hidden.shape
    with torch.autocast(hidden.device.type, enabled=False):
        logp, ent, _, _ = fused_linear_logp_entropy_fwd(hidden.flatten(0, 1), weight, bias, t_N, m_N, temperature,
                                                     chunk_size or 0, name)
    return logp.view(B, T), ent.view(B, T)
