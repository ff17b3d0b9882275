"""Per-token entropy as an optional output of the V-sized kernels, and its gradient, against float64 torch.

Legend: B sequences, T positions, V vocabulary, N = B·T rows.  Kernel level: kernels/grpo_loss.py (Triton,
under TRITON_INTERPRET=1 on CPU tensors) and csrc/grpo_loss (C++, r1core._C).  The oracle is
r1core.ref.grpo_oracle (imports nothing from r1core) on the same (rounded) logits in float64; the backward is checked as the
gradient of Σ_n (dlogp_n·logp_n + dent_n·H_n), the two per-row scales an objective hands the V-sized pass.
"""
from __future__ import annotations

import pytest
import torch

from r1core.ref.grpo_oracle import oracle_logprobs, oracle_entropy
from r1core import _backend


def _cpp():
    if _backend.missing("cpp", "cpu") is not None:
        return None
    ext = _backend.ext()
    return ext if hasattr(ext, "logprobs_entropy_cpu") else None


needs_cpp = pytest.mark.skipif(_cpp() is None, reason="r1core._C without the entropy entry points (rebuild)")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# (B, T, V): V not a power of two, V spanning several blocks (1024-wide under the interpreter, kChunk in C++)
SHAPES = [(2, 3, 37), (1, 5, 2500), (3, 2, 1)]


def make(B, T, V, dtype, gen, *, strided=True):
    big = torch.randn(B, T + 1, V, generator=gen) * 3.0 + 1.5  # shifted logits: the entropy must not cancel
    logits = big.to(dtype)[:, :-1] if strided else big[:, :T].contiguous().to(dtype)
    targets = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.rand(B, T, generator=gen) < 0.75
    mask[0, 0] = True
    return logits, targets, mask


def oracle(logits, targets, mask, dlogp, dent, temperature):
    x = logits.detach().double().requires_grad_(True)
    lp = oracle_logprobs(x, targets, temperature=temperature)
    H = oracle_entropy(x, temperature=temperature)
    m = mask.double()
    (g,) = torch.autograd.grad(((dlogp.double() * lp + dent.double() * H) * m).sum(), x)
    return lp.detach() * m, H.detach() * m, g


def tol(dtype):
    return dict(rtol=1e-5, atol=1e-5) if dtype == torch.float32 else dict(rtol=1e-4, atol=1e-4)


def _triton():
    from r1core._backend import kernels
    return kernels("grpo_loss")


def run_triton(logits, targets, mask, dlogp, dent, temperature):
    k = _triton()
    N = targets.numel()
    m = mask.reshape(-1).float()
    t = targets.reshape(-1).contiguous()
    z = torch.zeros(N)
    logp, lse, _, _, ent = k.grpo_fwd(logits, t, z, m, z, None, None, beta=0.0, eps_low=0.2, eps_high=0.2,
                                      temperature=temperature, entropy=True)
    dl = (dlogp.reshape(-1) * m).contiguous()
    dh = (dent.reshape(-1) * m).contiguous()
    g = k.grpo_bwd(logits, t, lse, dl, torch.ones(()), temperature=temperature, entropy_N=ent, dent_N=dh)
    lp2, ent2 = k.logprobs_fwd(logits, torch.where(mask, targets, -100).reshape(-1).contiguous(),
                               temperature=temperature, entropy=True)
    return logp, ent, g, lp2, ent2


def run_cpp(logits, targets, mask, dlogp, dent, temperature):
    ext = _cpp()
    N = targets.numel()
    m = mask.reshape(-1).float().contiguous()
    t = targets.reshape(-1).contiguous()
    z = torch.zeros(N)
    logp, lse, _, _, ent = ext.grpo_loss_fwd_entropy_cpu(logits, t, z, m, z, None, None, 0.0, 0.2, 0.2, temperature)
    dl = (dlogp.reshape(-1) * m).contiguous()
    dh = (dent.reshape(-1) * m).contiguous()
    g = ext.grpo_loss_bwd_cpu(logits, t, lse, dl, 1.0, temperature, False, ent, dh)
    lp2, ent2 = ext.logprobs_entropy_cpu(logits, torch.where(mask, targets, -100).reshape(-1).contiguous(),
                                         temperature)
    return logp, ent, g, lp2, ent2


BACKENDS = [pytest.param(run_triton, marks=pytest.mark.interpret, id="triton"),
            pytest.param(run_cpp, marks=needs_cpp, id="cpp")]


