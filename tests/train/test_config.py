"""Run configuration: defaults, YAML, key=value overrides, shortcuts, errors, --help."""
import dataclasses
from pathlib import Path

import pytest
import yaml

from r1core.cli import main, split_args
from r1core.train.config import (SHORTCUTS, Config, embedded_default, help_text, load_config, options, save_config,
                                 set_override, to_dict)

ROOT = Path(__file__).resolve().parents[2]


def test_overrides_shortcuts_and_types():
    cfg = load_config(None, ["steps=7", "model=/m", "task=countdown", "seed=3", "out=007", "save_every=2",
                             "resume=true", "grpo.beta=0.04", "optim.betas=[0.9, 0.95]", "task.args.n_numbers=3",
                             "profile_steps=3:5", "rollout.temperature=1"])
    assert (cfg.run.steps, cfg.model.source, cfg.task.name, cfg.run.seed) == (7, "/m", "countdown", 3)
    assert (cfg.run.out, cfg.run.save_every, cfg.run.resume) == ("007", 2, True)
    assert cfg.grpo.beta == 0.04 and cfg.optim.betas == [0.9, 0.95] and cfg.task.args == {"n_numbers": 3}
    assert cfg.run.profile_steps == "3:5" and isinstance(cfg.rollout.temperature, float)
    for short, full in SHORTCUTS.items():
        assert full in {k for k, *_ in options()}, short


@pytest.mark.parametrize("override, message", [
    ("stesp=3", "did you mean steps"),
    ("grpo.bta=0.1", "did you mean grpo.beta"),
    ("nothing.here=1", "unknown config key"),
    ("grpo.beta=abc", "wants a float"),
    ("run.steps=2.5", "wants a int"),
    ("run.resume=maybe", "wants a bool"),
    ("grpo.loss_agg=mean", "must be one of"),
    ("grpo.policy=ppo", "must be one of"),
    ("grpo.delta=0.5", "grpo.delta"),
    ("grpo.top_entropy_quantile=0", "grpo.top_entropy_quantile"),
    ("grpo.off_policy_mask_threshold=-1", "grpo.off_policy_mask_threshold"),
    ("rollout.group_size=1", ">= 2"),
    ("optim.micro_batch=0", ">= 1"),
    ("run.profile_steps=5:3", "0 <= a < b"),
    ("run.profile_steps=x", "'a:b'"),
    ("optim.betas=[0.9]", "two numbers"),
    ("grpo.beta.x=1", "unknown config key"),
    ("steps", "is not key=value"),
    ("grpo.backend=cuda", "fused_linear_grpo_loss"),     # advantages have a cuda kernel, the fused loss not
])
def test_bad_overrides_say_what_is_wrong(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_yaml_round_trip_and_file_shortcuts(tmp_path):
    cfg = load_config(None, ["steps=5", "grpo.loss_agg=seq_mean_token_mean", "task.rewards.accuracy=2"])
    save_config(cfg, tmp_path / "c.yaml")
    assert to_dict(load_config(tmp_path / "c.yaml")) == to_dict(cfg)
    (tmp_path / "s.yaml").write_text("model: /some/model\nsteps: 4\ngrpo:\n  beta: 0.01\n")
    again = load_config(tmp_path / "s.yaml", ["steps=6"])          # the command line wins over the file
    assert (again.model.source, again.run.steps, again.grpo.beta) == ("/some/model", 6, 0.01)
    (tmp_path / "bad.yaml").write_text("grpo:\n  betta: 0.1\n")
    with pytest.raises(ValueError, match="grpo.betta"):
        load_config(tmp_path / "bad.yaml")
    with pytest.raises(ValueError, match="does not exist"):
        load_config(tmp_path / "missing.yaml")


def test_string_options_keep_command_line_text():
    cfg = Config()
    set_override(cfg, "run.out", "0123")
    set_override(cfg, "task.system", "'quoted text'")
    assert cfg.run.out == "0123" and cfg.task.system == "quoted text"


def test_shipped_configs_load_and_default_yaml_is_the_default():
    for f in sorted((ROOT / "configs").glob("*.yaml")):
        load_config(f)
    default = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
    assert load_config(ROOT / "configs" / "default.yaml") == embedded_default(), \
        "configs/default.yaml must spell out the embedded default run (r1core.train.config.EMBEDDED_DEFAULT)"
    assert set(default) <= {f.name for f in dataclasses.fields(Config)}


def test_help_lists_every_option_with_its_default(capsys):
    assert main(["train", "--help"]) == 0
    out = capsys.readouterr().out
    for key, value, _, _ in options():
        assert f"  {key}=" in out, key
    plain = Config()
    assert f"  rollout.prompts={plain.rollout.prompts}" in out and f"  grpo.mu={plain.grpo.mu}" in out
    assert help_text() in out


def test_cli_argument_forms_and_errors(capsys):
    cfg, ov, extra, want_help = split_args(["--config", "a.yaml", "--profile-steps", "3:5", "--resume",
                                            "--grpo.beta=0.1", "steps=2", "prompt=hi"], extra=("prompt",))
    assert cfg == "a.yaml" and not want_help and extra == {"prompt": "hi"}
    assert ov == ["profile_steps=3:5", "resume=true", "grpo.beta=0.1", "steps=2"]
    assert main(["train", "stesp=3"]) == 2
    assert "did you mean steps" in capsys.readouterr().err
    assert main(["train", "positional"]) == 2
    assert main(["nonsense"]) == 2
    assert main(["sample", "n=2"]) == 2          # no prompt
    assert main(["sample", "prompt=hi", "model=/nonexistent"]) == 2
    assert main(["eval", "model=/nonexistent"]) == 2
    assert "/nonexistent" in capsys.readouterr().err
    assert main(["--help"]) == 0
    out = capsys.readouterr().out
    for cmd in ("train", "eval", "sample", "bench", "info"):
        assert f"  {cmd}" in out
