"""Hugging Face names and layout for r1core's models, and the writer of a Hugging Face folder.

Split from r1core.models.checkpoint (the loader) so that CausalLM.save_pretrained can import it at the top
of r1core.models.transformer without an import cycle: this module knows nothing of CausalLM's class.
r1core.models.checkpoint's docstring has the name table.
"""
from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors.torch import save_file

from r1core.models.config import ModelConfig

INDEX = "model.safetensors.index.json"


# ---------------------------------------------------------------------------------------------
# name mapping: for each of our tensors, how to build it from Hugging Face tensors
# ---------------------------------------------------------------------------------------------
def hf_sources(name: str, config: ModelConfig) -> tuple[list[str], Callable[[list[torch.Tensor]], torch.Tensor]]:
    """(HF tensor names, combine) for one of our parameter/buffer names."""
    if name == "lm_head.weight":
        return ["lm_head.weight"], _only
    m = re.fullmatch(r"(layers\.\d+\.self_attn)\.qkv_proj\.(weight|bias)", name)
    if m:
        p, kind = m.groups()
        return [f"model.{p}.{x}_proj.{kind}" for x in "qkv"], _cat0
    m = re.fullmatch(r"(layers\.\d+\.mlp)\.gate_up_proj\.(weight|bias)", name)
    if m:
        p, kind = m.groups()
        return [f"model.{p}.gate_proj.{kind}", f"model.{p}.up_proj.{kind}"], _cat0
    m = re.fullmatch(r"(layers\.\d+\.mlp)\.experts\.(w13|w2)", name)
    if m:
        p, which = m.groups()
        E = config.num_experts
        if which == "w13":
            names = [f"model.{p}.experts.{e}.{x}.weight" for e in range(E) for x in ("gate_proj", "up_proj")]
            return names, lambda ts: torch.stack([torch.cat(ts[2 * e:2 * e + 2]) for e in range(E)])
        return [f"model.{p}.experts.{e}.down_proj.weight" for e in range(E)], torch.stack
    return [f"model.{name}"], _only


def _only(ts):
    return ts[0]


def _cat0(ts):
    return torch.cat(ts, dim=0)


# ---------------------------------------------------------------------------------------------
# saving
# ---------------------------------------------------------------------------------------------
def hf_state_dict(model: CausalLM) -> dict[str, torch.Tensor]:
    """Our tensors under Hugging Face names and layout (views where possible)."""
    config = model.config
    out: dict[str, torch.Tensor] = {}
    for name, t in list(model.named_parameters()) + [(n, b) for n, b in model.named_buffers() if b is not None]:
        t = t.detach()
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        names, _ = hf_sources(name, config)
        if name.endswith("qkv_proj.weight") or name.endswith("qkv_proj.bias"):
            D = config.head_dim
            parts = t.split([config.num_heads * D, config.num_kv_heads * D, config.num_kv_heads * D])
        elif name.endswith("gate_up_proj.weight") or name.endswith("gate_up_proj.bias"):
            parts = t.chunk(2)
        elif name.endswith("experts.w13"):
            I = t.shape[1] // 2
            parts = [p for e in range(t.shape[0]) for p in (t[e, :I], t[e, I:])]
        elif name.endswith("experts.w2"):
            parts = list(t.unbind(0))
        else:
            parts = [t]
        out.update(zip(names, parts))
    return out


def save_pretrained(model: CausalLM, folder: str | Path, *, max_shard_bytes: int = 5 << 30) -> None:
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = hf_state_dict(model)
    shards: list[list[str]] = [[]]
    size = 0
    for name, t in state.items():
        nbytes = t.numel() * t.element_size()
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(name)
        size += nbytes
    for stale in list(folder.glob("model*.safetensors")) + [folder / INDEX]:
        stale.unlink(missing_ok=True)
    n = len(shards)
    files = ["model.safetensors"] if n == 1 else [f"model-{i + 1:05d}-of-{n:05d}.safetensors" for i in range(n)]
    for names, file in zip(shards, files):
        # clone: safetensors refuses tensors that share storage (our split views do)
        save_file({k: state[k].to("cpu").contiguous().clone() for k in names}, str(folder / file),
                  metadata={"format": "pt"})
    if n > 1:
        total = sum(t.numel() * t.element_size() for t in state.values())
        index = {"metadata": {"total_size": total},
                 "weight_map": {k: f for names, f in zip(shards, files) for k in names}}
        (folder / INDEX).write_text(json.dumps(index, indent=2))
    hf = model.config.to_hf()
    hf["torch_dtype"] = str(model.dtype).removeprefix("torch.")
    (folder / "config.json").write_text(json.dumps(hf, indent=2, default=_json_default))


def _json_default(o):
    if isinstance(o, (set, tuple)):
        return list(o)
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")
