"""`r1core eval` with the task kinds of issue 30: a reasoning-gym task from the command line, a mixture
with per-task pass@1 in the table, and the accuracy policy eval judges with (unmarked="last")."""
import sys
from pathlib import Path

import pytest

from r1core.cli import main

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "models"))
pytest.importorskip("gguf")
from test_gguf import write_tiny_llama_gguf  # noqa: E402  (a 2-block Llama with its own tokenizer)

SMALL = ["run.eval_n=3", "run.eval_k=1", "rollout.max_new_tokens=2"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("tiny") / "tiny.gguf")


def test_eval_judges_unmarked_answers_by_their_last_number(tiny, monkeypatch):
    import r1core.train.evaluate as ev
    seen = {}
    real = ev.evaluate_policy

    def spy(*a, **kw):
        seen.update(kw)
        return real(*a, **kw)

    monkeypatch.setattr(ev, "evaluate_policy", spy)
    assert main(["eval", f"model={tiny}", *SMALL]) == 0
    assert seen["unmarked"] == "last"


def test_eval_reasoning_gym_task_and_mixture(tiny, capsys, tmp_path):
    pytest.importorskip("reasoning_gym")
    # from a config file: the embedded default's task.args (arithmetic's digits) do not apply
    (tmp_path / "rg.yaml").write_text("task: {name: 'reasoning_gym:leg_counting', args: {max_animals: 4}}\n")
    assert main(["eval", "--config", str(tmp_path / "rg.yaml"), f"model={tiny}", *SMALL]) == 0
    assert "reasoning_gym:leg_counting" in capsys.readouterr().out
    assert main(["eval", f"model={tiny}", "task.mixture.reasoning_gym:gcd=1", "task.mixture.arithmetic=1", *SMALL]) == 0
    out = capsys.readouterr().out
    assert "pass@1/reasoning_gym:gcd" in out and "pass@1/arithmetic" in out


def test_bad_task_options_are_one_line_errors(tiny, capsys):
    pytest.importorskip("reasoning_gym")
    assert main(["eval", f"model={tiny}", "task=reasoning_gym:leg_countin", *SMALL]) == 2
    assert "unknown reasoning-gym task 'leg_countin'" in capsys.readouterr().err
    assert main(["eval", f"model={tiny}", "task.mixture.arithmetic=-1", *SMALL]) == 2
    assert "task.mixture.arithmetic: the weight must be a number > 0" in capsys.readouterr().err
