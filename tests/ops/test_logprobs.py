"""r1core.logprobs on every backend against float64 (docs/spec.md §2, tolerances of §7): strided views,
temperatures, ignored (negative) targets, V not a multiple of any block, no grad, errors."""
from __future__ import annotations

import pytest
import torch

from r1core.ref.grpo_oracle import oracle_logprobs
from r1core import _backend
from r1core.ops.grpo.loss import logprobs

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _has_cpp() -> bool:
    return _backend.missing("cpp", "cpu") is None and hasattr(_backend.ext(), "logprobs_cpu")


BACKENDS = [
    "torch",
    pytest.param("cpp", marks=pytest.mark.skipif(not _has_cpp(), reason="r1core._C without grpo_loss")),
    pytest.param("triton", marks=pytest.mark.interpret),
]


@pytest.mark.parametrize("V,temperature", [(1000, 1.0), (4099, 0.7), (3, 1.3)])
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("backend", BACKENDS)
def test_matches_float64(backend, dtype, V, temperature, gen):
    B, T = 3, 5
    full = (torch.randn(B, T + 1, V, generator=gen) * 3).to(DTYPES[dtype]).requires_grad_()
    x = full[:, 1:]                                   # strided view, no copy
    targets = torch.randint(0, V, (B, T), generator=gen)
    targets[1, 2] = -100                              # ignored
    got = logprobs(x, targets, temperature=temperature, backend=backend)
    want = oracle_logprobs(x.detach().double(), targets, temperature=temperature)
    assert got.dtype == torch.float32 and got.shape == (B, T) and not got.requires_grad
    keep = targets >= 0
    d = (got.double() - want)[keep].abs()
    bound = 1e-5 * want[keep].abs() + 1e-6 if dtype == "fp32" else torch.full_like(d, 1e-4)
    assert bool((d <= bound).all()), float(d.max())
    assert float(got[1, 2]) == 0.0


@pytest.mark.parametrize("backend", BACKENDS)
def test_errors(backend, gen):
    x = torch.randn(2, 3, 7, generator=gen)
    t = torch.randint(0, 7, (2, 3), generator=gen)
    with pytest.raises(ValueError, match="targets"):
        logprobs(x, t.masked_fill(t == t[0, 0], 7), backend=backend)
    with pytest.raises(ValueError, match="targets"):
        logprobs(x, t[:, :2], backend=backend)
    with pytest.raises(ValueError, match="temperature"):
        logprobs(x, t, temperature=-1.0, backend=backend)
    with pytest.raises(ValueError, match="logits"):
        logprobs(x[0], t, backend=backend)
    with pytest.raises(TypeError, match="logits"):
        logprobs(x.int(), t, backend=backend)


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_triton_on_cuda(dtype, gen):
    x = (torch.randn(4, 65, 32003, generator=gen) * 3).to(DTYPES[dtype]).cuda()[:, :-1]
    t = torch.randint(0, 32003, (4, 64), generator=gen).cuda()
    got = logprobs(x, t, backend="triton")
    want = oracle_logprobs(x.double(), t)
    tol = 1e-5 * want.abs() + 1e-6 if dtype == "fp32" else 1e-4
    assert bool(((got.double() - want).abs() <= tol).all())
