"""backend="triton" on CPU as the first Triton call of a fresh process, without TRITON_INTERPRET in the
environment (docs/spec.md §6: the interpreter is switched on automatically).  tests/conftest.py sets the
variable for the rest of the suite, so this runs in a subprocess that never saw it (issue 31: torch
imports triton lazily from any custom op's autograd, before r1core's kernels, and a triton imported
without the variable cannot be interpreted)."""
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="CPU-only behaviour (no GPU)")

OPS = {
    "grpo_loss": "l, _ = r1core.grpo_loss(x, t, a, backend='triton'); l.backward()",
    "grpo_loss_cispo": "l, _ = r1core.grpo_loss(x, t, a, policy='cispo', backend='triton'); l.backward()",
    "logprobs": "r1core.logprobs(x, t, backend='triton')",
    "fused_linear": "l, _ = r1core.fused_linear_grpo_loss(h, w, t, a, backend='triton'); l.backward()",
    "advantages": "r1core.grpo_advantages(torch.randn(4), 2, backend='triton')",
    "moe_route": "r1core.moe_route(torch.randn(5, 8), 2, backend='triton')",
}


def run(code: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env,
                          cwd=ROOT)


@pytest.mark.parametrize("op", sorted(OPS))
def test_first_triton_call_in_fresh_process(op):
    pytest.importorskip("triton")
    code = ("import torch, r1core\n"
            "x = torch.randn(2, 3, 11, requires_grad=True); t = torch.randint(0, 11, (2, 3)); a = torch.randn(2)\n"
            "h = torch.randn(2, 3, 4, requires_grad=True); w = torch.randn(11, 4, requires_grad=True)\n"
            f"{OPS[op]}\nprint('OK')\n")
    res = run(code)
    assert res.returncode == 0 and "OK" in res.stdout, res.stderr[-3000:]


def test_triton_imported_before_r1core_is_a_clear_error():
    """A triton already imported without the interpreter cannot be switched: BackendUnavailable says so."""
    pytest.importorskip("triton")
    res = run("import triton, torch, r1core\n"
              "try:\n    r1core.logprobs(torch.randn(2, 3, 5), torch.zeros(2, 3, dtype=torch.long), backend='triton')\n"
              "except r1core.BackendUnavailable as e:\n    print('REFUSED', e)\n")
    assert "REFUSED" in res.stdout and "TRITON_INTERPRET=1" in res.stdout, res.stdout + res.stderr[-2000:]
