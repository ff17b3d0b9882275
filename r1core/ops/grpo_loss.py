"""The fused GRPO loss on logits (docs/spec.md §2) and the log-prob op: the public ops and their dispatch.

Legend: B sequences, T positions, V vocabulary, N = B·T tokens (rows of logits).

The arguments are checked and normalised by r1core.ops._grpo_args (shared with the fused linear
ops); the Triton and C++ kernels run as torch.library custom ops (r1core.ops._grpo_kernels); the
aggregation weights and the statistics come from r1core.ops.grpo.math; the torch backend is the
self-contained reference r1core.ref.grpo_loss.
"""
from __future__ import annotations

import torch

from r1core._backend import Op
from r1core._nvtx import nvtx_range
from r1core.ops import _args
from r1core.ops._grpo_args import GRPOArgs, GRPOOptions, check_targets, check_temperature, target_range_token, \
    check_x, grpo_args
from r1core.ops.grpo import options
from r1core.ops._grpo_kernels import _grpo_loss_fwd, rows
from r1core.ops.logp_entropy import LOGP_ENTROPY
from r1core.ref.entropy import token_entropy_ref
from r1core.ops.grpo.math import GRPOStats, term_means, token_weights
from r1core.ops.grpo.objective import objective as _objective
from r1core.ref.grpo_loss import grpo_loss_ref, logprobs_ref

__all__ = ["grpo_loss", "logprobs", "GRPOStats", "GRPOOptions", "GRPO_LOSS", "LOGPROBS"]

# float64 logits run on the torch backend only (the kernels compute in float32)
GRPO_LOSS = Op("grpo_loss", gpu_order=("triton", "torch"), float64="torch",
               needs={"cpp": ("grpo_loss_fwd_cpu", "grpo_loss_bwd_cpu")})
LOGPROBS = Op("logprobs", gpu_order=("triton", "torch"), float64="torch", needs={"cpp": ("logprobs_cpu",)})


def grpo_loss(logits: torch.Tensor, targets: torch.Tensor, advantages: torch.Tensor,
              mask: torch.Tensor | None = None, *, old_logp: torch.Tensor | None = None,
              ref_logp: torch.Tensor | None = None, beta: float = 0.0, eps_low: float = 0.2,
              eps_high: float = 0.2, temperature: float = 1.0, loss_agg: str = "token_mean",
              max_len: int | None = None, inplace_backward: bool = False, entropy: bool = False,
              backend: str | None = None, **objective) -> tuple[torch.Tensor, GRPOStats]:
    """The GRPO loss of docs/spec.md §2 on logits [B, T, V] -> (loss 0-d float32, GRPOStats).

    `entropy=True` also reports the per-token entropy in GRPOStats.entropy (one more running sum in
    the same pass).  `**objective`: the GRPO-family options of docs/objectives.md (policy=
    "cispo"/"sapo"/"vespo", importance_sampling_level="sequence", delta, use_bias_correction_kl,
    rollout_logp / rollout_is*, off_policy_mask_threshold, entropy_coef, top_entropy_quantile,
    mask_truncated_completions + truncated, loss_agg="seq_mean_token_sum", ...).  With every option at
    its default the single pass below runs; otherwise the general path: differentiable (logp,
    entropy) from r1core.ops.logp_entropy, then r1core.ops.grpo.objective.objective as plain autograd
    (inplace_backward is then ignored).

    One read of the logits forward, one read + one write of the gradient backward; no [B·T, V]
    float32 temporary.  `inplace_backward=True` writes dlogits over the logits' own storage (saving a
    logits-sized buffer): the logits are DESTROYED by backward, so use it only when nothing else reads
    them afterwards (the usual case: they come out of the lm_head and feed only this loss).  The torch
    backend ignores it.  Unmasked targets outside [0, V) raise ValueError (one device sync on GPU;
    R1CORE_SKIP_CHECKS=1 skips it, and such targets then give logp 0 instead of reading out of bounds).
    """
    with nvtx_range("grpo_loss"):
        options.check_names("grpo_loss", objective)
        plain = options.is_plain(objective, loss_agg, beta)
        a = grpo_args(logits, targets, advantages, mask, old_logp=old_logp, ref_logp=ref_logp, beta=beta,
                      eps_low=eps_low, eps_high=eps_high, temperature=temperature,
                      loss_agg=loss_agg if plain or loss_agg != "seq_mean_token_sum" else "token_mean",
                      max_len=max_len)
        _args.flag(inplace_backward, "inplace_backward")
        _args.flag(entropy, "entropy")
        name = GRPO_LOSS.choose(logits, backend, arg="logits")
        if plain:
            return GRPO_LOSS(name, logits, a, name, inplace_backward, entropy)
        want_h = entropy or options.needs_entropy(objective)
        logp, H = LOGP_ENTROPY(name, logits, a.targets_N, a.mask_N, a.opts.temperature, name, want_h)
        return general_objective(logp.view(a.B, a.T), H.view(a.B, a.T) if want_h else None, a, loss_agg,
                                 entropy, objective)


