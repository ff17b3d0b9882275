"""r1core.grpo_advantages (docs/spec.md §1): every backend against the float64 reference on fresh random
rewards, the exactness promises (constant groups give exactly 0, 1e4 + noise stays accurate), every
error, and the backend choice (docs/spec.md §6).

Backends run where they can: torch and cpp on CPU; triton under the Triton interpreter on CPU
tensors (marker `interpret`) and on a GPU (marker `gpu`); cuda on a GPU.  The Triton kernels are
also compiled for sm_90 ahead of time (tests/sm90), so code the interpreter accepts but the compiler
would not cannot pass unseen.
"""
from __future__ import annotations

import pytest
import torch

from r1core import BackendUnavailable, grpo_advantages
from r1core._backend import missing
from r1core.ops import advantage as adv_ops
from r1core.ref.advantage import BASELINES, SCALES, grpo_advantages_ref

GS = (2, 3, 7, 16, 64, 100)
OPTIONS = [(s, b) for s in SCALES for b in BASELINES]

needs_cpp = pytest.mark.skipif(missing("cpp", "cpu") is not None, reason="r1core._C is not built")
BACKENDS = [  # (backend, device)
    pytest.param(("torch", "cpu"), id="torch"),
    pytest.param(("cpp", "cpu"), id="cpp", marks=needs_cpp),
    pytest.param(("triton", "cpu"), id="triton-interpret", marks=pytest.mark.interpret),
    pytest.param(("triton", "cuda"), id="triton-gpu", marks=pytest.mark.gpu),
    pytest.param(("cuda", "cuda"), id="cuda", marks=pytest.mark.gpu),
]


def _rewards(gen, shape, dtype=torch.float32, device="cpu"):
    """Fresh rewards: a continuous part and a few repeated discrete values (as rule rewards give)."""
    r = torch.randn(shape, generator=gen, dtype=torch.float64) * 2.0 + 0.5
    r = torch.where(torch.rand(shape, generator=gen) < 0.3, torch.randint(0, 2, shape, generator=gen).double(), r)
    return r.to(dtype).to(device)


def _expected(r, G, *, scale="group", baseline="mean", eps=1e-6):
    """The textbook formulas of docs/spec.md §1 in float64 (plain means and torch.std, none of the shifted sums
    of r1core.ref.advantage, so the "torch" backend is checked too), on exactly the values the kernel
    sees (after any rounding to r's dtype)."""
    x = r.double().reshape(-1, G)
    if baseline == "mean":
        a = x - x.mean(dim=1, keepdim=True)
    else:
        a = x - (x.sum(dim=1, keepdim=True) - x) / (G - 1)
    if scale == "group":
        a = a / (x.std(dim=1, keepdim=True) + eps)
    elif scale == "batch":
        a = a / (x.std() + eps)
    return a.reshape(r.shape)


def _assert_close(out, ref, rtol=1e-5):
    assert out.dtype == torch.float32 and out.shape == ref.shape
    assert torch.isfinite(out).all()
    atol = rtol * max(1.0, ref.abs().max().item())
    torch.testing.assert_close(out.double().cpu(), ref.cpu(), rtol=rtol, atol=atol)


# ---------------------------------------------------------------------------------------------
# values
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("G", GS)
@pytest.mark.parametrize("case", BACKENDS)
def test_matches_float64_reference(case, G, gen):
    backend, device = case
    r = _rewards(gen, (5 * G,), device=device)
    for scale, baseline in OPTIONS:
        out = grpo_advantages(r, G, scale=scale, baseline=baseline, backend=backend)
        assert out.device == r.device and not out.requires_grad
        _assert_close(out, _expected(r, G, scale=scale, baseline=baseline))


