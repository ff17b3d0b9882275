"""The row-kernel interface of every GRPO loss op, one object per backend, and the torch.library custom ops
that run them (so torch.compile sees one opaque node with a registered autograd formula).

Legend: N rows (tokens), V vocabulary.  A "row" is one token's logits [V] (last dim contiguous; logits
come as [B, T, V], or as one chunk [1, C, V] from the chunk engine of r1core/ops/grpo/fused_linear.py).

    Rows.fwd       logits + per-token [N] inputs -> logp, lse, w·dl/dlogp, terms [N_TERMS, N] (, entropy)
    Rows.bwd       dlogits = ((onehot - p)·scale - p·(log p + H)·dent) / T, new or over the logits
    Rows.logprobs  log_softmax(logits / T)[target] (, entropy), 0 where target < 0
    Rows.logp_lse  the forward as a plain log-prob pass (no loss terms)

    TorchRows   vectorised PyTorch over all rows at once; float64 throughout for float64 logits
    CppRows     r1core._C (csrc/grpo_loss/grpo_loss_cpu.cpp)
    TritonRows  kernels/grpo_loss.py (on CPU tensors under the Triton interpreter)

Every Op table of the GRPO ops (grpo_loss, logprobs, logp_entropy, the fused linear ops) maps a backend
name to ROWS[name]; an unknown name is a ValueError, never a fall into another backend.  Inputs are
already checked and normalised (r1core/ops/grpo/args.py).
"""
from __future__ import annotations

from typing import Optional

import torch

from r1core._backend import ext, kernels
from r1core.ops.grpo import math as grpo_math
from r1core.ops.grpo.math import N_TERMS

__all__ = ["Rows", "TorchRows", "CppRows", "TritonRows", "ROWS", "rows", "acc_dtype"]


def acc_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype the row math runs in: float64 for float64 inputs, else float32."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


class Rows:
    """The interface; every method takes logits [B, T, V] (or [1, C, V]) and flat per-token [N] inputs."""
    name = ""

    def fwd(self, logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature,
            entropy: bool = False) -> tuple:
        """-> (logp [N], lse [N], w·dl/dlogp [N], terms [N_TERMS, N] in the layout of
        r1core.ops.grpo.math.TERMS), plus entropy [N] when entropy=True; all 0 on rows with mask 0."""
        raise NotImplementedError

    def bwd(self, logits, targets, lse, scale, temperature: float, inplace: bool, entropy=None,
            dent=None) -> torch.Tensor:
        """dlogits = ((onehot - p)·scale - p·(log p + H)·dent) / temperature (the entropy term only with
        entropy/dent: the forward's entropy and dl/dH per row); written over the logits when inplace.
        Rows with scale == dent == 0 get exact zeros and are not read."""
        raise NotImplementedError

    def logprobs(self, logits, targets, temperature: float, entropy: bool = False):
        """-> logp [N] float32 (0 where target < 0), or (logp, entropy) [N] float32 with entropy=True."""
        raise NotImplementedError

    def logp_lse(self, logits, targets, mask, temperature: float, entropy: bool = False) -> tuple:
        """The forward as a plain log-prob pass: advantages and weights 0, every GRPO option off (its
        terms are then zeros, unused) -> (logp, lse, entropy or None) [N] on the rows where mask != 0."""
        z = torch.zeros(targets.shape[0], dtype=torch.float32, device=logits.device)
        out = self.fwd(logits, targets, z, mask, z, None, None, 0.0, 0.0, 0.0, temperature, entropy=entropy)
        return out[0], out[1], (out[4] if entropy else None)


