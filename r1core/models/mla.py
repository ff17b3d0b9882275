"""Multi-head latent attention (DeepSeek-V2/V3).

Keys and values are not projected per head from x: x is compressed to a latent c (kv_lora_rank r,
RMS-normed) plus one shared rotary key k_rope (qk_rope_head_dim dr), and per-head k_nope (dn) and v
(dv) are expanded from c by kv_b_proj = [W_uk; W_uv].  Queries go through their own low-rank
bottleneck (q_lora_rank) when there is one.  Per head:  score = q_nope·k_nope + q_rope·k_rope.

Two equivalent ways to compute it, both here:
  expanded  (training / no cache)  k = [W_uk c ; k_rope], v = W_uv c, ordinary attention.
  absorbed  (generation, cached)   only [c ; k_rope] is cached (1 "head" of r + dr lanes instead of
            H·(dn+dr+dv)); q_nope is mapped into latent space, q_lat = W_ukᵀ q_nope, so
            score = [q_lat ; q_rope]·[c ; k_rope]  and  out = W_uv (softmax · c).
The softmax scale is 1/sqrt(dn + dr), times mscale² under yarn rope scaling.
Shapes: B batch, T tokens, S keys, H heads.
"""
from __future__ import annotations

import torch
from torch import nn

from r1core.models.attention import attend
from r1core.models.config import ModelConfig
from r1core.models.kv_cache import KVCache
from r1core.models.layers import RMSNorm
from r1core.models.rope import apply_rope, yarn_softmax_scale


class MLAttention(nn.Module):
    def __init__(self, config: ModelConfig):
        super().__init__()
        H, n = config.hidden_size, config.num_heads
        self.num_heads = n
        self.r, self.dn, self.dr, self.dv = (config.kv_lora_rank, config.qk_nope_head_dim, config.qk_rope_head_dim,
                                             config.v_head_dim)
        self.interleave = config.rope_interleave
        q_dim = n * (self.dn + self.dr)
        if config.q_lora_rank:
            self.q_a_proj = nn.Linear(H, config.q_lora_rank, bias=config.qkv_bias)
            self.q_a_layernorm = RMSNorm(config.q_lora_rank, eps=1e-6)
            self.q_b_proj = nn.Linear(config.q_lora_rank, q_dim, bias=False)
            self.q_proj = None
        else:
            self.q_proj = nn.Linear(H, q_dim, bias=False)
        self.kv_a_proj_with_mqa = nn.Linear(H, self.r + self.dr, bias=config.qkv_bias)
        self.kv_a_layernorm = RMSNorm(self.r, eps=1e-6)
        self.kv_b_proj = nn.Linear(self.r, n * (self.dn + self.dv), bias=False)
        self.o_proj = nn.Linear(n * self.dv, H, bias=config.o_bias)
        self.scale = (self.dn + self.dr) ** -0.5 * yarn_softmax_scale(config.rope)

    def forward(self, x_BTH: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, mask: torch.Tensor | None,
                causal: bool, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, _ = x_BTH.shape
        n, r, dn, dr, dv = self.num_heads, self.r, self.dn, self.dr, self.dv
        q = self.q_proj(x_BTH) if self.q_proj is not None else self.q_b_proj(self.q_a_layernorm(self.q_a_proj(x_BTH)))
        q_nope, q_rope = q.view(B, T, n, dn + dr).split((dn, dr), dim=-1)
        c, k_rope = self.kv_a_proj_with_mqa(x_BTH).split((r, dr), dim=-1)
        c = self.kv_a_layernorm(c)                                              # [B, T, r]
        q_rope = apply_rope(q_rope, cos, sin, interleave=self.interleave)      # [B, T, n, dr]
        k_rope = apply_rope(k_rope[:, :, None, :], cos, sin, interleave=self.interleave)  # [B, T, 1, dr]

        if cache is None:  # expanded
            k_nope, v = self.kv_b_proj(c).view(B, T, n, dn + dv).split((dn, dv), dim=-1)
            k = torch.cat((k_nope, k_rope.expand(B, T, n, dr)), dim=-1)
            q = torch.cat((q_nope, q_rope), dim=-1)
            out = attend(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), scale=self.scale, mask=mask,
                         causal=causal)                                         # [B, n, T, dv]
            return self.o_proj(out.transpose(1, 2).reshape(B, T, n * dv))

        # absorbed: cache [c ; k_rope], attend in latent space
        latent = torch.cat((c, k_rope[:, :, 0]), dim=-1)[:, None]               # [B, 1, T, r + dr]
        kv, _ = cache.write(layer, latent, None)                                # [B, 1, S, r + dr]
        w = self.kv_b_proj.weight.view(n, dn + dv, r)
        w_uk, w_uv = w[:, :dn], w[:, dn:]                                       # [n, dn, r], [n, dv, r]
        q_lat = torch.einsum("btnd,ndr->bntr", q_nope, w_uk)                     # [B, n, T, r]
        q_full = torch.cat((q_lat, q_rope.transpose(1, 2)), dim=-1)             # [B, n, T, r + dr]
        out_lat = attend(q_full, kv, kv[..., :r], scale=self.scale, mask=mask, causal=causal)  # [B, n, T, r]
        out = torch.einsum("bntr,nvr->btnv", out_lat, w_uv)                      # [B, T, n, dv]
        return self.o_proj(out.reshape(B, T, n * dv))
