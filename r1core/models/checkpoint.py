"""Hugging Face checkpoints: load a folder into a CausalLM, save a CausalLM as a folder.

Loading reads `config.json` and the `*.safetensors` files (one file, or shards listed by
`model.safetensors.index.json`) lazily with `safetensors.safe_open`: only the tensors a parameter
needs are read, one at a time, straight into the model built on the meta device.  Pickle files
(`pytorch_model.bin`) are refused: they can run code.

Names: ours are Hugging Face's without the leading `model.`, except the fused tensors:
    ours                                  Hugging Face
    layers.i.self_attn.qkv_proj.{w,b}     cat(q_proj, k_proj, v_proj)            (dim 0)
    layers.i.mlp.gate_up_proj.{w,b}       cat(gate_proj, up_proj)                (dim 0)
    layers.i.mlp.experts.w13 [E, 2I, H]   stack_e cat(experts.e.gate_proj, experts.e.up_proj)
    layers.i.mlp.experts.w2  [E, H, I]    stack_e experts.e.down_proj
(also accepted: transformers-5 fused `experts.gate_up_proj` [E, 2I, H] / `experts.down_proj` [E, H, I]).
Saving writes the Hugging Face layout back (split, unstacked), sharded above `max_shard_bytes`.
"""
from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Callable
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open

from r1core.models.config import ModelConfig, read_hf_config
from r1core.models.hf_save import INDEX, hf_sources, hf_state_dict, save_pretrained  # noqa: F401 (re-exported)
from r1core.models.transformer import CausalLM