def _scaled(logits: torch.Tensor, temperature: float) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (y = logits / T as [N, V] in the accumulation dtype, lse [N])."""
    y = logits.reshape(-1, logits.shape[-1]).to(acc_dtype(logits)) / temperature
    return y, torch.logsumexp(y, dim=-1)


def _at_target(y, lse, targets):
    """y[target] - lse, 0 where the target is outside [0, V)."""
    V = y.shape[-1]
    valid = (targets >= 0) & (targets < V)
    return torch.where(valid, y.gather(1, targets.clamp(0, V - 1)[:, None])[:, 0] - lse, 0.0)


def _entropy(y, lse):
    lsm = y - lse[:, None]
    return -(lsm.exp() * lsm).nan_to_num(0.0).sum(-1)   # p·log p = 0 where p = 0 (a banned token)


class TorchRows(Rows):
    """The row math in PyTorch (the "torch" backend: float64, and wherever no kernel runs)."""
    name = "torch"

    def fwd(self, logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, entropy=False):
        y, lse = _scaled(logits, temperature)
        cdt = lse.dtype
        cast = lambda t: None if t is None else t.to(cdt)  # noqa: E731
        logp = _at_target(y, lse, targets)
        t = grpo_math.token_terms(logp, cast(adv), cast(old), cast(ref), beta=beta, eps_low=eps_low,
                                  eps_high=eps_high)
        live = mask != 0
        z = lambda v: torch.where(live, v, 0.0)  # noqa: E731
        out = (z(logp), z(lse), z(t.dlogp * cast(w)), torch.where(live, grpo_math.stack_terms(t, cast(mask), cast(w)), 0.0))
        return (*out, z(_entropy(y, lse))) if entropy else out

    def bwd(self, logits, targets, lse, scale, temperature, inplace, entropy=None, dent=None):
        y, _ = _scaled(logits, temperature)
        cdt = lse.dtype
        lsm = y - lse[:, None]
        p = lsm.exp()
        s = scale.to(cdt)
        d = -p * s[:, None]
        live = s != 0
        if dent is not None:
            d = d - (p * (lsm + entropy.to(cdt)[:, None])).nan_to_num(0.0) * dent.to(cdt)[:, None]
            live = live | (dent != 0)
        V = y.shape[-1]
        valid = (targets >= 0) & (targets < V)
        d.scatter_add_(1, targets.clamp(0, V - 1)[:, None], torch.where(valid, s, 0.0)[:, None])
        d = torch.where(live[:, None], d / temperature, 0.0).view(logits.shape)
        return logits.copy_(d) if inplace else d.to(logits.dtype)

    def logprobs(self, logits, targets, temperature, entropy=False):
        y, lse = _scaled(logits, temperature)
        keep = targets >= 0
        logp = torch.where(keep, _at_target(y, lse, targets), 0.0).float()
        return (logp, torch.where(keep, _entropy(y, lse), 0.0).float()) if entropy else logp


class CppRows(Rows):
    """r1core._C's CPU kernels (csrc/grpo_loss/grpo_loss_cpu.cpp)."""
    name = "cpp"

    def fwd(self, logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, entropy=False):
        fn = ext().grpo_loss_fwd_entropy_cpu if entropy else ext().grpo_loss_fwd_cpu
        return tuple(fn(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature))

    def bwd(self, logits, targets, lse, scale, temperature, inplace, entropy=None, dent=None):
        return ext().grpo_loss_bwd_cpu(logits, targets, lse, scale, 1.0, temperature, inplace, entropy, dent)

    def logprobs(self, logits, targets, temperature, entropy=False):
        if entropy:
            return tuple(ext().logprobs_entropy_cpu(logits, targets, temperature))
        return ext().logprobs_cpu(logits, targets, temperature)


class TritonRows(Rows):
    """kernels/grpo_loss.py."""
    name = "triton"

    def fwd(self, logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, entropy=False):
        return tuple(kernels("grpo_loss").grpo_fwd(logits, targets, adv, mask, w, old, ref, beta=beta, eps_low=eps_low,
                                                   eps_high=eps_high, temperature=temperature, entropy=entropy))

    def bwd(self, logits, targets, lse, scale, temperature, inplace, entropy=None, dent=None):
        one = torch.ones(1, dtype=torch.float32, device=logits.device)
        return kernels("grpo_loss").grpo_bwd(logits, targets, lse, scale, one, temperature=temperature,
                                             inplace=inplace, entropy_N=entropy, dent_N=dent)

    def logprobs(self, logits, targets, temperature, entropy=False):
        return kernels("grpo_loss").logprobs_fwd(logits, targets, temperature=temperature, entropy=entropy)


ROWS: dict[str, Rows] = {"torch": TorchRows(), "cpp": CppRows(), "triton": TritonRows()}


def rows(backend: str) -> Rows:
    """The row kernels of a backend; an unknown name is an error, never a silent fallback."""
    try:
        return ROWS[backend]
    except KeyError:
        raise ValueError(f"no GRPO row kernels for backend {backend!r} (backends: {', '.join(ROWS)})") from None


# ---------------------------------------------------------------------------------------------
# the custom ops (outputs float32; float64 for float64 logits on the torch backend)
# ---------------------------------------------------------------------------------------------
def _empty(logits, *shape):
    return torch.empty(shape, dtype=acc_dtype(logits), device=logits.device)


