"""Every code block in README.md and docs/ is runnable as written, or says it is not.

Convention: a ```python block runs verbatim, from a folder outside the checkout, with r1core
importable; an API or signature listing is a plain ``` block (no language).  Each `r1core ...` line of
a ```bash block is parsed and validated as that command would (keys, types, ranges, choices) without
running it: a documented option that no longer exists, or a value out of range, fails here.
"""
import importlib.util
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.S | re.M)
# optional packages a block may need: it is skipped (not failed) where they are missing
NEEDS = {"trl": "trl", "datasets": "datasets", "verl": "verl", "cuda": None}


def blocks(lang: str):
    for doc in DOCS:
        text = doc.read_text()
        for m in FENCE.finditer(text):
            if m.group(1) == lang:
                line = text[:m.start()].count("\n") + 1
                yield pytest.param(m.group(2), id=f"{doc.relative_to(ROOT)}:{line}")


@pytest.mark.parametrize("code", list(blocks("python")))
def test_python_block_runs_verbatim(code, tmp_path):
    for word, module in NEEDS.items():
        if module and re.search(rf"\b(import|from) {word}\b", code) and importlib.util.find_spec(module) is None:
            pytest.skip(f"needs {module}")
    if "r1core.integrations.verl" in code and importlib.util.find_spec("verl") is None:
        pytest.skip("needs verl")
    script = tmp_path / "block.py"
    script.write_text(code)
    res = subprocess.run([sys.executable, "-W", "ignore", str(script)], capture_output=True, text=True,
                         cwd=tmp_path, timeout=600,
                         env={"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin",
                              "HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"})
    assert res.returncode == 0, res.stderr[-3000:]


def command_lines():
    for p in blocks("bash"):
        code, = p.values
        for raw in code.replace("\\\n", " ").splitlines():
            line = raw.split(" #", 1)[0].strip()
            m = re.search(r"(?:^|\s)(?:python -m )?r1core (train|eval|sample)\b(.*)$", line)
            if m:
                yield pytest.param(m.group(1), m.group(2).strip(), id=f"{p.id}: {line[:60]}")


@pytest.mark.parametrize("command, args", list(command_lines()))
def test_documented_commands_validate(command, args, monkeypatch):
    """`r1core train|eval|sample ...` as documented: the options parse and validate."""
    from r1core.cli import split_args
    from r1core.train.config import embedded_default, load_config
    monkeypatch.chdir(ROOT)                           # --config configs/… is relative to the checkout
    argv = [a for a in shlex.split(args) if "..." not in a and not a.startswith("/models/")]
    config, overrides, _, _ = split_args(argv, extra=("quick", "json", "prompt", "n"))
    load_config(config, overrides, base=None if config else embedded_default())
