"""ModelConfig: the one description of a decoder that every r1core model is built from.

A small keyword-only dataclass read from a Hugging Face `config.json` (Llama, Qwen2, Qwen3,
Qwen3-MoE, DeepSeek-V3) or from GGUF metadata, and written back as a `config.json` that
`transformers` loads.  The original Hugging Face dict is kept in `hf` so that a checkpoint loaded from
a folder is saved with every field it came with (generation ids, rope details, names).

Architectures and how they differ (everything else is the same Llama block):
  llama        optional bias on q/k/v/o (`attention_bias`) and on the MLP (`mlp_bias`)
  qwen2        bias on q/k/v, none on o
  qwen3        per-head RMSNorm on q and k before RoPE ("qk-norm"), `head_dim` set explicitly
  qwen3_moe    qwen3 attention + softmax top-k MoE on layers chosen by `decoder_sparse_step`
  deepseek_v3  multi-head latent attention (MLA) + sigmoid group-limited MoE with a shared expert,
               the first `first_k_dense_replace` layers dense
"""
from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHITECTURES = ("llama", "qwen2", "qwen3", "qwen3_moe", "deepseek_v3")
HF_CLASS = {
    "llama": "LlamaForCausalLM",
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "qwen3_moe": "Qwen3MoeForCausalLM",
    "deepseek_v3": "DeepseekV3ForCausalLM",
}
ROPE_TYPES = ("default", "linear", "dynamic", "yarn", "llama3")


@dataclass(kw_only=True)
class RopeConfig:
    """Rotary embedding: theta and one of the scaling variants (`ROPE_TYPES`)."""
    theta: float = 10000.0
    type: str = "default"
    factor: float = 1.0
    original_max_position_embeddings: int | None = None
    # llama3
    low_freq_factor: float = 1.0
    high_freq_factor: float = 4.0
    # yarn
    beta_fast: float = 32.0
    beta_slow: float = 1.0
    mscale: float | None = None
    mscale_all_dim: float | None = None
    attention_factor: float | None = None
    truncate: bool = True


