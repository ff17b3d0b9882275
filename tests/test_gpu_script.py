"""scripts/gpu.sh --rehearse: every phase of the GPU run on this CPU (tiny shapes, the Triton
interpreter, no CUDA build), so the one prepared GPU script cannot rot between GPU runs.  Checks
what a GPU run must hand back: the phase table last, every phase run, and an --out folder the
device tool can fetch (at most 8 files, none over 16 MiB, at most two folders deep)."""
import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PHASES = ("env", "wheels", "build", "ceilings", "tests", "bench")


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("bash") is None or shutil.which("timeout") is None, reason="needs bash and timeout")
def test_gpu_script_rehearsal(tmp_path):
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k not in ("TRITON_INTERPRET", "PYTEST_XDIST_WORKER")}
    env["PYTHON"] = sys.executable  # the interpreter (and torch) this suite runs under
    res = subprocess.run(["bash", "scripts/gpu.sh", "--rehearse", "--out", str(out), "--wheels", str(tmp_path / "none")],
                         cwd=ROOT, capture_output=True, text=True, env=env, timeout=600)
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-4000:]
    table = text[text.index("# gpu.sh summary"):]
    for phase in PHASES:  # every phase ran (wheels skips: none carried here) and none failed
        row = next((line for line in table.splitlines() if line.startswith(phase + " ")), None)
        assert row is not None and row.split()[1] in ("ok", "skip"), f"{phase}: {row}\n{text[-3000:]}"
    files = [p for p in out.rglob("*") if p.is_file()]
    assert len(files) <= 8 and all(p.stat().st_size <= 16 * 2**20 for p in files), files
    assert all(len(p.relative_to(out).parts) <= 3 for p in files)
    assert {"summary.txt", "gpu.log", "ceilings.json", "bench.csv", "bench.json", "tests.log"} <= {p.name for p in files}
    ceil = json.loads((out / "ceilings.json").read_text())
    assert ceil["copy_tb_s"] > 0 and ceil["mm_bf16_tflop_s"] > 0
    rows = list(csv.DictReader((out / "bench.csv").open()))
    ops = {r["op"].split()[0] for r in rows if not r.get("error")}
    assert {"grpo_advantages", "grpo_loss", "logprobs"} <= ops, ops
    assert "passed" in (out / "tests.log").read_text() or "skipped" in (out / "tests.log").read_text()
