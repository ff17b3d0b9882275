"""The fused GRPO loss on logits (SPEC §2): argument checks, dispatch, the kernels as custom ops.

Legend: B sequences, T positions, V vocabulary, N = B·T tokens (rows of logits).

`check_grpo_args` validates and normalises every argument once, at the boundary, into flat [N]
float32 per-token tensors plus a frozen `GRPOOptions`; the fused linear loss (r1core.ops.fused_linear)
shares it.  The backends (torch reference, Triton, C++) then only see well-formed inputs.  The
kernels are wrapped as torch.library custom ops with a registered autograd formula (forward: r1core::
grpo_loss_fwd; backward: r1core::grpo_loss_bwd, or r1core::grpo_loss_bwd_ in place), so that
torch.compile traces grpo_loss as one opaque op instead of breaking the graph.
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Optional

import torch

from r1core._backend import ENV_VAR, ext, kernels, resolve
from r1core._nvtx import nvtx_range
from r1core.ref.grpo_loss import LOSS_AGGS, GRPOStats, grpo_loss_ref, logprobs_ref

# loss_agg string -> the constexpr int the kernels branch on (Liger's pattern)
LOSS_AGG_IDS = {name: i for i, name in enumerate(LOSS_AGGS)}
SKIP_CHECKS_ENV = "R1CORE_SKIP_CHECKS"  # "1": skip the check that costs a device sync (target range)
LOGITS_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
N_TERMS = 5  # per-token terms the forward kernels write (see _grpo_loss_fwd)


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
# the kernels as torch.library custom ops (so torch.compile sees one opaque op, not a graph break)
# ---------------------------------------------------------------------------------------------
@torch.library.custom_op("r1core::grpo_loss_fwd", mutates_args=())
def _grpo_loss_fwd(logits: torch.Tensor, targets: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                   w: torch.Tensor, old: Optional[torch.Tensor], ref: Optional[torch.Tensor], beta: float,
                   eps_low: float, eps_high: float, temperature: float, backend: str,
                   inplace_backward: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """-> (logp [N], lse [N], w·dl/dlogp [N], terms [5, N]: l·w, ratio·m, kl·m, clip_low·m, clip_high·m).
    inplace_backward only travels to the backward (see _setup_context)."""
    if backend == "triton":
        out = kernels("grpo_loss").grpo_fwd(logits, targets, adv, mask, w, old, ref, beta=beta, eps_low=eps_low,
                                            eps_high=eps_high, temperature=temperature)
    elif backend == "cpp":
        out = ext().grpo_loss_fwd_cpu(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature)
    else:
        raise AssertionError(backend)
    return tuple(out)


@_grpo_loss_fwd.register_fake
def _(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, backend, inplace_backward):
    N = targets.numel()
    f32 = dict(dtype=torch.float32, device=logits.device)
    return torch.empty(N, **f32), torch.empty(N, **f32), torch.empty(N, **f32), torch.empty(N_TERMS, N, **f32)


def _launch_bwd(logits, targets, lse, scale, temperature: float, backend: str, inplace: bool) -> torch.Tensor:
    if backend == "triton":
        one = torch.ones(1, dtype=torch.float32, device=logits.device)
        return kernels("grpo_loss").grpo_bwd(logits, targets, lse, scale, one, temperature=temperature,
                                             inplace=inplace)
    if backend == "cpp":
        return ext().grpo_loss_bwd_cpu(logits, targets, lse, scale, 1.0, temperature, inplace)
    raise AssertionError(backend)


@torch.library.custom_op("r1core::grpo_loss_bwd", mutates_args=())
def _grpo_loss_bwd(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                   temperature: float, backend: str) -> torch.Tensor:
    """dlogits = (onehot - softmax(logits / T)) · scale / T, a new tensor (scale = w·dl/dlogp·grad)."""
    return _launch_bwd(logits, targets, lse, scale, temperature, backend, inplace=False)


@_grpo_loss_bwd.register_fake
def _(logits, targets, lse, scale, temperature, backend):
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


@torch.library.custom_op("r1core::grpo_loss_bwd_", mutates_args=("logits",))
def _grpo_loss_bwd_(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                    temperature: float, backend: str) -> None:
    """The same, written over the logits (their version counter is bumped, so another autograd node
    that saved them fails loudly instead of reading the gradient)."""
    _launch_bwd(logits, targets, lse, scale, temperature, backend, inplace=True)


def _setup_context(ctx, inputs, output):
    logits, targets = inputs[0], inputs[1]
    ctx.temperature, ctx.backend, ctx.inplace = inputs[10], inputs[11], inputs[12]
    _, lse, dlogp, _ = output
    ctx.save_for_backward(logits, targets, lse, dlogp)


def _backward(ctx, _g_logp, _g_lse, _g_dlogp, g_terms):
    logits, targets, lse, dlogp = ctx.saved_tensors
    scale = dlogp * g_terms[0]  # d loss / d (l·w) per token: the upstream gradient (a broadcast scalar)
    if ctx.inplace:
        _grpo_loss_bwd_(logits, targets, lse, scale, ctx.temperature, ctx.backend)
        dlogits = logits.detach()
    else:
        dlogits = _grpo_loss_bwd(logits, targets, lse, scale, ctx.temperature, ctx.backend)
    return dlogits, *([None] * 12)


_grpo_loss_fwd.register_autograd(_backward, setup_context=_setup_context)


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


@torch.compiler.assume_constant_result  # torch.compile: decided once while tracing, not traced into
def _resolve(op: str, device: torch.device, backend: str | None) -> str:
    return resolve(op, device, backend, implemented=IMPLEMENTED, gpu_order=GPU_ORDER)


def _choose(op: str, x: torch.Tensor, backend: str | None) -> str:
    name = _resolve(op, x.device, backend)
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
        o = a.opts
        w_N = token_weights(a.mask_N, a.B, a.T, o)
        logp_N, _, _, terms_5N = _grpo_loss_fwd(logits, a.targets_N, a.adv_N, a.mask_N, w_N, a.old_N, a.ref_N,
                                                o.beta, o.eps_low, o.eps_high, o.temperature, name, inplace_backward)
        sums = terms_5N.sum(dim=1)            # [5]: loss, Σ ratio·m, Σ kl·m, Σ clip_low·m, Σ clip_high·m
        n = a.mask_N.sum().clamp_min(torch.finfo(torch.float32).tiny)  # no token: every sum is 0
        stats = sums[1:].detach() / n
        return sums[0], GRPOStats(logp=logp_N.detach().view(a.B, a.T), ratio_mean=stats[0], kl_mean=stats[1],
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