@pytest.mark.parametrize("case", BACKENDS)
def test_shapes_strides_and_eps(case, gen):
    backend, device = case
    G = 7
    base = _rewards(gen, (2, 6 * G), device=device)
    views = {
        "2d": base[0].reshape(6, G),               # [N/G, G], contiguous
        "1d-strided": base.reshape(-1)[::2],       # [N] with stride 2
        "2d-transposed": base.reshape(2 * G, 6).t()[:, :G],       # [6, G] with strides (1, 6)
        "2d-row-sliced": base.reshape(12, G)[::2],  # [6, G] with strides (2G, 1)
    }
    for name, r in views.items():
        assert name == "2d" or not r.is_contiguous()
        for scale, baseline in (("group", "rloo"), ("batch", "mean"), ("none", "rloo")):
            out = grpo_advantages(r, G, scale=scale, baseline=baseline, eps=0.25, backend=backend)
            assert out.shape == r.shape, name
            _assert_close(out, _expected(r.contiguous(), G, scale=scale, baseline=baseline, eps=0.25))


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float64])
@pytest.mark.parametrize("case", BACKENDS)
def test_other_dtypes(case, dtype, gen):
    backend, device = case
    G = 16
    r = _rewards(gen, (4, G), dtype=dtype, device=device)
    for scale, baseline in (("group", "mean"), ("batch", "rloo")):
        out = grpo_advantages(r, G, scale=scale, baseline=baseline, backend=backend)
        _assert_close(out, _expected(r, G, scale=scale, baseline=baseline))


@pytest.mark.parametrize("case", BACKENDS)
def test_constant_groups_are_exactly_zero(case, gen):
    backend, device = case
    G = 7
    consts = torch.tensor([0.1, 1e4 + 0.1, 0.0, -3.7, 1e-30, 12345.678], dtype=torch.float64)
    r = torch.cat([consts[:, None].expand(-1, G), _rewards(gen, (2, G), dtype=torch.float64)]).to(device)
    for dtype in (torch.float32, torch.float64, torch.bfloat16):
        x = r.to(dtype)
        for scale, baseline in OPTIONS:
            for eps in (1e-6, 0.0):
                out = grpo_advantages(x, G, scale=scale, baseline=baseline, eps=eps, backend=backend)
                assert (out[: len(consts)] == 0).all(), (dtype, scale, baseline, eps, out[: len(consts)])
                assert torch.isfinite(out).all()
                assert (out[len(consts):] != 0).any()


@pytest.mark.parametrize("case", BACKENDS)
def test_large_offset_is_stable(case, gen):
    backend, device = case
    G = 16
    noise = torch.randn(8, G, generator=gen, dtype=torch.float64)
    for dtype in (torch.float32, torch.float64):
        r = (1e4 + noise).to(dtype).to(device)
        for scale, baseline in OPTIONS:
            out = grpo_advantages(r, G, scale=scale, baseline=baseline, backend=backend)
            _assert_close(out, _expected(r, G, scale=scale, baseline=baseline), rtol=1e-4)


@pytest.mark.parametrize("case", BACKENDS)
def test_integer_bool_and_grad_rewards(case, gen):
    backend, device = case
    r = torch.randint(-3, 4, (6, 4), generator=gen).to(device)
    r[0] = 2  # a constant group too
    _assert_close(grpo_advantages(r, 4, backend=backend), _expected(r, 4))
    b = (r > 0)
    _assert_close(grpo_advantages(b, 4, scale="none", backend=backend), _expected(b.double(), 4, scale="none"))
    f = r.float().requires_grad_()
    out = grpo_advantages(f, 4, backend=backend)
    assert not out.requires_grad


@pytest.mark.parametrize("case", BACKENDS)
def test_empty_rewards(case):
    backend, device = case
    for shape in ((0,), (0, 4)):
        out = grpo_advantages(torch.empty(shape, device=device), 4, scale="batch", backend=backend)
        assert out.shape == shape and out.dtype == torch.float32


