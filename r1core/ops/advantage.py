"""r1core.grpo_advantages (docs/spec.md §1): argument checks at the boundary, then one of four backends.

Legend: N rewards, G = group_size, N/G groups; rewards_gG is the [N/G, G] view of the input (a view:
strided inputs are read in place by every backend, never copied).

    A = r - mean_g(r)                    baseline "mean"
    A = r - (sum_g(r) - r) / (G - 1)     baseline "rloo" (leave-one-out)
    then / (std_g(r) + eps)              scale "group"   (Bessel-corrected std of the group)
         / (std(all r) + eps)            scale "batch"   (mean still per group)
         nothing                         scale "none"    (Dr. GRPO)

Backends: "torch" (r1core.ref, float64), "cpp" (C++ CPU kernel), "triton" (kernels/advantage.py;
the Triton interpreter on CPU tensors), "cuda" (csrc/advantage/advantage.cu).  Launches on a GPU:
scale group/none = one kernel; batch = one (N <= 16384, Triton) or two; the finiteness check adds a
4-byte memset and one device sync to read its flag (R1CORE_SKIP_CHECKS=1 skips it: then a non-finite
reward silently gives NaN advantages in its group, or everywhere with scale "batch").

No autograd: rewards are constants of the RL objective, so the result never requires grad (a
rewards tensor that requires grad is read through .detach()).
"""
from __future__ import annotations

import torch

from r1core._backend import Op, ext, kernels
from r1core._nvtx import nvtx_range
from r1core.ops import _args
from r1core.ops._args import SKIP_CHECKS_ENV  # noqa: F401 (documented here: skips the finiteness check)
from r1core.ref.advantage import BASELINES, SCALES, grpo_advantages_ref

# float64 rewards are computed in float64 by every backend
ADVANTAGE = Op("grpo_advantages", gpu_order=("cuda", "triton", "torch"),
               needs={"cpp": ("advantage_cpu",), "cuda": ("advantage_cuda",)})
FLOAT_DTYPES = (torch.float32, torch.bfloat16, torch.float16, torch.float64)
NON_FINITE = "rewards must be finite, found NaN or inf"


def grpo_advantages(rewards: torch.Tensor, group_size: int, *, scale: str = "group", baseline: str = "mean",
                    eps: float = 1e-6, backend: str | None = None) -> torch.Tensor:
    """Group-normalised GRPO advantages of `rewards` ([N] or [N/G, G]), float32, same shape.

    Rewards may be float32/float64/bfloat16/float16 (computed in float32 after an exact shift, in
    float64 for float64), or integer/bool (converted to float64 first).  Empty rewards give an empty
    result.  Raises ValueError for group_size < 2, N % group_size != 0, a non-finite reward, an
    unknown scale/baseline/backend or a bad eps; TypeError for a non-tensor, a non-real dtype or an
    argument of the wrong Python type.
    """
    rewards_gG = _check(rewards, group_size, scale, baseline, eps)
    name = ADVANTAGE.choose(rewards_gG, backend, arg="rewards")
    with nvtx_range("grpo_advantages"):
        if rewards_gG.numel() == 0:
            out_gG = torch.empty(rewards_gG.shape, dtype=torch.float32, device=rewards_gG.device)
        else:
            out_gG = _advantages_op(rewards_gG, scale, baseline, float(eps), _args.checks_on(), name)
    return out_gG.view(rewards.shape)


@torch.library.custom_op("r1core::grpo_advantages", mutates_args=())
def _advantages_op(rewards_gG: torch.Tensor, scale: str, baseline: str, eps: float, check_finite: bool,
                   name: str) -> torch.Tensor:
    """The chosen backend as one custom op: torch.compile sees one opaque node (no graph break on the
    extension call or the finiteness check's sync).  No autograd: advantages are constants."""
    return ADVANTAGE(name, rewards_gG, scale, baseline, eps, check_finite)


@_advantages_op.register_fake
def _(rewards_gG, scale, baseline, eps, check_finite, name):
    return torch.empty(rewards_gG.shape, dtype=torch.float32, device=rewards_gG.device)


def _check(rewards, group_size, scale, baseline, eps) -> torch.Tensor:
    """Validate everything; return the [N/G, G] view (float dtype, detached)."""
    _args.tensor(rewards, "rewards", "of shape [N] or [N/G, G]")
    G = _args.integer_value(group_size, "group_size")
    if G < 2:
        raise ValueError(f"group_size must be >= 2 (a group needs a baseline and a std), got {G}")
    _args.choice(scale, "scale", SCALES)
    _args.choice(baseline, "baseline", BASELINES)
    _args.real(eps, "eps", low=0.0)
    if rewards.dtype.is_complex:
        raise TypeError(f"rewards must have a real dtype, got {rewards.dtype}")
    if rewards.dtype not in FLOAT_DTYPES:
        if rewards.is_floating_point():  # float8 and friends are not rewards
            raise TypeError(f"rewards must be float32, float64, bfloat16, float16 or an integer dtype, "
                            f"got {rewards.dtype}")
        rewards = rewards.to(torch.float64)  # bool / integer rewards: exact up to 2**53
    rewards = rewards.detach()

    if rewards.dim() == 1:
        if rewards.numel() % G != 0:
            raise ValueError(f"rewards has N={rewards.numel()} elements, not a multiple of group_size={G}")
        return rewards.view(-1, G)
    if rewards.dim() == 2:
        if rewards.shape[1] != G:
            raise ValueError(f"rewards of shape {list(rewards.shape)} must have group_size={G} columns "
                             "([N/G, G]: one group per row)")
        return rewards
    raise ValueError(f"rewards must have shape [N] or [N/G, G], got {list(rewards.shape)}")


# ---------------------------------------------------------------------------------------------
# backends: (rewards_gG [N/G, G] (N >= 1), scale, baseline, eps, check_finite) -> float32 [N/G, G]
# ---------------------------------------------------------------------------------------------
def _raise_if_flagged(bad: torch.Tensor | None) -> None:
    if bad is not None and bool(bad.item()):  # the one device sync of the GPU backends
        raise ValueError(NON_FINITE)


@ADVANTAGE.impl("torch")
def _torch(r_gG, scale, baseline, eps, check_finite):
    if check_finite and not bool(torch.isfinite(r_gG).all()):
        raise ValueError(NON_FINITE)
    return grpo_advantages_ref(r_gG, r_gG.shape[1], scale=scale, baseline=baseline, eps=eps).float()


@ADVANTAGE.impl("cpp")
def _cpp(r_gG, scale, baseline, eps, check_finite):
    return ext().advantage_cpu(r_gG, scale, baseline, eps, check_finite)


@ADVANTAGE.impl("triton")
def _triton(r_gG, scale, baseline, eps, check_finite):
    out, bad = kernels("advantage").grpo_advantages(r_gG, scale=scale, baseline=baseline, eps=eps,
                                                    check_finite=check_finite)
    _raise_if_flagged(bad)
    return out


@ADVANTAGE.impl("cuda")
def _cuda(r_gG, scale, baseline, eps, check_finite):
    out, bad = ext().advantage_cuda(r_gG, scale, baseline, eps, check_finite)
    _raise_if_flagged(bad)
    return out
