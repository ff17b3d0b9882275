"""Grouped-query attention (Llama / Qwen2 / Qwen3) and the one function every attention calls.

`attend` picks the kernel once per call: flash_attn (CUDA, fp16/bf16, plain causal) when it is
installed, else torch's scaled_dot_product_attention (flash / memory-efficient / CPU flash kernels).
Masks are boolean, True = may attend; None with causal=True is the plain causal mask.  A
`PrefixSegments` layout in place of the mask (shared-prefix packing) is attended without any mask
tensor (r1core.models.segments).

Shapes: B batch, T new tokens, S keys (cached + new), H query heads, Hkv key/value heads,
D head dim.  Query head h reads key/value head h // (H / Hkv), as in transformers' repeat_kv.
"""
from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from torch import nn

from r1core.models.config import ModelConfig
from r1core.models.kv_cache import KVCache
from r1core.models.layers import RMSNorm
from r1core.models.rope import apply_rope
from r1core.models.segments import PrefixSegments


@functools.cache
def _flash_attn():
    try:
        from flash_attn import flash_attn_func  # noqa: PLC0415
    except ImportError:
        return None
    return flash_attn_func


def attend(q_BHTD: torch.Tensor, k_BHSD: torch.Tensor, v_BHSD: torch.Tensor, *, scale: float,
           mask: torch.Tensor | PrefixSegments | None = None, causal: bool = False) -> torch.Tensor:
    """softmax(q·kᵀ·scale + mask) · v -> [B, H, T, Dv].  k/v may have fewer heads (GQA/MQA)."""
    if isinstance(mask, PrefixSegments):
        return mask.attend(q_BHTD, k_BHSD, v_BHSD, scale=scale)
    B, H, T, D = q_BHTD.shape
    Hkv = k_BHSD.shape[1]
    flash = _flash_attn()
    if (flash is not None and mask is None and q_BHTD.is_cuda and q_BHTD.dtype in (torch.float16, torch.bfloat16)
            and D == v_BHSD.shape[-1] and D <= 256):
        out = flash(q_BHTD.transpose(1, 2), k_BHSD.transpose(1, 2), v_BHSD.transpose(1, 2),
                    softmax_scale=scale, causal=causal)
        return out.transpose(1, 2)
    if T == 1 and Hkv != H and not causal:
        # decode: the H/Hkv query heads of a group become H/Hkv query rows against one k/v head
        q = q_BHTD.reshape(B, Hkv, H // Hkv, D)
        out = F.scaled_dot_product_attention(q, k_BHSD, v_BHSD, attn_mask=mask, scale=scale)
        return out.reshape(B, H, 1, -1)
    return F.scaled_dot_product_attention(q_BHTD, k_BHSD, v_BHSD, attn_mask=mask, is_causal=causal and mask is None,
                                          scale=scale, enable_gqa=Hkv != H)


class Attention(nn.Module):
    """Multi-head attention with grouped keys/values, RoPE, optional q/k RMSNorm (Qwen3) and biases.
    q, k and v come from one fused projection `qkv_proj` (rows: H·D of q, then Hkv·D of k, of v)."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim = config.num_heads, config.num_kv_heads, config.head_dim
        H, D = config.hidden_size, config.head_dim
        self.qkv_proj = nn.Linear(H, (self.num_heads + 2 * self.num_kv_heads) * D, bias=config.qkv_bias)
        self.o_proj = nn.Linear(self.num_heads * D, H, bias=config.o_bias)
        if config.qk_norm:
            self.q_norm = RMSNorm(D, eps=config.rms_norm_eps)
            self.k_norm = RMSNorm(D, eps=config.rms_norm_eps)
        else:
            self.q_norm = self.k_norm = None
        self.scale = D ** -0.5

    def forward(self, x_BTH: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, *, mask: torch.Tensor | None,
                causal: bool, cache: KVCache | None = None, layer: int = 0) -> torch.Tensor:
        B, T, _ = x_BTH.shape
        Hq, Hkv, D = self.num_heads, self.num_kv_heads, self.head_dim
        qkv = self.qkv_proj(x_BTH).view(B, T, Hq + 2 * Hkv, D)
        if self.q_norm is not None:
            qk = torch.cat((self.q_norm(qkv[:, :, :Hq]), self.k_norm(qkv[:, :, Hq:Hq + Hkv])), dim=2)
        else:
            qk = qkv[:, :, :Hq + Hkv]
        qk = apply_rope(qk, cos, sin)                                           # q and k heads in one go
        q, k, v = qk[:, :, :Hq], qk[:, :, Hq:], qkv[:, :, Hq + Hkv:]
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)      # [B, heads, T, D]
        if cache is not None:
            k, v = cache.write(layer, k, v)
        out = attend(q, k, v, scale=self.scale, mask=mask, causal=causal)      # [B, Hq, T, D]
        return self.o_proj(out.transpose(1, 2).reshape(B, T, Hq * D))