def general_objective(logp_BT, H_BT, a: GRPOArgs, loss_agg: str, report_entropy: bool, objective: dict):
    """r1core.ops.grpo.objective.objective on the V-sized pass's outputs -> (loss float32, GRPOStats)."""
    B, T, o = a.B, a.T, a.opts
    view = lambda t: None if t is None else t.view(B, T)  # noqa: E731
    out = _objective(logp_BT, a.adv_N.view(B, T), a.mask_N.view(B, T), old_logp=view(a.old_N),
                     ref_logp=view(a.ref_N), entropy=H_BT, beta=o.beta, eps_low=o.eps_low, eps_high=o.eps_high,
                     loss_agg=loss_agg, max_len=o.max_len, **objective)
    f = lambda x: out.token_mean(x).detach().float()  # noqa: E731
    ent = None if not report_entropy or H_BT is None else H_BT.detach().float()
    loss = out.loss if out.loss.dtype == torch.float64 else out.loss.float()
    return loss, GRPOStats(logp=logp_BT.detach().float(), kl_mean=f(out.kl), ratio_mean=f(out.ratio),
                           clip_low_frac=f(out.clip_low), clip_high_frac=f(out.clip_high), entropy=ent)


@torch.no_grad()
def logprobs(logits: torch.Tensor, targets: torch.Tensor, *, temperature: float = 1.0, entropy: bool = False,
             backend: str | None = None):
    """log_softmax(logits / temperature)[targets] -> [B, T] float32, no grad (old/reference log-probs);
    with entropy=True -> (logp, entropy) [B, T] float32 (entropy of softmax(logits / temperature), 0
    where the target is negative), from the same pass.

    Same memory behaviour as grpo_loss (the logits are read once, nothing [B·T, V]-sized is
    allocated).  Negative targets (an ignore index such as -100) give 0; targets >= V raise
    ValueError (one device sync on GPU, skipped with R1CORE_SKIP_CHECKS=1)."""
    with nvtx_range("logprobs"):
        B, T, V = check_x(logits, "logits")
        targets_N = check_targets(targets, B, T, logits.device, "logits")
        temperature = check_temperature(temperature)
        ok = target_range_token(targets_N, targets_N >= 0, V, T)   # negative targets are ignored, not checked
        _args.flag(entropy, "entropy")
        name = LOGPROBS.choose(logits, backend, arg="logits")
        out = LOGPROBS(name, logits, targets_N, temperature, name, entropy)
        logp = out[0] if entropy else out
        if ok is not None:   # torch.compile: the check's token joins the graph
            logp = logp * ok
        return (logp.view(B, T), out[1].view(B, T)) if entropy else logp.view(B, T)


