"""r1core in verl: the group-normalised advantage and the GRPO policy loss under verl's registries.

    import r1core.integrations.verl as r1verl
    r1verl.register()        # adds "r1core_grpo" to verl's advantage-estimator and policy-loss registries
    # then in the verl config:  algorithm.adv_estimator=r1core_grpo
    #                           actor_rollout_ref.actor.policy_loss.loss_mode=r1core_grpo

The two functions have exactly the signatures verl calls (verl.trainer.ppo.core_algos, 0.9):

    grpo_advantage(token_level_rewards [bs, T], response_mask [bs, T], index (np array of uids),
                   epsilon=1e-6, norm_adv_by_std_in_grpo=True, config=None, **_) -> (advantages, returns)
        = r1core.grpo_advantages over the groups of equal uid (scale "group", or "none" when
          norm_adv_by_std_in_grpo is False; config.norm_adv_by_std_in_grpo wins when present), each
          sequence's advantage broadcast over its response tokens.  Rows may come in any order;
          every group must have the same size G >= 2 (verl's own estimator gives a lone sample
          advantage score/(1+eps); r1core refuses: a group of one has no baseline).
    grpo_policy_loss(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                     config=None, rollout_is_weights=None) -> (pg_loss, metrics)
        per token, the pg term of docs/spec.md §2: -min(ratio·A, clamp(ratio, 1-eps_low, 1+eps_high)·A),
        eps_low/eps_high = config.clip_ratio_low/high (default clip_ratio), times rollout_is_weights
        when given; aggregated as verl's agg_loss documents (token-mean, seq-mean-token-mean,
        seq-mean-token-sum-norm, honouring config.global_batch_info: dp_size, batch_num_tokens,
        global_batch_size, loss_scale_factor).  Differences from verl's compute_policy_loss_vanilla:
        no dual-clip (clip_ratio_c) and no clamp of log_prob - old_log_prob to [-20, 20]
        (docs/spec.md §2 has neither).  The KL penalty stays verl's (use_kl_loss / kl_loss_type): its PolicyLossFn gets no
        reference log-probs.  metrics: actor/pg_clipfrac, actor/ppo_kl, actor/pg_clipfrac_lower (0: no
        dual clip), r1core/clip_low_frac, r1core/clip_high_frac.

    gspo_policy_loss(same signature) -> verl's loss_mode "gspo" by r1core's sequence-level objective,
        registered as "r1core_gspo" (docs/objectives.md).

verl computes log_prob itself (its actor's forward), so the fused linear loss does not enter here;
only the functions above do.  verl itself is needed only by register(); the functions work without it.
"""
from __future__ import annotations

import numpy as np
import torch

import r1core
from r1core.ops.grpo.math import agg_denominator, token_terms

NAME = "r1core_grpo"
GSPO_NAME = "r1core_gspo"   # policy_loss.loss_mode=r1core_gspo: verl's "gspo" (sequence-level ratio)
LOSS_AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")


def _cfg(config, name: str, default=None):
    """config.name for dataclass configs and DictConfig alike, default when absent or None."""
    if config is None:
        return default
    value = config.get(name, default) if hasattr(config, "get") else getattr(config, name, default)
    return default if value is None else value


# ---------------------------------------------------------------------------------------------
# advantage
# ---------------------------------------------------------------------------------------------
def _group_order(index) -> tuple[torch.Tensor, int]:
    """Rows sorted so that equal uids are contiguous (stable), and the common group size."""
    uids = np.asarray(index)
    _, inverse, counts = np.unique(uids, return_inverse=True, return_counts=True)
    if counts.min() != counts.max():
        raise ValueError(f"index: every group (uid) must have the same number of responses for r1core's advantage, "
                         f"got sizes from {counts.min()} to {counts.max()}")
    if counts[0] < 2:
        raise ValueError("index: groups of one response have no baseline; r1core's advantage needs >= 2 per uid")
    order = np.argsort(inverse.reshape(-1), kind="stable")
    return torch.from_numpy(order.astype(np.int64)), int(counts[0])


