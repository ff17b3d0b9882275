"""pytest-benchmark wrappers over the same cases the runner times, for those who prefer it:

    python -m pytest benches/test_pytest_benchmark.py --benchmark-only [-k grpo_loss] [--benchmark-json out.json]

Quick (small) shapes by default; R1CORE_BENCH_FULL=1 uses the full shapes of each bench module.
Not part of the test suite (tests/ is); pytest-xdist must be off (-p no:xdist) for stable numbers.
"""
import os

import pytest
import torch

from r1core.bench import quantiles, time_fn
from r1core.bench.runner import bench_modules, load_cases_module

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
QUICK = os.environ.get("R1CORE_BENCH_FULL") != "1"


def _cases():
    for name in bench_modules():
        mod = load_cases_module(name)
        # Build cases lazily per test: building allocates the inputs.
        yield pytest.param(mod, id=name.removeprefix("bench_"))


@pytest.mark.parametrize("mod", list(_cases()))
def test_bench(mod, benchmark):
    cases = mod.cases(DEVICE, QUICK)
    if not cases:
        pytest.skip("no case on this device")
    # pytest-benchmark times one callable per test: run every case of the module in sequence, and
    # record each case's own time too so the JSON keeps per-backend numbers.
    for case in cases:
        stats = benchmark.extra_info.setdefault("cases", [])
        median = quantiles(time_fn(case.fn, DEVICE, budget_s=0.5))[1]
        stats.append({"op": case.op, "shape": case.shape, "dtype": case.dtype, "backend": case.backend,
                      "median_ms": median * 1e3})
    benchmark.pedantic(lambda: [c.fn() for c in cases], rounds=3, iterations=1)
