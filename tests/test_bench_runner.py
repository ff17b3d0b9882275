"""`r1core bench` as an installed wheel runs it: every case file it ships finds what it reads, results go
outside site-packages, the table has rows (or says why not) without progress bars, notes explain it;
an R1CORE_NO_EXT=1 install does not warn on every import."""
import shutil
import warnings
from pathlib import Path

import torch

import r1core
from r1core.bench import runner

ROOT = Path(__file__).resolve().parents[1]


def _wheel_copy(tmp_path) -> Path:
    """The case folder as a wheel lays it out: real files (links followed) inside r1core/bench/cases."""
    cases = tmp_path / "cases"
    shutil.copytree(ROOT / "benches", cases, symlinks=False, ignore=shutil.ignore_patterns("results", "__pycache__"))
    return cases


def test_wheel_ships_what_the_cases_read(tmp_path):
    import re
    setup = (ROOT / "setup.py").read_text()
    shipped = re.search(r'"r1core.bench": \[(.*?)\]', setup).group(1)
    assert "cases/kinds_table.py" in shipped
    cases = _wheel_copy(tmp_path)
    mod = runner.load_cases_module("bench_rewards", cases)
    assert len(mod._kinds_table()) > 50            # read from beside the case file, no tests/ folder needed


def test_results_go_to_the_checkout_or_outside_the_package(tmp_path, monkeypatch):
    cpu = torch.device("cpu")
    assert runner.results_dir(ROOT / "benches", cpu) == ROOT / "benches" / "results" / "cpu"
    assert runner.results_dir(runner.cases_dir(), cpu).resolve() == (ROOT / "benches" / "results" / "cpu").resolve()
    monkeypatch.chdir(tmp_path)
    fake_pkg = tmp_path / "site-packages" / "r1core" / "bench"
    (fake_pkg / "cases").mkdir(parents=True)
    monkeypatch.setattr(runner, "__file__", str(fake_pkg / "runner.py"))
    assert runner.results_dir(fake_pkg / "cases", cpu) == tmp_path / "bench-results" / "cpu"


def test_table_has_rows_or_says_why_and_no_progress_bars(tmp_path, capsys, monkeypatch):
    cases = tmp_path / "cases"
    cases.mkdir()
    (cases / "bench_empty.py").write_text("def cases(device, quick):\n    return []\n")
    (cases / "bench_one.py").write_text(
        "from r1core.bench import Case\n"
        "def cases(device, quick):\n"
        "    import tqdm, sys\n"
        "    for _ in tqdm.tqdm(range(3), file=sys.stdout): pass\n"
        "    return [Case('toy', 'n=1', 'fp32', 'torch', lambda: 1 + 1, baseline=True, note='why this shape')]\n")
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.chdir(tmp_path)
    assert runner.main(["--cases", str(cases), "--budget", "0.01", "--no-save"]) == 0
    out = capsys.readouterr().out
    assert "bench_empty: no case at these shapes" in out
    assert "bench_one: 1 cases" in out and "\ntoy " in out and "#   note: why this shape" in out
    assert "it/s" not in out and "100%" not in out            # tqdm was silenced


def test_no_extension_install_does_not_warn(monkeypatch):
    monkeypatch.setattr(r1core, "backends", lambda: {"cpp": "missing: r1core._C is not built"})
    monkeypatch.delenv("R1CORE_NO_EXT", raising=False)
    monkeypatch.setattr(r1core, "_chose_no_extension", lambda: False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r1core._say_missing_backends()
    assert any(issubclass(w.category, r1core.MissingBackendWarning) for w in seen)
    monkeypatch.undo()
    monkeypatch.setattr(r1core, "backends", lambda: {"cpp": "missing: r1core._C is not built"})

    class PureWheel:
        def locate_file(self, path):
            return Path(r1core.__file__)

        def read_text(self, name):
            return "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
    import importlib.metadata as md
    monkeypatch.setattr(md, "distribution", lambda name: PureWheel())
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        r1core._say_missing_backends()
    assert not seen