class _Shards:
    """name -> tensor over one or many safetensors files, opened lazily, with clear errors."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.where: dict[str, Path] = {}
        self._open: dict[Path, object] = {}
        index = folder / INDEX
        if index.exists():
            try:
                weight_map = json.loads(index.read_text())["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{index}: not a valid safetensors index ({e})") from None
            for name, file in weight_map.items():
                self.where[name] = folder / file
            for file in set(self.where.values()):
                if not file.exists():
                    raise ValueError(f"{index} lists {file.name}, which is missing from {folder}")
                self._handle(file)  # validate every header up front
        else:
            files = sorted(folder.glob("*.safetensors"))
            if not files:
                pickles = [p.name for p in folder.glob("*.bin")] + [p.name for p in folder.glob("*.pt")]
                hint = (f" (found {', '.join(pickles)}: pickle checkpoints are not loaded, convert them to "
                        f"safetensors)") if pickles else ""
                raise ValueError(f"{folder}: no *.safetensors weights{hint}")
            for file in files:
                for name in self._handle(file).keys():
                    self.where[name] = file

    def _handle(self, file: Path):
        if file not in self._open:
            try:
                handle = safe_open(str(file), framework="pt")
            except (SafetensorError, OSError, ValueError, RuntimeError) as e:
                raise ValueError(f"{file}: not a valid safetensors file (truncated or corrupted?): {e}") from None
            self._check_size(file, handle)
            self._open[file] = handle
        return self._open[file]

    @staticmethod
    def _check_size(file: Path, handle) -> None:
        """safetensors validates offsets against the header; also check the data region is all there."""
        end = 0
        for name in handle.keys():
            sl = handle.get_slice(name)
            shape, dtype = sl.get_shape(), sl.get_dtype()
            n = 1
            for s in shape:
                n *= s
            end += n * _DTYPE_BYTES.get(dtype, 1)
        size = file.stat().st_size
        with open(file, "rb") as f:
            header = 8 + int.from_bytes(f.read(8), "little")
        if header + end > size:
            raise ValueError(f"{file}: truncated: header says {header + end} bytes, file has {size}")

    def __contains__(self, name: str) -> bool:
        return name in self.where

    def get(self, name: str) -> torch.Tensor:
        if name not in self.where:
            raise KeyError(name)
        try:
            t = self._handle(self.where[name]).get_tensor(name)
        except (SafetensorError, OSError, RuntimeError) as e:
            raise ValueError(f"{self.where[name]}: cannot read tensor {name!r}: {e}") from None
        # NaN/inf weights would surface far away (an out-of-range token id in sampling): refuse them here
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = int((~torch.isfinite(t)).sum())
            raise ValueError(f"{self.where[name]}: tensor {name!r} holds {bad} non-finite value(s) (NaN/inf): the "
                             f"weights are corrupted or the run diverged; load an earlier checkpoint")
        return t


_DTYPE_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U8": 1,
                "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1, "U16": 2, "U32": 4, "U64": 8}


_FUSED_EXPERTS = {"w13": "gate_up_proj", "w2": "down_proj"}  # transformers-5 in-memory layout


def _fetch(shards: _Shards, name: str, config: ModelConfig, folder: Path) -> torch.Tensor:
    names, combine = hf_sources(name, config)
    missing = [n for n in names if n not in shards]
    if missing:
        m = re.fullmatch(r"(layers\.\d+\.mlp)\.experts\.(w13|w2)", name)
        fused = f"model.{m.group(1)}.experts.{_FUSED_EXPERTS[m.group(2)]}" if m else None
        if fused and fused in shards:
            return shards.get(fused)
        raise ValueError(f"{folder}: checkpoint lacks tensor {missing[0]!r} (needed for {name!r}"
                         f"{f' and {len(missing) - 1} more' if len(missing) > 1 else ''})")
    return combine([shards.get(n) for n in names])


def load_hf_folder(folder: str | Path, *, dtype: torch.dtype = torch.float32,
                   device: torch.device | str = "cpu") -> CausalLM:
    folder = Path(folder)
    config = read_hf_config(folder)
    shards = _Shards(folder)
    if any(n.endswith("weight_scale_inv") for n in shards.where):
        raise ValueError(f"{folder}: FP8 block-quantised checkpoint (weight_scale_inv tensors); "
                         f"dequantise it to bf16 first")
    if "lm_head.weight" not in shards and not config.tie_word_embeddings:
        config = config.replace(tie_word_embeddings=True) if "model.embed_tokens.weight" in shards else config
    return build_model(config, lambda name: _fetch(shards, name, config, folder), dtype=dtype, device=device)


def build_model(config: ModelConfig, fetch: Callable[[str], torch.Tensor], *, dtype: torch.dtype,
                device: torch.device | str) -> CausalLM:
    """Build a CausalLM on the meta device and fill every parameter/buffer from fetch(name)."""
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating torch.dtype, got {dtype!r}")
    with torch.device("meta"), _skip_init():
        model = CausalLM(config)
    expected = model.state_dict()
    state: dict[str, torch.Tensor] = {}
    for name, t in expected.items():
        if name == "lm_head.weight" and config.tie_word_embeddings:
            continue
        src = fetch(name)
        if tuple(src.shape) != tuple(t.shape):
            raise ValueError(f"tensor for {name!r} has shape {tuple(src.shape)}, the config implies {tuple(t.shape)}")
        keep32 = name.endswith("e_score_correction_bias")  # a routing statistic, kept in float32 (as HF does)
        state[name] = src.to(device=device, dtype=torch.float32 if keep32 else dtype)
    if config.tie_word_embeddings:
        state["lm_head.weight"] = state["embed_tokens.weight"]
    model.load_state_dict(state, strict=True, assign=True)
    if config.tie_word_embeddings:
        model.lm_head.weight = model.embed_tokens.weight
    model.eval()
    return model


@contextlib.contextmanager
def _skip_init():
    """Random initialisation is wasted work when every weight is loaded next (and on the meta device
    torch's init functions import torch._dynamo: seconds)."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "kaiming_normal_", "trunc_normal_", "xavier_uniform_",
             "xavier_normal_", "zeros_", "ones_", "constant_")
    saved = {n: getattr(torch.nn.init, n) for n in names}
    try:
        for n in names:
            setattr(torch.nn.init, n, lambda tensor, *a, **k: tensor)
        yield
    finally:
        for n, f in saved.items():
            setattr(torch.nn.init, n, f)


