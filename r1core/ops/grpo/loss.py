"""The GRPO ops on logits (docs/spec.md §2): grpo_loss, logprobs and logp_entropy, with their dispatch.

Legend: B sequences, T positions, V vocabulary, N = B·T tokens (rows of logits).

A call: the arguments are checked once (r1core/ops/grpo/args.py), the backend chosen once (the op's
table: r1core/_backend.py), then the backend's Rows object runs as a torch.library custom op
(r1core/ops/grpo/rows.py: torch, cpp or triton).  The GRPO-family objectives (any `**objective`
option) take the general path: differentiable (logp, entropy) from logp_entropy, then
r1core/ops/grpo/objective.py as plain autograd on [B, T].
"""
from __future__ import annotations

import torch

from r1core._backend import Op
from r1core._nvtx import nvtx_range
from r1core.ops import _args
from r1core.ops.grpo import options
from r1core.ops.grpo.args import GRPOArgs, GRPOOptions, check_targets, check_temperature, check_x, grpo_args, \
    target_range_token
from r1core.ops.grpo.math import GRPOStats, term_means, token_weights
from r1core.ops.grpo.objective import objective as _objective
from r1core.ops.grpo.rows import ROWS, grpo_loss_fwd, logp_entropy_fwd, logprobs_op

__all__ = ["grpo_loss", "logprobs", "logp_entropy", "GRPOStats", "GRPOOptions", "GRPO_LOSS", "LOGPROBS",
           "LOGP_ENTROPY"]

# every backend is its Rows object; float64 logits run on the torch backend only (the kernels compute in float32)
_CPP_LOSS = ("grpo_loss_fwd_cpu", "grpo_loss_bwd_cpu")
GRPO_LOSS = Op("grpo_loss", gpu_order=("triton", "torch"), float64="torch", needs={"cpp": _CPP_LOSS},
               impls=dict(ROWS))
LOGPROBS = Op("logprobs", gpu_order=("triton", "torch"), float64="torch", needs={"cpp": ("logprobs_cpu",)},
              impls=dict(ROWS))
LOGP_ENTROPY = Op("logp_entropy", gpu_order=("triton", "torch"), float64="torch",
                  needs={"cpp": ("grpo_loss_fwd_entropy_cpu", "grpo_loss_bwd_cpu")}, impls=dict(ROWS))


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
    entropy) from logp_entropy, then r1core.ops.grpo.objective.objective as plain autograd
    (inplace_backward is then ignored).

    One read of the logits forward, one read + one write of the gradient backward; no [B·T, V]
    float32 temporary on the kernel backends.  `inplace_backward=True` writes dlogits over the logits'
    own storage (saving a logits-sized buffer): the logits are DESTROYED by backward, so use it only
    when nothing else reads them afterwards (the usual case: they come out of the lm_head and feed only
    this loss).  Unmasked targets outside [0, V) raise ValueError (one device sync on GPU;
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
            return _single_pass(logits, a, name, inplace_backward, entropy)
        want_h = entropy or options.needs_entropy(objective)
        logp, H, _ = logp_entropy_fwd(logits, a.targets_N, a.mask_N, a.opts.temperature, name, want_h)
        return general_objective(logp.view(a.B, a.T), H.view(a.B, a.T) if want_h else None, a, loss_agg,
                                 entropy, objective)


def _single_pass(logits, a: GRPOArgs, name: str, inplace_backward: bool, entropy: bool):
    """Loss, statistics and (in the backward) dlogits from one read of the logits each way."""
    o = a.opts
    f64 = logits.dtype == torch.float64   # the torch backend then runs the whole math in float64
    w_N = token_weights(a.mask_N.view(a.B, a.T).to(torch.float64 if f64 else torch.float32), o.loss_agg,
                        o.max_len).reshape(-1)
    logp_N, _, _, terms, ent_N = grpo_loss_fwd(logits, a.targets_N, a.adv_N, a.mask_N, w_N, a.old_N, a.ref_N,
                                               o.beta, o.eps_low, o.eps_high, o.temperature, name,
                                               inplace_backward, entropy)
    sums = terms.sum(dim=1)   # the TERMS layout: loss, then Σ ratio·m, Σ kl·m, Σ clip_low·m, Σ clip_high·m
    means = {k: v.float() for k, v in term_means(sums.detach(), a.mask_N.sum().to(sums.dtype)).items()}
    ent = ent_N.detach().float().view(a.B, a.T) if entropy else None
    return sums[0], GRPOStats(logp=logp_N.detach().float().view(a.B, a.T), entropy=ent, **means)


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
    allocated on the kernel backends).  Negative targets (an ignore index such as -100) give 0;
    targets >= V raise ValueError (one device sync on GPU, skipped with R1CORE_SKIP_CHECKS=1)."""
    with nvtx_range("logprobs"):
        B, T, V = check_x(logits, "logits")
        targets_N = check_targets(targets, B, T, logits.device, "logits")
        temperature = check_temperature(temperature)
        ok = target_range_token(targets_N, targets_N >= 0, V, T)   # negative targets are ignored, not checked
        _args.flag(entropy, "entropy")
        name = LOGPROBS.choose(logits, backend, arg="logits")
        logp, ent = logprobs_op(logits, targets_N, temperature, name, entropy)
        if ok is not None:   # torch.compile: the check's token joins the graph
            logp = logp * ok
        return (logp.view(B, T), ent.view(B, T)) if entropy else logp.view(B, T)


def _mask_N(mask, B: int, T: int, dev, x_name: str) -> torch.Tensor:
    """-> float32 [N] 0/1 (None: all ones)."""
    if mask is None:
        return torch.ones(B * T, dtype=torch.float32, device=dev)
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"mask must be a [B, T] tensor or None, got {type(mask).__name__}")
    if tuple(mask.shape) != (B, T):
        raise ValueError(f"mask must have shape [B, T] = [{B}, {T}] (from {x_name}), got {list(mask.shape)}")
    if mask.device != dev:
        raise ValueError(f"mask must be on {x_name}'s device {dev}, got {mask.device}")
    return (mask.reshape(-1) != 0).to(torch.float32)


def logp_entropy(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor | None = None, *,
                 temperature: float = 1.0, backend: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(log_softmax(logits / T)[targets], entropy of softmax(logits / T)) -> two [B, T] tensors (float32;
    float64 for float64 logits), both differentiable in `logits` (the backward: dlogits_v =
    ((onehot_v - p_v)·dL/dlogp - p_v·(log p_v + H)·dL/dH) / T, so any objective written in PyTorch on
    the outputs is exact); 0 at masked positions, which are not read."""
    with nvtx_range("logp_entropy"):
        B, T, V = check_x(logits, "logits")
        t_N = check_targets(targets, B, T, logits.device, "logits")
        temperature = check_temperature(temperature)
        m_N = _mask_N(mask, B, T, logits.device, "logits")
        ok = target_range_token(t_N, m_N, V, T)
        name = LOGP_ENTROPY.choose(logits, backend, arg="logits")
        logp, ent, _ = logp_entropy_fwd(logits, t_N, m_N, temperature, name, True)
        if ok is not None:   # torch.compile: the check's token joins the graph
            logp = logp * ok
        return logp.view(B, T), ent.view(B, T)
