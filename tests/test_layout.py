"""The architecture rules of STYLE.md that a test can hold: imports flow one way, and the package
imports without the extension or Triton."""
import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_kernels_know_nothing_of_r1core():
    for f in (ROOT / "kernels").rglob("*.py"):
        bad = {n for n in _imports(f) if n.split(".")[0] == "r1core"}
        assert not bad, f"{f.name} imports {bad}"


def test_ref_imports_only_torch():
    for f in (ROOT / "r1core" / "ref").rglob("*.py"):
        bad = {n for n in _imports(f) if n.split(".")[0] in ("r1core", "triton")}
        assert not bad, f"ref/{f.name} imports {bad}"


def test_only_ops_imports_kernels_and_extension():
    for f in (ROOT / "r1core").rglob("*.py"):
        rel = f.relative_to(ROOT / "r1core")
        if rel.parts[0] in ("ops", "_kernels") or rel.name == "_backend.py":
            continue
        bad = {n for n in _imports(f) if n.startswith(("r1core._kernels", "r1core._C", "triton"))}
        assert not bad, f"{rel} imports {bad}"


def test_rewards_import_nothing_else_from_r1core():
    for f in (ROOT / "r1core" / "rewards").rglob("*.py"):
        bad = {n for n in _imports(f) if n.startswith("r1core") and not n.startswith("r1core.rewards")}
        assert not bad, f"rewards/{f.name} imports {bad}"


def test_import_is_lazy_and_fast():
    code = "import sys, r1core; print(any(m.startswith(('triton', 'r1core._kernels', 'r1core.models')) for m in sys.modules))"
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


def test_kernels_ship_inside_r1core_only():
    link = ROOT / "r1core" / "_kernels"
    assert link.is_symlink() and link.resolve() == (ROOT / "kernels").resolve()
    assert not (ROOT / "kernels" / "setup.py").exists()


def test_package_never_imports_benches():
    """The bench runner lives in r1core.bench; benches/ holds only case files and results, and is not
    installed (a top-level `benches` package would clash with any other project's)."""
    for f in (ROOT / "r1core").rglob("*.py"):
        bad = {n for n in _imports(f) if n.split(".")[0] == "benches"}
        assert not bad, f"{f.relative_to(ROOT)} imports {bad}"
    tree = ast.parse((ROOT / "setup.py").read_text())
    packages = next(ast.literal_eval(n.value) for n in ast.walk(tree) if isinstance(n, ast.Assign)
                    and any(getattr(t, "id", None) == "PACKAGES" for t in n.targets))
    assert "r1core.bench" in packages
    assert not any(p.split(".")[0] == "benches" for p in packages), packages
    assert sorted(p.name for p in (ROOT / "benches").glob("*.py") if not p.name.startswith("bench_")) \
        == ["__init__.py", "__main__.py", "kinds_table.py", "test_pytest_benchmark.py"]
    assert (ROOT / "benches" / "kinds_table.py").resolve() == ROOT / "tests" / "rewards" / "kinds_table.py"


def test_op_modules_import_without_triton_or_dynamo():
    """Declaring the ops' dispatch tables imports neither Triton (it must not be imported before the
    interpreter switch of r1core._backend.kernels) nor torch._dynamo (seconds of import time)."""
    code = ("import sys, r1core.ops.advantage, r1core.ops.grpo.fused_linear, r1core.ops.moe; "
            "print([m for m in sys.modules if m.startswith(('triton', 'r1core._kernels', 'torch._dynamo'))])")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"
