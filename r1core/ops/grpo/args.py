"""The arguments every GRPO loss takes (grpo_loss, logprobs, the fused linear ops), checked once at
the boundary and normalised to flat per-token tensors plus frozen options, so the backends only see
well-formed inputs.  Built from the checkers of r1core.ops._args (TypeError for a wrong type,
ValueError for a bad value, the argument named).

Legend: B sequences, T positions, V vocabulary, N = B·T tokens; `x` is the logits [B, T, V] or, for
the fused linear ops, the hidden states [B, T, H] (then V comes from the lm_head).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch

from r1core.ops import _args
from r1core.ops.grpo.options import LOSS_AGGS

X_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass(frozen=True)
class GRPOOptions:
    """The scalar options of one GRPO loss call, validated."""
    beta: float = 0.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    temperature: float = 1.0
    loss_agg: str = "token_mean"
    max_len: int = 1               # resolved: the caller's max_len, else T


@dataclass(frozen=True)
class GRPOArgs:
    """Normalised inputs: per-token tensors flattened to contiguous [N] on x's device."""
    B: int
    T: int
    V: int
    targets_N: torch.Tensor             # int64
    adv_N: torch.Tensor                 # float32 (a per-sequence advantage repeated over T)
    mask_N: torch.Tensor                # float32 weights (0/1 for a bool mask)
    old_N: torch.Tensor | None          # float32 or None (on-policy)
    ref_N: torch.Tensor | None          # float32 or None
    opts: GRPOOptions


def check_x(x, x_name: str = "logits", *, last_dim_contiguous: bool = True) -> tuple[int, int, int]:
    """The logits [B, T, V] (or hidden [B, T, H]) -> (B, T, last)."""
    _args.tensor(x, x_name, f"of shape [B, T, {'V' if x_name == 'logits' else 'H'}]")
    _args.shape(x, x_name, 3, what=f"[B, T, {'V' if x_name == 'logits' else 'H'}]")
    _args.floating(x, x_name, X_DTYPES, "float32, bfloat16 or float16 (float64 on the torch backend)")
    B, T, last = x.shape
    if last == 0:
        raise ValueError(f"{x_name} must have a non-empty last dimension, got shape {list(x.shape)}")
    if last_dim_contiguous and last > 1 and x.stride(-1) != 1:
        raise ValueError(f"{x_name} must be contiguous in its last dimension (views like logits[:, :-1] "
                         f"are fine), got strides {list(x.stride())}")
    return B, T, last


def check_targets(targets, B: int, T: int, dev: torch.device, x_name: str) -> torch.Tensor:
    """targets [B, T] integer -> contiguous int64 [N]."""
    _args.tensor(targets, "targets", "of shape [B, T]")
    _args.shape(targets, "targets", (B, T), what=f"[B, T] = [{B}, {T}] (from {x_name})")
    _args.integer(targets, "targets")
    _args.device(targets, "targets", dev, f"{x_name}'")
    return targets.detach().reshape(-1).to(torch.int64).contiguous()


def check_target_range(targets_N: torch.Tensor, counts_N: torch.Tensor, V: int, T: int) -> None:
    """ValueError for a target outside [0, V) where it counts (counts_N != 0): one device sync on a
    GPU, skipped with R1CORE_SKIP_CHECKS=1 (such targets then give logp 0, never an out-of-bounds read)."""
    if not _args.checks_on() or not targets_N.numel():
        return
    bad = ((targets_N < 0) | (targets_N >= V)) & (counts_N != 0)
    if bool(bad.any()):
        i = int(bad.nonzero()[0, 0])
        raise ValueError(f"targets must lie in [0, V) = [0, {V}) where the mask is set (negative = ignored "
                         f"by the log-prob ops); targets[{i // T}, {i % T}] = {int(targets_N[i])}")


@torch.library.custom_op("r1core::check_target_range", mutates_args=())
def _checked_targets(targets_N: torch.Tensor, counts_N: torch.Tensor, V: int, T: int) -> torch.Tensor:
    """check_target_range as an opaque op for torch.compile -> a 0-d float32 1.0 for the caller's result."""
    check_target_range(targets_N, counts_N, V, T)
    return torch.ones((), dtype=torch.float32, device=targets_N.device)


