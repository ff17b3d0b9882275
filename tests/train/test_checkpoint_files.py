"""Every file read on resume or eval is checked (an error names the file), checkpoints have one file
mode, and their size options (checkpoint.dtype, checkpoint.final_optimizer) do what they say."""
import json
import os
import stat

import pytest
import torch
from safetensors.torch import load_file, save_file

import r1core
from r1core.train import checkpoint as ckpt
from r1core.train.grpo import GRPOTrainer
from tinyrl import llama_deps, make_tiny_llama, tiny_config, tiny_deps


def _run(tmp_path, *extra):
    t = GRPOTrainer(tiny_config(tmp_path, "steps=2", "save_every=1", *extra), deps=tiny_deps())
    t.train()
    return t


def _resume(tmp_path, *extra):
    return GRPOTrainer(tiny_config(tmp_path, "steps=3", "save_every=1", "resume=true", *extra), deps=tiny_deps())


@pytest.mark.parametrize("name, content, message", [
    ("optimizer.pt", b"not a torch file", r"optimizer.pt: cannot be read as optimizer state"),
    ("trainer.json", b"{\"step\": 1,", r"trainer.json: not valid JSON"),
    ("trainer.json", b"[1, 2]", r"trainer.json: not a trainer state"),
])
def test_corrupted_resume_files_name_themselves(tmp_path, name, content, message):
    _run(tmp_path)
    (tmp_path / "checkpoints" / "step-2" / name).write_bytes(content)
    with pytest.raises(ValueError, match=message):
        _resume(tmp_path, "run.resume_changed=true")


def test_missing_trainer_state_names_the_file(tmp_path):
    _run(tmp_path)
    (tmp_path / "checkpoints" / "step-2" / "trainer.json").unlink()
    with pytest.raises(ValueError, match=r"trainer.json: missing"):
        _resume(tmp_path)


def test_non_finite_weights_name_the_file_and_tensor(tmp_path):
    folder = tmp_path / "m"
    make_tiny_llama(folder)
    f = folder / "model.safetensors"
    state = load_file(str(f))
    name = next(k for k in state if k.endswith("q_proj.weight"))
    state[name][0, 0] = float("nan")
    save_file(state, str(f), metadata={"format": "pt"})
    with pytest.raises(ValueError, match=rf"{folder}/model.safetensors: tensor .*q_proj.weight.* 1 non-finite value"):
        r1core.load_model(folder)


def test_corrupted_tokenizer_config_names_the_file(tmp_path):
    from r1core.models.tokenizer import Tokenizer
    folder = tmp_path / "tok"
    folder.mkdir()
    from tokenizers import Tokenizer as HF, models
    HF(models.BPE()).save(str(folder / "tokenizer.json"))
    (folder / "tokenizer_config.json").write_text("{oops")
    with pytest.raises(ValueError, match="tokenizer_config.json: not valid JSON"):
        Tokenizer.from_hf_folder(folder)


def test_every_checkpoint_file_has_one_mode(tmp_path):
    _run(tmp_path)
    want = 0o666 & ~_umask()
    modes = {p.name: stat.S_IMODE(p.stat().st_mode) for p in (tmp_path / "checkpoints").rglob("*") if p.is_file()}
    assert modes["model.safetensors"] == want and set(modes.values()) == {want}, modes


def _umask():
    m = os.umask(0)
    os.umask(m)
    return m


def test_final_checkpoint_leaves_out_the_optimizer_and_still_resumes(tmp_path):
    _run(tmp_path)
    step1, step2 = tmp_path / "checkpoints" / "step-1", tmp_path / "checkpoints" / "step-2"
    assert (step1 / "optimizer.pt").exists() and not (step2 / "optimizer.pt").exists()
    assert json.loads((step2 / "trainer.json").read_text())["optimizer"] is False
    t = _resume(tmp_path, "run.resume_changed=true")                   # 2 more steps than the saved run
    assert t.start_step == 2
    t.train()                                                       # a fresh AdamW at the schedule's position
    kept = _run(tmp_path / "keep", "checkpoint.final_optimizer=true")
    assert (tmp_path / "keep" / "checkpoints" / "step-2" / "optimizer.pt").exists() and kept


def test_checkpoint_dtype_halves_the_weights(tmp_path):
    folder = make_tiny_llama(tmp_path / "m")
    sizes = {}
    for dtype in ("", "bfloat16"):
        out = tmp_path / f"run{dtype}"
        GRPOTrainer(tiny_config(out, "steps=1", f"checkpoint.dtype={dtype}"), deps=llama_deps(folder)).train()
        f = ckpt.latest_checkpoint(out) / "model.safetensors"
        sizes[dtype] = f.stat().st_size
        assert {t.dtype for t in load_file(str(f)).values()} == {torch.bfloat16 if dtype else torch.float32}
    assert sizes["bfloat16"] < 0.6 * sizes[""]
    again = r1core.load_model(ckpt.latest_checkpoint(tmp_path / "runbfloat16"))      # loads in float32
    assert next(again.parameters()).dtype == torch.float32
