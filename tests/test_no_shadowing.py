"""Our top-level kernels/ folder must never hide Hugging Face's `kernels` package (transformers >= 5
imports it from transformers.activations), on any path a user takes from the checkout root
(docs/environment.md).  Each path runs in a fresh interpreter with a stand-in `kernels` distribution
placed *after* the checkout on sys.path, as an installed package would be: the stand-in must win.
With a regular package at kernels/ (an __init__.py, as before) every one of these fails."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from standin_dist import make_dist

ROOT = Path(__file__).resolve().parents[1]
PROBE = ("import kernels; print('standin' if getattr(kernels, 'R1CORE_STANDIN', False) else "
         "'shadowed:' + str(getattr(kernels, '__file__', None) or list(getattr(kernels, '__path__', []))))")


@pytest.fixture(scope="module")
def standin(tmp_path_factory) -> Path:
    """A site folder holding a `kernels` distribution (package + dist-info), like pip would leave."""
    return make_dist(tmp_path_factory.mktemp("standin-site"), "kernels", "0.19.1",
                     "R1CORE_STANDIN = True\n__version__ = '0.19.1'\n")


def _run(cmd, *, pythonpath: list[Path], cwd: Path = ROOT) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONPATH"] = os.pathsep.join(map(str, pythonpath))
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)


def test_kernels_folder_is_not_a_regular_package():
    assert not (ROOT / "kernels" / "__init__.py").exists(), \
        "kernels/__init__.py makes the checkout's kernels/ shadow Hugging Face's `kernels` (docs/environment.md)"


def test_python_c_from_root(standin):
    """`python -c …` in the checkout root: sys.path[0] is the root."""
    out = _run([sys.executable, "-c", PROBE], pythonpath=[standin])
    assert out.stdout.strip() == "standin", out.stdout + out.stderr


def test_readme_commands_pythonpath(standin):
    """scripts/test.sh and scripts/run.sh put the checkout root first on PYTHONPATH."""
    out = _run([sys.executable, "-c", PROBE], pythonpath=[ROOT, standin])
    assert out.stdout.strip() == "standin", out.stdout + out.stderr


def test_python_m_from_root(standin, tmp_path):
    """`python -m module` in the checkout root (as `python -m r1core …`): sys.path[0] is the root."""
    (tmp_path / "shadow_probe_mod.py").write_text(PROBE + "\n")
    out = _run([sys.executable, "-m", "shadow_probe_mod"], pythonpath=[tmp_path, standin])
    assert out.stdout.strip() == "standin", out.stdout + out.stderr


def test_pytest_from_root(standin, tmp_path):
    """`python -m pytest` in the checkout root, with the project's pytest settings."""
    (tmp_path / "test_shadow_probe.py").write_text(textwrap.dedent("""
        def test_standin_wins():
            import kernels
            assert getattr(kernels, "R1CORE_STANDIN", False), getattr(kernels, "__path__", None)
    """))
    out = _run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-p", "no:xdist",
                f"--rootdir={ROOT}", "-c", str(ROOT / "pyproject.toml"), str(tmp_path / "test_shadow_probe.py")],
               pythonpath=[ROOT, standin])
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]


def test_r1core_kernels_still_import(standin):
    """The kernels stay reachable as r1core._kernels (the r1core/_kernels -> ../kernels link), beside the
    stand-in, and the r1core command runs from the root."""
    code = "import r1core._kernels.advantage as a, kernels; print(a.__file__.endswith('advantage.py'), kernels.R1CORE_STANDIN)"
    out = _run([sys.executable, "-c", code], pythonpath=[ROOT, standin])
    assert out.stdout.strip() == "True True", out.stdout + out.stderr
    out = _run([sys.executable, "-m", "r1core", "info"], pythonpath=[ROOT, standin])
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]


def test_transformers_and_trl_import_from_root():
    """The real thing: transformers (which imports `kernels` when it is installed), TRL's GRPOTrainer and
    r1core.integrations.trl, from the checkout root with the root on PYTHONPATH."""
    pytest.importorskip("transformers")
    pytest.importorskip("trl")
    code = textwrap.dedent("""
        import importlib.util, transformers.activations
        from trl import GRPOTrainer
        import r1core.integrations.trl
        spec = importlib.util.find_spec("kernels")
        origin = spec and (spec.origin or list(spec.submodule_search_locations or []))
        print("ok", "kernels:", origin)
    """)
    out = _run([sys.executable, "-W", "ignore", "-c", code], pythonpath=[ROOT])
    assert out.returncode == 0 and out.stdout.startswith("ok"), out.stdout[-2000:] + out.stderr[-3000:]
    try:
        import importlib.metadata as md
        md.distribution("kernels")
    except Exception:  # no real `kernels` installed: at most our namespace portion is found
        return
    assert str(ROOT / "kernels") not in out.stdout, out.stdout


def test_installed_r1core_exposes_no_top_level_kernels(tmp_path):
    """An editable (or regular) install of r1core in this environment maps `r1core` only: from a folder
    outside the checkout, `kernels` is either absent or the installed package, never ours."""
    pytest.importorskip("importlib.metadata")
    import importlib.metadata as md
    try:
        md.distribution("r1core")
    except md.PackageNotFoundError:
        pytest.skip("r1core is not installed in this environment (bootstrap installs it editable)")
    code = ("import importlib.util as u; s = u.find_spec('kernels'); "
            "print(None if s is None else (s.origin or list(s.submodule_search_locations)))")
    out = _run([sys.executable, "-c", code], pythonpath=[], cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert str(ROOT / "kernels") not in out.stdout, out.stdout
