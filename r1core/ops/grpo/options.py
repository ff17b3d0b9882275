"""The GRPO-family objective options (docs/objectives.md): each option's choices and default defined once
here, imported by the config (r1core.train.config), the TRL mapping (r1core.integrations.trl), the loss
ops' argument checks and objective() itself; and `validate`, the validation half of objective().

The loss ops take the options as `**objective`.  The plain clip objective (every option at its default,
one of the three single-pass aggregations) keeps the single pass: per-token GRPO math inside the row
kernels, dl/dlogp known in the forward.  Anything else runs the general path: differentiable (logp,
entropy) from r1core/ops/grpo/loss.py (fused_linear.py for hidden states), then objective() as plain autograd on [B, T].
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# the choice lists, once
LOSS_AGGS = ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm")    # the single-pass ones (§2)
OBJECTIVE_AGGS = (*LOSS_AGGS, "seq_mean_token_sum")      # + LUSPO's: sum over a sequence, mean over sequences
POLICIES = ("clip", "cispo", "sapo", "vespo")
IS_LEVELS = ("token", "sequence")
ROLLOUT_IS_MODES = ("token_truncate", "token_mask", "sequence_truncate", "sequence_mask")

# TRL 1.16 GRPOConfig.loss_type -> (policy, loss_agg).  TRL's "dapo", "cispo" and "vespo" divide the
# token sum by the active-token count of the whole (accumulated, all-rank) generation batch, its "grpo" and
# "sapo" by all B sequences (an empty one counting 0): the caller rescales `policy_loss` for those.
TRL_LOSS_TYPES = {
    "grpo": ("clip", "seq_mean_token_mean"),
    "bnpo": ("clip", "token_mean"),
    "dr_grpo": ("clip", "seq_mean_token_sum_norm"),
    "dapo": ("clip", "token_mean"),
    "cispo": ("cispo", "token_mean"),
    "sapo": ("sapo", "seq_mean_token_mean"),
    "luspo": ("clip", "seq_mean_token_sum"),
    "vespo": ("vespo", "token_mean"),
}

# the objective options the loss ops take as **objective, with their defaults (objective()'s signature
# lists the same names; tests/ops/test_objectives.py holds the two equal)
DEFAULTS = dict(rollout_logp=None, truncated=None, policy="clip", importance_sampling_level="token",
                delta=None, use_bias_correction_kl=False, sapo_temperature_pos=1.0, sapo_temperature_neg=1.05,
                vespo_k_pos=2.0, vespo_lambda_pos=3.0, vespo_k_neg=3.0, vespo_lambda_neg=2.0, rollout_is=None,
                rollout_is_weight=None, rollout_is_min=None, rollout_is_max=3.0, off_policy_mask_threshold=None,
                entropy_coef=0.0, top_entropy_quantile=1.0, mask_truncated_completions=False)
OBJECTIVE_OPTIONS = tuple(DEFAULTS)


def check_names(op: str, kw: dict) -> None:
    """TypeError for a keyword the op does not know (like Python's own message)."""
    for k in kw:
        if k not in DEFAULTS:
            raise TypeError(f"{op}() got an unexpected keyword argument {k!r} (objective options: "
                            f"{', '.join(OBJECTIVE_OPTIONS)})")


def _is_default(k: str, v) -> bool:
    d = DEFAULTS[k]
    if isinstance(v, torch.Tensor) or isinstance(d, torch.Tensor):
        return False
    return v is d if d is None or isinstance(d, bool) else (type(v) is not bool and v == d)


def is_plain(kw: dict, loss_agg: str, beta: float) -> bool:
    """Whether the single-pass fast path computes this objective (see the module docstring)."""
    if loss_agg not in LOSS_AGGS:
        return False
    for k, v in kw.items():
        if k == "use_bias_correction_kl" and beta == 0:
            continue   # multiplies a KL term that is not there
        if not _is_default(k, v):
            return False
    return True


def needs_entropy(kw: dict) -> bool:
    """Whether the options need the per-token entropy (and its gradient, for the bonus)."""
    return kw.get("entropy_coef", 0.0) != 0 or kw.get("top_entropy_quantile", 1.0) != 1


# ---------------------------------------------------------------------------------------------
# the validation half of objective()
# ---------------------------------------------------------------------------------------------
def _choice(value, name: str, options) -> str:
    if not isinstance(value, str) or value not in options:
        raise ValueError(f"{name} must be one of {tuple(options)}, got {value!r}")
    return value


def _num(value, name: str, *, low: float | None = None, strict: bool = False, none: bool = False,
         high: float | None = None):
    if value is None and none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a real number{' or None' if none else ''}, got {type(value).__name__}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be finite, got {value}")
    if low is not None and (value <= low if strict else value < low):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {low}, got {value}")
    if high is not None and value > high:
        raise ValueError(f"{name} must be in [0, 1], got {value}" if (low, high) == (0.0, 1.0)
                         else f"{name} must be <= {high:g}, got {value}")
    return value


@dataclass(frozen=True)
class Options:
    """objective()'s scalar options, validated."""
    policy: str
    loss_agg: str
    max_len: int | None
    importance_sampling_level: str
    beta: float
    eps_low: float
    eps_high: float
    delta: float | None
    use_bias_correction_kl: bool
    tau_pos: float
    tau_neg: float
    vespo: dict
    rollout_is: str | None
    c_min: float | None
    c_max: float | None
    off_policy_mask_threshold: float | None
    entropy_coef: float
    top_entropy_quantile: float
    mask_truncated_completions: bool


def validate(*, policy="clip", loss_agg="token_mean", max_len=None, importance_sampling_level="token", beta=0.0,
             eps_low=0.2, eps_high=0.2, delta=None, use_bias_correction_kl=False, sapo_temperature_pos=1.0,
             sapo_temperature_neg=1.05, vespo_k_pos=2.0, vespo_lambda_pos=3.0, vespo_k_neg=3.0,
             vespo_lambda_neg=2.0, rollout_is=None, rollout_is_min=None, rollout_is_max=3.0,
             off_policy_mask_threshold=None, entropy_coef=0.0, top_entropy_quantile=1.0,
             mask_truncated_completions=False) -> Options:
    """The scalar options of objective() -> Options (ValueError for a bad value, TypeError for a wrong type,
    each naming the option).  The tensor arguments are checked by objective() against their shapes."""
    _choice(policy, "policy", POLICIES)
    _choice(loss_agg, "loss_agg", OBJECTIVE_AGGS)
    _choice(importance_sampling_level, "importance_sampling_level", IS_LEVELS)
    if rollout_is is not None:
        _choice(rollout_is, "rollout_is", ROLLOUT_IS_MODES)
    for flag, name in ((use_bias_correction_kl, "use_bias_correction_kl"),
                       (mask_truncated_completions, "mask_truncated_completions")):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if policy == "vespo" and rollout_is is not None and not rollout_is.startswith("token"):
        raise ValueError(f"policy='vespo' folds token-level rollout weights into its sequence weight: rollout_is "
                         f"must be 'token_truncate' or 'token_mask', got {rollout_is!r}")
    return Options(
        policy=policy, loss_agg=loss_agg, max_len=max_len, importance_sampling_level=importance_sampling_level,
        beta=_num(beta, "beta", low=0.0), eps_low=_num(eps_low, "eps_low", low=0.0),
        eps_high=_num(eps_high, "eps_high", low=0.0), delta=_num(delta, "delta", low=0.0, strict=True, none=True),
        use_bias_correction_kl=use_bias_correction_kl,
        tau_pos=_num(sapo_temperature_pos, "sapo_temperature_pos", low=0.0, strict=True),
        tau_neg=_num(sapo_temperature_neg, "sapo_temperature_neg", low=0.0, strict=True),
        vespo=dict(k_pos=_num(vespo_k_pos, "vespo_k_pos"), lambda_pos=_num(vespo_lambda_pos, "vespo_lambda_pos"),
                   k_neg=_num(vespo_k_neg, "vespo_k_neg"), lambda_neg=_num(vespo_lambda_neg, "vespo_lambda_neg")),
        rollout_is=rollout_is, c_min=_num(rollout_is_min, "rollout_is_min", none=True),
        c_max=_num(rollout_is_max, "rollout_is_max", none=True),
        off_policy_mask_threshold=_num(off_policy_mask_threshold, "off_policy_mask_threshold", none=True),
        entropy_coef=_num(entropy_coef, "entropy_coef"),
        top_entropy_quantile=_num(top_entropy_quantile, "top_entropy_quantile", low=0.0, high=1.0),
        mask_truncated_completions=mask_truncated_completions)
