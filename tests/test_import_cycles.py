"""No import cycles in r1core, function-level imports included (a deferred import hides a cycle, it does
not remove it), and every module imports alone in a fresh interpreter (issue 31)."""
import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "r1core"


def _module_name(path: Path) -> str:
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {_module_name(p): p for p in sorted(PKG.rglob("*.py"))
           if "_kernels" not in p.parts and "cases" not in p.parts and "__pycache__" not in p.parts}


def _edges(name: str, path: Path) -> set[str]:
    """The r1core modules `name` imports anywhere in its file (explicit imports only: `from r1core.x import y`
    counts r1core.x.y when that is a module, else r1core.x)."""
    out = set()
    pkg = name if path.name == "__init__.py" else name.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                up = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                base = ".".join(up + ([base] if base else []))
            for a in node.names:
                out.add(f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base)
    return {m for m in out if m in MODULES and m != name}


def test_no_import_cycles():
    graph = {n: _edges(n, p) for n, p in MODULES.items()}
    # a package's __init__ re-exporting lazily (r1core.__init__'s _LAZY table, models.__init__) is a
    # dependency of the package on its parts, never the other way: drop edges into package __init__s
    packages = {n for n, p in MODULES.items() if p.name == "__init__.py"}
    graph = {n: {m for m in e if m not in packages} for n, e in graph.items()}
    cycles, state = [], {}

    def visit(n, stack):
        state[n] = 1
        stack.append(n)
        for m in sorted(graph[n]):
            if state.get(m) == 1:
                cycles.append(stack[stack.index(m):] + [m])
            elif m not in state:
                visit(m, stack)
        stack.pop()
        state[n] = 2
    for n in sorted(graph):
        if n not in state:
            visit(n, [])
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_every_module_imports_alone():
    """Each module in its own fresh interpreter (one subprocess runs them one by one, each after a
    clean sys.modules of r1core): a module that only works once another was imported fails here."""
    names = [n for n in MODULES if not n.startswith(("r1core.integrations.", "r1core.bench.cases"))]
    code = ("import importlib, sys\nbad = []\nfor n in sys.argv[1:]:\n"
            "    for k in [k for k in sys.modules if k == 'r1core' or k.startswith('r1core.')]:\n"
            "        del sys.modules[k]\n"
            "    try:\n        importlib.import_module(n)\n"
            "    except Exception as e:\n        bad.append(f'{n}: {type(e).__name__}: {e}')\n"
            "print('\\n'.join(bad))\n")
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", code, *names], capture_output=True, text=True,
                         cwd=ROOT, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip() == "", out.stdout


@pytest.mark.parametrize("name", ["r1core.ops.grpo.fused_linear", "r1core.ops.grpo.loss",
                                  "r1core.models.checkpoint", "r1core.models.transformer", "r1core.ops.grpo.options",
                                  "r1core.train.config", "r1core.ref.grpo_oracle"])
def test_key_modules_import_alone_in_a_fresh_interpreter(name):
    out = subprocess.run([sys.executable, "-W", "ignore", "-c", f"import {name}"], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