@torch.library.custom_op("r1core::grpo_loss_fwd", mutates_args=())
def grpo_loss_fwd(logits: torch.Tensor, targets: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                  w: torch.Tensor, old: Optional[torch.Tensor], ref: Optional[torch.Tensor], beta: float,
                  eps_low: float, eps_high: float, temperature: float, backend: str,
                  inplace_backward: bool, entropy: bool = False
                  ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows.fwd; inplace_backward only travels to the backward.  The fifth output is the per-token
    entropy (a statistic: no gradient) with entropy=True, else empty."""
    out = rows(backend).fwd(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, entropy)
    return out if entropy else (*out, _empty(logits, 0))


@grpo_loss_fwd.register_fake
def _(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, backend, inplace_backward,
      entropy=False):
    N = targets.numel()
    return (_empty(logits, N), _empty(logits, N), _empty(logits, N), _empty(logits, N_TERMS, N),
            _empty(logits, N if entropy else 0))


@torch.library.custom_op("r1core::grpo_loss_bwd", mutates_args=())
def _grpo_loss_bwd(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                   temperature: float, backend: str) -> torch.Tensor:
    """dlogits = (onehot - softmax(logits / T)) · scale / T, a new tensor (scale = w·dl/dlogp·grad)."""
    return rows(backend).bwd(logits, targets, lse, scale, temperature, False)


@_grpo_loss_bwd.register_fake
def _(logits, targets, lse, scale, temperature, backend):
    return torch.empty_like(logits)


@torch.library.custom_op("r1core::grpo_loss_bwd_", mutates_args=("logits",))
def _grpo_loss_bwd_(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                    temperature: float, backend: str) -> None:
    """The same, written over the logits (their version counter is bumped, so another autograd node
    that saved them fails loudly instead of reading the gradient)."""
    rows(backend).bwd(logits, targets, lse, scale, temperature, True)


def _loss_setup(ctx, inputs, output):
    logits, targets, *_, temperature, backend, inplace, _entropy_flag = inputs
    ctx.temperature, ctx.backend, ctx.inplace = temperature, backend, inplace
    ctx.save_for_backward(logits, targets, output[1], output[2])


def _loss_backward(ctx, _g_logp, _g_lse, _g_dlogp, g_terms, _g_entropy):
    logits, targets, lse, dlogp = ctx.saved_tensors
    scale = dlogp * g_terms[0]  # d loss / d (l·w) per token: the upstream gradient (a broadcast scalar)
    if ctx.inplace:
        _grpo_loss_bwd_(logits, targets, lse, scale, ctx.temperature, ctx.backend)
        dlogits = logits.detach()
    else:
        dlogits = _grpo_loss_bwd(logits, targets, lse, scale, ctx.temperature, ctx.backend)
    return (dlogits,) + (None,) * 13   # one gradient, then none for the 13 non-tensor-or-constant inputs


grpo_loss_fwd.register_autograd(_loss_backward, setup_context=_loss_setup)


@torch.library.custom_op("r1core::logprobs", mutates_args=())
def logprobs_op(logits: torch.Tensor, targets_N: torch.Tensor, temperature: float, name: str,
                entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Rows.logprobs -> (logp, entropy or an empty tensor) [N] float32."""
    out = rows(name).logprobs(logits, targets_N, temperature, entropy)
    return out if entropy else (out, torch.empty(0, dtype=torch.float32, device=logits.device))


@logprobs_op.register_fake
def _(logits, targets_N, temperature, name, entropy):
    N = targets_N.shape[0]
    return (torch.empty(N, dtype=torch.float32, device=logits.device),
            torch.empty(N if entropy else 0, dtype=torch.float32, device=logits.device))


@torch.library.custom_op("r1core::logp_entropy_fwd", mutates_args=())
def logp_entropy_fwd(logits: torch.Tensor, t_N: torch.Tensor, m_N: torch.Tensor, temperature: float, name: str,
                     want_entropy: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows.logp_lse -> (logp, entropy, lse) [N] (entropy zeros when not wanted: then no entropy term
    enters the backward)."""
    logp, lse, ent = rows(name).logp_lse(logits, t_N, m_N, temperature, entropy=want_entropy)
    return logp, (ent if want_entropy else torch.zeros_like(lse)), lse


@logp_entropy_fwd.register_fake
def _(logits, t_N, m_N, temperature, name, want_entropy):
    return tuple(_empty(logits, t_N.shape[0]) for _ in range(3))


@torch.library.custom_op("r1core::logp_entropy_bwd", mutates_args=())
def _logp_entropy_bwd(logits: torch.Tensor, t_N: torch.Tensor, lse: torch.Tensor, ent: torch.Tensor,
                      g_logp: torch.Tensor, g_ent: Optional[torch.Tensor], temperature: float, name: str) -> torch.Tensor:
    return rows(name).bwd(logits, t_N, lse, g_logp, temperature, False, None if g_ent is None else ent, g_ent)


@_logp_entropy_bwd.register_fake
def _(logits, t_N, lse, ent, g_logp, g_ent, temperature, name):
    return torch.empty_like(logits)


def _logp_entropy_setup(ctx, inputs, output):
    logits, t_N, m_N, ctx.temperature, ctx.name, ctx.want_entropy = inputs
    ctx.save_for_backward(logits, t_N, m_N, output[2], output[1])


def _logp_entropy_backward(ctx, g_logp, g_ent, _g_lse):
    logits, t_N, m_N, lse, ent = ctx.saved_tensors
    # masked rows have lse 0 (never read): their gradient must stay exactly 0.  The 0/1 indicator,
    # not m_N itself: a weighted mask's weight is already inside g_logp (the objective applied it)
    live = (m_N != 0).to(lse.dtype)
    g_logp = torch.zeros_like(lse) if g_logp is None else g_logp.to(lse.dtype) * live
    g_ent = None if g_ent is None or not ctx.want_entropy else (g_ent.to(lse.dtype) * live).contiguous()
    dlogits = _logp_entropy_bwd(logits, t_N, lse, ent, g_logp.contiguous(), g_ent, ctx.temperature, ctx.name)
    return dlogits, None, None, None, None, None


logp_entropy_fwd.register_autograd(_logp_entropy_backward, setup_context=_logp_entropy_setup)
