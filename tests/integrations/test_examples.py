"""The examples run: examples/plain_pytorch_step.py, a hand-written GRPO loop on r1core's ops."""
import importlib.util
import math
import re
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]


def test_plain_pytorch_step_runs(capsys):
    spec = importlib.util.spec_from_file_location("plain_pytorch_step", ROOT / "examples" / "plain_pytorch_step.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    threads = torch.get_num_threads()
    try:
        assert mod.main(["--steps", "3", "--seed", "1"]) == 0
    finally:
        torch.set_num_threads(threads)
    out = capsys.readouterr().out
    steps = re.findall(r"step\s+(\d+)\s+reward ([\d.]+)\s+loss ([-+\d.]+)\s+kl ([\d.]+)", out)
    assert [int(s[0]) for s in steps] == [1, 2, 3]
    assert all(math.isfinite(float(x)) for s in steps for x in s[1:])
    assert "done: 3 steps" in out
