"""Reference group-normalised advantage (docs/spec.md §1), plain PyTorch: the test oracle, the benches'
baseline and the "torch" backend.

Legend: N rewards in N/G groups of G; r_gG is the [N/G, G] view.  The reference computes in float64
and returns float32 (float64 for float64 input, so that tests can compare to it without rounding).
Each group is shifted by its first reward before any sum, which makes the result exact 0 for a
group of equal rewards and stable for large offsets (1e4 + noise); scale "batch" shifts all rewards
by the very first one for the same reason.  A zero denominator (a constant group with eps=0) gives 0.
The caller validates the arguments (r1core.ops.advantage does).
"""
from __future__ import annotations

import torch

SCALES = ("group", "batch", "none")
BASELINES = ("mean", "rloo")


def grpo_advantages_ref(rewards: torch.Tensor, group_size: int, *, scale: str = "group",
                        baseline: str = "mean", eps: float = 1e-6) -> torch.Tensor:
    """rewards [N] or [N/G, G] -> advantages of the same shape, float32 (float64 for float64 input)."""
    out_dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    G = group_size
    r_gG = rewards.reshape(-1, G).to(torch.float64)
    d_gG = r_gG - r_gG[:, :1]                        # shift: exact zeros for equal rewards
    sum_g1 = d_gG.sum(dim=1, keepdim=True)
    centred_gG = d_gG - sum_g1 / G                   # r - mean_g(r)
    if baseline == "mean":
        a_gG = centred_gG
    else:  # rloo: minus the mean of the other G-1 rewards
        a_gG = d_gG - (sum_g1 - d_gG) / (G - 1)
    if scale == "group":
        std_g1 = (centred_gG.square().sum(dim=1, keepdim=True) / (G - 1)).sqrt()
        a_gG = _divide(a_gG, std_g1 + eps)
    elif scale == "batch":
        flat = r_gG.reshape(-1) - r_gG.reshape(-1)[0]  # shift by the first reward, as per group
        std = (flat - flat.mean()).square().sum().div(flat.numel() - 1).sqrt()
        a_gG = _divide(a_gG, std + eps)
    return a_gG.to(out_dtype).reshape(rewards.shape)


def _divide(a: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """a / den, and 0 where den == 0 (then a == 0 too: the group is constant); NaN stays NaN."""
    return torch.where(den > 0, a / torch.where(den > 0, den, 1.0), a * 0.0)
