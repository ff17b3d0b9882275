"""Shared-prefix packing: each prompt runs once per micro-batch, not once per sample.

The G samples of a group share their prompt, and R1-style prompts are long (the R1-Zero system
prompt alone is ~90 tokens; completions of a short task are ~50).  Written as G separate rows, the
update and log-prob forwards compute every prompt token G times.  Here one packed row holds a
group's prompt once followed by each of its completions, and a block mask lets every completion
token see the whole prompt and its own completion (causally), nothing else:

    packed row   [ p0 p1 … p(L-2) | x0 c0 c1 … | x0 c0' c1' … | pad ]      x0 = the prompt's last token
    sees         prompt: causal   | prompt + own segment, causal           | itself only

Positions are the ones the tokens have in their own row, so RoPE (hence every logit) is the same as
in the row layout up to rounding: a completion segment starts with the prompt's last token (its
hidden state predicts the first completion token), at position L-1.  Padding inside a completion
is dropped, so the packed batch also carries no padding columns of finished rows.

Cost: G·(L-1) fewer token-forwards per group, paid with a denser attention mask (L + Σ completion
lengths keys per group instead of L + completion per row); attention is a small part of a step
next to the GEMMs at these lengths.  Layout for the loss: `select` maps the packed hidden states
back to [n, Tc] completion positions, the `Batch`'s extension layout:

    input_ids_NT[n, t] = row n's token at column L_n - 1 + t,   targets_NT[n, t] = column L_n + t

Not used (the trainer falls back to rows) for models that are not r1core CausalLMs and for dynamic
NTK RoPE, whose frequencies depend on the longest position in the forward.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from r1core.models.segments import PrefixSegments


@dataclass
class Packed:
    """One micro-batch in packed form: what PolicyHead.forward takes."""
    input_ids: torch.Tensor                  # [U, S] int64 (U groups present in the micro-batch)
    position_ids: torch.Tensor               # [U, S]
    attention_mask: PrefixSegments | torch.Tensor  # the layout (or, dense=True, its [U, 1, S, S] bool mask)
    select: tuple[torch.Tensor, torch.Tensor]  # ([n, Tc], [n, Tc]) packed (row, column) of each completion position
    replay_ids: list[torch.Tensor] | None    # MoE: per MoE layer [U, S, k]


class PrefixPacking:
    """The rows of one rank's rollout, kept so any subset of rows can be packed by prompt group.

    tokens_NT     prompt + completion per row, right-padded (the rollout's layout)
    prompt_lens   per row, completion_lens per row (>= 1: a sampled row has at least one token)
    group_N       the prompt group of each row (rows of a group share the prompt)
    replay        MoE routing replay in the row layout: per MoE layer [N, T, k] (input positions)
    """

    def __init__(self, tokens_NT: torch.Tensor, prompt_lens: list[int], completion_lens: list[int],
                 group_N: torch.Tensor, replay: list[torch.Tensor] | None = None):
        self.tokens = tokens_NT.cpu()
        self.prompt_lens = [int(x) for x in prompt_lens]
        self.comp_lens = [int(x) for x in completion_lens]
        self.group = group_N.cpu()
        self.replay = None if replay is None else [e.cpu() for e in replay]
        if min(self.prompt_lens, default=1) < 1:
            raise ValueError("every row needs a prompt of at least one token")

    @staticmethod
    def extension_layout(tokens_NT: torch.Tensor, mask_NT: torch.Tensor, prompt_lens: list[int]
                         ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, list[int]]:
        """(input_ids [N, Tc], targets [N, Tc], mask [N, Tc], completion lengths): the completion
        positions of each row, the first one being predicted from the prompt's last token."""
        N = tokens_NT.shape[0]
        lens = [int(mask_NT[n, prompt_lens[n]:].sum()) for n in range(N)]
        Tc = max(1, max(lens, default=1))
        inputs = torch.zeros(N, Tc, dtype=torch.long)
        targets = torch.zeros(N, Tc, dtype=torch.long)
        mask = torch.zeros(N, Tc, dtype=torch.bool)
        for n in range(N):
            L, c = prompt_lens[n], lens[n]
            inputs[n, :c] = tokens_NT[n, L - 1:L - 1 + c]
            targets[n, :c] = tokens_NT[n, L:L + c]
            mask[n, :c] = mask_NT[n, L:L + c]
        return inputs, targets, mask, lens

    def pack(self, rows: torch.Tensor, device: torch.device | str, Tc: int, *, dense: bool = False) -> Packed:
        """Pack `rows` (indices into this rank's rows) by prompt group; `Tc` is the extension layout's width.
        The attention layout is a PrefixSegments (no mask tensor); dense=True gives the boolean
        [U, 1, S, S] mask instead (the reference: quadratic in S, never used by the trainer)."""
        rows = rows.cpu().tolist()
        groups: dict[int, list[int]] = {}
        for r in rows:
            groups.setdefault(int(self.group[r]), []).append(r)
        segs = []                                   # per packed row: [(row or -1 for the prompt, start col, length)]
        for members in groups.values():
            first = members[0]
            L = self.prompt_lens[first]
            layout = [(-1, 0, L - 1)] if L > 1 else []
            layout += [(r, L - 1, self.comp_lens[r]) for r in members]
            segs.append((first, layout))
        S = max(sum(n for _, _, n in layout) for _, layout in segs)
        U = len(segs)
        ids = torch.zeros(U, S, dtype=torch.long)
        pos = torch.zeros(U, S, dtype=torch.long)
        src_row = torch.zeros(U, S, dtype=torch.long)              # row-layout source (for replay ids)
        src_col = torch.zeros(U, S, dtype=torch.long)
        sel_u = torch.zeros(len(rows), Tc, dtype=torch.long)
        sel_s = torch.zeros(len(rows), Tc, dtype=torch.long)
        where = {}
        prefix, spans = [], []                  # per packed row: prefix length, [(start, length)] of its segments
        for u, (first, layout) in enumerate(segs):
            at = 0
            prefix.append(layout[0][2] if layout[0][0] < 0 else 0)
            spans.append([])
            for i, (r, col, n) in enumerate(layout):
                src = first if r < 0 else r
                ids[u, at:at + n] = self.tokens[src, col:col + n]
                pos[u, at:at + n] = torch.arange(col, col + n)
                src_row[u, at:at + n], src_col[u, at:at + n] = src, torch.arange(col, col + n)
                if r >= 0:
                    where[r] = (u, at, n)
                    spans[-1].append((at, n))
                at += n
        for j, r in enumerate(rows):
            u, at, n = where[r]
            sel_u[j] = u
            sel_s[j, :n] = torch.arange(at, at + n)
            sel_s[j, n:] = at + n - 1                                  # past the completion: masked in the loss
        attn = PrefixSegments(prefix, spans, S, device)
        replay = None
        if self.replay is not None:
            replay = [e[src_row, src_col.clamp(max=e.shape[1] - 1)].to(device) for e in self.replay]
        return Packed(ids.to(device), pos.to(device), attn.dense_mask() if dense else attn,
                      (sel_u.to(device), sel_s.to(device)), replay)


def layout_cost(prompt_lens: list[int], completion_lens: list[int], group_N: list[int], width: int,
                config) -> dict[str, float]:
    """Estimated forward FLOPs of the row and the packed layout of one batch (`config`: a ModelConfig).

    rows    every row is a [width] causal sequence: N·width token-forwards, N·width²/2 score pairs
            (the causal kernel cannot skip a row's right padding)
    packed  each group's prompt once plus every completion: Σ_groups (L - 1) + Σ c token-forwards;
            Σ_rows (L - 1 + c)²/2 score pairs (the mask-free PrefixSegments layout)
    A token-forward costs 2·(attention + MLP weights) per layer, a score pair 4·heads·head_dim (q·k and
    p·v).  Both layouts' memory is linear in the tokens: the packed one never builds an S² mask."""
    D = config.head_dim if not config.is_mla else config.qk_nope_head_dim + config.qk_rope_head_dim
    Hq, Hkv, H = config.num_heads, config.num_kv_heads, config.hidden_size
    inter = config.moe_intermediate_size * (config.top_k + config.n_shared_experts) if config.is_moe \
        else config.intermediate_size
    per_token = 2 * (H * (Hq + 2 * Hkv) * D + Hq * D * H + 3 * H * inter)
    per_pair = 4 * Hq * D
    N = len(prompt_lens)
    rows = N * (width * per_token + width * (width + 1) / 2 * per_pair)
    first: dict[int, int] = {}
    for n, g in enumerate(group_N):
        first.setdefault(int(g), n)
    tokens = sum(prompt_lens[n] - 1 for n in first.values()) + sum(completion_lens)
    pairs = sum((p - 1 + c) * (p + c) / 2 for p, c in zip(prompt_lens, completion_lens))
    return {"rows": rows, "packed": tokens * per_token + pairs * per_pair}
