"""MoE routing and experts (docs/spec.md §4): validation, backend dispatch, autograd.

Legend: T tokens, H hidden, I expert intermediate size, E experts, k experts per token.

    moe_route(router_logits [T, E], top_k, ...) -> (weights [T, k] float32, ids [T, k] int64)
    moe_experts(x [T, H], w13 [E, 2I, H], w2 [E, H, I], weights [T, k], ids [T, k]) -> y [T, H]

Backends (docs/spec.md §6):
  moe_route    "torch" (r1core.ref.moe), "triton" (kernels/moe_route.py; backward in PyTorch)
  moe_experts  "torch" (the transformers-style expert loop, _moe_torch.py), "cpp" (CPU: tokens sorted by expert
               with the C++ counting sort, one fused gate/up matmul and one down matmul per
               non-empty expert), "triton" (grouped GEMMs over the permuted tokens, forward and
               backward; the permutation runs as the CUDA kernel of r1core._C when the extension has
               CUDA, else in PyTorch)
"""
from __future__ import annotations

from typing import Optional

import torch

from r1core._backend import Op
from r1core._nvtx import nvtx_range
from r1core.ops import _args, _moe_cpu, _moe_torch, _moe_triton
from r1core.ref import moe as ref

MOE_ROUTE = Op("moe_route", gpu_order=("triton", "torch"))
MOE_EXPERTS = Op("moe_experts", gpu_order=("triton", "torch"),
                 needs={"cpp": ("moe_experts_fwd_cpu", "moe_experts_bwd_cpu")})


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _check_route_args(router_logits, top_k, scoring, n_group, topk_group, correction_bias, replay_ids):
    _args.tensor(router_logits, "router_logits", "of shape [T, E]")
    _args.shape(router_logits, "router_logits", 2, what="[T, E]")
    _args.floating(router_logits, "router_logits")
    T, E = router_logits.shape
    _args.choice(scoring, "scoring", ref.SCORINGS)
    _args.integer_value(top_k, "top_k", low=1, high=E)
    n_group = _args.integer_value(n_group, "n_group", low=1)
    if E % n_group:
        raise ValueError(f"n_group must be a positive int dividing E={E}, got {n_group!r}")
    _args.integer_value(topk_group, "topk_group", low=1, high=n_group)
    if n_group > 1:
        if topk_group * (E // n_group) < top_k:
            raise ValueError(f"top_k={top_k} exceeds the experts left by topk_group={topk_group} groups of "
                             f"{E // n_group}")
        if correction_bias is not None and E // n_group < 2:
            raise ValueError("a group score with correction_bias sums a group's two best experts: "
                             f"groups need >= 2 experts, got E/n_group = {E // n_group}")
    if correction_bias is not None:
        if scoring != "sigmoid":
            raise ValueError("correction_bias is DeepSeek-V3's sigmoid-scoring bias: use scoring='sigmoid'")
        _args.tensor(correction_bias, "correction_bias", f"of shape [E={E}]")
        _args.shape(correction_bias, "correction_bias", (E,), what=f"[E={E}]")
        _args.device(correction_bias, "correction_bias", router_logits.device, "router_logits'")
    if replay_ids is not None:
        _check_ids_static(replay_ids, T, top_k, router_logits.device, "replay_ids")
    if not torch.compiler.is_compiling():
        _check_route_data(router_logits, correction_bias, replay_ids, E)
        return None
    # torch.compile: the data-dependent checks as a custom op whose 1.0 token the caller multiplies in
    return _checked_route(router_logits.detach(), None if correction_bias is None else correction_bias.detach(),
                          replay_ids, E)


def _check_route_data(router_logits, correction_bias, replay_ids, E: int) -> None:
    if replay_ids is not None:
        _check_ids_range(replay_ids, E, "replay_ids")
    _check_route_values(router_logits, correction_bias, replay_ids)


@torch.library.custom_op("r1core::check_moe_route", mutates_args=())
def _checked_route(router_logits: torch.Tensor, correction_bias: Optional[torch.Tensor],
                   replay_ids: Optional[torch.Tensor], E: int) -> torch.Tensor:
    """moe_route's data-dependent checks as an opaque op for torch.compile -> a 0-d float32 1.0."""
    _check_route_data(router_logits, correction_bias, replay_ids, E)
    return torch.ones((), dtype=torch.float32, device=router_logits.device)


@_checked_route.register_fake
def _(router_logits, correction_bias, replay_ids, E):
    return torch.empty((), dtype=torch.float32, device=router_logits.device)


def _check_route_values(router_logits, correction_bias, replay_ids):
    """NaN or +inf router logits (NaN weights and arbitrary ids otherwise; -inf, an expert switched
    off, is allowed), a non-finite correction_bias, and a token whose replay_ids name one expert
    twice: ValueError, with one host sync for all (skipped with R1CORE_SKIP_CHECKS=1)."""
    if not _args.checks_on() or not router_logits.numel():
        return
    flags = [(torch.isnan(router_logits) | (router_logits == float("inf"))).any()]
    flags.append(~torch.isfinite(correction_bias).all() if correction_bias is not None else flags[0].new_zeros(()))
    if replay_ids is not None and replay_ids.shape[1] > 1:
        s = replay_ids.sort(dim=1).values
        dup_T = (s[:, 1:] == s[:, :-1]).any(dim=1)
        flags.append(dup_T.any())
    flags = torch.stack(flags)
    if not bool(flags.any()):      # the one sync
        return
    which = int(flags.to(torch.uint8).argmax())
    if which == 0:
        t = int((torch.isnan(router_logits) | (router_logits == float("inf"))).any(dim=1).nonzero()[0, 0])
        raise ValueError(f"router_logits must hold no NaN or +inf (-inf switches an expert off), found one in row {t}")
    if which == 1:
        raise ValueError("correction_bias must be finite, found NaN or inf")
    t = int(dup_T.nonzero()[0, 0])
    raise ValueError(f"replay_ids must name k distinct experts per token, token {t} has {replay_ids[t].tolist()}")


def _check_ids(ids, T, k, E, device, name="ids"):
    """Shape and dtype, then the range: eagerly (-> None), or under torch.compile as a custom op whose
    1.0 token the caller multiplies into its result (-> the token)."""
    _check_ids_static(ids, T, k, device, name)
    if not torch.compiler.is_compiling():
        _check_ids_range(ids, E, name)
        return None
    return _checked_ids(ids, E, name)   # always, as eagerly: a bad id would read out of bounds


@torch.library.custom_op("r1core::check_moe_ids", mutates_args=())
def _checked_ids(ids: torch.Tensor, E: int, name: str) -> torch.Tensor:
    _check_ids_range(ids, E, name)
    return torch.ones((), dtype=torch.float32, device=ids.device)


@_checked_ids.register_fake
def _(ids, E, name):
    return torch.empty((), dtype=torch.float32, device=ids.device)


def _check_ids_static(ids, T, k, device, name):
    _args.integer(_args.tensor(ids, name, "of shape [T, k]"), name)
    if tuple(ids.shape) != (T, k):
        raise ValueError(f"{name} must have shape [T, k] = [{T}, {k}], got {tuple(ids.shape)}")
    if ids.device != device:
        raise ValueError(f"{name} is on {ids.device}, expected {device}")


def _check_ids_range(ids, E, name):
    if ids.numel():
        lo, hi = torch.aminmax(ids)  # one host sync: bad ids would read out of bounds in a kernel
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= E:
            raise ValueError(f"{name} must lie in [0, E={E}), got values in [{lo}, {hi}]")


def _check_experts_args(x, w13, w2, weights, ids):
    for name, t in (("x", x), ("w13", w13), ("w2", w2), ("weights", weights)):
        _args.floating(_args.tensor(t, name), name)
    if x.dim() != 2:
        raise ValueError(f"x must be [T, H], got shape {tuple(x.shape)}")
    T, H = x.shape
    if w13.dim() != 3 or w13.shape[2] != H or w13.shape[1] % 2:
        raise ValueError(f"w13 must be [E, 2I, H={H}], got shape {tuple(w13.shape)}")
    E, I = w13.shape[0], w13.shape[1] // 2
    if tuple(w2.shape) != (E, H, I):
        raise ValueError(f"w2 must be [E, H, I] = [{E}, {H}, {I}] to match w13, got shape {tuple(w2.shape)}")
    if weights.dim() != 2 or weights.shape[0] != T:
        raise ValueError(f"weights must be [T={T}, k], got shape {tuple(weights.shape)}")
    if w13.dtype != x.dtype or w2.dtype != x.dtype:
        raise TypeError(f"x, w13 and w2 must share a dtype, got {x.dtype}, {w13.dtype}, {w2.dtype}")
    for name, t in (("w13", w13), ("w2", w2), ("weights", weights)):
        if t.device != x.device:
            raise ValueError(f"{name} is on {t.device}, x on {x.device}")
    return _check_ids(ids, T, weights.shape[1], E, x.device)


# ---------------------------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------------------------
def moe_route(router_logits: torch.Tensor, top_k: int, *, scoring: str = "softmax", n_group: int = 1,
              topk_group: int = 1, correction_bias: torch.Tensor | None = None, norm_topk: bool = True,
              routed_scale: float = 1.0, replay_ids: torch.Tensor | None = None, backend: str | None = None):
    """Choose and weigh top_k experts per token (docs/spec.md §4) -> (weights [T, k] float32, ids [T, k] int64).

    scoring "softmax" (Qwen3-MoE, Mixtral) or "sigmoid" (DeepSeek-V3, with correction_bias and the
    group-limited choice n_group/topk_group).  replay_ids [T, k] (routing replay): keep exactly these
    experts and recompute their weights from the router scores with the same normalisation.
    Differentiable in router_logits through the kept weights; ids never carry gradient.
    """
    ok = _check_route_args(router_logits, top_k, scoring, n_group, topk_group, correction_bias, replay_ids)
    name = MOE_ROUTE.choose(router_logits, backend, arg="router_logits")
    with nvtx_range(f"moe_route[{name}]"):
        w, ids = MOE_ROUTE(name, router_logits, top_k, scoring=scoring, n_group=n_group, topk_group=topk_group,
                           correction_bias=correction_bias, norm_topk=norm_topk, routed_scale=float(routed_scale),
                           replay_ids=replay_ids)
    return (w, ids) if ok is None else (w * ok, ids)


# ---------------------------------------------------------------------------------------------
# experts
# ---------------------------------------------------------------------------------------------
def moe_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                *, backend: str | None = None) -> torch.Tensor:
    """y[t] = sum_j weights[t, j] * w2[e] @ (silu(w13[e, :I] @ x[t]) * (w13[e, I:] @ x[t])), e = ids[t, j].

    Differentiable in x, w13, w2 and weights; experts without tokens cost nothing and get zero
    gradient.  y has x's dtype.  Ids outside [0, E) raise ValueError (checked with one host sync).
    """
    ok = _check_experts_args(x, w13, w2, weights, ids)
    if ok is not None:   # torch.compile: the range check's token feeds the experts, so it runs before them
        weights = weights * ok.to(weights.dtype)
    name = MOE_EXPERTS.choose(x, backend, arg="x")
    with nvtx_range(f"moe_experts[{name}]"):
        return MOE_EXPERTS(name, x, w13, w2, weights, ids)


# ---------------------------------------------------------------------------------------------
# backends (the Triton and C++ ones live in _moe_triton.py / _moe_cpu.py; Triton loads on first use)
# ---------------------------------------------------------------------------------------------
@MOE_ROUTE.impl("torch")
def _route_torch(router_logits, top_k, **kw):
    w, ids = ref.moe_route_ref(router_logits, top_k, **kw)
    return (w if w.dtype == torch.float64 else w.float()), ids


MOE_ROUTE.impl("triton")(_moe_triton.route)
MOE_EXPERTS.impl("torch")(_moe_torch.experts)
MOE_EXPERTS.impl("cpp")(_moe_cpu.experts)
MOE_EXPERTS.impl("triton")(_moe_triton.experts)