@dataclass(kw_only=True)
class ModelConfig:
    arch: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    max_position_embeddings: int = 4096
    rope: RopeConfig = field(default_factory=RopeConfig)
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    hidden_act: str = "silu"
    # MoE (num_experts == 0: dense); moe_layers[i] says whether layer i is a MoE layer
    num_experts: int = 0
    top_k: int = 0
    moe_intermediate_size: int = 0
    moe_layers: tuple[bool, ...] = ()
    scoring: str = "softmax"
    norm_topk: bool = True
    n_group: int = 1
    topk_group: int = 1
    routed_scale: float = 1.0
    n_shared_experts: int = 0
    # multi-head latent attention (deepseek_v3)
    q_lora_rank: int | None = None
    kv_lora_rank: int = 0
    qk_nope_head_dim: int = 0
    qk_rope_head_dim: int = 0
    v_head_dim: int = 0
    rope_interleave: bool = False
    # tokens
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    hf: dict = field(default_factory=dict, repr=False)

    @property
    def is_moe(self) -> bool:
        return self.num_experts > 0 and any(self.moe_layers)

    @property
    def is_mla(self) -> bool:
        return self.arch == "deepseek_v3"

    def __post_init__(self):
        if self.arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture {self.arch!r}; supported: {', '.join(ARCHITECTURES)}")
        if self.rope.type not in ROPE_TYPES:
            raise ValueError(f"unsupported rope scaling type {self.rope.type!r}; supported: {', '.join(ROPE_TYPES)}")
        if self.hidden_act != "silu":
            raise ValueError(f"unsupported hidden_act {self.hidden_act!r}; only 'silu' is implemented")
        if self.num_heads % max(self.num_kv_heads, 1):
            raise ValueError(f"num_attention_heads {self.num_heads} is not a multiple of num_key_value_heads "
                             f"{self.num_kv_heads}")
        if not self.moe_layers:
            self.moe_layers = (False,) * self.num_layers
        self.moe_layers = tuple(bool(m) for m in self.moe_layers)

    # ----------------------------------------------------------------------------------------
    # Hugging Face config.json
    # ----------------------------------------------------------------------------------------
    @classmethod
    def from_hf(cls, hf: dict[str, Any]) -> ModelConfig:
        """Read a Hugging Face config dict (transformers 4.x `rope_scaling` or 5.x `rope_parameters`)."""
        arch = hf.get("model_type")
        if arch not in ARCHITECTURES:
            raise ValueError(f"unknown architecture: model_type={arch!r} (architectures={hf.get('architectures')}); "
                             f"r1core supports {', '.join(ARCHITECTURES)}")
        if hf.get("use_sliding_window"):
            raise ValueError(f"{arch}: sliding-window attention (use_sliding_window=true) is not supported")
        n_heads = hf["num_attention_heads"]
        hidden = hf["hidden_size"]
        n_layers = hf["num_hidden_layers"]
        kw: dict[str, Any] = dict(
            arch=arch, vocab_size=hf["vocab_size"], hidden_size=hidden,
            intermediate_size=hf["intermediate_size"], num_layers=n_layers, num_heads=n_heads,
            num_kv_heads=hf.get("num_key_value_heads") or n_heads,
            head_dim=hf.get("head_dim") or hidden // n_heads,
            rms_norm_eps=hf.get("rms_norm_eps", 1e-6),
            max_position_embeddings=hf.get("max_position_embeddings", 4096),
            rope=_rope_from_hf(hf), tie_word_embeddings=bool(hf.get("tie_word_embeddings", False)),
            hidden_act=hf.get("hidden_act", "silu"),
            bos_token_id=hf.get("bos_token_id"), eos_token_id=hf.get("eos_token_id"),
            pad_token_id=hf.get("pad_token_id"), hf=dict(hf),
        )
        if arch == "llama":
            kw.update(qkv_bias=bool(hf.get("attention_bias")), o_bias=bool(hf.get("attention_bias")),
                      mlp_bias=bool(hf.get("mlp_bias")))
        elif arch == "qwen2":
            kw.update(qkv_bias=True)
        elif arch in ("qwen3", "qwen3_moe"):
            kw.update(qkv_bias=bool(hf.get("attention_bias")), o_bias=bool(hf.get("attention_bias")), qk_norm=True)
        if arch == "qwen3_moe":
            n_exp = hf.get("num_experts", hf.get("num_local_experts", 0))
            step = hf.get("decoder_sparse_step", 1) or 1
            only_mlp = set(hf.get("mlp_only_layers") or ())
            kw.update(num_experts=n_exp, top_k=hf["num_experts_per_tok"],
                      moe_intermediate_size=hf["moe_intermediate_size"],
                      moe_layers=tuple(i not in only_mlp and n_exp > 0 and (i + 1) % step == 0
                                       for i in range(n_layers)),
                      scoring="softmax", norm_topk=bool(hf.get("norm_topk_prob", False)))
        if arch == "deepseek_v3":
            if hf.get("scoring_func", "sigmoid") != "sigmoid" or hf.get("topk_method", "noaux_tc") != "noaux_tc":
                raise ValueError("deepseek_v3: only scoring_func='sigmoid' with topk_method='noaux_tc' is supported")
            first_dense = hf.get("first_k_dense_replace", 0)
            freq = hf.get("moe_layer_freq", 1) or 1
            n_exp = hf.get("n_routed_experts", hf.get("num_local_experts", 0))
            kw.update(num_experts=n_exp, top_k=hf["num_experts_per_tok"],
                      moe_intermediate_size=hf["moe_intermediate_size"],
                      moe_layers=tuple(n_exp > 0 and i >= first_dense and i % freq == 0 for i in range(n_layers)),
                      scoring="sigmoid", norm_topk=bool(hf.get("norm_topk_prob", True)),
                      n_group=hf.get("n_group") or 1, topk_group=hf.get("topk_group") or 1,
                      routed_scale=float(hf.get("routed_scaling_factor", 1.0)),
                      n_shared_experts=hf.get("n_shared_experts") or 0,
                      q_lora_rank=hf.get("q_lora_rank"), kv_lora_rank=hf["kv_lora_rank"],
                      qk_nope_head_dim=hf["qk_nope_head_dim"], qk_rope_head_dim=hf["qk_rope_head_dim"],
                      v_head_dim=hf["v_head_dim"], rope_interleave=bool(hf.get("rope_interleave", True)),
                      qkv_bias=bool(hf.get("attention_bias")), o_bias=bool(hf.get("attention_bias")),
                      head_dim=hf["qk_rope_head_dim"])
        return cls(**kw)

    def to_hf(self) -> dict[str, Any]:
        """A config dict that `transformers` loads: the original one when there is one, updated."""
        out = dict(self.hf) if self.hf else self._hf_from_fields()
        for k in ("quantization_config", "_name_or_path", "_commit_hash", "transformers_version"):
            out.pop(k, None)
        out["model_type"] = self.arch
        out["architectures"] = [HF_CLASS[self.arch]]
        out["tie_word_embeddings"] = self.tie_word_embeddings
        return out

    def _hf_from_fields(self) -> dict[str, Any]:
        d: dict[str, Any] = dict(
            model_type=self.arch, vocab_size=self.vocab_size, hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size, num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads, num_key_value_heads=self.num_kv_heads, head_dim=self.head_dim,
            rms_norm_eps=self.rms_norm_eps, max_position_embeddings=self.max_position_embeddings,
            hidden_act=self.hidden_act, rope_theta=self.rope.theta,
            bos_token_id=self.bos_token_id, eos_token_id=self.eos_token_id, pad_token_id=self.pad_token_id,
        )
        if self.rope.type != "default":
            d["rope_scaling"] = _rope_to_hf(self.rope)
        if self.arch == "llama":
            d.update(attention_bias=self.qkv_bias, mlp_bias=self.mlp_bias)
        elif self.arch in ("qwen3", "qwen3_moe"):
            d.update(attention_bias=self.qkv_bias)
        if self.arch == "qwen3_moe":
            d.update(num_experts=self.num_experts, num_experts_per_tok=self.top_k,
                     moe_intermediate_size=self.moe_intermediate_size, norm_topk_prob=self.norm_topk,
                     decoder_sparse_step=1, mlp_only_layers=[i for i, m in enumerate(self.moe_layers) if not m])
        if self.arch == "deepseek_v3":
            raise ValueError("a deepseek_v3 config can only be saved from the Hugging Face config it was loaded from")
        return d

    def replace(self, **changes) -> ModelConfig:
        return dataclasses.replace(self, **changes)


