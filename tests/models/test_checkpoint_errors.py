"""Bad checkpoints are refused with a clear ValueError naming the problem: truncated or corrupted
safetensors, a missing tensor, a wrong shape, an unknown architecture, pickle-only folders."""
import json
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import r1core


@pytest.fixture
def folder(saved_tiny, tmp_path):
    _, src = saved_tiny("qwen2")
    dst = tmp_path / "m"
    shutil.copytree(src, dst)
    return dst


def test_truncated_safetensors(folder):
    f = folder / "model.safetensors"
    data = f.read_bytes()
    f.write_bytes(data[:len(data) - 1000])
    with pytest.raises(ValueError, match="truncated|not a valid safetensors"):
        r1core.load_model(folder)


def test_truncated_inside_the_header(folder):
    f = folder / "model.safetensors"
    f.write_bytes(f.read_bytes()[:100])
    with pytest.raises(ValueError, match="safetensors"):
        r1core.load_model(folder)


def test_corrupted_safetensors_header(folder):
    f = folder / "model.safetensors"
    data = bytearray(f.read_bytes())
    data[8:40] = b"#" * 32          # garbage JSON
    f.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="not a valid safetensors"):
        r1core.load_model(folder)


def test_missing_tensor(folder):
    f = folder / "model.safetensors"
    state = load_file(f)
    del state["model.layers.1.self_attn.k_proj.weight"]
    save_file(state, f)
    with pytest.raises(ValueError, match=r"lacks tensor 'model\.layers\.1\.self_attn\.k_proj\.weight'"):
        r1core.load_model(folder)


def test_wrong_shape(folder):
    f = folder / "model.safetensors"
    state = load_file(f)
    state["model.norm.weight"] = torch.ones(5)
    save_file(state, f)
    with pytest.raises(ValueError, match="norm.weight.*shape"):
        r1core.load_model(folder)


def test_unknown_architecture(folder):
    cfg = json.loads((folder / "config.json").read_text())
    cfg["model_type"] = "gpt2"
    (folder / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unknown architecture.*gpt2"):
        r1core.load_model(folder)


def test_pickle_only_folder_is_refused(folder):
    (folder / "model.safetensors").rename(folder / "pytorch_model.bin")
    with pytest.raises(ValueError, match="pickle"):
        r1core.load_model(folder)


def test_missing_config_and_bad_sources(folder, tmp_path):
    (folder / "config.json").unlink()
    with pytest.raises(ValueError, match="config.json"):
        r1core.load_model(folder)
    with pytest.raises(ValueError, match="neither a file, a folder nor a built-in"):
        r1core.load_model(tmp_path / "nope")
    with pytest.raises(ValueError, match="folder or a .gguf"):
        (tmp_path / "x.txt").write_text("hi")
        r1core.load_model(tmp_path / "x.txt")
    with pytest.raises(TypeError):
        r1core.load_model(42)


def test_bad_forward_inputs(saved_tiny):
    _, src = saved_tiny("qwen2")
    model = r1core.load_model(src)
    with pytest.raises(ValueError, match="input_ids"):
        model(torch.zeros(2, 3))                               # float ids
    with pytest.raises(ValueError, match="outside"):
        model(torch.tensor([[1, 2, 97]]))                      # vocab is 97
    with pytest.raises(ValueError, match="attention_mask"):
        model(torch.tensor([[1, 2, 3]]), attention_mask=torch.ones(1, 2))
    with pytest.raises(ValueError, match="replay_ids"):
        model(torch.tensor([[1, 2, 3]]), replay_ids=[torch.zeros(1, 3, 2, dtype=torch.long)])
