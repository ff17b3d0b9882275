"""The fused GRPO loss on logits (SPEC §2): argument checks, dispatch and the autograd Function.

Legend: B sequences, T positions, V vocabulary, N = B·T tokens (rows of logits).

`check_grpo_args` validates and normalises every argument once, at the boundary, into flat [N]
float32 per-token tensors plus a frozen `GRPOOptions`; the fused linear loss (r1core.ops.fused_linear)
shares it.  The backends (torch reference, Triton, C++) then only see well-formed inputs.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass

import torch

from r1core._backend import ENV_VAR, ext, kernels, resolve
from r1core._nvtx import nvtx_range
from r1core.ref.grpo_loss import LOSS_AGGS, GRPOStats, grpo_loss_ref, logprobs_ref

# loss_agg string -> the constexpr int the kernels branch on (Liger's pattern)
LOSS_AGG_IDS = {name: i for i, name in enumerate(LOSS_AGGS)}
SKIP_CHECKS_ENV = "R1CORE_SKIP_CHECKS"  # "1": skip the check that costs a device sync (target range)
LOGITS_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)


@dataclass(frozen=True)
class GRPOOptions:
    """The scalar options of one GRPO loss call, validated (see check_grpo_args)."""
    beta: float = 0.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    temperature: float = 1.0
    loss_agg: str = "token_mean"
    max_len: int = 1               # resolved: the caller's max_len, else T
    has_old: bool = False          # old_logp given (else on-policy: ratio == 1)
    has_ref: bool = False          # ref_logp given (KL computed; enters the loss when beta > 0)

    @property
    def agg_id(self) -> int:
        return LOSS_AGG_IDS[self.loss_agg]


@dataclass(frozen=True)
class GRPOArgs:
    """Normalised inputs: per-token tensors flattened to contiguous [N] on the logits' device."""
    B: int
    T: int
    V: int
    targets_N: torch.Tensor             # int64
    adv_N: torch.Tensor                 # float32 (a per-sequence advantage repeated over T)
    mask_N: torch.Tensor                # float32 weights (0/1 for a bool mask)
    old_N: torch.Tensor | None          # float32 or None (on-policy)
    ref_N: torch.Tensor | None          # float32 or None
    opts: GRPOOptions

    @property
    def N(self) -> int:
        return self.B * self.T


