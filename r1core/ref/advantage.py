"""Reference group-normalised advantage (SPEC §1), plain PyTorch.

Legend: N rewards in N/G groups of G.  The reference computes in float64 and returns float32.
Each group is shifted by its first reward before any sum, which makes the result exact 0 for a
group of equal rewards and stable for large offsets (1e4 + noise).
"""
from __future__ import annotations

import torch

SCALES = ("group", "batch", "none")
BASELINES = ("mean", "rloo")


def grpo_advantages_ref(rewards: torch.Tensor, group_size: int, *, scale: str = "group",
                        baseline: str = "mean", eps: float = 1e-6) -> torch.Tensor:
    """rewards [N] or [N/G, G] -> advantages of the same shape, float32 (float64 for float64 input)."""
    out_dtype = torch.float64 if rewards.dtype == torch.float64 else torch.float32
    r_gG = rewards.reshape(-1, group_size).to(torch.float64)
    G = group_size
    d_gG = r_gG - r_gG[:, :1]                       # shift: exact zeros for equal rewards
    sum_g = d_gG.sum(dim=1, keepdim=True)
    if baseline == "mean":
        a_gG = d_gG - sum_g / G
    else:  # rloo: leave-one-out mean of the other G-1 rewards
        a_gG = d_gG - (sum_g - d_gG) / (G - 1)
    if scale == "group":
        centred = d_gG - sum_g / G
        std_g = (centred.square().sum(dim=1, keepdim=True) / (G - 1)).sqrt()
        a_gG = a_gG / (std_g + eps)
    elif scale == "batch":
        flat = r_gG.reshape(-1) - r_gG.reshape(-1)[0]  # shift by the first reward, as per group
        std = (flat - flat.mean()).square().sum().div(flat.numel() - 1).sqrt()
        a_gG = a_gG / (std + eps)
    return a_gG.to(out_dtype).reshape(rewards.shape)