@_checked_targets.register_fake
def _(targets_N, counts_N, V, T):
    return torch.empty((), dtype=torch.float32, device=targets_N.device)


def target_range_token(targets_N: torch.Tensor, counts_N: torch.Tensor, V: int, T: int) -> torch.Tensor | None:
    """check_target_range, eagerly (-> None), or under torch.compile as a custom op whose 1.0 token the
    caller multiplies into a result (so the check stays in the graph); None when checks are off."""
    if not torch.compiler.is_compiling():
        check_target_range(targets_N, counts_N, V, T)
        return None
    return _checked_targets(targets_N, counts_N, V, T) if _args.checks_on() else None


def check_values(x, x_name: str, targets_N, counts_N, V: int, T: int, adv_N=None, mask_N=None,
                 max_len: int | None = None, finite: tuple = ()) -> None:
    """The value checks of one GRPO call, after the shape/type checks and with ONE host sync on a
    GPU for all of them (skipped with R1CORE_SKIP_CHECKS=1).  Where a token counts (counts_N != 0):
    a target outside [0, V), non-finite advantages; logits holding NaN or +inf (-inf is a banned
    token: allowed), hidden states holding NaN or ±inf; a mask weight that is negative or not finite;
    a sequence with more counted tokens than `max_len` (Dr. GRPO's constant); `finite`: (name, tensor)
    pairs that must be finite everywhere (the lm_head's weight and bias).  Each is a ValueError naming
    the argument; NaN inputs otherwise give a finite loss with NaN gradients, or a NaN loss."""
    if not _args.checks_on() or not targets_N.numel():
        return
    live = counts_N != 0
    flags = [(((targets_N < 0) | (targets_N >= V)) & live).any()]
    if x_name == "logits":   # one float32 row sum: NaN or +inf anywhere in a row shows in its sum
        s = x.sum(-1, dtype=torch.float32).reshape(-1)
        bad_x = (torch.isnan(s) | (s == float("inf"))) & live
    else:
        bad_x = ~torch.isfinite(x).all(-1).reshape(-1) & live
    flags.append(bad_x.any())
    flags.append((~torch.isfinite(adv_N) & live).any() if adv_N is not None else live.new_zeros(()))
    flags.append(((~torch.isfinite(mask_N)) | (mask_N < 0)).any() if mask_N is not None else live.new_zeros(()))
    n_B = live.view(-1, T).sum(1)
    flags.append((n_B > max_len).any() if max_len is not None else live.new_zeros(()))
    flags += [~torch.isfinite(t).all() for _, t in finite]
    flags = torch.stack(flags)
    if not bool(flags.any()):      # the one sync
        return
    which = int(flags.to(torch.uint8).argmax())
    at = lambda bad: (lambda i: f"[{i // T}, {i % T}]")(int(bad.nonzero()[0, 0]))  # noqa: E731
    if which == 0:
        i = int((((targets_N < 0) | (targets_N >= V)) & live).nonzero()[0, 0])
        raise ValueError(f"targets must lie in [0, V) = [0, {V}) where the mask is set (negative = ignored "
                         f"by the log-prob ops); targets[{i // T}, {i % T}] = {int(targets_N[i])}")
    if which == 1:
        what = "NaN or +inf (-inf, a banned token, is allowed)" if x_name == "logits" else "NaN or inf"
        raise ValueError(f"{x_name} must be finite where the mask is set, found {what} in {x_name}{at(bad_x)}")
    if which == 2:
        raise ValueError(f"advantages must be finite where the mask is set, found "
                         f"{float(adv_N[(~torch.isfinite(adv_N) & live)][0])} at position {at(~torch.isfinite(adv_N) & live)}")
    if which == 3:
        bad = (~torch.isfinite(mask_N)) | (mask_N < 0)
        raise ValueError(f"mask must hold finite weights >= 0 (bool, 0/1 or per-token weights), found "
                         f"{float(mask_N[bad][0])} at mask{at(bad)}")
    if which == 4:
        b = int((n_B > max_len).nonzero()[0, 0])
        raise ValueError(f"max_len must be >= every sequence's count of unmasked tokens (Dr. GRPO's constant "
                         f"normaliser), got max_len={max_len} but sequence {b} has {int(n_B[b])}")
    name = finite[which - 5][0]
    raise ValueError(f"{name} must be finite, found NaN or inf")


