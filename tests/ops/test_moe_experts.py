"""moe_experts (docs/spec.md §4) and the token permutation: every backend against float64 oracles (the
transformers-style loop and an independent dense einsum), gradients of x, w13, w2 and weights,
awkward routings (k = 1, every token on one expert, idle experts, T = 1), bf16, bad input."""
import pytest
import torch

from r1core import BackendUnavailable
from r1core._backend import missing
from r1core.ops import _moe_triton
from r1core.ops.moe import moe_experts
from r1core.ref.moe import moe_align_ref, moe_experts_dense_ref, moe_experts_ref

HAS_CPP = missing("cpp", "cpu") is None
CPU_BACKENDS = ["torch"] + (["cpp"] if HAS_CPP else [])


def make(gen, T, H, I, E, k, *, dtype=torch.float32, routing="random"):
    x = torch.randn(T, H, generator=gen)
    w13 = torch.randn(E, 2 * I, H, generator=gen) * H ** -0.5
    w2 = torch.randn(E, H, I, generator=gen) * I ** -0.5
    if routing == "random":
        ids = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)]) if T else torch.zeros(0, k, dtype=torch.long)
    elif routing == "one_expert":  # k = 1: every token on expert E - 1
        ids = torch.full((T, k), E - 1)
    elif routing == "two_experts":  # experts 0..E-3 idle
        ids = torch.stack([torch.tensor([E - 1, E - 2][:k]) for _ in range(T)])
    weights = torch.rand(T, k, generator=gen) + 0.1
    return [t.to(dtype) for t in (x, w13, w2)] + [weights, ids]


def grads(y, inputs, gy):
    return torch.autograd.grad(y, inputs, gy)


def check(backend, gen, T, H, I, E, k, *, dtype=torch.float32, routing="random", tol=None):
    x, w13, w2, weights, ids = make(gen, T, H, I, E, k, dtype=dtype, routing=routing)
    leaves = [t.clone().requires_grad_() for t in (x, w13, w2, weights)]
    y = moe_experts(*leaves, ids, backend=backend)
    assert y.dtype == dtype and y.shape == (T, H)
    ref_leaves = [t.detach().double().requires_grad_() for t in leaves]
    y_ref = moe_experts_ref(*ref_leaves, ids)
    tol = tol or (1e-5 if dtype == torch.float32 else 2e-2)
    assert (y.double() - y_ref).norm() <= tol * y_ref.norm()
    gy = torch.randn(T, H, generator=gen)
    g = grads(y, leaves, gy.to(dtype))
    g_ref = grads(y_ref, ref_leaves, gy.double())
    for name, a, b in zip(("x", "w13", "w2", "weights"), g, g_ref):
        assert a.dtype == leaves[("x", "w13", "w2", "weights").index(name)].dtype
        assert (a.double() - b).norm() <= tol * b.norm() + 1e-30, f"d{name}: {(a.double() - b).norm() / b.norm():.2e}"
    used = torch.zeros(E, dtype=torch.bool)
    used[ids.flatten()] = True
    assert (g[1][~used] == 0).all() and (g[2][~used] == 0).all()  # idle experts: exactly zero gradient
    return y


# ---------------------------------------------------------------------------------------------
# the oracles agree with each other
# ---------------------------------------------------------------------------------------------
def test_loop_reference_matches_dense_oracle(gen):
    x, w13, w2, weights, ids = make(gen, 19, 12, 10, 6, 3, dtype=torch.float64)
    torch.testing.assert_close(moe_experts_ref(x, w13, w2, weights.double(), ids),
                               moe_experts_dense_ref(x, w13, w2, weights.double(), ids), rtol=1e-12, atol=1e-12)


# ---------------------------------------------------------------------------------------------
# CPU backends (torch loop, cpp sorted path)
# ---------------------------------------------------------------------------------------------
SHAPES = [  # T, H, I, E, k, routing
    (37, 24, 20, 8, 3, "random"),    # odd sizes
    (13, 16, 8, 5, 1, "random"),     # k = 1
    (9, 16, 12, 4, 1, "one_expert"),  # every token on one expert
    (11, 8, 8, 7, 2, "two_experts"),  # five idle experts
    (1, 16, 16, 6, 4, "random"),     # T = 1
]


