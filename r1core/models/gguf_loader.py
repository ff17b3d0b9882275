"""GGUF files (llama.cpp's format) into a CausalLM: metadata -> ModelConfig, tensors dequantised.

Read with r1core.models.gguf_reader (a fast header parser; dequantisation natively for
F32/F16/BF16/Q8_0/Q4_0/Q4_1 and through the `gguf` package for the other formats) to float32, then
cast to the requested dtype.  GGUF stores a matrix with its dims reversed (ne0 = the contiguous one), which is
exactly PyTorch's [out, in] row-major layout once reversed back.

llama.cpp's converter permutes the rows of the Llama q/k projections so that its RoPE can rotate
adjacent pairs (x_2i, x_2i+1); transformers' RoPE rotates (x_i, x_i+D/2).  We undo it per head:
rows [h, 2, D/2] were written as [h, D/2, 2].  (Qwen2/Qwen3 use llama.cpp's "neox" RoPE: no permutation.)
"""
from __future__ import annotations

from pathlib import Path

import torch

from r1core.models.checkpoint import build_model
from r1core.models.config import ModelConfig, RopeConfig
from r1core.models.gguf_reader import GGUFFile
from r1core.models.transformer import CausalLM

SUPPORTED = {"llama": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}  # GGUF arch -> ours


def gguf_config(meta: dict, tensor_names: set[str], path: Path) -> ModelConfig:
    arch = meta.get("general.architecture")
    if arch not in SUPPORTED:
        raise ValueError(f"{path}: unknown architecture {arch!r} in GGUF; r1core reads {', '.join(SUPPORTED)}")

    def get(key, default=None, *, required=False):
        full = f"{arch}.{key}"
        if required and full not in meta:
            raise ValueError(f"{path}: GGUF metadata lacks {full!r}")
        return meta.get(full, default)

    if "rope_freqs.weight" in tensor_names:
        raise ValueError(f"{path}: GGUF carries rope_freqs (Llama-3.1 style frequency factors); not supported yet")
    n_heads = int(get("attention.head_count", required=True))
    hidden = int(get("embedding_length", required=True))
    head_dim = int(get("attention.key_length", 0) or get("rope.dimension_count", 0) or hidden // n_heads)
    rope = RopeConfig(theta=float(get("rope.freq_base", 10000.0)))
    scaling = get("rope.scaling.type")
    if scaling and scaling != "none":
        rope.type = {"linear": "linear", "yarn": "yarn"}.get(scaling, scaling)
        rope.factor = float(get("rope.scaling.factor", 1.0))
        rope.original_max_position_embeddings = get("rope.scaling.original_context_length")
    vocab = meta.get(f"{arch}.vocab_size") or len(meta.get("tokenizer.ggml.tokens") or ()) or None
    if vocab is None:
        raise ValueError(f"{path}: GGUF metadata gives no vocabulary size")
    eos = meta.get("tokenizer.ggml.eos_token_id")
    return ModelConfig(
        arch=SUPPORTED[arch], vocab_size=int(vocab), hidden_size=hidden,
        intermediate_size=int(get("feed_forward_length", required=True)),
        num_layers=int(get("block_count", required=True)), num_heads=n_heads,
        num_kv_heads=int(get("attention.head_count_kv", n_heads)), head_dim=head_dim,
        rms_norm_eps=float(get("attention.layer_norm_rms_epsilon", 1e-6)),
        max_position_embeddings=int(get("context_length", 4096)), rope=rope,
        tie_word_embeddings="output.weight" not in tensor_names,
        qkv_bias=arch == "qwen2" or "blk.0.attn_q.bias" in tensor_names,
        o_bias="blk.0.attn_output.bias" in tensor_names, qk_norm=arch == "qwen3",
        bos_token_id=meta.get("tokenizer.ggml.bos_token_id"), eos_token_id=eos,
        pad_token_id=meta.get("tokenizer.ggml.padding_token_id"),
    )


_LAYER = {  # our name inside layers.i -> GGUF names inside blk.i
    "input_layernorm.weight": ["attn_norm.weight"],
    "post_attention_layernorm.weight": ["ffn_norm.weight"],
    "self_attn.qkv_proj.weight": ["attn_q.weight", "attn_k.weight", "attn_v.weight"],
    "self_attn.qkv_proj.bias": ["attn_q.bias", "attn_k.bias", "attn_v.bias"],
    "self_attn.o_proj.weight": ["attn_output.weight"],
    "self_attn.o_proj.bias": ["attn_output.bias"],
    "self_attn.q_norm.weight": ["attn_q_norm.weight"],
    "self_attn.k_norm.weight": ["attn_k_norm.weight"],
    "mlp.gate_up_proj.weight": ["ffn_gate.weight", "ffn_up.weight"],
    "mlp.down_proj.weight": ["ffn_down.weight"],
}
_TOP = {"embed_tokens.weight": "token_embd.weight", "norm.weight": "output_norm.weight",
        "lm_head.weight": "output.weight"}


def _unpermute(w: torch.Tensor, n_head: int) -> torch.Tensor:
    """Undo llama.cpp's q/k row permutation (pairs back to halves) for n_head heads."""
    return w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def load_gguf(path: str | Path, *, dtype: torch.dtype = torch.float32,
              device: torch.device | str = "cpu") -> CausalLM:
    path = Path(path)
    f = GGUFFile(path)
    config = gguf_config(f.meta, set(f.tensors), path)
    permute = config.arch == "llama"

    def fetch(ours: str) -> torch.Tensor:
        if ours in _TOP:
            return f.tensor(_TOP[ours])
        _, i, rest = ours.split(".", 2)
        parts = [f.tensor(f"blk.{i}.{n}") for n in _LAYER[rest]]
        if permute and rest.startswith("self_attn.qkv_proj"):
            parts[0] = _unpermute(parts[0], config.num_heads)
            parts[1] = _unpermute(parts[1], config.num_kv_heads)
        return torch.cat(parts) if len(parts) > 1 else parts[0]

    return build_model(config, fetch, dtype=dtype, device=device)
