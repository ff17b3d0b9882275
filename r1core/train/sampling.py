"""Turning prompt strings into sampled completions: tokenise, `generate` in seeded chunks, decode.

Legend: P prompts, G samples per prompt, N = P·G rows, T positions (prompt + completion, right-padded).

Every generate() call gets its own seed, a function of the caller's seed and the global index of
the call's first prompt.  With `gen_batch` prompts per call the samples therefore do not depend on
how many ranks share the prompts (the distributed parity test relies on it) nor on a resume.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core.train.build import Deps, call_seed


@dataclass
class Samples:
    tokens_NT: torch.Tensor        # int64, prompt + completion, right-padded
    mask_NT: torch.Tensor          # bool, completion tokens (EOS included when sampled)
    logp_NT: torch.Tensor | None   # float32 sampling log-probs of the tokens (0 elsewhere)
    completions: list[str]         # decoded completion text per row
    prompt_lens: list[int]         # per row
    expert_ids: list[torch.Tensor] | None = None   # MoE: per MoE layer [N, T, k] experts used (routing replay)
    logp_policy_NT: torch.Tensor | None = None     # float32 untruncated policy log-probs (Rollout.logp_policy)

    @property
    def num_tokens(self) -> int:
        return int(self.mask_NT.sum())


def encode_prompts(tokenizer, prompts: list[str]) -> list[list[int]]:
    out = []
    for p in prompts:
        ids = tokenizer.encode(p)
        ids = list(getattr(ids, "ids", ids))
        if not ids:
            raise ValueError(f"prompt {p[:40]!r} encodes to no tokens")
        out.append([int(i) for i in ids])
    return out


def eos_id(tokenizer) -> int | None:
    e = getattr(tokenizer, "eos_token_id", None)
    return int(e) if e is not None else None


def decode_completion(tokenizer, ids: list[int], eos: int | None) -> str:
    if eos is not None:
        ids = [i for i in ids if i != eos]
    return tokenizer.decode(ids)


def sample(model, tokenizer, prompts: list[str], *, num_samples: int, max_new_tokens: int,
           temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0, seed: int = 0, first_index: int = 0,
           gen_batch: int = 0, deps: Deps | None = None, progress=None) -> Samples:
    """Sample `num_samples` completions of each prompt (rows i*G .. i*G+G-1 continue prompt i).
    `first_index` is the global index of prompts[0], for the per-call seeds.  `progress(call, step,
    steps)` hears of every decode step of every generate() call (only passed on when given)."""
    deps = deps or Deps()
    ids = encode_prompts(tokenizer, prompts)
    eos = eos_id(tokenizer)
    step = gen_batch if gen_batch > 0 else max(1, len(ids))
    parts = []
    with torch.no_grad():
        for call, i in enumerate(range(0, len(ids), step)):
            hook = {} if progress is None else {"progress": lambda done, total, call=call: progress(call, done, total)}
            parts.append(deps.generate(model, ids[i:i + step], num_samples=num_samples,
                                       max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p,
                                       top_k=top_k, eos_token_id=eos, seed=call_seed(seed, first_index + i), **hook))
    return _merge(parts, tokenizer, eos, ids, num_samples)


def _merge(parts, tokenizer, eos, prompt_ids, G) -> Samples:
    T = max(int(p.tokens.shape[1]) for p in parts)
    toks, masks, logps, policy = [], [], [], []
    for p in parts:
        pad = T - p.tokens.shape[1]
        toks.append(torch.nn.functional.pad(p.tokens.long().cpu(), (0, pad), value=eos if eos is not None else 0))
        masks.append(torch.nn.functional.pad(p.completion_mask.bool().cpu(), (0, pad), value=False))
        for name, out in (("logp", logps), ("logp_policy", policy)):
            lp = getattr(p, name, None)
            out.append(None if lp is None else torch.nn.functional.pad(lp.float().cpu(), (0, pad)))
    tokens, mask = torch.cat(toks), torch.cat(masks)
    logp = None if any(x is None for x in logps) else torch.cat(logps)
    logp_policy = None if any(x is None for x in policy) else torch.cat(policy)
    completions = [decode_completion(tokenizer, tokens[r][mask[r]].tolist(), eos) for r in range(tokens.shape[0])]
    prompt_lens = [len(prompt_ids[r // G]) for r in range(tokens.shape[0])]
    experts = None
    if all(getattr(p, "expert_ids", None) for p in parts):
        experts = [torch.cat([torch.nn.functional.pad(p.expert_ids[layer].cpu(), (0, 0, 0, T - p.tokens.shape[1]))
                              for p in parts]) for layer in range(len(parts[0].expert_ids))]
    return Samples(tokens, mask, logp, completions, prompt_lens, experts, logp_policy)
