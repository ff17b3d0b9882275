"""A hand-written GRPO training loop on r1core's ops, plain PyTorch, CPU, a few seconds.

    python examples/plain_pytorch_step.py [--steps 30] [--backend cpp|torch|triton]

One step, exactly as DeepSeek-R1's GRPO does it (no value model):
  1. sample G completions per prompt from the current policy        (plain sampling, no KV cache)
  2. old_logp and ref_logp of the sampled tokens                      r1core.fused_linear_logprobs
  3. rewards -> group-normalised advantages                           r1core.grpo_advantages
  4. clipped-ratio loss + k3 KL, straight from the hidden states      r1core.fused_linear_grpo_loss
     (the [B, T, V] logits are never built), backward, optimizer step; twice per batch (GRPO's mu = 2),
     so the second update sees ratio != 1 and the clip at work (the stats printed are its)
The toy task: after a prompt of digits, answer with the prompt's first digit as often as possible;
the mean reward climbs within a few dozen steps.  Legend: B = prompts·G rows, P prompt length,
C completion length, H hidden, V vocabulary.
"""
from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn as nn

import r1core

V, H, P, C, G = 16, 64, 4, 6, 8          # digits 0-9 (+6 unused ids), hidden, prompt/completion lengths, group size


class TinyLM(nn.Module):
    """Embedding, two causal transformer layers, an untied lm_head: a causal LM small enough for a CPU."""

    def __init__(self):
        super().__init__()
        self.embed = nn.Embedding(V, H)
        self.pos = nn.Parameter(torch.randn(P + C, H) * 0.02)
        layer = nn.TransformerEncoderLayer(H, nhead=4, dim_feedforward=2 * H, dropout=0.0, batch_first=True,
                                           norm_first=True)
        self.blocks = nn.TransformerEncoder(layer, num_layers=2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(H)
        self.lm_head = nn.Linear(H, V, bias=False)

    def hidden_states(self, ids_BT: torch.Tensor) -> torch.Tensor:
        T = ids_BT.shape[1]
        causal = nn.Transformer.generate_square_subsequent_mask(T)
        x = self.embed(ids_BT) + self.pos[:T]
        return self.norm(self.blocks(x, mask=causal, is_causal=True))          # [B, T, H]


@torch.no_grad()
def sample(model: TinyLM, prompts_BP: torch.Tensor, temperature: float, gen: torch.Generator) -> torch.Tensor:
    """Append C sampled tokens to each prompt -> [B, P + C] (only the last position's logits are formed)."""
    ids = prompts_BP
    for _ in range(C):
        h_last = model.hidden_states(ids)[:, -1]                               # [B, H]
        probs = torch.softmax(model.lm_head(h_last) / temperature, dim=-1)     # [B, V]: one row per sequence
        ids = torch.cat([ids, torch.multinomial(probs, 1, generator=gen)], dim=1)
    return ids


def reward(ids_BT: torch.Tensor) -> torch.Tensor:
    """Fraction of completion tokens equal to the prompt's first digit, in [0, 1]."""
    return (ids_BT[:, P:] == ids_BT[:, :1]).float().mean(dim=1)


def grpo_step(model, ref_model, opt, gen, *, n_prompts=8, temperature=1.0, beta=0.02, iterations=2, backend=None):
    prompts = torch.randint(0, 10, (n_prompts, P), generator=gen).repeat_interleave(G, dim=0)   # [B, P]
    ids = sample(model, prompts, temperature, gen)                                            # [B, P + C]
    targets_BC = ids[:, P:]                                    # the completion tokens
    mask_BC = torch.ones_like(targets_BC, dtype=torch.bool)   # (no EOS in this toy: every token counts)
    W = model.lm_head.weight
    with torch.no_grad():
        # position t's hidden state predicts token t + 1: completion tokens come from positions P-1 .. P+C-2
        old_logp = r1core.fused_linear_logprobs(model.hidden_states(ids)[:, P - 1:-1], W, targets_BC,
                                                temperature=temperature, backend=backend)
        ref_logp = r1core.fused_linear_logprobs(ref_model.hidden_states(ids)[:, P - 1:-1], ref_model.lm_head.weight,
                                                targets_BC, temperature=temperature, backend=backend)
    rewards = reward(ids)
    adv = r1core.grpo_advantages(rewards, G)                   # [B]: (r - group mean) / (group std + eps)

    for _ in range(iterations):  # GRPO's mu updates per batch: from the second on, ratio != 1 and clipping acts
        hidden = model.hidden_states(ids)[:, P - 1:-1]         # [B, C, H], differentiable
        loss, stats = r1core.fused_linear_grpo_loss(
            hidden, W, targets_BC, adv, mask_BC, old_logp=old_logp, ref_logp=ref_logp, beta=beta, eps_low=0.2,
            eps_high=0.28, temperature=temperature, loss_agg="token_mean", backend=backend)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
    return rewards.mean().item(), loss.item(), stats


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--backend", default=None, help="r1core backend (default: automatic)")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    torch.set_num_threads(1)  # toy shapes: per-op thread start-up would cost more than the work
    torch.manual_seed(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    model = TinyLM()
    ref_model = copy.deepcopy(model).requires_grad_(False)    # the frozen reference policy of the KL term
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    t0 = time.perf_counter()
    for step in range(1, args.steps + 1):
        r, loss, st = grpo_step(model, ref_model, opt, gen, backend=args.backend)
        print(f"step {step:3d}  reward {r:.3f}  loss {loss:+.4f}  kl {st.kl_mean.item():.4f}  "
              f"ratio {st.ratio_mean.item():.3f}  clip {st.clip_low_frac.item() + st.clip_high_frac.item():.3f}",
              flush=True)
    print(f"done: {args.steps} steps in {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