@torch.library.custom_op("r1core::check_grpo_values", mutates_args=())
def _checked_values(x: torch.Tensor, targets_N: torch.Tensor, counts_N: torch.Tensor, adv_N: Optional[torch.Tensor],
                    mask_N: Optional[torch.Tensor], finite: list[torch.Tensor], V: int, T: int, max_len: Optional[int],
                    x_name: str, finite_names: str) -> torch.Tensor:
    """check_values as an opaque op for torch.compile (its data-dependent branch cannot be traced) ->
    a 0-d float32 1.0 that the caller multiplies into its result, so the check stays in the graph."""
    names = finite_names.split(",") if finite_names else []
    check_values(x, x_name, targets_N, counts_N, V, T, adv_N, mask_N, max_len, tuple(zip(names, finite)))
    return torch.ones((), dtype=torch.float32, device=x.device)


@_checked_values.register_fake
def _(x, targets_N, counts_N, adv_N, mask_N, finite, V, T, max_len, x_name, finite_names):
    return torch.empty((), dtype=torch.float32, device=x.device)


def checked_token(x, x_name: str, targets_N, counts_N, V: int, T: int, adv_N=None, mask_N=None,
                  max_len: int | None = None, finite: tuple = ()) -> torch.Tensor | None:
    """check_values, eagerly (-> None), or under torch.compile as the custom op above (-> the 1.0 token the
    caller multiplies into a result); None too when R1CORE_SKIP_CHECKS=1."""
    if not torch.compiler.is_compiling():
        check_values(x, x_name, targets_N, counts_N, V, T, adv_N, mask_N, max_len, finite)
        return None
    if not _args.checks_on():
        return None
    # detached: the check is no function of the inputs autograd should differentiate
    return _checked_values(x.detach(), targets_N, counts_N, adv_N, mask_N, [t.detach() for _, t in finite], V, T,
                           max_len, x_name, ",".join(n for n, _ in finite))


def _per_token(t, name: str, B: int, T: int, dev: torch.device, x_name: str) -> torch.Tensor | None:
    """None, or a [B, T] floating tensor -> contiguous float32 [N]."""
    if t is None:
        return None
    _args.tensor(t, name, f"of shape [B, T] = [{B}, {T}]")
    _args.shape(t, name, (B, T), what=f"[B, T] = [{B}, {T}]")
    _args.floating(t, name)
    _args.device(t, name, dev, f"{x_name}'")
    return t.detach().to(torch.float32).reshape(-1).contiguous()


def check_temperature(temperature) -> float:
    return _args.real(temperature, "temperature", low=0.0, open_low=True)


