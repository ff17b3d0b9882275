"""Shared-prefix attention without a mask: the packed layout as a list of causal sequences.

A packed row (r1core.train.packing) holds a prompt prefix of P tokens followed by segments
(one per completion).  A prefix token sees the earlier prefix tokens; a segment token sees the whole
prefix and the earlier tokens of its own segment.  So segment b's queries over the keys
[prefix ; segment b] are exactly a plain causal attention over the sequence [prefix ; segment b]
(taking the outputs at the segment's positions) — and the prefix's own outputs are those of that
same sequence's first P positions.  Attention over the packed row is therefore G ordinary causal
attentions over sequences of P + n_b tokens, gathered from the packed row's q/k/v (the prefix's keys
and values computed once and shared, its queries re-run G times: G·P²/2 extra score pairs, nothing
next to the P·n_b + n_b²/2 each segment needs), with no mask tensor anywhere:

    memory   O(Σ_b (P + n_b)) gathered q/k/v, vs. the dense mask's U·S² booleans plus S² scores
    work     Σ_b (P + n_b)²/2 score pairs, vs. S²/2 for the dense causal-masked row (S = P + Σ n_b)

On CPU, rows of at most `_DENSE_MAX_CPU` columns use the dense mask instead (1 MiB of booleans at
the limit, built once per layout): there the gathers cost more than the masked kernel's extra pairs.
The kernel is whatever `scaled_dot_product_attention(is_causal=True)` takes: flash on CUDA, the
CPU flash kernel on CPU (both O(T) memory).  Sequences are batched in buckets of similar length (a
bucket pads its sequences at the end, which a causal query never sees; a bucket is padded by at most
`_SLACK` of its score pairs).  With flash-attn installed, CUDA fp16/bf16 inputs go through
`flash_attn_varlen_func` instead: one launch, no padding, no re-run prefix queries (a segment's
queries against [prefix ; segment] keys, causal bottom-right aligned — flash-attn's convention when
there are fewer queries than keys).  The dense boolean mask stays available as the reference
(`dense_mask`, what the tests compare against).
(flex_attention with a block mask would also express this, but eagerly it materialises the full
score matrix: it pays only under torch.compile.)

Shapes: U packed rows, S packed width, H heads, D head dim, M sequences of a bucket, L its length.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F

_SLACK = 1.25          # a bucket may cost at most this many times its sequences' own score pairs
# CPU rows up to this width take the dense mask (S² booleans, 1 MiB at 1024, built once per layout and
# shared by the layers): at short widths the gathers cost more than the masked kernel's extra pairs.
_DENSE_MAX_CPU = 1024


@functools.cache
def _flash_varlen():
    try:
        from flash_attn import flash_attn_varlen_func  # noqa: PLC0415
    except ImportError:
        return None
    return flash_attn_varlen_func


class _Gather(torch.autograd.Function):
    """rows x[layout.flat] of the packed tokens [U·S, heads, D] -> [N_all, heads, D].  The backward
    copies each column's gradient from its first occurrence (index_copy: no accumulation) and adds
    only the prefix's repeats (index_add over Σ (G_u − 1)·P_u rows); bucket padding gets exactly zero
    gradient (only padded queries, whose outputs are unused, see it).  Autograd's own backward of
    index_select is a scatter-add over all N_all rows, several times slower on CPU."""

    @staticmethod
    def forward(ctx, x, layout):
        ctx.layout, ctx.n = layout, x.shape[0]
        return x.index_select(0, layout.flat)

    @staticmethod
    def backward(ctx, g):
        lay = ctx.layout
        gx = g.new_zeros((ctx.n, *g.shape[1:]))
        gx.index_copy_(0, lay.first_cols, g.index_select(0, lay.first_pos))
        if lay.dup_pos.numel():
            gx.index_add_(0, lay.dup_cols, g.index_select(0, lay.dup_pos))
        return gx, None


class _Scatter(torch.autograd.Function):
    """The sequences' outputs [N_all, H, Dv] back to the packed tokens [U·S, H, Dv] (each column from
    its first occurrence; padding columns 0); the backward is the inverse copy."""

    @staticmethod
    def forward(ctx, o, layout, n):
        ctx.layout, ctx.n_all = layout, o.shape[0]
        out = o.new_zeros((n, *o.shape[1:]))
        return out.index_copy_(0, layout.first_cols, o.index_select(0, layout.first_pos))

    @staticmethod
    def backward(ctx, g):
        lay = ctx.layout
        go = g.new_zeros((ctx.n_all, *g.shape[1:]))
        return go.index_copy_(0, lay.first_pos, g.index_select(0, lay.first_cols)), None, None


class PrefixSegments:
    """The attention layout of U packed rows: `prefix_lens[u]` prefix tokens at columns 0.., then the
    segments `segments[u] = [(start column, length), ...]`; every other column is padding (it sees
    nothing real; its output is arbitrary and must not be used)."""

    def __init__(self, prefix_lens: list[int], segments: list[list[tuple[int, int]]], width: int,
                 device: torch.device | str = "cpu"):
        if len(prefix_lens) != len(segments):
            raise ValueError("prefix_lens and segments must have one entry per packed row")
        self.prefix_lens = [int(p) for p in prefix_lens]
        self.segments = [[(int(a), int(n)) for a, n in segs] for segs in segments]
        self.width, self.device = int(width), torch.device(device)
        for u, (P, segs) in enumerate(zip(self.prefix_lens, self.segments)):
            if P < 0 or any(n < 1 or a < P or a + n > width for a, n in segs):
                raise ValueError(f"packed row {u}: segments {segs} do not fit after a prefix of {P} in width {width}")
            if not segs and P == 0:
                raise ValueError(f"packed row {u} holds no tokens")
        self._build()

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.prefix_lens), self.width

    def to(self, device: torch.device | str) -> PrefixSegments:
        return self if torch.device(device) == self.device else PrefixSegments(
            self.prefix_lens, self.segments, self.width, device)

    # ------------------------------------------------------------------------------------------
    # index tensors, built once per micro-batch on the host and shared by every layer
    # ------------------------------------------------------------------------------------------
    def _sequences(self) -> list[tuple[int, list[int]]]:
        """(packed row, flat packed columns of the sequence) for every causal sequence."""
        S, out = self.width, []
        for u, (P, segs) in enumerate(zip(self.prefix_lens, self.segments)):
            prefix = list(range(u * S, u * S + P))
            if not segs:
                out.append((u, prefix))
            for a, n in segs:
                out.append((u, prefix + list(range(u * S + a, u * S + a + n))))
        return out

    def _build(self) -> None:
        seqs = self._sequences()
        order = sorted(range(len(seqs)), key=lambda j: -len(seqs[j][1]))
        buckets, cur, cost = [], [], 0
        for j in order:                                  # greedy: longest first, pad while it stays cheap
            n = len(seqs[j][1])
            if cur and len(seqs[cur[0]][1]) ** 2 * (len(cur) + 1) > _SLACK * (cost + n * n):
                buckets.append(cur)
                cur, cost = [], 0
            cur.append(j)
            cost += n * n
        buckets.append(cur)
        U, S = self.shape
        first_pos, first_cols, dup_pos, dup_cols, flat = [], [], [], [], []
        filled = torch.zeros(U * S, dtype=torch.bool)
        self.buckets, base = [], 0                       # per bucket: (offset in the gathered rows, M, L)
        for members in buckets:
            L = len(seqs[members[0]][1])
            for m, j in enumerate(members):
                cols = torch.tensor(seqs[j][1])
                pos = base + m * L + torch.arange(cols.numel())
                new = ~filled[cols]                       # a prefix column's first sequence owns its output
                first_pos.append(pos[new]), first_cols.append(cols[new])
                dup_pos.append(pos[~new]), dup_cols.append(cols[~new])
                filled[cols] = True
                flat.append(torch.cat([cols, cols[-1:].expand(L - cols.numel())]))  # pad at the end: unseen
            self.buckets.append((base, len(members), L))
            base += len(members) * L
        dev = self.device
        self.flat = torch.cat(flat).to(dev)              # [N_all] packed column of every gathered row
        self.first_pos, self.first_cols = torch.cat(first_pos).to(dev), torch.cat(first_cols).to(dev)
        self.dup_pos, self.dup_cols = torch.cat(dup_pos).to(dev), torch.cat(dup_cols).to(dev)
        self.n_out = base
        # flash-attn varlen: the packed queries once, keys per sequence, no padding
        q_cols, k_cols, cu_q, cu_k = [], [], [0], [0]
        for u, (P, segs) in enumerate(zip(self.prefix_lens, self.segments)):
            prefix = list(range(u * S, u * S + P))
            parts = ([(prefix, prefix)] if P else []) + [
                (list(range(u * S + a, u * S + a + n)), prefix + list(range(u * S + a, u * S + a + n)))
                for a, n in segs]
            for q, k in parts:
                q_cols += q
                k_cols += k
                cu_q.append(cu_q[-1] + len(q))
                cu_k.append(cu_k[-1] + len(k))
        self._varlen = None
        if self.device.type == "cuda":
            self._varlen = (torch.tensor(q_cols, device=self.device), torch.tensor(k_cols, device=self.device),
                            torch.tensor(cu_q, dtype=torch.int32, device=self.device),
                            torch.tensor(cu_k, dtype=torch.int32, device=self.device),
                            max(b - a for a, b in zip(cu_q, cu_q[1:])), max(b - a for a, b in zip(cu_k, cu_k[1:])))

    def score_pairs(self) -> int:
        """Query-key pairs the bucketed kernel computes (causal halves counted): the attention work."""
        return sum(M * L * (L + 1) // 2 for _, M, L in self.buckets)

    # ------------------------------------------------------------------------------------------
    def attend(self, q_BHSD: torch.Tensor, k_BHSD: torch.Tensor, v_BHSD: torch.Tensor, *, scale: float
               ) -> torch.Tensor:
        """softmax(q·kᵀ·scale under this layout) · v -> [U, H, S, Dv] (k/v may have fewer heads)."""
        U, H, S, _ = q_BHSD.shape
        if (U, S) != self.shape:
            raise ValueError(f"PrefixSegments of shape {self.shape} applied to q of [U, S] = {(U, S)}")
        Hkv, Dv = k_BHSD.shape[1], v_BHSD.shape[-1]
        q = q_BHSD.transpose(1, 2).reshape(U * S, H, -1)                   # [U·S, H, D] flat packed tokens
        k = k_BHSD.transpose(1, 2).reshape(U * S, Hkv, -1)
        v = v_BHSD.transpose(1, 2).reshape(U * S, Hkv, Dv)
        if not q_BHSD.is_cuda and S <= _DENSE_MAX_CPU:
            if getattr(self, "_dense", None) is None:
                self._dense = self.dense_mask()
            return F.scaled_dot_product_attention(q_BHSD, k_BHSD, v_BHSD, attn_mask=self._dense, scale=scale,
                                                  enable_gqa=Hkv != H)
        flash = _flash_varlen()
        if (flash is not None and self._varlen is not None and q.is_cuda and q.dtype in (torch.float16, torch.bfloat16)
                and q.shape[-1] == Dv and Dv <= 256):
            q_cols, k_cols, cu_q, cu_k, max_q, max_k = self._varlen
            o = flash(q.index_select(0, q_cols), k.index_select(0, k_cols), v.index_select(0, k_cols), cu_q, cu_k,
                      max_q, max_k, softmax_scale=scale, causal=True)
            out = q.new_zeros(U * S, H, Dv).index_copy(0, q_cols, o)
        else:
            qa, ka, va = (_Gather.apply(t, self) for t in (q, k, v))         # [N_all, heads, D]
            outs = []
            for base, M, L in self.buckets:
                qb, kb, vb = (t[base:base + M * L].view(M, L, *t.shape[1:]).transpose(1, 2) for t in (qa, ka, va))
                ob = F.scaled_dot_product_attention(qb, kb, vb, is_causal=True, scale=scale, enable_gqa=Hkv != H)
                outs.append(ob.transpose(1, 2).reshape(M * L, H, Dv))
            out = _Scatter.apply(torch.cat(outs) if len(outs) > 1 else outs[0], self, U * S)
        return out.view(U, S, H, Dv).transpose(1, 2)

    def dense_mask(self) -> torch.Tensor:
        """The same layout as a boolean mask [U, 1, S, S] (True = may attend; padding sees itself):
        the reference the mask-free path is tested against."""
        U, S = self.shape
        seg = torch.full((U, S), -1, dtype=torch.long)
        for u, (P, segs) in enumerate(zip(self.prefix_lens, self.segments)):
            seg[u, :P] = 0
            for i, (a, n) in enumerate(segs):
                seg[u, a:a + n] = i + 1
        q, k = seg[:, :, None], seg[:, None, :]
        idx = torch.arange(S)
        causal = idx[None, :] <= idx[:, None]
        mask = ((q == k) & (q >= 0) & causal[None]) | ((k == 0) & (q > 0)) | torch.eye(S, dtype=torch.bool)[None]
        return mask[:, None].to(self.device)