def _rope_from_hf(hf: dict[str, Any]) -> RopeConfig:
    params = dict(hf.get("rope_parameters") or hf.get("rope_scaling") or {})
    kind = params.get("rope_type", params.get("type", "default")) or "default"
    theta = params.get("rope_theta", hf.get("rope_theta", 10000.0))
    rope = RopeConfig(theta=float(theta), type=kind)
    if kind == "default":
        return rope
    if kind not in ROPE_TYPES:
        raise ValueError(f"unsupported rope scaling type {kind!r}; supported: {', '.join(ROPE_TYPES)}")
    rope.factor = float(params.get("factor") or 1.0)
    rope.original_max_position_embeddings = params.get(
        "original_max_position_embeddings", hf.get("original_max_position_embeddings",
                                                   hf.get("max_position_embeddings")))
    for name in ("low_freq_factor", "high_freq_factor", "beta_fast", "beta_slow", "mscale", "mscale_all_dim",
                 "attention_factor", "truncate"):
        if params.get(name) is not None:
            setattr(rope, name, params[name])
    if kind == "yarn" and params.get("factor") is None:  # DeepSeek: factor = max / original
        rope.factor = hf["max_position_embeddings"] / rope.original_max_position_embeddings
    return rope


def _rope_to_hf(rope: RopeConfig) -> dict[str, Any]:
    d: dict[str, Any] = {"rope_type": rope.type, "factor": rope.factor}
    if rope.type in ("llama3", "yarn"):
        d["original_max_position_embeddings"] = rope.original_max_position_embeddings
    if rope.type == "llama3":
        d.update(low_freq_factor=rope.low_freq_factor, high_freq_factor=rope.high_freq_factor)
    if rope.type == "yarn":
        d.update(beta_fast=rope.beta_fast, beta_slow=rope.beta_slow)
        for k in ("mscale", "mscale_all_dim", "attention_factor"):
            if getattr(rope, k) is not None:
                d[k] = getattr(rope, k)
    return d


def read_hf_config(folder: Path) -> ModelConfig:
    path = Path(folder) / "config.json"
    try:
        hf = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{folder}: no config.json (expected a Hugging Face model folder)") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(hf, dict):
        raise ValueError(f"{path}: expected a JSON object")
    try:
        return ModelConfig.from_hf(hf)
    except KeyError as e:
        raise ValueError(f"{path}: missing field {e.args[0]!r}") from None
