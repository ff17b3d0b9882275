"""One sampling step: logits -> (token, log-prob of that token under the sampling distribution), and
the same token's log-prob under the untruncated policy (`policy_logp`).

The distribution, in transformers' order:  p ∝ exp(logits / temperature), restricted to the top_k
most likely tokens (top_k > 0), then to the smallest set of most likely tokens whose mass reaches
top_p (top_p < 1), renormalised.  temperature == 0 is greedy: argmax, and its logp is the model's
plain log_softmax(logits) at that token (the point mass would say 0, which is useless to a trainer).

Drawing: inverse CDF with one uniform u per row from a seeded torch.Generator (same seed, same
tokens), in two levels so that no pass over the vocabulary is sequential:
    e = exp(x − max x)                      one pass (filtered tokens: x = −inf, e = 0)
    block sums of e (blocks of 1024), their cumsum (V/1024 per row): the block holding u·total
    cumsum inside that one block: the token
and logp = x[token] − max x − log(total): no full log_softmax, no N·V random numbers (the
exponential race argmax(log p − log E) needs N·V draws, and on CPU drawing 256 × 49152 of them
costs as much as the lm_head GEMM; transformers' softmax + multinomial costs about as much too).
Rounding can never pick a token of probability 0: u·total is kept strictly below each cumsum's end.
No host sync, fixed shapes.  Shapes: N rows, V vocabulary, nb blocks of Bk tokens.

Two log-probs per sampled token (docs/train.md, "Sampler log-probs"):
  sampling logp   under the distribution actually sampled (temperature, top-k, top-p): `sample`'s;
  policy logp     log_softmax(logits / temperature) at the token, no truncation (`policy_logp`): what
                  a trainer recomputes and the behaviour policy of an importance weight.  They are equal
                  when nothing truncates (`truncates` is False), and for greedy both are the plain
                  log_softmax(logits) (temperature 1: a trainer of a greedy rollout scores at T = 1).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

_BLOCK = 1024


def check_sampling_args(temperature: float, top_p: float, top_k: int) -> None:
    if isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not temperature >= 0:
        raise ValueError(f"temperature must be >= 0 (0 = greedy), got {temperature!r}")
    if isinstance(top_p, bool) or not isinstance(top_p, (int, float)) or not 0 < top_p <= 1:
        raise ValueError(f"top_p must be in (0, 1], got {top_p!r}")
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 0:
        raise ValueError(f"top_k must be an int >= 0 (0 = off), got {top_k!r}")


def _filtered(logits_NV: torch.Tensor, temperature: float, top_p: float, top_k: int) -> torch.Tensor:
    """logits / temperature with the tokens outside top-k / top-p set to -inf (float32)."""
    x = logits_NV.float()
    if temperature not in (0, 1):
        x = x / temperature
    if temperature == 0:
        return x
    V = x.shape[-1]
    if 0 < top_k < V:
        kth = torch.topk(x, top_k, dim=-1).values[:, -1:]
        x = x.masked_fill(x < kth, float("-inf"))
    if top_p < 1.0:
        sorted_x, order = torch.sort(x, dim=-1, descending=True)
        p = torch.softmax(sorted_x, dim=-1)
        mass_before = p.cumsum(-1) - p                    # mass of the strictly more likely tokens
        drop = mass_before >= top_p                       # the most likely token always stays
        x = x.scatter(-1, order, sorted_x.masked_fill(drop, float("-inf")))
    return x


def truncates(temperature: float, top_p: float, top_k: int, vocab_size: int) -> bool:
    """Whether top-k / top-p can change the distribution (else sampling logp == policy logp)."""
    return temperature != 0 and (0 < top_k < vocab_size or top_p < 1.0)


def policy_logp(logits_NV: torch.Tensor, tokens_N: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """[N] float32: log_softmax(logits / temperature)[token], the untruncated policy's log-prob of each
    row's token (temperature 0: the plain log_softmax, as for `sample`'s greedy logp).  One pass over V."""
    x = logits_NV.float()
    if temperature not in (0, 1):
        x = x / temperature
    return x.gather(1, tokens_N[:, None])[:, 0] - torch.logsumexp(x, dim=-1)


def sampling_logprobs(logits_NV: torch.Tensor, *, temperature: float, top_p: float = 1.0,
                      top_k: int = 0) -> torch.Tensor:
    """log p [N, V] float32 of the sampling distribution (-inf outside the top-k / top-p set;
    greedy: the plain log_softmax).  The reference `sample` is tested against."""
    return torch.log_softmax(_filtered(logits_NV, temperature, top_p, top_k), dim=-1)


def _below(x: torch.Tensor) -> torch.Tensor:
    """The largest float strictly below x (x > 0)."""
    return torch.nextafter(x, torch.zeros_like(x))


def sample(logits_NV: torch.Tensor, *, temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """(tokens [N] int64, logp [N] float32) drawn from the sampling distribution of each row."""
    x = _filtered(logits_NV, temperature, top_p, top_k)
    N, V = x.shape
    m = x.max(-1, keepdim=True).values                                          # [N, 1]
    e = (x - m).exp_()                                                          # [N, V]
    Bk = min(_BLOCK, V)
    nb = -(-V // Bk)
    pad = nb * Bk - V
    e_blocks = (F.pad(e, (0, pad)) if pad else e).view(N, nb, Bk)
    block_cdf = e_blocks.sum(-1).cumsum(-1)                                     # [N, nb]
    total = block_cdf[:, -1:]                                                   # [N, 1]
    if temperature == 0:
        tokens = x.argmax(-1, keepdim=True)
    else:
        u = torch.rand(N, 1, generator=generator, device=x.device, dtype=torch.float32)
        target = torch.minimum(u * total, _below(total))
        blk = torch.searchsorted(block_cdf, target, right=True)                # [N, 1] < nb
        before = torch.where(blk > 0, block_cdf.gather(1, (blk - 1).clamp(min=0)), torch.zeros_like(target))
        inner_cdf = e_blocks.gather(1, blk[:, :, None].expand(N, 1, Bk))[:, 0].cumsum(-1)   # [N, Bk]
        rest = torch.minimum((target - before).clamp(min=0), _below(inner_cdf[:, -1:]))
        tokens = blk * Bk + torch.searchsorted(inner_cdf, rest, right=True)
    logp = x.gather(1, tokens) - m - total.log()
    return tokens[:, 0], logp[:, 0]
