"""MoE routing and experts (SPEC §4): validation, backend dispatch, autograd.

Legend: T tokens, H hidden, I expert intermediate size, E experts, k experts per token.

    moe_route(router_logits [T, E], top_k, ...) -> (weights [T, k] float32, ids [T, k] int64)
    moe_experts(x [T, H], w13 [E, 2I, H], w2 [E, H, I], weights [T, k], ids [T, k]) -> y [T, H]

Backends (SPEC §6):
  moe_route    "torch" (r1core.ref.moe), "triton" (kernels/moe_route.py; backward in PyTorch)
  moe_experts  "torch" (the transformers-style expert loop), "cpp" (CPU: tokens sorted by expert
               with the C++ counting sort, one fused gate/up matmul and one down matmul per
               non-empty expert), "triton" (grouped GEMMs over the permuted tokens, forward and
               backward; the permutation runs as the CUDA kernel of r1core._C when the extension has
               CUDA, else in PyTorch)
"""
from __future__ import annotations

import torch

from r1core import _backend
from r1core._nvtx import nvtx_range
from r1core.ref import moe as ref

ROUTE_BACKENDS = ("torch", "triton")
EXPERTS_BACKENDS = ("torch", "cpp", "triton")


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
def _check_route_args(router_logits, top_k, scoring, n_group, topk_group, correction_bias, replay_ids):
    if not isinstance(router_logits, torch.Tensor) or router_logits.dim() != 2:
        raise ValueError(f"router_logits must be a [T, E] tensor, got "
                         f"{tuple(router_logits.shape) if isinstance(router_logits, torch.Tensor) else type(router_logits)}")
    if not router_logits.is_floating_point():
        raise TypeError(f"router_logits must be a float tensor, got {router_logits.dtype}")
    T, E = router_logits.shape
    if scoring not in ref.SCORINGS:
        raise ValueError(f"scoring must be one of {ref.SCORINGS}, got {scoring!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or not 1 <= top_k <= E:
        raise ValueError(f"top_k must be an int in [1, E={E}], got {top_k!r}")
    if isinstance(n_group, bool) or not isinstance(n_group, int) or n_group < 1 or E % n_group:
        raise ValueError(f"n_group must be a positive int dividing E={E}, got {n_group!r}")
    if isinstance(topk_group, bool) or not isinstance(topk_group, int) or not 1 <= topk_group <= n_group:
        raise ValueError(f"topk_group must be an int in [1, n_group={n_group}], got {topk_group!r}")
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
        if not isinstance(correction_bias, torch.Tensor) or tuple(correction_bias.shape) != (E,):
            raise ValueError(f"correction_bias must be a [E={E}] tensor, got "
                             f"{getattr(correction_bias, 'shape', type(correction_bias))}")
        if correction_bias.device != router_logits.device:
            raise ValueError(f"correction_bias is on {correction_bias.device}, router_logits on {router_logits.device}")
    if replay_ids is not None:
        _check_ids(replay_ids, T, top_k, E, router_logits.device, "replay_ids")


def _check_ids(ids, T, k, E, device, name="ids"):
    if not isinstance(ids, torch.Tensor) or ids.dtype.is_floating_point or ids.dtype in (torch.bool, torch.complex64):
        raise TypeError(f"{name} must be an integer tensor, got {getattr(ids, 'dtype', type(ids))}")
    if tuple(ids.shape) != (T, k):
        raise ValueError(f"{name} must have shape [T, k] = [{T}, {k}], got {tuple(ids.shape)}")
    if ids.device != device:
        raise ValueError(f"{name} is on {ids.device}, expected {device}")
    if ids.numel():
        lo, hi = torch.aminmax(ids)  # one host sync: bad ids would read out of bounds in a kernel
        lo, hi = int(lo), int(hi)
        if lo < 0 or hi >= E:
            raise ValueError(f"{name} must lie in [0, E={E}), got values in [{lo}, {hi}]")


def _check_experts_args(x, w13, w2, weights, ids):
    for name, t in (("x", x), ("w13", w13), ("w2", w2), ("weights", weights)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"{name} must be a tensor, got {type(t)}")
        if not t.is_floating_point():
            raise TypeError(f"{name} must be a float tensor, got {t.dtype}")
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
    _check_ids(ids, T, weights.shape[1], E, x.device)


# ---------------------------------------------------------------------------------------------
# routing
# ---------------------------------------------------------------------------------------------
def moe_route(router_logits: torch.Tensor, top_k: int, *, scoring: str = "softmax", n_group: int = 1,
              topk_group: int = 1, correction_bias: torch.Tensor | None = None, norm_topk: bool = True,
              routed_scale: float = 1.0, replay_ids: torch.Tensor | None = None, backend: str | None = None):
    """Choose and weigh top_k experts per token (SPEC §4) -> (weights [T, k] float32, ids [T, k] int64).

    scoring "softmax" (Qwen3-MoE, Mixtral) or "sigmoid" (DeepSeek-V3, with correction_bias and the
    group-limited choice n_group/topk_group).  replay_ids [T, k] (routing replay): keep exactly these
    experts and recompute their weights from the router scores with the same normalisation.
    Differentiable in router_logits through the kept weights; ids never carry gradient.
    """
    _check_route_args(router_logits, top_k, scoring, n_group, topk_group, correction_bias, replay_ids)
    name = _backend.resolve("moe_route", router_logits.device, backend, implemented=ROUTE_BACKENDS,
                            gpu_order=("triton", "torch"))
    with nvtx_range(f"moe_route[{name}]"):
        if name == "torch":
            w, ids = ref.moe_route_ref(router_logits, top_k, scoring=scoring, n_group=n_group,
                                       topk_group=topk_group, correction_bias=correction_bias,
                                       norm_topk=norm_topk, routed_scale=routed_scale, replay_ids=replay_ids)
            return (w if w.dtype == torch.float64 else w.float()), ids
        from r1core.ops import _moe_triton  # noqa: PLC0415 (imports Triton)
        return _moe_triton.route(router_logits, top_k, scoring=scoring, n_group=n_group, topk_group=topk_group,
                                 correction_bias=correction_bias, norm_topk=norm_topk,
                                 routed_scale=float(routed_scale), replay_ids=replay_ids)


# ---------------------------------------------------------------------------------------------
# experts
# ---------------------------------------------------------------------------------------------
def moe_experts(x: torch.Tensor, w13: torch.Tensor, w2: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor,
                *, backend: str | None = None) -> torch.Tensor:
    """y[t] = sum_j weights[t, j] * w2[e] @ (silu(w13[e, :I] @ x[t]) * (w13[e, I:] @ x[t])), e = ids[t, j].

    Differentiable in x, w13, w2 and weights; experts without tokens cost nothing and get zero
    gradient.  y has x's dtype.  Ids outside [0, E) raise ValueError (checked with one host sync).
    """
    _check_experts_args(x, w13, w2, weights, ids)
    name = _backend.resolve("moe_experts", x.device, backend, implemented=EXPERTS_BACKENDS,
                            gpu_order=("triton", "torch"))
    with nvtx_range(f"moe_experts[{name}]"):
        if name == "torch":
            return ref.moe_experts_ref(x, w13, w2, weights, ids)
        if name == "cpp":
            from r1core.ops import _moe_cpu  # noqa: PLC0415
            return _moe_cpu.experts(x, w13, w2, weights, ids)
        from r1core.ops import _moe_triton  # noqa: PLC0415
        return _moe_triton.experts(x, w13, w2, weights, ids)