@pytest.mark.parametrize("run", BACKENDS)
@pytest.mark.parametrize("dtype", list(DTYPES.values()), ids=list(DTYPES))
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_entropy_forward_and_gradient(run, dtype, shape, gen):
    B, T, V = shape
    temperature = 0.8
    logits, targets, mask = make(B, T, V, dtype, gen, strided=shape != SHAPES[1])
    dlogp = torch.randn(B, T, generator=gen)
    dent = torch.randn(B, T, generator=gen)
    want_lp, want_H, want_g = oracle(logits, targets, mask, dlogp, dent, temperature)
    logp, ent, g, lp2, ent2 = run(logits, targets, mask, dlogp, dent, temperature)
    mf = mask.reshape(-1)
    torch.testing.assert_close(ent.double(), want_H.reshape(-1), **tol(torch.float32 if dtype == torch.float32
                                                                          else dtype))
    torch.testing.assert_close(logp.double(), want_lp.reshape(-1), **tol(dtype))
    torch.testing.assert_close(ent2.double(), want_H.reshape(-1), **tol(dtype))
    torch.testing.assert_close(lp2.double(), want_lp.reshape(-1), **tol(dtype))
    assert torch.all(ent[~mf] == 0) and torch.all(ent2[~mf] == 0)
    assert g.dtype == dtype and g.shape == logits.shape
    err = (g.double() - want_g).norm()
    # + the float32 rounding of p itself (V = 1: p = 1 exactly in float64, 1 - 6e-8 in float32)
    floor = 1e-6 * float(dlogp.norm() + dent.norm())
    assert err <= (1e-5 if dtype == torch.float32 else 1e-2) * want_g.norm() + floor, err.item()
    assert torch.all(g[~mask] == 0)


