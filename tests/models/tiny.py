"""Tiny random models of every supported architecture, made by transformers (the oracle).

`tiny_hf(name)` -> (transformers model in eval mode, its config); `TINY` lists the names; the fixture
`saved_tiny` (imported by the conftests of tests/models and tests/rollout) saves each once per session.  The sizes are
awkward on purpose (odd vocabulary, GQA ratio 2, head_dim != hidden/heads, rope scaling variants)."""
from __future__ import annotations

import pytest
import torch

TINY = ("llama", "llama-dynamic", "qwen2", "qwen3", "qwen3_moe", "deepseek_v3")
MOE = ("qwen3_moe", "deepseek_v3")
_BASE = dict(vocab_size=97, hidden_size=48, intermediate_size=72, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, max_position_embeddings=64)


def tiny_config(name: str):
    import transformers as T
    if name == "llama":
        return T.LlamaConfig(**_BASE, attention_bias=True, mlp_bias=True, rope_scaling={
            "rope_type": "llama3", "factor": 4.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
            "original_max_position_embeddings": 16})
    if name == "llama-dynamic":  # dynamic NTK: positions past max_position_embeddings change the frequencies
        return T.LlamaConfig(**{**_BASE, "max_position_embeddings": 8}, rope_scaling={"rope_type": "dynamic",
                                                                                      "factor": 2.0})
    if name == "qwen2":
        return T.Qwen2Config(**_BASE, tie_word_embeddings=True)
    if name == "qwen3":
        return T.Qwen3Config(**_BASE, head_dim=20, rope_scaling={"rope_type": "linear", "factor": 2.0})
    if name == "qwen3_moe":
        return T.Qwen3MoeConfig(**{**_BASE, "num_hidden_layers": 3}, head_dim=16, moe_intermediate_size=24,
                                num_experts=6, num_experts_per_tok=2, norm_topk_prob=True, mlp_only_layers=[1])
    if name == "deepseek_v3":
        return T.DeepseekV3Config(**{**_BASE, "num_hidden_layers": 3, "num_key_value_heads": 4},
                                  moe_intermediate_size=16, n_routed_experts=8, num_experts_per_tok=2, n_group=4,
                                  topk_group=2, first_k_dense_replace=1, q_lora_rank=24, kv_lora_rank=16,
                                  qk_rope_head_dim=8, qk_nope_head_dim=12, v_head_dim=10, routed_scaling_factor=2.5,
                                  rope_scaling={"rope_type": "yarn", "factor": 4.0, "mscale": 1.0,
                                                "mscale_all_dim": 1.0, "original_max_position_embeddings": 16})
    raise KeyError(name)


def tiny_hf(name: str, seed: int = 0):
    """A transformers model with random weights (larger than HF's 0.02 init, so that logits are far
    from uniform and greedy decoding is not decided by rounding), and random router biases."""
    import transformers as T
    cfg = tiny_config(name)
    cls = {"llama": T.LlamaForCausalLM, "qwen2": T.Qwen2ForCausalLM, "qwen3": T.Qwen3ForCausalLM,
           "qwen3_moe": T.Qwen3MoeForCausalLM, "deepseek_v3": T.DeepseekV3ForCausalLM}[cfg.model_type]
    torch.manual_seed(seed)
    model = cls(cfg).eval()
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name_, p in model.named_parameters():
            if name_.endswith("norm.weight"):
                p.copy_(1 + 0.1 * torch.randn(p.shape, generator=g))
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
        for name_, b in model.named_buffers():
            if name_.endswith("e_score_correction_bias"):
                b.copy_(torch.rand(b.shape, generator=g) * 0.1)
    return model, cfg


@pytest.fixture(scope="session")
def saved_tiny(tmp_path_factory):
    """saved_tiny(name) -> (transformers model, folder it was saved to)."""
    cache = {}

    def get(name):
        if name not in cache:
            model, _ = tiny_hf(name)
            folder = tmp_path_factory.mktemp(name)
            model.save_pretrained(folder)
            cache[name] = (model, folder)
        return cache[name]
    return get
