"""Bad settings are refused before any work starts, with the key, the value and what is allowed; YAML
errors name the file and line; `task=` starts the new task from its own arguments and rewards."""
import pytest

from r1core.cli import main
from r1core.train.config import embedded_default, load_config, options
from r1core.train.limits import LIMITS
from r1core.train.preflight import check_config, check_task


@pytest.mark.parametrize("override, message", [
    ("rollout.temperature=-1", r"'rollout.temperature' = -1.0: must be >= 0"),
    ("optim.lr=-1", r"'optim.lr' = -1.0: must be > 0"),
    ("optim.lr=0", r"'optim.lr' = 0.0: must be > 0"),
    ("grpo.eps_low=2", r"'grpo.eps_low' = 2.0: must be in \[0, 1\)"),
    ("rollout.top_p=1.5", r"'rollout.top_p' = 1.5: must be in \(0, 1\]"),
    ("rollout.top_p=0", r"'rollout.top_p' = 0.0"),
    ("grpo.beta=nan", r"'grpo.beta' = nan: must be a finite number"),
    ("optim.weight_decay=.inf", r"'optim.weight_decay' = inf: must be a finite number"),
    ("sft.epochs=0", r"'sft.epochs' = 0.0: must be > 0"),
    ("sample.min_language=2", r"'sample.min_language' = 2.0: must be in \[0, 1\]"),
    ("run.eval_k=0", r"'run.eval_k' = 0: must be >= 1"),
    ("task.rewards.accuracy=nan", r"'task.rewards.accuracy' must be a finite number"),
    ("resume=true overwrite=true", "choose one"),
    ("checkpoint.dtype=int8", r"'checkpoint.dtype' must be one of"),
])
def test_out_of_range_values_name_key_value_and_range(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, override.split(), base=embedded_default())


def test_yaml_numbers_without_a_dot_are_numbers():
    # YAML 1.1 reads 1e-5 as text: a float option takes it as the number a user meant
    assert load_config(None, ["lr=1e-5"]).optim.lr == 1e-5


def test_every_limit_names_a_numeric_option():
    kinds = {k: h for k, _, _, h in options()}
    assert set(LIMITS) <= set(kinds), sorted(set(LIMITS) - set(kinds))
    unlimited = [k for k, h in kinds.items() if h in (int, float) and k not in LIMITS]
    # the keys left out have no range beyond finiteness (or a cross-field rule in config.validate)
    assert set(unlimited) <= {"run.seed", "grpo.entropy_coef"}, unlimited


def test_yaml_syntax_error_names_file_and_line(tmp_path):
    f = tmp_path / "bad.yaml"
    f.write_text("run:\n  steps: 3\n   seed: 2\n")
    with pytest.raises(ValueError, match=rf"{f}: line 3, column \d+: not valid YAML"):
        load_config(f)
    f.write_text("- a\n- b\n")
    with pytest.raises(ValueError, match=rf"{f}: a config file must be a mapping"):
        load_config(f)
    f.write_text("rollout:\n  top_p: 3\n")
    with pytest.raises(ValueError, match="'rollout.top_p' = 3"):
        load_config(f)


def test_yaml_error_on_the_command_line_is_one_line(tmp_path, capsys):
    f = tmp_path / "bad.yaml"
    f.write_text("run: [\n")
    assert main(["train", "--config", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and str(f) in err and "line 2" in err


def test_task_override_starts_from_the_tasks_own_arguments_and_rewards():
    """The embedded recipe's arithmetic args (digits=2, ops=+) and rewards (accuracy + format) do not
    carry over to another task: `r1core train task=countdown` crashed on digits= before."""
    cfg = load_config(None, ["task=countdown"], base=embedded_default())
    assert (cfg.task.name, cfg.task.args, cfg.task.rewards) == ("countdown", {}, {})
    check_task(cfg)                                         # builds: countdown takes no digits=
    # arguments given with the new name apply, wherever they stand on the command line
    for order in (["task.args.n_numbers=3", "task=countdown"], ["task=countdown", "task.args.n_numbers=3"]):
        assert load_config(None, order, base=embedded_default()).task.args == {"n_numbers": 3}
    # the same task keeps the recipe's settings
    same = load_config(None, ["task=arithmetic"], base=embedded_default())
    assert same.task.args == {"digits": 2, "ops": "+"} and same.task.rewards == {"accuracy": 1.0, "format": 0.5}


def test_task_override_in_a_config_file(tmp_path):
    f = tmp_path / "c.yaml"
    f.write_text("task:\n  name: countdown\n")
    cfg = load_config(f, base=embedded_default())
    assert cfg.task.args == {} and cfg.task.rewards == {}


def test_countdown_trains_with_its_own_reward():
    from r1core.train import build
    cfg = load_config(None, ["task=countdown"], base=embedded_default())
    task = build.load_task(cfg, None, build.Deps())       # the embedded recipe's plain template needs no tokenizer
    assert "countdown" in task.reward_weights and "accuracy" not in task.reward_weights


@pytest.mark.parametrize("override, message", [
    ("task=countdown task.args.digits=3", r"'task.args' = \{'digits': 3\}: task 'countdown' takes n_numbers"),
    ("task=nope", r"'task.name' \('nope'.*have \["),
    ("task.args.digits=x", r"'task.args'.*digits"),
    ("task.rewards.acc=1", r"'task.rewards.acc': no reward named 'acc'; rewards: accuracy"),
    ("model=/no/such/model", r"'model.source'"),
    ("sft.data=/no/such.jsonl", r"'sft.data' = '/no/such.jsonl': no such file"),
    ("task=/no/such.jsonl", r"'task.name'"),
])
def test_preflight_names_the_key(override, message):
    cfg = load_config(None, override.split(), base=embedded_default())
    with pytest.raises(ValueError, match=message):
        check_config(cfg)


def test_train_refuses_before_any_work(tmp_path, capsys, monkeypatch):
    """A bad setting exits 2 with one line and leaves no run folder behind."""
    monkeypatch.chdir(tmp_path)
    for args in (["rollout.temperature=-1"], ["task=countdown", "task.args.digits=2"], ["grpo.eps_low=2"]):
        assert main(["train", *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("r1core train: config key") and err.count("\n") == 1, err
    assert not (tmp_path / "runs").exists()


def test_a_later_stage_setting_fails_before_the_first_stage(tmp_path):
    from r1core.train.pipeline import run_pipeline
    cfg = load_config(None, [f"out={tmp_path / 'run'}", "recipe=custom", "run.eval_n=0"])
    cfg.pipeline.stages = [{"name": "a", "kind": "grpo"},
                           {"name": "b", "kind": "grpo", "set": {"rollout.top_p": 2.0}}]
    with pytest.raises(ValueError, match=r"pipeline stage 1 \(b\): config key 'rollout.top_p' = 2.0"):
        run_pipeline(cfg)
    assert not (tmp_path / "run").exists()
