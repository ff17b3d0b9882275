"""r1core's sampler log-probs in TRL's and verl's layouts (docs/integrations.md, "Sampler log-probs").

Legend: N rows, T positions of a Rollout (prompt + completion), C completion positions (the longest
completion), the response layout both TRL and verl use: completion token j of row n at [n, j], right-padded.

    logp_NC, mask_NC = completion_logprobs(rollout)                 # Rollout.logp_policy, response layout
    inputs.update(trl_sampling_inputs(rollout, old_per_token_logps))  # TRL's sampling_per_token_logps and
                                                                      # importance_sampling_ratio
    batch["rollout_log_probs"] = completion_logprobs(rollout)[0]    # verl's rollout log-probs

Which log-prob: `Rollout.logp_policy` (log_softmax(logits / temperature), no top-k / top-p), because both
trainers compare it with their own recomputed log-probs, which are untruncated at the same temperature
(TRL's old_per_token_logps, verl's old_log_prob); `Rollout.logp` (the truncated distribution's) would
read as a mismatch wherever top-k / top-p cut mass.  The importance ratio is TRL 1.16's
(_generate_and_score_completions, vllm_importance_sampling_correction): exp(old − sampling) per token or
summed per sequence, NaN differences counted as 0, then truncated to [C_min, C_max] or masked to 0
outside it — r1core.ops.grpo.objective.rollout_is_weights, the same function grpo.rollout_is uses.
"""
from __future__ import annotations

import torch

from r1core.ops.grpo.objective import rollout_is_weights


def completion_logprobs(rollout, *, which: str = "policy") -> tuple[torch.Tensor, torch.Tensor]:
    """(log-probs [N, C] float32, mask [N, C] bool) of each row's completion tokens, left-aligned (TRL's
    completion_ids / verl's responses layout).  which="policy": Rollout.logp_policy (what TRL and verl
    want); "sampling": Rollout.logp (the truncated distribution)."""
    if which not in ("policy", "sampling"):
        raise ValueError(f"which must be 'policy' or 'sampling', got {which!r}")
    src = rollout.logp_policy if which == "policy" else rollout.logp
    if src is None:
        raise ValueError("this rollout carries no logp_policy (it was not sampled by r1core.generate)")
    N = src.shape[0]
    C = max(1, int(rollout.completion_lens.max()))
    j = torch.arange(C, device=src.device)[None]                                   # [1, C]
    mask = j < rollout.completion_lens.to(src.device)[:, None]
    cols = (rollout.prompt_lens.to(src.device)[:, None] + j).clamp(max=src.shape[1] - 1)
    return torch.where(mask, src.gather(1, cols), torch.zeros((), device=src.device)).float(), mask


def trl_sampling_inputs(rollout, old_per_token_logps: torch.Tensor | None = None, *,
                        mode: str = "sequence_mask", clip_min: float | None = None,
                        clip_max: float | None = 3.0) -> dict:
    """The entries TRL's GRPOTrainer puts into its inputs for the vLLM importance-sampling correction, from an
    r1core rollout: sampling_per_token_logps [N, C] and, given TRL's old_per_token_logps [N, C] (its own
    forward), importance_sampling_ratio ([N, C] for token modes, [N, 1] for sequence modes).  Defaults are
    TRL's (vllm_importance_sampling_mode="sequence_mask", clip_max 3, clip_min None)."""
    logp, mask = completion_logprobs(rollout)
    out = {"sampling_per_token_logps": logp}
    if old_per_token_logps is not None:
        if old_per_token_logps.shape != logp.shape:
            raise ValueError(f"old_per_token_logps must have the rollout's completion shape {list(logp.shape)}, "
                             f"got {list(old_per_token_logps.shape)}")
        out["importance_sampling_ratio"] = rollout_is_weights(old_per_token_logps, logp.to(old_per_token_logps),
                                                              mask.to(old_per_token_logps.dtype), mode=mode,
                                                              c_min=clip_min, c_max=clip_max)
    return out
