"""The optional math-verify backend behind accuracy (skipped when math-verify is not installed;
here it ran with `pip install --target DIR math-verify latex2sympy2-extended` on PYTHONPATH)."""
import importlib.util
import time

import pytest

from r1core.rewards import accuracy

HAVE = importlib.util.find_spec("math_verify") is not None


@pytest.mark.skipif(not HAVE, reason="math-verify is not installed")
def test_math_verify_backend_agrees_and_is_bounded():
    assert accuracy("\\boxed{\\frac{1}{2}}", answer="0.5", backend="math_verify") == 1.0
    assert accuracy("\\boxed{2x+2}", answer="2(x+1)", backend="math_verify") == 1.0
    assert accuracy("\\boxed{3}", answer="4", backend="math_verify") == 0.0
    t0 = time.perf_counter()
    assert accuracy("\\boxed{9^{9^{9^{9}}}}", answer="1", backend="math_verify", timeout=1.0) == 0.0
    assert time.perf_counter() - t0 < 1.0 + 1.5


@pytest.mark.skipif(HAVE, reason="math-verify is installed")
def test_math_verify_backend_missing_is_a_clear_error():
    with pytest.raises(ValueError, match="math-verify"):
        accuracy("\\boxed{1}", answer="1", backend="math_verify")


def test_unknown_backend():
    with pytest.raises(ValueError, match="backend"):
        accuracy("\\boxed{1}", answer="1", backend="wolfram")