def grpo_args(x, targets, advantages, mask=None, *, old_logp=None, ref_logp=None, beta=0.0, eps_low=0.2,
              eps_high=0.2, temperature=1.0, loss_agg="token_mean", max_len=None, vocab_size: int | None = None,
              x_name: str = "logits", last_dim_contiguous: bool = True, finite: tuple = ()) -> GRPOArgs:
    """Check and normalise the arguments of a GRPO loss on `x` (vocab_size: the lm_head's V for the
    fused linear ops, else x's last dimension; finite: (name, tensor) pairs that must hold no NaN/inf,
    checked in the same sync as the values of `x`, see check_values)."""
    B, T, last = check_x(x, x_name, last_dim_contiguous=last_dim_contiguous)
    V = last if vocab_size is None else int(vocab_size)
    dev = x.device
    targets_N = check_targets(targets, B, T, dev, x_name)

    _args.tensor(advantages, "advantages", "of shape [B] or [B, T]")
    _args.shape(advantages, "advantages", (B,), (B, T), what=f"[B] = [{B}] or [B, T] = [{B}, {T}]")
    _args.floating(advantages, "advantages")
    _args.device(advantages, "advantages", dev, f"{x_name}'")
    adv = advantages.detach().to(torch.float32)
    adv_N = (adv[:, None].expand(B, T) if adv.dim() == 1 else adv).reshape(-1).contiguous()

    if mask is None:
        mask_N = torch.ones(B * T, dtype=torch.float32, device=dev)
    else:
        _args.tensor(mask, "mask", "of shape [B, T] or None")
        _args.shape(mask, "mask", (B, T), what=f"[B, T] = [{B}, {T}]")
        if mask.is_complex():
            raise TypeError(f"mask must be bool or real 0/1 numbers, got {mask.dtype}")
        _args.device(mask, "mask", dev, f"{x_name}'")
        mask_N = mask.detach().to(torch.float32).reshape(-1).contiguous()
    old_N = _per_token(old_logp, "old_logp", B, T, dev, x_name)
    ref_N = _per_token(ref_logp, "ref_logp", B, T, dev, x_name)

    beta = _args.real(beta, "beta", low=0.0)
    if beta > 0 and ref_N is None:
        raise ValueError("ref_logp is required when beta > 0 (the k3 KL needs the reference log-probs)")
    # eps_low > 1 would put the lower clip bound 1 - eps_low below 0, where no ratio can reach it
    opts = GRPOOptions(beta=beta, eps_low=_args.real(eps_low, "eps_low", low=0.0, high=1.0),
                       eps_high=_args.real(eps_high, "eps_high", low=0.0), temperature=check_temperature(temperature),
                       loss_agg=_args.choice(loss_agg, "loss_agg", LOSS_AGGS),
                       max_len=T if max_len is None else _args.integer_value(max_len, "max_len", low=1))
    ok = checked_token(x, x_name, targets_N, mask_N, V, T, adv_N, mask_N,
                       max_len=max_len if opts.loss_agg == "seq_mean_token_sum_norm" and max_len is not None else None,
                       finite=finite)
    if ok is not None:       # torch.compile: the checks' token joins the graph through the mask
        mask_N = mask_N * ok
    return GRPOArgs(B=B, T=T, V=V, targets_N=targets_N, adv_N=adv_N, mask_N=mask_N, old_N=old_N, ref_N=ref_N,
                    opts=opts)


def check_linear(hidden, weight, bias, chunk_size) -> int:
    """The fused linear ops' hidden [B, T, H], lm_head weight [V, H], bias [V] and chunk_size -> V
    (grpo_args checks the rest)."""
    _args.tensor(hidden, "hidden", "of shape [B, T, H]")
    _args.shape(hidden, "hidden", 3, what="[B, T, H]")
    _args.tensor(weight, "weight", "(the [V, H] lm_head weight)")
    if weight.dim() != 2 or weight.shape[1] != hidden.shape[-1]:
        raise ValueError(f"weight must have shape [V, H] with H = hidden.shape[-1] = {hidden.shape[-1]}, "
                         f"got {list(weight.shape)}")
    V, H = weight.shape
    if V == 0 or H == 0:
        raise ValueError(f"weight must be non-empty, got shape {list(weight.shape)}")
    if weight.dtype != hidden.dtype:
        raise TypeError(f"weight must have the hidden states' dtype {hidden.dtype}, got {weight.dtype} "
                        f"(cast one of them, e.g. both to float32 for an fp32 lm_head)")
    _args.device(weight, "weight", hidden.device, "hidden states'")
    if bias is not None:
        _args.tensor(bias, "bias", f"of shape [V] = [{V}] or None")
        _args.shape(bias, "bias", (V,), what=f"[V] = [{V}]")
        if bias.dtype != hidden.dtype:
            raise TypeError(f"bias must have the hidden states' dtype {hidden.dtype}, got {bias.dtype}")
        _args.device(bias, "bias", hidden.device, "hidden states'")
    if chunk_size is not None:
        _args.integer_value(chunk_size, "chunk_size", low=1)
    return V
