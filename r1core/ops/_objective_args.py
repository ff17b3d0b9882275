"""The GRPO-family objective options the loss ops accept as keywords (docs/objectives.md), and the choice
between the single-pass fast path and the general path.

The options and their defaults are those of r1core.ref.objectives.objective (their one definition and
the place their values are checked); the loss ops take them as `**objective`.  The plain clip
objective (every option at its default, one of the docs/spec.md §2 aggregations) keeps the single pass:
per-token GRPO math inside the row kernels, dl/dlogp known in the forward.  Anything else runs the
general path: differentiable (logp, entropy) from r1core.ops.logp_entropy, then objective() as
plain autograd on [B, T].
"""
from __future__ import annotations

import inspect

import torch

from r1core.ref.grpo_math import LOSS_AGGS
from r1core.ref.objectives import objective

# the objective() parameters the loss ops take themselves (positionally or as their own keywords)
_OWN = ("logp", "advantages", "mask", "old_logp", "ref_logp", "entropy", "beta", "eps_low", "eps_high",
        "loss_agg", "max_len")
DEFAULTS = {k: p.default for k, p in inspect.signature(objective).parameters.items() if k not in _OWN}
OBJECTIVE_OPTIONS = tuple(DEFAULTS)
# options whose non-default value needs the per-token entropy (and its gradient for the bonus)
_NEEDS_ENTROPY = ("entropy_coef", "top_entropy_quantile")


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
    return kw.get("entropy_coef", 0.0) != 0 or kw.get("top_entropy_quantile", 1.0) != 1