def test_wide_groups_cpu(gen):
    G = 5000  # cpp walks any G; checked against torch
    r = _rewards(gen, (3, G), dtype=torch.float64)
    backends = ["torch"] + (["cpp"] if missing("cpp", "cpu") is None else [])
    for backend in backends:
        for scale, baseline in (("group", "rloo"), ("batch", "mean")):
            _assert_close(grpo_advantages(r, G, scale=scale, baseline=baseline, backend=backend),
                          _expected(r, G, scale=scale, baseline=baseline))


@pytest.mark.gpu
@pytest.mark.parametrize("backend", ["triton", "cuda"])
def test_gpu_large_shapes(backend):
    gen = torch.Generator().manual_seed(7)
    for G, n_groups in ((16, 65536), (100, 300), (1024, 20), (5000, 7)):  # team, team, team EPL=32, wide
        r = _rewards(gen, (n_groups * G,), device="cuda")
        for scale, baseline in (("group", "rloo"), ("batch", "mean"), ("none", "mean")):
            out = grpo_advantages(r, G, scale=scale, baseline=baseline, backend=backend)
            _assert_close(out, _expected(r, G, scale=scale, baseline=baseline))


# ---------------------------------------------------------------------------------------------
# the Triton kernels' internal paths (chunked wide groups, two-launch batch std) on small inputs
# ---------------------------------------------------------------------------------------------
@pytest.mark.interpret
def test_triton_chunked_and_two_launch_paths(gen):
    from r1core._backend import kernels
    K = kernels("advantage")
    paths = [  # (rewards [n_groups, G], launcher overrides)
        ((5, 70), dict(max_block_g=32, small_batch_n=1 << 30)),  # 3 chunks of 32, the last one partial
        ((20, 100), dict(small_batch_n=1)),                      # batch std from 2 partial moments
        ((5, 70), dict(max_block_g=32, small_batch_n=1)),        # both: 5 partials of chunked groups
    ]
    for shape, kw in paths:
        r_gG = _rewards(gen, shape)
        r_gG[3] = 2.5  # a constant group
        for scale, baseline in (("group", "rloo"), ("batch", "mean"), ("none", "mean")):
            out, bad = K.grpo_advantages(r_gG, scale=scale, baseline=baseline, eps=1e-6, **kw)
            assert bad.item() == 0 and (out[3] == 0).all()
            _assert_close(out, _expected(r_gG, shape[1], scale=scale, baseline=baseline))
        r_gG[4, 55] = float("inf")
        assert K.grpo_advantages(r_gG, scale="batch", baseline="mean", eps=1e-6, **kw)[1].item() == 1


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("case", BACKENDS)
def test_non_finite_rewards_raise(case):
    backend, device = case
    for bad in (float("nan"), float("inf"), -float("inf")):
        for scale in ("group", "batch"):
            r = torch.arange(24, dtype=torch.float32, device=device)
            r[13] = bad
            with pytest.raises(ValueError, match="finite"):
                grpo_advantages(r, 4, scale=scale, backend=backend)


@pytest.mark.parametrize("case", BACKENDS)
def test_skip_checks_env_lets_nan_through(case, monkeypatch):
    backend, device = case
    monkeypatch.setenv(adv_ops.SKIP_CHECKS_ENV, "1")
    r = torch.arange(12, dtype=torch.float32, device=device)
    r[5] = float("nan")
    out = grpo_advantages(r, 4, backend=backend).cpu()
    assert out[4:8].isnan().any() and torch.isfinite(out[:4]).all() and torch.isfinite(out[8:]).all()


