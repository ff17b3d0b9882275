"""Rollouts: batched sampling with a KV cache (`generate`) and its result (`Rollout`)."""
from r1core.rollout.generate import Rollout, generate
from r1core.rollout.sampling import policy_logp, sample, sampling_logprobs

__all__ = ["Rollout", "generate", "policy_logp", "sample", "sampling_logprobs"]