@pytest.mark.parametrize("run", BACKENDS)
def test_entropy_of_peaked_and_flat_rows(run, gen):
    """A nearly one-hot row (H ~ 0) and a flat one (H = log V), plus -inf logits (a banned token)."""
    V = 300
    logits = torch.zeros(1, 3, V)
    logits[0, 0, 7] = 60.0
    logits[0, 2, :10] = float("-inf")
    logits[0, 2, 10:] = torch.randn(V - 10, generator=gen)
    targets = torch.tensor([[7, 3, 50]])
    mask = torch.ones(1, 3, dtype=torch.bool)
    d = torch.randn(1, 3, generator=gen)
    _, want_H, want_g = oracle(logits, targets, mask, d, d, 1.0)
    _, ent, g, _, _ = run(logits, targets, mask, d, d, 1.0)
    torch.testing.assert_close(ent.double(), want_H.reshape(-1), rtol=1e-5, atol=1e-5)
    assert abs(float(ent[1]) - torch.log(torch.tensor(float(V)))) < 1e-5
    assert torch.isfinite(g).all()
    torch.testing.assert_close(g.double(), want_g, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("run", BACKENDS)
def test_no_entropy_gradient_is_the_plain_backward(run, gen):
    """dent = 0 everywhere: the same dlogits as without the entropy term (the fast path)."""
    logits, targets, mask = make(2, 4, 130, torch.float32, gen)
    dlogp = torch.randn(2, 4, generator=gen)
    _, _, g, _, _ = run(logits, targets, mask, dlogp, torch.zeros(2, 4), 1.0)
    _, _, want_g = oracle(logits, targets, mask, dlogp, torch.zeros(2, 4), 1.0)
    torch.testing.assert_close(g.double(), want_g, rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------------------
# the fused linear on-chip kernels (kernels/fused_linear.py): logits = h @ Wᵀ + b never stored
# ------------------------------------------------------------------------------------------------------------
@pytest.mark.interpret
@pytest.mark.parametrize("num_slices", [1, 3])
@pytest.mark.parametrize("bias", [False, True])
def test_fused_linear_entropy(num_slices, bias, gen):
    from r1core._backend import kernels
    k = kernels("fused_linear")
    N, H, V, temperature = 21, 24, 150, 0.9
    h = torch.randn(N, H, generator=gen)
    w = torch.randn(V, H, generator=gen) * 0.6
    b = torch.randn(V, generator=gen) if bias else None
    targets = torch.randint(0, V, (N,), generator=gen)
    dlogp = torch.randn(N, generator=gen)
    dent = torch.randn(N, generator=gen)
    dlogp[3] = dent[3] = 0.0  # a masked token
    lse, xt, ent = k.lse_fwd(h, w, b, targets, temperature=temperature, num_slices=num_slices, entropy=True)
    lse0, xt0 = k.lse_fwd(h, w, b, targets, temperature=temperature, num_slices=num_slices)
    torch.testing.assert_close(lse, lse0, rtol=0, atol=0)  # the entropy sum leaves the lse untouched
    dh, dw, db = k.grad_bwd(h, w, b, targets, lse, dlogp / temperature, temperature=temperature, need_dh=True,
                            need_dw=True, need_db=bias, entropy_N=ent, gh_N=dent / temperature)

    h64, w64 = h.double().requires_grad_(True), w.double().requires_grad_(True)
    b64 = b.double().requires_grad_(True) if bias else None
    logits = torch.nn.functional.linear(h64, w64, b64)[None]
    lp = oracle_logprobs(logits, targets[None], temperature=temperature)[0]
    Hr = oracle_entropy(logits, temperature=temperature)[0]
    torch.testing.assert_close(ent.double(), Hr.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close((xt - lse).double(), lp.detach(), rtol=1e-5, atol=1e-5)
    wrt = (h64, w64) + ((b64,) if bias else ())
    want = torch.autograd.grad((dlogp.double() * lp + dent.double() * Hr).sum(), wrt)
    got = (dh, dw) + ((db,) if bias else ())
    for gi, wi in zip(got, want):
        assert float((gi.double() - wi).norm()) <= 1e-5 * float(wi.norm()), (gi - wi).abs().max()


_COMPILE_FUSED_LINEAR = r'''
import importlib.util, sys
import triton
from triton.backends.compiler import GPUTarget
spec = importlib.util.spec_from_file_location("k", sys.argv[1])
K = importlib.util.module_from_spec(spec)
spec.loader.exec_module(K)

def compile_(fn, sig, consts):
    src = triton.compiler.ASTSource(fn=fn, signature=sig, constexprs=consts)
    return triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 8})

f32 = "*fp32"
tiles = dict(BN=128, BV=128, BK=64)
fwd = dict(h_ptr="*bf16", stride_hn="i64", w_ptr="*bf16", stride_wv="i64", b_ptr="*bf16", tgt_ptr="*i64",
           m_ptr=f32, s_ptr=f32, xt_ptr=f32, t_ptr=f32, N="i32", V="i32", H="i32", v_per_slice="i32",
           scale2="fp32", HAS_BIAS="constexpr", DOT_PREC="constexpr", DOT_F32="constexpr", BN="constexpr",
           BV="constexpr", BK="constexpr", ENTROPY="constexpr")
compile_(K._lse_fwd_kernel, fwd, dict(HAS_BIAS=True, DOT_PREC="tf32", DOT_F32=False, ENTROPY=True, **tiles))
bwd = dict(h_ptr="*bf16", stride_hn="i64", w_ptr="*bf16", stride_wv="i64", b_ptr="*bf16", tgt_ptr="*i64",
           lse2_ptr=f32, g_ptr=f32, ent_ptr=f32, gh_ptr=f32, dh_ptr=f32, dw_ptr=f32, db_ptr=f32, N="i32",
           V="i32", H="i32", scale2="fp32", HAS_BIAS="constexpr", NEED_DH="constexpr", NEED_DW="constexpr",
           NEED_DB="constexpr", DOT_PREC="constexpr", DOT_F32="constexpr", GROUP_N="constexpr", BN="constexpr",
           BV="constexpr", BK="constexpr", HAS_DENT="constexpr")
compile_(K._grad_bwd_kernel, bwd, dict(HAS_BIAS=True, NEED_DH=True, NEED_DW=True, NEED_DB=True, DOT_PREC="tf32",
                                       DOT_F32=False, GROUP_N=8, HAS_DENT=True, **tiles))
print("ok")
'''


@pytest.mark.skipif(torch.cuda.is_available(), reason="with a GPU the gpu tests compile and run the kernels")
def test_fused_linear_entropy_kernels_compile_for_sm90():
    """The interpreter accepts what the compiler may not (non-constexpr globals, types): compile for sm_90."""
    import os
    import subprocess
    import sys
    from pathlib import Path
    pytest.importorskip("triton")
    path = Path(__file__).resolve().parents[2] / "kernels" / "fused_linear.py"
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    out = subprocess.run([sys.executable, "-c", _COMPILE_FUSED_LINEAR, str(path)], capture_output=True, text=True,
                         env=env, timeout=300)
    if out.returncode != 0 and "GPUTarget" in out.stderr and "ImportError" in out.stderr:
        pytest.skip("this triton cannot target CUDA")
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]