def _real(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.requires_grad:
            value = value.item()
        else:
            raise ValueError(f"{name} must be a real number, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    return value


def _per_token(t, name: str, B: int, T: int, device: torch.device) -> torch.Tensor | None:
    """A [B, T] floating tensor -> contiguous float32 [N]."""
    if t is None:
        return None
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a tensor of shape [B, T] = [{B}, {T}], got {type(t).__name__}")
    if tuple(t.shape) != (B, T):
        raise ValueError(f"{name} must have shape [B, T] = [{B}, {T}], got {list(t.shape)}")
    if not t.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {t.dtype}")
    if t.device != device:
        raise ValueError(f"{name} must be on the logits' device {device}, got {t.device}")
    return t.detach().to(torch.float32).reshape(-1).contiguous()


def check_grpo_args(x: torch.Tensor, targets: torch.Tensor, advantages: torch.Tensor,
                    mask: torch.Tensor | None = None, *, old_logp=None, ref_logp=None,
                    beta: float = 0.0, eps_low: float = 0.2, eps_high: float = 0.2,
                    temperature: float = 1.0, loss_agg: str = "token_mean", max_len: int | None = None,
                    vocab_size: int | None = None, x_name: str = "logits",
                    last_dim_contiguous: bool = True, check_targets: bool | None = None) -> GRPOArgs:
    """Validate the arguments of grpo_loss (or of the fused linear loss, with `x` the hidden states
    [B, T, H], `x_name="hidden"` and `vocab_size` the lm_head's V) and normalise them.

    Raises ValueError naming the argument.  `check_targets` (default: unless the environment
    variable R1CORE_SKIP_CHECKS=1) checks that unmasked targets lie in [0, V): one device sync on GPU.
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{x_name} must be a tensor, got {type(x).__name__}")
    if x.dim() != 3:
        raise ValueError(f"{x_name} must have shape [B, T, {'V' if vocab_size is None else 'H'}], "
                         f"got {list(x.shape)}")
    if x.dtype not in LOGITS_DTYPES:
        raise ValueError(f"{x_name} must be float32, bfloat16 or float16 (float64 on the torch backend), "
                         f"got {x.dtype}")
    B, T, last = x.shape
    V = last if vocab_size is None else int(vocab_size)
    if V <= 0 or last <= 0:
        raise ValueError(f"{x_name} must have a non-empty last dimension, got shape {list(x.shape)}")
    if last_dim_contiguous and last > 1 and x.stride(-1) != 1:
        raise ValueError(f"{x_name} must be contiguous in its last dimension (views like logits[:, :-1] "
                         f"are fine), got strides {list(x.stride())}")
    device = x.device

    if not isinstance(targets, torch.Tensor):
        raise ValueError(f"targets must be a tensor of shape [B, T], got {type(targets).__name__}")
    if tuple(targets.shape) != (B, T):
        raise ValueError(f"targets must have shape [B, T] = [{B}, {T}] (from {x_name}), got {list(targets.shape)}")
    if targets.is_floating_point() or targets.is_complex() or targets.dtype == torch.bool:
        raise ValueError(f"targets must be an integer tensor, got {targets.dtype}")
    if targets.device != device:
        raise ValueError(f"targets must be on the {x_name}' device {device}, got {targets.device}")

    if not isinstance(advantages, torch.Tensor):
        raise ValueError(f"advantages must be a tensor of shape [B] or [B, T], got {type(advantages).__name__}")
    if tuple(advantages.shape) not in ((B,), (B, T)):
        raise ValueError(f"advantages must have shape [B] = [{B}] or [B, T] = [{B}, {T}], got {list(advantages.shape)}")
    if not advantages.is_floating_point():
        raise ValueError(f"advantages must be a floating tensor, got {advantages.dtype}")
    if advantages.device != device:
        raise ValueError(f"advantages must be on the {x_name}' device {device}, got {advantages.device}")
    adv = advantages.detach().to(torch.float32)
    adv_N = (adv[:, None].expand(B, T) if adv.dim() == 1 else adv).reshape(-1).contiguous()

    if mask is None:
        mask_N = torch.ones(B * T, dtype=torch.float32, device=device)
    else:
        if not isinstance(mask, torch.Tensor):
            raise ValueError(f"mask must be a tensor of shape [B, T] or None, got {type(mask).__name__}")
        if tuple(mask.shape) != (B, T):
            raise ValueError(f"mask must have shape [B, T] = [{B}, {T}], got {list(mask.shape)}")
        if mask.is_complex():
            raise ValueError(f"mask must be bool or 0/1 numbers, got {mask.dtype}")
        if mask.device != device:
            raise ValueError(f"mask must be on the {x_name}' device {device}, got {mask.device}")
        mask_N = mask.detach().to(torch.float32).reshape(-1).contiguous()

    old_N = _per_token(old_logp, "old_logp", B, T, device)
    ref_N = _per_token(ref_logp, "ref_logp", B, T, device)

    beta = _real(beta, "beta")
    if beta < 0:
        raise ValueError(f"beta must be >= 0, got {beta}")
    if beta > 0 and ref_N is None:
        raise ValueError("ref_logp is required when beta > 0 (the k3 KL needs the reference log-probs)")
    eps_low, eps_high = _real(eps_low, "eps_low"), _real(eps_high, "eps_high")
    if eps_low < 0:
        raise ValueError(f"eps_low must be >= 0, got {eps_low}")
    if eps_high < 0:
        raise ValueError(f"eps_high must be >= 0, got {eps_high}")
    temperature = _real(temperature, "temperature")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if not isinstance(loss_agg, str) or loss_agg not in LOSS_AGG_IDS:
        raise ValueError(f"loss_agg must be one of {LOSS_AGGS}, got {loss_agg!r}")
    if max_len is None:
        max_len = T
    elif isinstance(max_len, bool) or not isinstance(max_len, int) or max_len <= 0:
        raise ValueError(f"max_len must be a positive int or None, got {max_len!r}")

    targets_N = targets.detach().reshape(-1).to(torch.int64).contiguous()
    if check_targets is None:
        check_targets = os.environ.get(SKIP_CHECKS_ENV) != "1"
    if check_targets and targets_N.numel():
        bad = ((targets_N < 0) | (targets_N >= V)) & (mask_N != 0)
        if bool(bad.any()):  # the one device sync of this op
            i = int(bad.nonzero()[0, 0])
            raise ValueError(f"targets must lie in [0, V) = [0, {V}) where the mask is set; "
                             f"targets[{i // T}, {i % T}] = {int(targets_N[i])}")

    opts = GRPOOptions(beta=beta, eps_low=eps_low, eps_high=eps_high, temperature=temperature,
                       loss_agg=loss_agg, max_len=max_len, has_old=old_N is not None, has_ref=ref_N is not None)
    return GRPOArgs(B=B, T=T, V=V, targets_N=targets_N, adv_N=adv_N, mask_N=mask_N, old_N=old_N, ref_N=ref_N,
                    opts=opts)


def token_weights(mask_N: torch.Tensor, B: int, T: int, opts: GRPOOptions) -> torch.Tensor:
    """Each token's aggregation weight w (loss = sum(l · w)) as float32 [N], without a device sync.
    Same as r1core.ref.grpo_loss.token_weights_ref; no unmasked token gives w = 0 everywhere."""
    m_BT = mask_N.view(B, T)
    if opts.loss_agg == "token_mean":
        w = m_BT / m_BT.sum().clamp_min(torch.finfo(torch.float32).tiny)
    elif opts.loss_agg == "seq_mean_token_mean":
        n_B1 = m_BT.sum(dim=1, keepdim=True)
        n_seq = (n_B1 != 0).sum().clamp_min(1).to(torch.float32)
        w = m_BT / (n_B1.masked_fill(n_B1 == 0, 1.0) * n_seq)
    else:  # seq_mean_token_sum_norm
        w = m_BT / float(B * opts.max_len)
    return w.reshape(-1)


# ---------------------------------------------------------------------------------------------
# backends: each runs the forward (-> logp, lse, w·dl/dlogp, terms [5, N]) and the backward
# ---------------------------------------------------------------------------------------------
def _fwd(backend: str, logits_BTV: torch.Tensor, a: GRPOArgs, w_N: torch.Tensor):
    o = a.opts
    if backend == "triton":
        return kernels("grpo_loss").grpo_fwd(logits_BTV, a.targets_N, a.adv_N, a.mask_N, w_N, a.old_N, a.ref_N,
                                             beta=o.beta, eps_low=o.eps_low, eps_high=o.eps_high,
                                             temperature=o.temperature)
    if backend == "cpp":
        return ext().grpo_loss_fwd_cpu(logits_BTV, a.targets_N, a.adv_N, a.mask_N, w_N, a.old_N, a.ref_N,
                                       o.beta, o.eps_low, o.eps_high, o.temperature)
    raise AssertionError(backend)


def _bwd(backend: str, logits_BTV, targets_N, lse_N, dlogp_N, grad_loss, *, temperature: float, inplace: bool):
    if backend == "triton":
        return kernels("grpo_loss").grpo_bwd(logits_BTV, targets_N, lse_N, dlogp_N, grad_loss,
                                             temperature=temperature, inplace=inplace)
    if backend == "cpp":
        return ext().grpo_loss_bwd_cpu(logits_BTV, targets_N, lse_N, dlogp_N, float(grad_loss),
                                       temperature, inplace)
    raise AssertionError(backend)


@dataclass(frozen=True)
class _Call:
    """Everything the autograd Function needs besides the logits (one argument, not twenty)."""
    args: GRPOArgs
    backend: str
    inplace_backward: bool


class _GRPOLossFn(torch.autograd.Function):
    """logits -> (loss 0-d, logp [B, T], stats [4]); only the loss is differentiable."""

    @staticmethod
    def forward(ctx, logits_BTV: torch.Tensor, call: _Call):
        a = call.args
        w_N = token_weights(a.mask_N, a.B, a.T, a.opts)
        logp_N, lse_N, dlogp_N, terms_5N = _fwd(call.backend, logits_BTV, a, w_N)
        sums = terms_5N.sum(dim=1)                                   # [5]: loss, Σratio·m, Σkl·m, Σclip·m ×2
        n = a.mask_N.sum().clamp_min(torch.finfo(torch.float32).tiny)  # no token: all sums are 0
        stats = sums[1:] / n
        logp_BT = logp_N.view(a.B, a.T)
        ctx.save_for_backward(logits_BTV, a.targets_N, lse_N, dlogp_N)
        ctx.call = call
        ctx.mark_non_differentiable(logp_BT, stats)
        return sums[0], logp_BT, stats

    @staticmethod
    def backward(ctx, grad_loss, _grad_logp, _grad_stats):
        logits_BTV, targets_N, lse_N, dlogp_N = ctx.saved_tensors
        call = ctx.call
        dlogits = _bwd(call.backend, logits_BTV, targets_N, lse_N, dlogp_N, grad_loss,
                       temperature=call.args.opts.temperature, inplace=call.inplace_backward)
        if call.inplace_backward:
            # the kernels wrote through a raw pointer: bump the version counter so that any other
            # autograd node that saved these logits fails loudly instead of using the gradient
            torch.autograd.graph.increment_version(logits_BTV)
        return dlogits, None


def _torch_loss(logits, a: GRPOArgs):
    """The reference (r1core.ref) on the normalised arguments; logp is 0 at masked positions, as in
    the kernels."""
    B, T, o = a.B, a.T, a.opts
    view = lambda t: None if t is None else t.view(B, T)  # noqa: E731
    loss, s = grpo_loss_ref(logits, a.targets_N.view(B, T), a.adv_N.view(B, T), a.mask_N.view(B, T),
                            old_logp=view(a.old_N), ref_logp=view(a.ref_N), beta=o.beta, eps_low=o.eps_low,
                            eps_high=o.eps_high, temperature=o.temperature, loss_agg=o.loss_agg,
                            max_len=o.max_len)
    logp = s.logp.masked_fill(a.mask_N.view(B, T) == 0, 0.0)
    return loss, GRPOStats(logp=logp, kl_mean=s.kl_mean, ratio_mean=s.ratio_mean,
                           clip_low_frac=s.clip_low_frac, clip_high_frac=s.clip_high_frac)


def _choose(op: str, x: torch.Tensor, backend: str | None) -> str:
    name = resolve(op, x.device, backend, implemented=IMPLEMENTED, gpu_order=GPU_ORDER)
    if x.dtype == torch.float64 and name != "torch":
        if backend is not None or os.environ.get(ENV_VAR):
            raise ValueError(f"{op}: float64 logits run on backend='torch' only, got backend={name!r}")
        name = "torch"
    return name


IMPLEMENTED = ("torch", "triton", "cpp")
GPU_ORDER = ("triton", "torch")


def grpo_loss(logits: torch.Tensor, targets: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor | None = None, *, old_logp: torch.Tensor | None = None,
              ref_logp: torch.Tensor | None = None, beta: float = 0.0, eps_low: float = 0.2,
              eps_high: float = 0.2, temperature: float = 1.0, loss_agg: str = "token_mean",
              max_len: int | None = None, inplace_backward: bool = False,
              backend: str | None = None) -> tuple[torch.Tensor, GRPOStats]:
    """The GRPO loss of SPEC §2 on logits [B, T, V] -> (loss 0-d float32, GRPOStats).

    One read of the logits forward, one read + one write of the gradient backward; no [B·T, V]
    float32 temporary.  `inplace_backward=True` writes dlogits over the logits' own storage (saving a
    logits-sized buffer): the logits are DESTROYED by backward, so use it only when nothing else reads
    them afterwards (the usual case: they come out of the lm_head and feed only this loss).  The torch
    backend ignores it.  Unmasked targets outside [0, V) raise ValueError (one device sync on GPU;
    R1CORE_SKIP_CHECKS=1 skips it, and such targets then give logp 0 instead of reading out of bounds).
    """
    with nvtx_range("grpo_loss"):
        a = check_grpo_args(logits, targets, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                            eps_low=eps_low, eps_high=eps_high, temperature=temperature, loss_agg=loss_agg,
                            max_len=max_len)
        if not isinstance(inplace_backward, bool):
            raise ValueError(f"inplace_backward must be a bool, got {inplace_backward!r}")
        name = _choose("grpo_loss", logits, backend)
        if name == "torch":
            return _torch_loss(logits, a)
        loss, logp_BT, stats = _GRPOLossFn.apply(logits, _Call(a, name, inplace_backward))
        return loss, GRPOStats(logp=logp_BT, kl_mean=stats[1], ratio_mean=stats[0],
                               clip_low_frac=stats[2], clip_high_frac=stats[3])


@torch.no_grad()
def logprobs(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0,
             backend: str | None = None) -> torch.Tensor:
    """log_softmax(logits / temperature)[targets] -> [B, T] float32, no grad (old/reference log-probs).

    Same memory behaviour as grpo_loss (the logits are read once, nothing [B·T, V]-sized is
    allocated).  Negative targets (an ignore index such as -100) give 0; targets >= V raise
    ValueError (one device sync on GPU, skipped with R1CORE_SKIP_CHECKS=1)."""
    with nvtx_range("logprobs"):
        if not isinstance(logits, torch.Tensor) or logits.dim() != 3:
            raise ValueError(f"logits must be a tensor of shape [B, T, V], got "
                             f"{list(logits.shape) if isinstance(logits, torch.Tensor) else type(logits).__name__}")
        B, T, V = logits.shape
        # the same checks as the loss (mask = targets >= 0, so ignored targets are not range-checked)
        check_grpo_args(logits, targets, logits.new_zeros(B, dtype=torch.float32),
                        targets >= 0 if isinstance(targets, torch.Tensor) else None, temperature=temperature)
        targets_N = targets.reshape(-1).to(torch.int64).contiguous()
        name = _choose("logprobs", logits, backend)
        if name == "torch":
            lp = logprobs_ref(logits, targets, temperature=temperature).float()
            return lp.masked_fill(targets < 0, 0.0)
        if name == "triton":
            lp = kernels("grpo_loss").logprobs_fwd(logits, targets_N, temperature=float(temperature))
        else:
            lp = ext().logprobs_cpu(logits, targets_N, float(temperature))
        return lp.view(B, T)
