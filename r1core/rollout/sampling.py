"""One sampling step: logits -> (token, log-prob of that token under the sampling distribution).

The distribution, in transformers' order:  p ∝ exp(logits / temperature), restricted to the top_k
most likely tokens (top_k > 0), then to the smallest set of most likely tokens whose mass reaches
top_p (top_p < 1), renormalised.  temperature == 0 is greedy: argmax, and its logp is the model's
plain log_softmax(logits) at that token (the point mass would say 0, which is useless to a trainer).

Drawing: token = argmax(log p − log E), E ~ Exp(1) i.i.d. (the exponential race, equivalent to
sampling from p), one uniform stream from a seeded torch.Generator: same seed, same tokens.  No
host sync, fixed shapes: the step can live inside a CUDA graph.
Shapes: N rows, V vocabulary.
"""
from __future__ import annotations

import torch


def check_sampling_args(temperature: float, top_p: float, top_k: int) -> None:
    if not isinstance(temperature, (int, float)) or temperature != temperature or temperature < 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")


def sampling_logprobs(logits_NV: torch.Tensor, *, temperature: float, top_p: float = 1.0,
                      top_k: int = 0) -> torch.Tensor:
    """log p [N, V] float32 of the sampling distribution (-inf outside the top-k / top-p set)."""
    x = logits_NV.float()
    if temperature == 0:
        return torch.log_softmax(x, dim=-1)
    if temperature != 1.0:
        x = x / temperature
    V = x.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(x, top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        p = torch.softmax(sorted_x, dim=-1)
        mass_before = p.cumsum(-1) - p                    # mass of the strictly more likely tokens
        drop = mass_before >= top_p                       # the first token always stays (mass_before = 0)
        x = x.scatter(-1, order, sorted_x.masked_fill(drop, float("-inf")))
    return torch.log_softmax(x, dim=-1)


def sample(logits_NV: torch.Tensor, *, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [N] int64, logp [N] float32)."""
    logp_NV = sampling_logprobs(logits_NV, temperature=temperature, top_p=top_p, top_k=top_k)
    if temperature == 0:
        tokens = logp_NV.argmax(-1)
    else:
        e = torch.empty_like(logp_NV).exponential_(1.0, generator=generator)
        tokens = (logp_NV - e.log()).argmax(-1)
    return tokens, logp_NV.gather(-1, tokens[:, None])[:, 0]
