"""A mixture's per-task pass@1 ("pass@1/<task>") in the before/after table and in curves.png."""
import json

import pytest

from r1core.train.logging import plot_curves, summary_table


def test_summary_table_lists_each_task_of_a_mixture():
    before = {"pass@1": 0.1, "format": 0.5, "cons@4": 0.2, "pass@1/arithmetic": 0.2, "pass@1/reasoning_gym:gcd": 0.0}
    after = {"pass@1": 0.4, "format": 0.9, "cons@4": 0.5, "pass@1/arithmetic": 0.6, "pass@1/reasoning_gym:gcd": 0.2}
    lines = summary_table(before, after).splitlines()
    row = next(line for line in lines if line.startswith("pass@1/reasoning_gym:gcd"))
    assert row.split()[1:] == ["0.000", "0.200"]
    assert len({len(line) for line in lines}) == 1          # one column width for every row


def test_curves_plot_per_task_pass_at_1(tmp_path):
    pytest.importorskip("matplotlib")
    rows = [{"step": 0, "eval": {"pass@1": 0.1, "format": 0.5, "pass@1/arithmetic": 0.2}},
            {"step": 1, "reward_mean": 0.3, "reward/accuracy": 0.3},
            {"step": 2, "eval": {"pass@1": 0.4, "format": 0.9}}]      # a task missing from one eval: a gap
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    assert plot_curves(tmp_path).is_file()