@pytest.mark.parametrize("backend", CPU_BACKENDS)
@pytest.mark.parametrize("shape", SHAPES, ids=[f"T{s[0]}H{s[1]}I{s[2]}E{s[3]}k{s[4]}-{s[5]}" for s in SHAPES])
def test_cpu_backends_fp32(backend, shape, gen):
    T, H, I, E, k, routing = shape
    check(backend, gen, T, H, I, E, k, routing=routing)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_cpu_backends_bf16(backend, gen):
    check(backend, gen, 29, 32, 24, 6, 2, dtype=torch.bfloat16)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_float64_inputs_and_strided_x(backend, gen):
    x, w13, w2, weights, ids = make(gen, 10, 12, 6, 4, 2, dtype=torch.float64)
    wide = torch.randn(10, 30, generator=gen, dtype=torch.float64)
    wide[:, 5:17] = x
    y = moe_experts(wide[:, 5:17], w13, w2, weights.double(), ids.int(), backend=backend)
    torch.testing.assert_close(y, moe_experts_dense_ref(x, w13, w2, weights.double(), ids), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", CPU_BACKENDS + ["triton"])
def test_no_grad_forward(backend, gen):
    if backend == "triton" and missing("triton", "cpu"):
        pytest.skip(missing("triton", "cpu"))
    x, w13, w2, weights, ids = make(gen, 12, 16, 16, 5, 2)
    x.requires_grad_()
    with torch.no_grad():  # rollouts: no activations kept, no graph
        y = moe_experts(x, w13, w2, weights, ids, backend=backend)
    assert not y.requires_grad
    torch.testing.assert_close(y.double(), moe_experts_dense_ref(*(t.detach().double() for t in (x, w13, w2, weights)), ids),
                               rtol=1e-5, atol=1e-6)


def test_empty_batch(gen):
    x, w13, w2, weights, ids = make(gen, 0, 8, 4, 3, 2)
    for backend in CPU_BACKENDS:
        assert moe_experts(x, w13, w2, weights, ids, backend=backend).shape == (0, 8)


# ---------------------------------------------------------------------------------------------
# Triton under the interpreter (small shapes; tl.dot needs H, I >= 16)
# ---------------------------------------------------------------------------------------------
@pytest.mark.interpret
@pytest.mark.parametrize("shape", [
    (21, 40, 24, 5, 3, "random"),     # odd H, I (masked K and N tails)
    (9, 16, 16, 4, 1, "one_expert"),
    (1, 16, 16, 6, 2, "two_experts"),  # T = 1, idle experts
], ids=["odd", "one_expert", "T1_idle"])
def test_triton_fp32(shape, gen):
    T, H, I, E, k, routing = shape
    check("triton", gen, T, H, I, E, k, routing=routing)


@pytest.mark.interpret
def test_triton_bf16(gen):
    check("triton", gen, 20, 32, 16, 4, 2, dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# the permutation
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("T, k, E, block", [(1, 1, 1, 1), (37, 3, 8, 16), (100, 6, 64, 4), (5, 2, 7, 1), (0, 2, 4, 16)])
def test_align_layout(T, k, E, block, gen):
    ids = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)]) if T else torch.zeros(0, k, dtype=torch.long)
    sorted_ids, inverse, block_expert, seg_start, counts = moe_align_ref(ids, E, block)
    S = T * k
    flat = ids.flatten()
    assert torch.equal(counts.long(), torch.bincount(flat, minlength=E))
    assert (seg_start % block == 0).all() and seg_start[0] == 0
    assert sorted_ids.numel() % block == 0 and sorted_ids.numel() >= seg_start[-1]
    assert torch.equal(sorted_ids[inverse.long()].long(), torch.arange(S))  # inverse really inverts
    for e in range(E):
        seg = sorted_ids[seg_start[e]:seg_start[e + 1]].long()
        real = seg[seg < S]
        assert torch.equal(real, torch.nonzero(flat == e).flatten())  # stable: assignment order kept
        assert (seg[counts[e]:] == S).all()                           # padding holds the sentinel
        assert (block_expert[seg_start[e] // block: seg_start[e + 1] // block] == e).all()
    assert (block_expert[seg_start[-1] // block:] == -1).all()
    assert (sorted_ids[seg_start[-1]:] == S).all()
    if HAS_CPP:
        for a, b in zip(_moe_triton.align(ids, E, block, impl="cpp"), (sorted_ids, inverse, block_expert, seg_start, counts)):
            assert torch.equal(a, b)


@pytest.mark.skipif(not HAS_CPP, reason="needs r1core._C")
def test_align_cpp_rejects_bad_ids():
    with pytest.raises(ValueError, match=r"\[0, E=4\)"):
        _moe_triton.align(torch.tensor([[1, 4]]), 4, 16, impl="cpp")


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", CPU_BACKENDS + ["triton"])
@pytest.mark.parametrize("bad", [-1, 6])
def test_ids_out_of_range_raise(backend, bad, gen):
    x, w13, w2, weights, ids = make(gen, 5, 16, 16, 6, 2)
    ids[3, 1] = bad
    with pytest.raises(ValueError, match=r"ids must lie in \[0, E=6\)"):
        moe_experts(x, w13, w2, weights, ids, backend=backend)


@pytest.mark.parametrize("mutate, exc, match", [
    (lambda a: a.update(x=a["x"][:, :-1]), ValueError, "w13 must be"),
    (lambda a: a.update(x=a["x"][None]), ValueError, "x must be"),
    (lambda a: a.update(w2=a["w2"][:, :, :-1]), ValueError, "w2 must be"),
    (lambda a: a.update(w13=a["w13"][:, :-1]), ValueError, "w13 must be"),
    (lambda a: a.update(weights=a["weights"][:-1]), ValueError, "weights must be"),
    (lambda a: a.update(ids=a["ids"][:, :1]), ValueError, "ids must have shape"),
    (lambda a: a.update(ids=a["ids"].float()), TypeError, "ids must be an integer"),
    (lambda a: a.update(w2=a["w2"].double()), TypeError, "share a dtype"),
    (lambda a: a.update(x=a["x"].long()), TypeError, "x must be a float"),
])
def test_bad_shapes_and_types(mutate, exc, match, gen):
    x, w13, w2, weights, ids = make(gen, 5, 16, 16, 6, 2)
    args = dict(x=x, w13=w13, w2=w2, weights=weights, ids=ids)
    mutate(args)
    with pytest.raises(exc, match=match):
        moe_experts(args["x"], args["w13"], args["w2"], args["weights"], args["ids"])


def test_unavailable_backend_is_an_error(gen):
    x, w13, w2, weights, ids = make(gen, 3, 16, 16, 4, 2)
    with pytest.raises(BackendUnavailable):
        moe_experts(x, w13, w2, weights, ids, backend="cuda")


# ---------------------------------------------------------------------------------------------
# GPU: the Triton kernels on real hardware, the CUDA permutation against the reference
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("T, H, I, E, k", [(257, 128, 96, 16, 4), (1000, 256, 128, 64, 6), (1, 64, 32, 8, 2)])
def test_triton_on_gpu(T, H, I, E, k, dtype):
    gen = torch.Generator().manual_seed(7)
    x, w13, w2, weights, ids = make(gen, T, H, I, E, k, dtype=dtype)
    leaves = [t.cuda().requires_grad_() for t in (x, w13, w2, weights)]
    y = moe_experts(*leaves, ids.cuda(), backend="triton")
    ref_leaves = [t.detach().double().requires_grad_() for t in (x, w13, w2, weights)]
    y_ref = moe_experts_dense_ref(*ref_leaves, ids)
    tol = 1e-5 if dtype == torch.float32 else 2e-2
    assert (y.cpu().double() - y_ref).norm() <= tol * y_ref.norm()
    gy = torch.randn(T, H, generator=gen)
    g = torch.autograd.grad(y, leaves, gy.cuda().to(dtype))
    g_ref = torch.autograd.grad(y_ref, ref_leaves, gy.double())
    for a, b in zip(g, g_ref):
        assert (a.cpu().double() - b).norm() <= tol * b.norm()


@pytest.mark.gpu
@pytest.mark.parametrize("T, k, E, block", [(1, 1, 1, 16), (4096, 8, 128, 64), (3000, 6, 64, 128), (70000, 8, 256, 64)])
def test_cuda_align_matches_reference(T, k, E, block):
    if missing("cuda", "cuda"):
        pytest.skip(missing("cuda", "cuda"))
    ids = torch.randint(0, E, (T, k), device="cuda")
    ids[: T // 2, 0] = 3 % E  # a hot expert
    for a, b in zip(_moe_triton.align(ids, E, block, impl="cuda"), moe_align_ref(ids, E, block)):
        assert torch.equal(a, b)
