"""A broken or partial environment gets one clear line naming what is missing and the command that fixes
it (r1core._deps, r1core._backend, scripts/bootstrap.sh), never a traceback from inside a dependency."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from standin_dist import make_dist

ROOT = Path(__file__).resolve().parents[1]


def _py(code: str, *, pythonpath=(ROOT,)) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    return subprocess.run([sys.executable, "-W", "ignore", "-c", textwrap.dedent(code)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def _last_line(out: subprocess.CompletedProcess) -> str:
    return out.stderr.strip().splitlines()[-1]


def test_missing_trl_is_one_line_with_the_extra():
    out = _py("import sys; sys.modules['trl'] = None\nimport r1core.integrations.trl")
    line = _last_line(out)
    assert out.returncode != 0 and line.startswith("r1core._deps.MissingDependency: "), out.stderr
    assert "needs trl, which is not installed" in line and "pip install 'r1core[trl]'" in line, line


def test_broken_kernels_package_is_named_with_its_path(tmp_path):
    """A `kernels` that is not Hugging Face's (here: one lacking what transformers imports, placed first on
    the path) is reported with where it was found and how to fix it, not as transformers' deep ImportError."""
    pytest.importorskip("transformers")
    pytest.importorskip("trl")
    make_dist(tmp_path, "kernels", "0.19.1", "__version__ = '0.19.1'\n")   # lacks what transformers imports
    out = _py("import r1core.integrations.trl", pythonpath=(tmp_path, ROOT))
    if out.returncode == 0:
        pytest.skip("this transformers does not import `kernels` (transformers < 5)")
    line = _last_line(out)
    assert line.startswith("r1core._deps.MissingDependency: "), out.stderr[-3000:]
    assert "Hugging Face's `kernels`" in line and str(tmp_path / "kernels") in line, line
    assert "pip install --force-reinstall kernels" in line, line


def test_cli_prints_the_line_alone(monkeypatch, capsys):
    from r1core import cli
    from r1core._deps import MissingDependency

    def broken(argv):
        raise MissingDependency("r1core eval needs trl, which is not installed: pip install 'r1core[trl]'")
    monkeypatch.setitem(cli.COMMANDS, "info", (broken, "x"))
    assert cli.main(["info"]) == 2
    err = capsys.readouterr().err
    assert err == "r1core: r1core eval needs trl, which is not installed: pip install 'r1core[trl]'\n"


def test_explain_other_import_failure_names_package_and_fix():
    from r1core._deps import explain
    err = ImportError("cannot import name 'foo' from 'accelerate.utils'", name="accelerate.utils")
    line = explain("trl", err, "r1core.integrations.trl")
    assert "is installed but its import failed" in line and "pip install --force-reinstall accelerate" in line, line
    assert "\n" not in line


@pytest.mark.parametrize("triton_v, numpy_v, expect", [
    ("2.3.1", "1.26.4", "too old"),
    ("3.6.0", "2.4.1", "pip install 'numpy<2.4'"),
    ("3.9.0", "2.4.1", None),
])
def test_triton_of_an_unexpected_version(monkeypatch, triton_v, numpy_v, expect):
    import importlib.util

    from r1core import _backend, _deps
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton is not installed")
    fake = {"triton": triton_v, "numpy": numpy_v}
    monkeypatch.setattr(_deps, "version", lambda dist: fake.get(dist))
    _backend._triton_missing.cache_clear()
    _backend._interpreter_broken.cache_clear()
    try:
        why = _backend.missing("triton", "cpu")
        if expect is None:
            assert why is None or "interpreter" in why, why
        else:
            assert why and expect in why, why
            with pytest.raises(_backend.BackendUnavailable, match=expect.replace("(", r"\(").replace("[", r"\[")):
                _backend.kernels("advantage")
    finally:
        monkeypatch.undo()
        _backend._triton_missing.cache_clear()
        _backend._interpreter_broken.cache_clear()


def test_bootstrap_without_a_compiler_says_so_first():
    """scripts/bootstrap.sh checks the compiler before any install: one line, exit 1, nothing installed."""
    env = {k: v for k, v in os.environ.items() if k not in ("R1CORE_NO_EXT",)}
    env.update(R1CORE_ENV="system", PYTHON=sys.executable, CXX="/nonexistent/g++")
    out = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1, out.stdout + out.stderr
    assert out.stderr.strip().splitlines() == [
        "bootstrap: CXX=/nonexistent/g++ is not a compiler on PATH (r1core._C is built with it): unset CXX, "
        "or point it to g++"], out.stderr
    assert out.stdout == ""


def test_bootstrap_with_a_too_old_python_says_so(tmp_path):
    fake = tmp_path / "python3"
    fake.write_text("#!/bin/sh\n[ \"$1\" = -V ] && echo 'Python 3.8.10' && exit 0\nexit 1\n")
    fake.chmod(0o755)
    env = dict(os.environ, R1CORE_ENV="system", PYTHON=str(fake))
    out = subprocess.run(["bash", str(ROOT / "scripts" / "bootstrap.sh")], cwd=ROOT, env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 1
    assert "r1core needs Python 3.10+" in out.stderr and "Python 3.8.10" in out.stderr, out.stderr
