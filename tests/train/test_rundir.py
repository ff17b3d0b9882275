"""Run folders never clobber each other: a non-empty run.out is refused unless resume or overwrite,
resume says what it continues and refuses a changed config, TensorBoard keeps one event stream per
stage, Ctrl-C says what was saved, `eval model=<run folder>` evaluates that run's model."""
import pytest

from r1core.cli import default_out, interrupted_line, main
from r1core.train import rundir
from r1core.train.config import embedded_default, load_config
from r1core.train.pipeline import run_pipeline
from r1core.train.smoke import health_line
from tinyrl import tiny_config, tiny_deps


def _pipeline(out, *extra, steps=2):
    cfg = tiny_config(out, f"steps={steps}", "save_every=1", *extra)
    return run_pipeline(cfg, deps=tiny_deps())


def test_non_empty_out_is_refused_in_one_line(tmp_path):
    _pipeline(tmp_path / "run")
    with pytest.raises(ValueError, match=r"already holds a run .*resume=true continues it, overwrite=true replaces "
                                         r"it, or choose another out="):
        _pipeline(tmp_path / "run")


def test_overwrite_removes_the_previous_run(tmp_path):
    _pipeline(tmp_path / "run", steps=3)
    assert (tmp_path / "run" / "checkpoints" / "step-3").exists()
    _pipeline(tmp_path / "run", "overwrite=true", steps=1)
    assert [p.name for p in (tmp_path / "run" / "checkpoints").iterdir()] == ["step-1"]


