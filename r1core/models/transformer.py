"""CausalLM: one readable decoder for Llama, Qwen2, Qwen3, Qwen3-MoE and DeepSeek-V3.

    x = embed(ids)
    for each layer:  x = x + attn(norm1(x));  x = x + ffn(norm2(x))      ffn = MLP or MoE
    logits = lm_head(norm(x))

Padding and packing.  `attention_mask [B, T]` (1 = real token) allows left or right padding;
without explicit `position_ids` the positions count real tokens only (cumsum(mask) − 1), so a
left-padded row gets exactly the logits of the same row unpadded.  Packed rows (several documents in
one row) are given by `position_ids` that restart: a token attends only to earlier tokens of its own
document (a new document starts wherever position[t] != position[t−1] + 1); without padding such a
row runs as one causal sequence per document (PrefixSegments, no [T, T] mask).  Without mask and
packing the attention is the plain causal kernel.  A boolean `attention_mask [B, 1, T, T]` with
explicit `position_ids` is used as given; so is a `PrefixSegments` layout (the trainer's
shared-prefix packing without a mask tensor, r1core.models.segments; the 4-d mask is its reference).

Activation checkpointing (`gradient_checkpointing_enable(every=k)`, the transformers convention):
every k-th block keeps only its input in the forward and recomputes itself in the backward
(torch.utils.checkpoint, non-reentrant), so a step holds one block's activations plus one [B, T, H]
tensor per checkpointed block instead of every block's.  Only training forwards with grad enabled
and no cache are checkpointed; MoE blocks recompute with the same routing (the same inputs, or the
same replay ids).

Generation passes a KVCache (r1core.models.kv_cache); MoE layers record the experts each token used
(`moe.last_ids`) and accept `replay_ids` to route exactly as a rollout did.
Shapes: B batch, T tokens, H hidden, V vocabulary, k experts per token.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from r1core.models.attention import Attention
from r1core.models.config import ModelConfig
from r1core.models.hf_save import save_pretrained
from r1core.models.kv_cache import KVCache
from r1core.models.layers import MLP, RMSNorm
from r1core.models.mla import MLAttention
from r1core.models.rope import RotaryEmbedding
from r1core.models.segments import PrefixSegments


def _make_moe(config: ModelConfig) -> nn.Module:
    from r1core.models.moe import MoE  # noqa: PLC0415  (imports the MoE ops only for MoE models)
    return MoE(config.hidden_size, config.moe_intermediate_size, config.num_experts, config.top_k,
               scoring=config.scoring, n_group=config.n_group, topk_group=config.topk_group,
               use_correction_bias=config.scoring == "sigmoid", norm_topk=config.norm_topk,
               routed_scale=config.routed_scale, n_shared_experts=config.n_shared_experts,
               shared_intermediate_size=config.n_shared_experts * config.moe_intermediate_size or None)


class DecoderLayer(nn.Module):
    def __init__(self, config: ModelConfig, index: int):
        super().__init__()
        self.index = index
        self.input_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.self_attn = MLAttention(config) if config.is_mla else Attention(config)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.is_moe = config.moe_layers[index]
        self.mlp = _make_moe(config) if self.is_moe else MLP(config.hidden_size, config.intermediate_size,
                                                            bias=config.mlp_bias)

    def forward(self, x_BTH, cos, sin, *, mask, causal, cache=None, replay_ids=None):
        x_BTH = x_BTH + self.self_attn(self.input_layernorm(x_BTH), cos, sin, mask=mask, causal=causal,
                                       cache=cache, layer=self.index)
        h = self.post_attention_layernorm(x_BTH)
        return x_BTH + (self.mlp(h, replay_ids=replay_ids) if self.is_moe else self.mlp(h))


class CausalLM(nn.Module):
    """A decoder-only language model.  `forward` -> logits [B, T, V]; `hidden_states` -> [B, T, H]
    (the input of `lm_head`, for the fused linear loss); `config` is a ModelConfig."""

    def __init__(self, config: ModelConfig):
        super().__init__()
        self.config = config
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(DecoderLayer(config, i) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, eps=config.rms_norm_eps)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        if config.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        rot_dim = config.qk_rope_head_dim if config.is_mla else config.head_dim
        self.rotary = RotaryEmbedding(config.rope, rot_dim, config.max_position_embeddings)
        self.checkpoint_every = 0                    # 0: off; k: blocks 0, k, 2k, ... recompute in backward
        self._checkpoint_kwargs: dict = {}

    # ------------------------------------------------------------------------------------------
    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict | None = None, *,
                                      every: int = 1) -> None:
        """Recompute every `every`-th block in the backward (1: all blocks).  `gradient_checkpointing_kwargs`
        go to torch.utils.checkpoint.checkpoint (use_reentrant=False unless given)."""
        if isinstance(every, bool) or not isinstance(every, int) or every < 1:
            raise ValueError(f"every must be an int >= 1, got {every!r}")
        if gradient_checkpointing_kwargs is not None and not isinstance(gradient_checkpointing_kwargs, dict):
            raise TypeError("gradient_checkpointing_kwargs must be a dict or None")
        self.checkpoint_every = every
        self._checkpoint_kwargs = {"use_reentrant": False, **(gradient_checkpointing_kwargs or {})}

    def gradient_checkpointing_disable(self) -> None:
        self.checkpoint_every = 0

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.checkpoint_every > 0

    # ------------------------------------------------------------------------------------------
    @property
    def moe_layers(self) -> list[nn.Module]:
        """The MoE blocks in layer order (the order of `replay_ids` and of Rollout.expert_ids)."""
        return [layer.mlp for layer in self.layers if layer.is_moe]

    @property
    def device(self) -> torch.device:
        return self.embed_tokens.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.embed_tokens.weight.dtype

    def forward(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                attention_mask: torch.Tensor | None = None, replay_ids: list[torch.Tensor] | None = None,
                cache: KVCache | None = None) -> torch.Tensor:
        h = self.hidden_states(input_ids, position_ids=position_ids, attention_mask=attention_mask,
                               replay_ids=replay_ids, cache=cache)
        return self.lm_head(h)

    def hidden_states(self, input_ids: torch.Tensor, *, position_ids: torch.Tensor | None = None,
                      attention_mask: torch.Tensor | None = None, replay_ids: list[torch.Tensor] | None = None,
                      cache: KVCache | None = None) -> torch.Tensor:
        """The final-norm hidden states [B, T, H] (logits = lm_head(hidden_states))."""
        input_ids, attention_mask, position_ids = self._check_inputs(input_ids, attention_mask, position_ids,
                                                                    replay_ids, cache)
        return self._hidden(input_ids, position_ids, attention_mask, replay_ids, cache)

    def _hidden(self, input_ids: torch.Tensor, position_ids: torch.Tensor, attention_mask: torch.Tensor | None,
                replay_ids: list[torch.Tensor] | None, cache: KVCache | None) -> torch.Tensor:
        """hidden_states without the argument checks (no host sync: the generation loop and its CUDA
        graph call this with inputs it built itself)."""
        B, T = input_ids.shape
        if cache is not None:
            cache.mark(attention_mask.bool() if attention_mask is not None
                       else torch.ones(B, T, dtype=torch.bool, device=input_ids.device))
            mask = None if (T == 1 and not cache.static and bool(cache.valid[:, :cache.length + 1].all())) \
                else cache.attention_mask(T)
            causal = False
        elif isinstance(attention_mask, PrefixSegments) or (attention_mask is not None and attention_mask.dim() == 4):
            mask, causal = attention_mask, False
        else:
            mask = _padding_and_packing_mask(attention_mask, position_ids)
            causal = mask is None
        x = self.embed_tokens(input_ids)
        cos, sin = self.rotary(position_ids, x.dtype)
        moe_i = 0
        every = self.checkpoint_every if (self.training and cache is None and torch.is_grad_enabled()) else 0
        for i, layer in enumerate(self.layers):
            ids = None
            if layer.is_moe and replay_ids is not None:
                ids, moe_i = replay_ids[moe_i], moe_i + 1
            if every and i % every == 0:
                x = checkpoint(layer, x, cos, sin, mask=mask, causal=causal, replay_ids=ids, **self._checkpoint_kwargs)
            else:
                x = layer(x, cos, sin, mask=mask, causal=causal, cache=cache, replay_ids=ids)
        if cache is not None:
            cache.advance(T)
        return self.norm(x)

    def _check_inputs(self, input_ids, attention_mask, position_ids, replay_ids, cache):
        if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.dtype not in (
                torch.int64, torch.int32):
            raise ValueError(f"input_ids must be an int64/int32 tensor [B, T], got "
                             f"{getattr(input_ids, 'dtype', type(input_ids))} {tuple(getattr(input_ids, 'shape', ()))}")
        B, T = input_ids.shape
        if T == 0:
            raise ValueError("input_ids has no tokens (T = 0)")
        if input_ids.numel() and (int(input_ids.min()) < 0 or int(input_ids.max()) >= self.config.vocab_size):
            raise ValueError(f"input_ids hold ids outside [0, vocab_size={self.config.vocab_size})")
        if isinstance(attention_mask, PrefixSegments):
            if attention_mask.shape != (B, T):
                raise ValueError(f"a PrefixSegments attention_mask must have the shape of input_ids {(B, T)}, "
                                 f"got {attention_mask.shape}")
            if position_ids is None or cache is not None:
                raise ValueError("a PrefixSegments attention_mask needs explicit position_ids and no cache")
            attention_mask = attention_mask.to(input_ids.device)
        elif attention_mask is not None and attention_mask.dim() == 4:
            # an explicit boolean mask [B, 1, T, T] (True = may attend), e.g. shared-prefix packing;
            # the positions cannot be inferred from it, so they must come with it
            if tuple(attention_mask.shape) != (B, 1, T, T) or attention_mask.dtype != torch.bool:
                raise ValueError(f"a 4-d attention_mask must be bool [B, 1, T, T] = {(B, 1, T, T)}, got "
                                 f"{attention_mask.dtype} {tuple(attention_mask.shape)}")
            if position_ids is None or cache is not None:
                raise ValueError("a 4-d attention_mask needs explicit position_ids and no cache")
        elif attention_mask is not None and tuple(attention_mask.shape) != (B, T):
            raise ValueError(f"attention_mask must have the shape of input_ids {(B, T)}, "
                             f"got {tuple(attention_mask.shape)}")
        if position_ids is not None:
            if position_ids.dim() == 1:
                position_ids = position_ids[None].expand(B, T)
            if tuple(position_ids.shape) != (B, T):
                raise ValueError(f"position_ids must have the shape of input_ids {(B, T)}, "
                                 f"got {tuple(position_ids.shape)}")
        elif attention_mask is not None and cache is None:
            position_ids = (attention_mask.long().cumsum(-1) - 1).clamp_(min=0)
        else:
            start = cache.length if cache is not None else 0
            position_ids = torch.arange(start, start + T, device=input_ids.device)[None].expand(B, T)
        n_moe = len(self.moe_layers)
        if replay_ids is not None and len(replay_ids) != n_moe:
            raise ValueError(f"replay_ids must hold one [B, T, k] tensor per MoE layer ({n_moe}), "
                             f"got {len(replay_ids)}")
        return input_ids, attention_mask, position_ids.to(input_ids.device)

    def save_pretrained(self, folder: str | Path, *, max_shard_bytes: int = 5 << 30) -> None:
        """Write config.json + safetensors that transformers' from_pretrained loads unchanged."""
        save_pretrained(self, folder, max_shard_bytes=max_shard_bytes)


