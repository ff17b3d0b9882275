"""The grpo_loss row kernels (backend "triton" or "cpp"): one `Rows` object per backend (ROWS), used by
grpo_loss, logprobs, logp_entropy and the fused linear chunk loop, and the torch.library custom ops with a registered autograd formula that
grpo_loss runs, so torch.compile traces it as one opaque op instead of breaking the graph:

    r1core::grpo_loss_fwd   logits [B, T, V] + per-token [N] inputs -> logp, lse, w·dl/dlogp, terms
    r1core::grpo_loss_bwd   dlogits = (onehot - softmax(logits / T)) · scale / T, a new tensor
    r1core::grpo_loss_bwd_  the same, written over the logits (inplace_backward=True)

Inputs are already checked and normalised (r1core.ops._grpo_args).
"""
from __future__ import annotations

from typing import Optional

import torch

from r1core._backend import ext, kernels
from r1core.ops.grpo.math import N_TERMS


class Rows:
    """The row-kernel interface: one object per kernel backend, chosen once by name (ROWS), so no call
    below dispatches on a backend string again.  Every method takes logits [B, T, V] (last dim
    contiguous) and flat per-token [N] inputs, already checked (r1core.ops._grpo_args)."""
    name = ""

    def fwd(self, logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature,
            entropy: bool = False) -> tuple:
        """-> (logp [N], lse [N], w·dl/dlogp [N], terms [N_TERMS, N] in the layout of
        r1core.ops.grpo.math.TERMS), plus entropy [N] (0 on masked rows; one more running sum in the
        same pass) when entropy=True."""
        raise NotImplementedError

    def bwd(self, logits, targets, lse, scale, temperature: float, inplace: bool, entropy=None,
            dent=None) -> torch.Tensor:
        """dlogits = ((onehot - p)·scale - p·(log p + H)·dent) / temperature (the entropy term only with
        entropy/dent: the forward's entropy and dl/dH per row); over the logits when inplace."""
        raise NotImplementedError

    def logprobs(self, logits, targets, temperature: float, entropy: bool = False):
        """-> logp [N] float32 (0 where target < 0), or (logp, entropy) [N] float32 with entropy=True."""
        raise NotImplementedError

    def logp_lse(self, logits, targets, mask, temperature: float, entropy: bool = False) -> tuple:
        """The forward as a plain log-prob pass: no loss terms (advantages and weights 0, every GRPO
        option off) -> (logp, lse, entropy or None) [N] on the rows where mask != 0."""
        z = torch.zeros(targets.shape[0], dtype=torch.float32, device=logits.device)
        out = self.fwd(logits, targets, z, mask, z, None, None, 0.0, 0.0, 0.0, temperature, entropy=entropy)
        return out[0], out[1], (out[4] if entropy else None)


class TritonRows(Rows):
    """kernels/grpo_loss.py (on CPU tensors under the Triton interpreter)."""
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


ROWS = {"triton": TritonRows(), "cpp": CppRows()}


def rows(backend: str) -> Rows:
    """The row kernels of a kernel backend; an unknown name is an error, never a silent fallback."""
    try:
        return ROWS[backend]
    except KeyError:
        raise ValueError(f"no GRPO row kernels for backend {backend!r} (kernel backends: {', '.join(ROWS)})") from None


@torch.library.custom_op("r1core::grpo_loss_fwd", mutates_args=())
def _grpo_loss_fwd(logits: torch.Tensor, targets: torch.Tensor, adv: torch.Tensor, mask: torch.Tensor,
                   w: torch.Tensor, old: Optional[torch.Tensor], ref: Optional[torch.Tensor], beta: float,
                   eps_low: float, eps_high: float, temperature: float, backend: str,
                   inplace_backward: bool, entropy: bool = False
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Rows.fwd as a custom op; inplace_backward only travels to the backward (see _setup_context).
    The fifth output is the per-token entropy (a statistic: no gradient) with entropy=True, else empty."""
    out = rows(backend).fwd(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, entropy)
    if entropy:
        return out
    return (*out, torch.empty(0, dtype=torch.float32, device=logits.device))


@_grpo_loss_fwd.register_fake
def _(logits, targets, adv, mask, w, old, ref, beta, eps_low, eps_high, temperature, backend, inplace_backward,
      entropy=False):
    N = targets.numel()
    f32 = dict(dtype=torch.float32, device=logits.device)
    return (torch.empty(N, **f32), torch.empty(N, **f32), torch.empty(N, **f32), torch.empty(N_TERMS, N, **f32),
            torch.empty(N if entropy else 0, **f32))


@torch.library.custom_op("r1core::grpo_loss_bwd", mutates_args=())
def _grpo_loss_bwd(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                   temperature: float, backend: str) -> torch.Tensor:
    """dlogits = (onehot - softmax(logits / T)) · scale / T, a new tensor (scale = w·dl/dlogp·grad)."""
    return rows(backend).bwd(logits, targets, lse, scale, temperature, False)


@_grpo_loss_bwd.register_fake
def _(logits, targets, lse, scale, temperature, backend):
    return torch.empty(logits.shape, dtype=logits.dtype, device=logits.device)


@torch.library.custom_op("r1core::grpo_loss_bwd_", mutates_args=("logits",))
def _grpo_loss_bwd_(logits: torch.Tensor, targets: torch.Tensor, lse: torch.Tensor, scale: torch.Tensor,
                    temperature: float, backend: str) -> None:
    """The same, written over the logits (their version counter is bumped, so another autograd node
    that saved them fails loudly instead of reading the gradient)."""
    rows(backend).bwd(logits, targets, lse, scale, temperature, True)


def _setup_context(ctx, inputs, output):
    logits, targets = inputs[0], inputs[1]
    ctx.temperature, ctx.backend, ctx.inplace = inputs[10], inputs[11], inputs[12]
    _, lse, dlogp, _, _ = output
    ctx.save_for_backward(logits, targets, lse, dlogp)


def _backward(ctx, _g_logp, _g_lse, _g_dlogp, g_terms, _g_entropy):
    logits, targets, lse, dlogp = ctx.saved_tensors
    scale = dlogp * g_terms[0]  # d loss / d (l·w) per token: the upstream gradient (a broadcast scalar)
    if ctx.inplace:
        _grpo_loss_bwd_(logits, targets, lse, scale, ctx.temperature, ctx.backend)
        dlogits = logits.detach()
    else:
        dlogits = _grpo_loss_bwd(logits, targets, lse, scale, ctx.temperature, ctx.backend)
    return dlogits, *([None] * 13)


_grpo_loss_fwd.register_autograd(_backward, setup_context=_setup_context)