@pytest.mark.parametrize("args, kwargs, exc, match", [
    ((torch.ones(8), 1), {}, ValueError, "group_size"),
    ((torch.ones(8), 0), {}, ValueError, "group_size"),
    ((torch.ones(8), -2), {}, ValueError, "group_size"),
    ((torch.ones(8), 2.0), {}, TypeError, "group_size"),
    ((torch.ones(8), True), {}, TypeError, "group_size"),
    ((torch.ones(10), 4), {}, ValueError, "multiple of group_size"),
    ((torch.ones(3, 5), 4), {}, ValueError, "group_size=4 columns"),
    ((torch.ones(2, 2, 4), 4), {}, ValueError, r"shape \[N\] or \[N/G, G\]"),
    ((torch.ones(()), 2), {}, ValueError, r"shape \[N\] or \[N/G, G\]"),
    (([1.0, 2.0], 2), {}, TypeError, "rewards"),
    ((torch.ones(4, dtype=torch.complex64), 2), {}, TypeError, "rewards"),
    ((torch.ones(8), 4), {"scale": "std"}, ValueError, "scale"),
    ((torch.ones(8), 4), {"scale": None}, ValueError, "scale"),
    ((torch.ones(8), 4), {"baseline": "median"}, ValueError, "baseline"),
    ((torch.ones(8), 4), {"eps": -1e-6}, ValueError, "eps"),
    ((torch.ones(8), 4), {"eps": float("nan")}, ValueError, "eps"),
    ((torch.ones(8), 4), {"eps": "1e-6"}, TypeError, "eps"),
    ((torch.ones(8), 4), {"backend": "jax"}, ValueError, "backend"),
])
def test_bad_arguments(args, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        grpo_advantages(*args, **kwargs)


def test_cpp_entry_point_validates_too():
    if missing("cpp", "cpu") is not None:
        pytest.skip("r1core._C is not built")
    from r1core._backend import ext
    C = ext()
    with pytest.raises(ValueError, match="scale"):
        C.advantage_cpu(torch.ones(2, 4), "std", "mean", 1e-6)
    with pytest.raises(ValueError, match="group_size"):
        C.advantage_cpu(torch.ones(4, 1), "group", "mean", 1e-6)
    with pytest.raises(ValueError, match="rewards"):
        C.advantage_cpu(torch.ones(8), "group", "mean", 1e-6)
    with pytest.raises(ValueError, match="rewards"):
        C.advantage_cpu(torch.ones(2, 4, dtype=torch.int32), "group", "mean", 1e-6)


# ---------------------------------------------------------------------------------------------
# backend choice (docs/spec.md §6)
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def spies(monkeypatch):
    """Replace every backend by a recorder that still computes the right answer (with torch)."""
    ran = []
    for name in adv_ops.ADVANTAGE.backends:
        def spy(r_gG, scale, baseline, eps, check_finite, _name=name):
            ran.append(_name)
            return grpo_advantages_ref(r_gG, r_gG.shape[1], scale=scale, baseline=baseline, eps=eps).float()
        monkeypatch.setitem(adv_ops.ADVANTAGE.impls, name, spy)
    monkeypatch.delenv("R1CORE_BACKEND", raising=False)
    return ran


def test_backend_choice(spies, monkeypatch):
    r = torch.randn(8)
    grpo_advantages(r, 4)
    assert spies[-1] == ("cpp" if missing("cpp", "cpu") is None else "torch")
    grpo_advantages(r, 4, backend="torch")
    assert spies[-1] == "torch"
    monkeypatch.setenv("R1CORE_BACKEND", "torch")
    grpo_advantages(r, 4)
    assert spies[-1] == "torch"
    if missing("cpp", "cpu") is None:
        grpo_advantages(r, 4, backend="cpp")  # the argument wins over the environment
        assert spies[-1] == "cpp"
    monkeypatch.setenv("R1CORE_BACKEND", "fortran")
    with pytest.raises(ValueError, match="R1CORE_BACKEND"):
        grpo_advantages(r, 4)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU-only refusal")
def test_cuda_backend_on_cpu_tensors_is_refused(monkeypatch):
    monkeypatch.delenv("R1CORE_BACKEND", raising=False)
    with pytest.raises(BackendUnavailable, match="cuda"):
        grpo_advantages(torch.randn(8), 4, backend="cuda")
    monkeypatch.setenv("R1CORE_BACKEND", "cuda")
    with pytest.raises(BackendUnavailable, match="cuda"):
        grpo_advantages(torch.randn(8), 4)