def test_overwrite_refuses_a_folder_that_is_no_run(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("precious")
    with pytest.raises(ValueError, match="holds no r1core run .*thesis.tex"):
        _pipeline(tmp_path / "mine", "overwrite=true")
    assert (tmp_path / "mine" / "thesis.tex").exists()


def test_resume_says_what_it_continues_and_refuses_a_changed_schedule(tmp_path, capsys):
    _pipeline(tmp_path / "run", steps=2)
    capsys.readouterr()
    with pytest.raises(ValueError, match=r"differs from the run in .* in run.steps \(2 -> 3\).*run.resume_changed=true"):
        _pipeline(tmp_path / "run", "resume=true", steps=3)
    _pipeline(tmp_path / "run", "resume=true", "run.resume_changed=true", steps=3)
    out = capsys.readouterr().out
    assert "resume: continuing the run in" in out and "with changed run.steps" in out and "from step 2" in out
    assert "resuming from step 2 of 3" in out
    # the saved config is now the new one: resuming again with it is no change
    _pipeline(tmp_path / "run", "resume=true", steps=3)


def test_free_keys_do_not_block_a_resume(tmp_path):
    _pipeline(tmp_path / "run", steps=1)
    _pipeline(tmp_path / "run", "resume=true", "run.progress=true", "optim.micro_batch=2", steps=1)


def test_tensorboard_keeps_one_event_stream_across_resumes(tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    run = tmp_path / "run"
    cfg = tiny_config(run, "steps=3", "save_every=1", "run.tensorboard=true")
    from r1core.train.grpo import GRPOTrainer
    GRPOTrainer(cfg, deps=tiny_deps()).train(stop_after=2)
    cfg = tiny_config(run, "steps=3", "save_every=1", "run.tensorboard=true", "resume=true")
    GRPOTrainer(cfg, deps=tiny_deps()).train()
    files = list((run / "tensorboard").iterdir())
    assert len(files) == 1, files
    acc = EventAccumulator(str(files[0]))
    acc.Reload()
    assert [e.step for e in acc.Scalars("reward_mean")] == [1, 2, 3]


def test_distinct_default_folders_per_recipe_and_quick():
    cfg = embedded_default()
    assert default_out(cfg, embedded=True, quick=False) == "runs/default"
    assert default_out(cfg, embedded=True, quick=True) == "runs/default-quick"
    cfg.pipeline.recipe = "study"
    assert default_out(cfg, embedded=True, quick=True) == "runs/study-quick"
    assert default_out(load_config(None, []), embedded=False, quick=False) == "runs/grpo"


def test_interrupted_line_says_what_was_saved_and_how_to_resume(tmp_path):
    _pipeline(tmp_path / "run", steps=2)
    cfg = tiny_config(tmp_path / "run")
    line = interrupted_line(cfg, ["steps=2", "overwrite=true"])
    assert line.count("\n") == 0 and "step-2" in line
    assert line.endswith(f"r1core train steps=2 out={tmp_path / 'run'} resume=true")
    assert "nothing saved yet" in interrupted_line(tiny_config(tmp_path / "empty"), [])


def test_ctrl_c_prints_the_note_and_exits_130(tmp_path, capsys, monkeypatch):
    import r1core.train.pipeline as pipeline

    def interrupted(cfg, **kw):
        raise KeyboardInterrupt
    monkeypatch.setattr(pipeline, "run_pipeline", interrupted)
    assert main(["train", f"out={tmp_path / 'run'}", "run.eval_n=0"]) == 130
    err = capsys.readouterr().err
    assert "r1core train: interrupted; nothing saved yet" in err and "resume=true" in err


def test_model_of_run_finds_the_newest_checkpoint(tmp_path):
    _pipeline(tmp_path / "single", steps=2)
    assert rundir.model_of_run(tmp_path / "single").name == "step-2"
    assert rundir.model_of_run(tmp_path / "single" / "checkpoints" / "step-2") is None   # a model folder itself
    cfg = tiny_config(tmp_path / "multi", "steps=1", "recipe=custom")
    cfg.pipeline.stages = [{"name": "a", "kind": "grpo"}, {"name": "b", "kind": "grpo"}]
    run_pipeline(cfg, deps=tiny_deps())
    assert rundir.model_of_run(tmp_path / "multi") == tmp_path / "multi" / "1-b" / "checkpoints" / "step-1"


def test_eval_on_a_run_folder_and_eval_n_zero(tmp_path, capsys):
    assert main(["eval", "run.eval_n=0"]) == 2
    assert "run.eval_n=0 evaluates no question" in capsys.readouterr().err
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.yaml").write_text("{}\n")
    assert main(["eval", f"model={tmp_path / 'run'}"]) == 2
    assert "is a run folder without a checkpoint yet" in capsys.readouterr().err


def test_health_line(tmp_path):
    import json
    (tmp_path / "1-rl").mkdir()
    f = tmp_path / "1-rl" / "metrics.jsonl"
    f.write_text(json.dumps({"step": 1, "grad_norm": 0.0, "reward_std": 0.0}) + "\n")
    ok, line = health_line(tmp_path)
    assert not ok and "NOT healthy" in line and "no reward varied" in line
    f.write_text(json.dumps({"step": 1, "grad_norm": 0.5, "reward_std": 0.3}) + "\n")
    ok, line = health_line(tmp_path)
    assert ok and "the install is healthy: 1 of 1 RL steps updated" in line
    assert health_line(tmp_path / "nothing")[0] is False


def test_quick_replaces_its_own_default_folder_only(tmp_path, monkeypatch):
    """`r1core train --quick` twice works (the smoke folder is replaced); with out= or resume=true the
    folder rule holds as for any run."""
    import r1core.train.pipeline as pipeline
    seen = []
    monkeypatch.setattr(pipeline, "run_pipeline", lambda cfg, **kw: seen.append(cfg))
    monkeypatch.setattr("r1core.train.smoke.health_line", lambda out, judge: (True, "healthy"))
    monkeypatch.chdir(tmp_path)
    assert main(["train", "--quick"]) == 0
    assert (seen[-1].run.out, seen[-1].run.overwrite) == ("runs/default-quick", True)
    assert main(["train", "--quick", "resume=true"]) == 0
    assert (seen[-1].run.out, seen[-1].run.overwrite, seen[-1].run.resume) == ("runs/default-quick", False, True)
    assert main(["train", "--quick", f"out={tmp_path / 'mine'}"]) == 0
    assert seen[-1].run.overwrite is False
    assert main(["train", "recipe=study", "--quick"]) == 0
    assert seen[-1].run.out == "runs/study-quick"