def grpo_advantage(token_level_rewards: torch.Tensor, response_mask: torch.Tensor, index=None,
                   epsilon: float = 1e-6, norm_adv_by_std_in_grpo: bool = True, config=None, **_unused):
    """verl's advantage-estimator signature -> (advantages [bs, T], returns [bs, T]), both the same."""
    if index is None:
        raise ValueError("index: verl passes the uid of each response's prompt; r1core's GRPO advantage needs it")
    scores = token_level_rewards.sum(dim=-1)
    norm = bool(_cfg(config, "norm_adv_by_std_in_grpo", norm_adv_by_std_in_grpo))
    order, G = _group_order(index)
    order = order.to(scores.device)
    with torch.no_grad():
        adv_sorted = r1core.grpo_advantages(scores[order].float(), G, scale="group" if norm else "none",
                                            eps=float(epsilon))
        adv = torch.empty_like(adv_sorted)
        adv[order] = adv_sorted
        out = adv.to(token_level_rewards.dtype).unsqueeze(-1) * response_mask
    return out, out


# ---------------------------------------------------------------------------------------------
# policy loss
# ---------------------------------------------------------------------------------------------
def aggregate(loss_mat: torch.Tensor, mask: torch.Tensor, loss_agg_mode: str, *, dp_size: int = 1,
              batch_num_tokens=None, global_batch_size=None, loss_scale_factor=None) -> torch.Tensor:
    """verl's documented aggregation of per-token losses, invariant to data parallelism (dp_size ranks,
    global token / sequence counts).  With dp_size = 1 and no global counts, "token-mean" and
    "seq-mean-token-mean" are r1core's token_mean and seq_mean_token_mean; "seq-mean-token-sum-norm"
    divides by the number of non-empty sequences times loss_scale_factor (default T), where r1core's
    seq_mean_token_sum_norm divides by B · max_len."""
    if loss_agg_mode not in LOSS_AGG_MODES:
        raise ValueError(f"loss_agg_mode must be one of {LOSS_AGG_MODES} for the r1core policy loss, "
                         f"got {loss_agg_mode!r}")
    m = mask.to(loss_mat.dtype)
    if loss_agg_mode == "token-mean":
        if batch_num_tokens is None:
            if dp_size > 1:
                raise ValueError("batch_num_tokens (global) is required when dp_size > 1")
            batch_num_tokens = agg_denominator(m, "token_mean")
        return (loss_mat * m).sum() / batch_num_tokens * dp_size
    n_tok = m.sum(dim=-1)
    nonempty = (n_tok > 0).to(loss_mat.dtype)
    if global_batch_size is None:
        if dp_size > 1:
            raise ValueError("global_batch_size is required when dp_size > 1")
        global_batch_size = agg_denominator(m, "seq_mean_token_mean")
    if loss_agg_mode == "seq-mean-token-mean":
        seq = (loss_mat * m).sum(dim=-1) / n_tok.clamp_min(1)   # empty sequences are excluded below
        return (seq * nonempty).sum() / global_batch_size * dp_size
    seq = (loss_mat * m).sum(dim=-1)
    horizon = loss_scale_factor if loss_scale_factor is not None else m.shape[-1]
    return (seq * nonempty).sum() / global_batch_size * dp_size / horizon


def grpo_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                     response_mask: torch.Tensor, loss_agg_mode: str = "token-mean", config=None,
                     rollout_is_weights: torch.Tensor | None = None):
    """verl's PolicyLossFn signature -> (pg_loss 0-d, metrics dict); differentiable in log_prob."""
    clip = float(_cfg(config, "clip_ratio", 0.2))
    adv = advantages.to(log_prob.dtype)
    pg, _, ratio, _, clip_low, clip_high = token_terms(
        log_prob, adv, old_log_prob.to(log_prob.dtype), None, beta=0.0,
        eps_low=float(_cfg(config, "clip_ratio_low", clip)), eps_high=float(_cfg(config, "clip_ratio_high", clip)))
    return _loss_and_metrics(pg, clip_low, clip_high, old_log_prob, log_prob, response_mask, loss_agg_mode, config,
                             rollout_is_weights)