def _padding_and_packing_mask(attention_mask_BT: torch.Tensor | None, position_ids_BT: torch.Tensor
                              ) -> torch.Tensor | PrefixSegments | None:
    """None (plain causal), a PrefixSegments layout (packed documents without padding: one causal
    sequence per document, no mask tensor) or a boolean mask [B, 1, T, T] (padding): key j is visible
    to query i when j <= i, j is a real token and j is in i's document.  The diagonal is always
    visible (no empty row)."""
    B, T = position_ids_BT.shape
    new_doc = torch.ones(B, T, dtype=torch.bool, device=position_ids_BT.device)
    new_doc[:, 1:] = position_ids_BT[:, 1:] != position_ids_BT[:, :-1] + 1
    packed = bool(new_doc[:, 1:].any())
    unpadded = attention_mask_BT is None or bool(attention_mask_BT.bool().all())
    if not packed and unpadded:
        return None
    if packed and unpadded:
        spans = []
        for starts in new_doc.cpu().tolist():
            cols = [t for t, s in enumerate(starts) if s] + [T]
            spans.append([(a, b - a) for a, b in zip(cols, cols[1:])])
        return PrefixSegments([0] * B, spans, T, position_ids_BT.device)
    idx = torch.arange(T, device=position_ids_BT.device)
    mask = (idx[None, :] <= idx[:, None])[None].expand(B, T, T)                 # causal [B, T, T]
    if packed:
        doc = new_doc.long().cumsum(-1)
        mask = mask & (doc[:, :, None] == doc[:, None, :])
    if attention_mask_BT is not None:
        mask = mask & attention_mask_BT.bool()[:, None, :]
    mask = mask | torch.eye(T, dtype=torch.bool, device=mask.device)[None]
    return mask[:, None]