# ---------------------------------------------------------------------------------------------
# grpo_loss backends: (logits, GRPOArgs, backend, inplace_backward) -> (loss, GRPOStats)
# ---------------------------------------------------------------------------------------------
@GRPO_LOSS.impl("torch")
def _torch_loss(logits, a: GRPOArgs, _name, _inplace, entropy=False):
    """The reference on the normalised arguments; logp is 0 at masked positions, as in the kernels."""
    B, T, o = a.B, a.T, a.opts
    view = lambda t: None if t is None else t.view(B, T)  # noqa: E731
    loss, s = grpo_loss_ref(logits, a.targets_N.view(B, T), a.adv_N.view(B, T), a.mask_N.view(B, T),
                            old_logp=view(a.old_N), ref_logp=view(a.ref_N), beta=o.beta, eps_low=o.eps_low,
                            eps_high=o.eps_high, temperature=o.temperature, loss_agg=o.loss_agg,
                            max_len=o.max_len)
    masked = a.mask_N.view(B, T) == 0
    logp = s.logp.masked_fill(masked, 0.0)
    ent = None
    if entropy:
        with torch.no_grad():
            ent = token_entropy_ref(logits, temperature=o.temperature).float().masked_fill(masked, 0.0)
    return loss, GRPOStats(logp=logp, kl_mean=s.kl_mean, ratio_mean=s.ratio_mean,
                           clip_low_frac=s.clip_low_frac, clip_high_frac=s.clip_high_frac, entropy=ent)


@GRPO_LOSS.impl("triton", "cpp")
def _kernel_loss(logits, a: GRPOArgs, name: str, inplace_backward: bool, entropy: bool = False):
    o = a.opts
    w_N = token_weights(a.mask_N.view(a.B, a.T), o.loss_agg, o.max_len).reshape(-1)
    logp_N, _, _, terms, ent_N = _grpo_loss_fwd(logits, a.targets_N, a.adv_N, a.mask_N, w_N, a.old_N, a.ref_N,
                                                o.beta, o.eps_low, o.eps_high, o.temperature, name,
                                                inplace_backward, entropy)
    sums = terms.sum(dim=1)            # the TERMS layout: loss, then Σ ratio·m, Σ kl·m, Σ clip_low·m, Σ clip_high·m
    means = term_means(sums.detach(), a.mask_N.sum())
    ent = ent_N.detach().view(a.B, a.T) if entropy else None
    return sums[0], GRPOStats(logp=logp_N.detach().view(a.B, a.T), entropy=ent, **means)


# ---------------------------------------------------------------------------------------------
# logprobs backends: (logits [B, T, V], targets_N int64, temperature) -> [N] or [B, T] float32
# ---------------------------------------------------------------------------------------------
@LOGPROBS.impl("torch")
def _torch_logprobs(logits, targets_N, temperature, _name, entropy=False):
    t_BT = targets_N.view(logits.shape[:2])
    logp = logprobs_ref(logits, t_BT, temperature=temperature).float().masked_fill(t_BT < 0, 0.0)
    if not entropy:
        return logp
    return logp, token_entropy_ref(logits, temperature=temperature).float().masked_fill(t_BT < 0, 0.0)


@torch.library.custom_op("r1core::logprobs", mutates_args=())
def _logprobs_op(logits: torch.Tensor, targets_N: torch.Tensor, temperature: float, name: str,
                 entropy: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The row kernels' log-prob pass as a custom op (torch.compile sees one node) -> (logp, entropy or
    an empty tensor) [N] float32."""
    out = rows(name).logprobs(logits, targets_N, temperature, entropy)
    return out if entropy else (out, torch.empty(0, dtype=torch.float32, device=logits.device))


@_logprobs_op.register_fake
def _(logits, targets_N, temperature, name, entropy):
    N = targets_N.shape[0]
    return (torch.empty(N, dtype=torch.float32, device=logits.device),
            torch.empty(N if entropy else 0, dtype=torch.float32, device=logits.device))


@LOGPROBS.impl("triton", "cpp")
def _kernel_logprobs(logits, targets_N, temperature, name, entropy=False):
    logp, ent = _logprobs_op(logits, targets_N, temperature, name, entropy)
    return (logp, ent) if entropy else logp