def _loss_and_metrics(pg, clip_low, clip_high, old_log_prob, log_prob, response_mask, loss_agg_mode, config,
                      rollout_is_weights):
    """What every r1core policy loss for verl does after its per-token terms: verl's rollout IS weights,
    verl's aggregation (with its global batch info), and verl's clip/KL metrics."""
    if rollout_is_weights is not None:
        pg = pg * rollout_is_weights
    info = dict(_cfg(config, "global_batch_info", {}) or {})
    loss = aggregate(pg, response_mask, loss_agg_mode, **{k: info[k] for k in
                                                          ("dp_size", "batch_num_tokens", "global_batch_size",
                                                           "loss_scale_factor") if info.get(k) is not None})
    m = response_mask.to(log_prob.dtype)
    n = m.sum().clamp_min(1)

    def mean(x):
        return ((x.detach().to(m.dtype) * m).sum() / n).item()

    metrics = {
        "actor/pg_clipfrac": mean(clip_low | clip_high),
        "actor/ppo_kl": mean(old_log_prob - log_prob),
        "actor/pg_clipfrac_lower": 0.0,
        "r1core/clip_low_frac": mean(clip_low),
        "r1core/clip_high_frac": mean(clip_high),
    }
    return loss, metrics


def gspo_policy_loss(old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
                     response_mask: torch.Tensor, loss_agg_mode: str = "seq-mean-token-mean", config=None,
                     rollout_is_weights: torch.Tensor | None = None):
    """verl's loss_mode "gspo" by r1core's objective (importance_sampling_level="sequence", the clip
    policy, r1core.ops.grpo.objective): one length-normalised ratio per sequence, clipped at
    clip_ratio_low/high (GSPO's are ~3e-4/4e-4).  Equal in value and gradient to verl's GSPO-token
    whenever the advantage is constant over a sequence (GRPO's); aggregated like grpo_policy_loss."""
    from r1core.ops.grpo.objective import objective  # noqa: PLC0415
    clip = float(_cfg(config, "clip_ratio", 0.2))
    m = response_mask.to(log_prob.dtype)
    out = objective(log_prob, advantages.to(log_prob.dtype), m, old_logp=old_log_prob.to(log_prob.dtype),
                    importance_sampling_level="sequence", eps_low=float(_cfg(config, "clip_ratio_low", clip)),
                    eps_high=float(_cfg(config, "clip_ratio_high", clip)))
    return _loss_and_metrics(out.per_token_loss, out.clip_low, out.clip_high, old_log_prob, log_prob, response_mask,
                             loss_agg_mode, config, rollout_is_weights)


# ---------------------------------------------------------------------------------------------
# registration
# ---------------------------------------------------------------------------------------------
def register(name: str = NAME, *, core_algos=None) -> str:
    """Register grpo_advantage and grpo_policy_loss under `name` in verl's registries (idempotent).
    core_algos: the module holding register_adv_est / register_policy_loss (default
    verl.trainer.ppo.core_algos)."""
    if core_algos is None:
        try:
            from verl.trainer.ppo import core_algos  # noqa: PLC0415
        except ImportError as e:
            raise ImportError("r1core.integrations.verl.register() needs verl installed "
                              "(the functions themselves do not)") from e
    core_algos.register_adv_est(name)(grpo_advantage)
    core_algos.register_policy_loss(name)(grpo_policy_loss)
    core_algos.register_policy_loss(GSPO_NAME if name == NAME else f"{name}_gspo")(gspo_policy_loss)
    return name
