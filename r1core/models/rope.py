"""Rotary position embedding (RoPE) and the context-extension variants the supported configs use.

A position p rotates the pair (x_i, x_{i+D/2}) of every head by the angle p·f_i, with frequencies
f_i = theta^(-2i/D), i < D/2 ("half" layout, Llama/Qwen).  DeepSeek stores the pairs interleaved,
(x_2i, x_2i+1); `interleave=True` reads them that way and writes the rotated halves back de-interleaved
(first all the even lanes, then all the odd ones), as transformers does: q and k get the same
permutation, so q·k is unchanged.

Scaling variants change the frequencies (and for yarn the magnitude of cos/sin):
  linear   f_i / factor
  dynamic  NTK: theta' = theta·((factor·L/L0) − (factor − 1))^(D/(D−2)) once the sequence length L
           passes max_position_embeddings L0 (recomputed per call from the largest position)
  llama3   low frequencies divided by factor, high ones kept, a smooth ramp in between
  yarn     per-frequency blend of interpolation and extrapolation + an attention factor on cos/sin
Shapes: B batch, T positions, H heads, D rotary dims.
"""
from __future__ import annotations

import math

import torch

from r1core.models.config import RopeConfig


def _yarn_mscale(scale: float, mscale: float = 1.0) -> float:
    return 1.0 if scale <= 1 else 0.1 * mscale * math.log(scale) + 1.0


def rope_frequencies(rope: RopeConfig, dim: int, max_position_embeddings: int,
                     seq_len: int | None = None) -> tuple[torch.Tensor, float]:
    """(inv_freq [D/2] float32, attention_scaling applied to cos/sin)."""
    base = rope.theta
    exponents = torch.arange(0, dim, 2, dtype=torch.int64).float() / dim
    inv_freq = 1.0 / (base ** exponents)
    if rope.type == "default":
        return inv_freq, 1.0
    if rope.type == "linear":
        return inv_freq / rope.factor, 1.0
    if rope.type == "dynamic":
        L = max(seq_len or max_position_embeddings, max_position_embeddings)
        base = base * ((rope.factor * L / max_position_embeddings) - (rope.factor - 1)) ** (dim / (dim - 2))
        return 1.0 / (base ** exponents), 1.0
    if rope.type == "llama3":
        old_len = rope.original_max_position_embeddings or max_position_embeddings
        low_wavelen = old_len / rope.low_freq_factor
        high_wavelen = old_len / rope.high_freq_factor
        wavelen = 2 * math.pi / inv_freq
        scaled = torch.where(wavelen > low_wavelen, inv_freq / rope.factor, inv_freq)
        smooth = (old_len / wavelen - rope.low_freq_factor) / (rope.high_freq_factor - rope.low_freq_factor)
        smoothed = (1 - smooth) * scaled / rope.factor + smooth * scaled
        medium = (wavelen >= high_wavelen) & (wavelen <= low_wavelen)
        return torch.where(medium, smoothed, scaled), 1.0
    if rope.type == "yarn":
        factor = rope.factor
        old_len = rope.original_max_position_embeddings or max_position_embeddings
        if rope.attention_factor is not None:
            attn = rope.attention_factor
        elif rope.mscale and rope.mscale_all_dim:
            attn = _yarn_mscale(factor, rope.mscale) / _yarn_mscale(factor, rope.mscale_all_dim)
        else:
            attn = _yarn_mscale(factor)

        def correction_dim(rotations: float) -> float:
            return dim * math.log(old_len / (rotations * 2 * math.pi)) / (2 * math.log(base))

        low, high = correction_dim(rope.beta_fast or 32), correction_dim(rope.beta_slow or 1)
        if rope.truncate:
            low, high = math.floor(low), math.ceil(high)
        low, high = max(low, 0), min(high, dim - 1)
        if low == high:
            high += 0.001
        ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / (high - low)).clamp(0, 1)
        extrapolate = 1 - ramp
        pos_freqs = base ** exponents
        inv_freq = (1.0 / (factor * pos_freqs)) * (1 - extrapolate) + (1.0 / pos_freqs) * extrapolate
        return inv_freq, float(attn)
    raise ValueError(f"unsupported rope type {rope.type!r}")


def yarn_softmax_scale(rope: RopeConfig) -> float:
    """DeepSeek's extra factor on the softmax scale under yarn: mscale(factor, mscale_all_dim)²."""
    if rope.type == "default" or not rope.mscale_all_dim:
        return 1.0
    m = _yarn_mscale(rope.factor, rope.mscale_all_dim)
    return m * m


class RotaryEmbedding:
    """cos/sin tables for given positions; frequencies cached per device (not a module buffer, so a
    model built on the meta device needs no re-initialisation)."""

    def __init__(self, rope: RopeConfig, dim: int, max_position_embeddings: int):
        self.rope, self.dim, self.max_pos = rope, dim, max_position_embeddings
        self._cache: dict[torch.device, tuple[torch.Tensor, float]] = {}

    def _freqs(self, device: torch.device, position_ids: torch.Tensor) -> tuple[torch.Tensor, float]:
        if self.rope.type == "dynamic":
            seq_len = int(position_ids.max()) + 1 if position_ids.numel() else 0
            if seq_len > self.max_pos:
                inv, scale = rope_frequencies(self.rope, self.dim, self.max_pos, seq_len)
                return inv.to(device), scale
        if device not in self._cache:
            inv, scale = rope_frequencies(self.rope, self.dim, self.max_pos)
            self._cache[device] = (inv.to(device), scale)
        return self._cache[device]

    def __call__(self, position_ids_BT: torch.Tensor, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """cos [B, T, D] = (cos, cos) and signed sin [B, T, D] = (−sin, sin) in `dtype` (computed in
        float32, as transformers does), laid out for `apply_rope`."""
        inv_freq, scale = self._freqs(position_ids_BT.device, position_ids_BT)
        angles = position_ids_BT[..., None].float() * inv_freq
        cos, sin = angles.cos(), angles.sin()
        if scale != 1.0:
            cos, sin = cos * scale, sin * scale
        return torch.cat((cos, cos), dim=-1).to(dtype), torch.cat((-sin, sin), dim=-1).to(dtype)


def apply_rope(x_BTHD: torch.Tensor, cos_BTD: torch.Tensor, sin_BTD: torch.Tensor, *,
               interleave: bool = False) -> torch.Tensor:
    """Rotate the last dim of x [B, T, H, D] by the angles behind (cos, signed sin) [B, T, D]:
        half layout   x·cos + (x2, x1)·(−sin, sin) = (x1 cos − x2 sin, x2 cos + x1 sin)
    (bit for bit transformers' q·cos + rotate_half(q)·sin, in three ops: roll, mul, addcmul).
    interleave=True reads the pairs (x_2i, x_2i+1) and writes (x_even', x_odd') de-interleaved."""
    cos, sin = cos_BTD[:, :, None, :], sin_BTD[:, :, None, :]
    if interleave:
        half = x_BTHD.shape[-1] // 2
        c, s = cos[..., :half], sin[..., half:]
        x1, x2 = x_BTHD[..., 0::2], x_BTHD[..., 1::2]
        return torch.cat((x1 * c - x2 * s, x2 * c + x1 * s), dim=-1)
    rolled = torch.roll(x_BTHD, x_BTHD.shape[-1] // 2, dims=-1)
    return torch.addcmul(x_BTHD * cos, rolled, sin)
