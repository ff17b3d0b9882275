"""`python -m r1core.train.study A B`: the multi-seed summary of study runs (numbers checked by hand)."""
import json
import math

import pytest

from r1core.train.study import main, summarize_seeds


def _run(root, arms, questions=100):
    root.mkdir()
    (root / "study.json").write_text(json.dumps(
        {a: {"pass@1": p, "cons@4": c, "format": f, "time_s": 10.0, "column": "x"} for a, (p, c, f) in arms.items()}))
    (root / "pipeline.json").write_text(json.dumps(
        {"eval": {"base": {"questions": float(questions), "pass@1": 0.0}}}))
    return root


def test_mean_spread_and_standard_error(tmp_path, capsys):
    a = _run(tmp_path / "s0", {"R1-Zero": (0.1, 0.2, 0.0), "R1": (0.5, 0.5, 1.0), "only here": (1, 1, 1)})
    b = _run(tmp_path / "s1", {"R1-Zero": (0.3, 0.4, 0.5), "R1": (0.5, 0.7, 1.0)})
    s = summarize_seeds([a, b])
    assert list(s) == ["R1-Zero", "R1"]                                  # arms common to every run, in order
    z = s["R1-Zero"]["pass@1"]
    assert z["seeds"] == [0.1, 0.3] and z["min"] == 0.1 and z["max"] == 0.3
    assert z["mean"] == pytest.approx(0.2)
    assert z["std"] == pytest.approx(math.sqrt(0.02))                    # (0.1² + 0.1²) / (2 - 1)
    assert z["se_mean"] == pytest.approx(math.sqrt(0.1 * 0.9 / 100 + 0.3 * 0.7 / 100) / 2)
    assert z["se_seeds"] == pytest.approx(math.sqrt(0.02) / math.sqrt(2))
    assert s["R1"]["cons@4"]["mean"] == pytest.approx(0.6)
    assert "time_s" not in s["R1"]
    pytest.importorskip("matplotlib")
    main([str(a), str(b), "--json", str(tmp_path / "sum.json"), "--figure", str(tmp_path / "f.png")])
    out = capsys.readouterr().out
    assert (tmp_path / "f.png").read_bytes()[:4] == b"\x89PNG"
    assert "R1-Zero" in out and "0.200" in out
    assert json.loads((tmp_path / "sum.json").read_text())["R1"]["pass@1"]["mean"] == pytest.approx(0.5)


def test_no_standard_error_without_question_counts(tmp_path):
    a = _run(tmp_path / "s0", {"R1": (0.4, 0.4, 1.0)})
    (a / "pipeline.json").unlink()
    one = summarize_seeds([a])["R1"]["pass@1"]
    assert "se_mean" not in one and "se_seeds" not in one and one["std"] == 0.0


def test_bad_runs_are_named(tmp_path):
    with pytest.raises(ValueError, match="roots"):
        summarize_seeds([])
    with pytest.raises(FileNotFoundError, match="study.json"):
        summarize_seeds([tmp_path])
