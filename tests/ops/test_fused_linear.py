"""r1core.fused_linear_grpo_loss / fused_linear_logprobs (docs/spec.md §3) against float64 with explicit logits.

Every execution path is checked: the reference backend, the PyTorch chunk loop, the C++ row kernels
(when the extension has them), and under the Triton interpreter both Triton strategies (the chunk
loop with the Triton row kernels, and the on-chip Cut-Cross-Entropy kernels).

The oracle materialises the logits and runs r1core.ref.grpo_oracle in float64; the gradients with
respect to hidden/weight/bias follow from its dlogits by the chain rule in float64.  For bf16/fp16,
inputs are drawn on a grid (h in quarters, W in sixteenths, small H) so every float32 dot product
is exact: then the logits rounded to bf16/fp16 are the same whatever the GEMM's summation order, and
docs/spec.md §7's "float64 on the same (rounded) logits" is well defined.  The on-chip kernels never round
the logits, so their oracle takes the logits unrounded.
"""
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

import r1core
from r1core import BackendUnavailable
from r1core.ops.grpo import fused_linear as fl
from r1core.ref.grpo_oracle import oracle_grpo_loss, oracle_logprobs

ROOT = Path(__file__).resolve().parents[2]
LOWP = (torch.bfloat16, torch.float16)


# ---------------------------------------------------------------------------------------------
# execution paths
# ---------------------------------------------------------------------------------------------
def _has_cpp():
    return fl.FUSED_LINEAR.missing("cpp", "cpu") is None


PLANS = [
    "torch",
    "chunked",
    pytest.param("cpp", marks=pytest.mark.skipif(not _has_cpp(), reason="r1core._C without grpo_loss row kernels")),
    pytest.param("triton-chunked", marks=pytest.mark.interpret),
    pytest.param("triton-onchip", marks=pytest.mark.interpret),
]


@pytest.fixture
def use_plan(monkeypatch):
    """-> a function mapping a plan name to the op's `backend=` and `strategy=` keywords."""
    monkeypatch.delenv("R1CORE_BACKEND", raising=False)

    def setup(plan):
        if plan == "chunked":  # the PyTorch chunk loop: what backend=None runs without the extension
            return {"backend": "torch", "strategy": "chunked"}
        if plan.startswith("triton-"):
            return {"backend": "triton", "strategy": plan.split("-")[1]}
        return {"backend": plan}
    return setup


def rounds_logits(plan, dtype):
    return dtype in LOWP and plan != "triton-onchip"


# ---------------------------------------------------------------------------------------------
# inputs and oracle
# ---------------------------------------------------------------------------------------------
def make(gen, B, T, H, V, dtype, *, bias=False, strided=False, mask_p=0.3, grid=None):
    grid = dtype in LOWP if grid is None else grid
    Tx = T + 1 if strided else T
    if grid:
        h = torch.randint(-4, 5, (B, Tx, H), generator=gen).to(dtype) / 4
        w = torch.randint(-8, 9, (V, H), generator=gen).to(dtype) / 16
        b = torch.randint(-8, 9, (V,), generator=gen).to(dtype) / 8 if bias else None
    else:
        h = torch.randn(B, Tx, H, generator=gen).to(dtype)
        w = (torch.randn(V, H, generator=gen) / H ** 0.5 * 2).to(dtype)
        b = torch.randn(V, generator=gen).to(dtype) if bias else None
    if strided:
        h = h[:, :-1]  # a view: row stride (T+1)·H
    targets = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.rand(B, T, generator=gen) > mask_p
    targets[~mask] = -100
    return h, w, b, targets, mask


def oracle(h, w, b, targets, advantages, mask, *, rounded, **kw):
    """float64 loss, stats and gradients (dh, dw, db) from explicit logits."""
    if rounded:
        logits = torch.nn.functional.linear(h, w, b).double()
    else:
        logits = torch.nn.functional.linear(h.double(), w.double(), None if b is None else b.double())
    loss, stats, dL = oracle_grpo_loss(logits, targets, advantages.double(), mask, **kw)
    dh = dL @ w.double()
    dw = dL.flatten(0, 1).T @ h.double().flatten(0, 1)
    db = dL.sum((0, 1)) if b is not None else None
    return loss.detach(), stats, (dh, dw, db)


def near_policy_logps(gen, h, w, b, targets, temperature, spread=0.3):
    """old/ref log-probs close to the current ones (ratios near 1, some clipped), like in training."""
    lp = oracle_logprobs(torch.nn.functional.linear(h.double(), w.double(), None if b is None else b.double()),
                      targets, temperature=temperature).float()
    B, T = targets.shape
    return (lp + spread * torch.randn(B, T, generator=gen),
            lp + spread * torch.randn(B, T, generator=gen))


def rel(a, r):
    return ((a.double() - r).norm() / r.norm().clamp_min(1e-30)).item()


def check(plan, dtype, got_loss, got_stats, grads, want, mask, adv_scale):
    """docs/spec.md §7 tolerances.  The loss is a weighted sum of terms of either sign (~|A| each, weights
    summing to <= 1) that can cancel to near 0, so its relative error is taken against
    |loss| + mean|A|, the size of what was summed."""
    loss, stats, (dh, dw, db) = want
    m = mask if mask is not None else torch.ones_like(stats.logp, dtype=torch.bool)
    scale = abs(loss.item()) + adv_scale
    if dtype in (torch.float32, torch.float64):
        assert abs(got_loss.item() - loss.item()) <= 1e-5 * scale
        assert (got_stats.logp - stats.logp)[m].abs().max() <= 1e-5 * stats.logp[m].abs().max() + 1e-6
        gtol = 1e-5
    else:
        assert (got_stats.logp - stats.logp)[m].abs().max() <= 1e-4
        assert abs(got_loss.item() - loss.item()) <= 1e-4 * scale
        gtol = 1e-2
    for name in ("kl_mean", "ratio_mean", "clip_low_frac", "clip_high_frac"):
        g, r = getattr(got_stats, name), getattr(stats, name)
        assert g.shape == () and g.dtype == torch.float32
        assert abs(g.item() - r.item()) <= 1e-4 * (1 + abs(r.item())), name
    assert got_stats.logp.dtype == torch.float32
    for g, r, name in zip(grads, (dh, dw, db), ("hidden", "weight", "bias")):
        if r is None:
            continue
        assert g is not None, name
        assert rel(g, r) <= gtol, (name, rel(g, r))


CASES = {
    # name: (loss_agg, per-token advantages, old/ref, beta, temperature, bias, strided, eps, max_len)
    "token_mean-on_policy": ("token_mean", False, False, 0.0, 1.0, False, False, (0.2, 0.2), None),
    "seq_mean-kl-bias": ("seq_mean_token_mean", True, True, 0.04, 0.7, True, False, (0.2, 0.28), None),
    "drgrpo-strided": ("seq_mean_token_sum_norm", False, True, 0.1, 1.3, True, True, (0.1, 0.3), 11),
    "ref_no_beta-nomask": ("token_mean", True, True, 0.0, 1.0, False, False, (0.2, 0.2), None),
}


def run_case(gen, plan, how, dtype, case, chunk_size, B=3, T=7, H=24, V=70, no_mask=False):
    agg, tok_adv, offp, beta, temp, bias, strided, (el, eh), max_len = CASES[case]
    h, w, b, targets, mask = make(gen, B, T, H, V, dtype, bias=bias, strided=strided)
    if no_mask or case.endswith("nomask"):
        mask = None
        targets = targets.clamp_min(0)
    adv = torch.randn(B, T, generator=gen) if tok_adv else torch.randn(B, generator=gen)
    kw = dict(beta=beta, eps_low=el, eps_high=eh, temperature=temp, loss_agg=agg, max_len=max_len)
    if offp:
        kw["old_logp"], kw["ref_logp"] = near_policy_logps(gen, h, w, b, targets, temp)
    hp, wp = h.detach().clone().requires_grad_(), w.detach().clone().requires_grad_()
    hp_in = hp
    bp = None if b is None else b.detach().clone().requires_grad_()
    loss, stats = r1core.fused_linear_grpo_loss(hp_in, wp, targets, adv, mask, bias=bp, chunk_size=chunk_size,
                                                **how, **kw)
    loss.backward()
    want = oracle(h, w, b, targets, adv, mask, rounded=rounds_logits(plan, dtype), **kw)
    check(plan, dtype, loss, stats, (hp.grad, wp.grad, None if bp is None else bp.grad), want, mask,
          adv.abs().mean().item())
    if mask is not None:  # masked positions: exactly zero gradient
        assert (hp.grad[~mask] == 0).all()
    return loss, stats, hp.grad


# ---------------------------------------------------------------------------------------------
# correctness against float64
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("case", list(CASES))
def test_matches_float64_fp32(gen, use_plan, plan, case):
    run_case(gen, plan, use_plan(plan), torch.float32, case, chunk_size=5)


@pytest.mark.parametrize("plan", PLANS)
@pytest.mark.parametrize("dtype", LOWP, ids=["bf16", "fp16"])
def test_matches_float64_low_precision(gen, use_plan, plan, dtype):
    run_case(gen, plan, use_plan(plan), dtype, "seq_mean-kl-bias", chunk_size=4)


@pytest.mark.parametrize("plan", ["torch", "chunked"])
def test_float64_inputs(gen, use_plan, plan):
    run_case(gen, plan, use_plan(plan), torch.float64, "drgrpo-strided", chunk_size=3)


@pytest.mark.parametrize("chunk_size", [1, 2, 5, 16, 1000, None])
def test_chunk_sizes_agree(gen, use_plan, chunk_size):
    """chunk sizes that divide the token count, do not, are 1, or exceed it give the same result."""
    how = use_plan("chunked")
    run_case(gen, "chunked", how, torch.float32, "seq_mean-kl-bias", chunk_size=chunk_size, B=4, T=5)


@pytest.mark.parametrize("plan", PLANS)
def test_logprobs(gen, use_plan, plan):
    how = use_plan(plan)
    for dtype in (torch.float32, torch.bfloat16):
        h, w, b, targets, mask = make(gen, 2, 9, 32, 45, dtype, bias=True, strided=True)
        got = r1core.fused_linear_logprobs(h, w, targets, bias=b, temperature=0.9, chunk_size=4, **how)
        assert got.shape == (2, 9) and got.dtype == torch.float32 and not got.requires_grad
        logits = torch.nn.functional.linear(h, w, b) if rounds_logits(plan, dtype) else \
            torch.nn.functional.linear(h.double(), w.double(), b.double())
        want = oracle_logprobs(logits.double(), targets, temperature=0.9)
        tol = 1e-5 if dtype == torch.float32 else 1e-4
        assert (got - want)[mask].abs().max() <= tol
        assert (got[~mask] == 0).all()  # negative targets (-100) are ignored: 0


def test_default_backend_keeps_memory_bound_paths(use_plan):
    """backend=None never picks the materialising reference on CPU (see the module docstring)."""
    h = torch.randn(1, 3, 8)
    assert fl.plan(h) in (fl.Plan("cpp", "chunked"), fl.Plan("torch", "chunked"))
    assert fl.plan(h.double()) == fl.Plan("torch", "chunked")
    assert fl.plan(h, "torch") == fl.Plan("torch", "reference")
    assert fl.plan(h, "torch", "chunked") == fl.Plan("torch", "chunked")
    with pytest.raises(ValueError, match="strategy"):
        fl.plan(h, "torch", "onchip")


# ---------------------------------------------------------------------------------------------
# semantics: masks, no-grad, grad_output, weights that are views
# ---------------------------------------------------------------------------------------------
def test_all_masked_gives_zero(gen):
    h, w, b, targets, _ = make(gen, 2, 4, 16, 20, torch.float32, bias=True)
    h.requires_grad_()
    w.requires_grad_()
    mask = torch.zeros(2, 4, dtype=torch.bool)
    for agg in ("token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"):
        loss, st = r1core.fused_linear_grpo_loss(h, w, torch.full((2, 4), -100), torch.randn(2, generator=gen),
                                                 mask, loss_agg=agg)
        loss.backward()
        assert loss.item() == 0 and torch.isfinite(loss)
        assert (h.grad == 0).all() and (w.grad == 0).all()
        assert st.kl_mean.item() == 0 and st.ratio_mean.item() == 0 and (st.logp == 0).all()
        h.grad = w.grad = None


def test_masked_rows_are_never_read(gen, use_plan):
    """NaN hidden states at masked positions (e.g. padding) cannot reach the loss or the gradients."""
    how = use_plan("chunked")
    h, w, _, targets, mask = make(gen, 3, 6, 16, 30, torch.float32)
    h = h.clone()
    h[~mask] = float("nan")
    h.requires_grad_()
    w.requires_grad_()
    loss, st = r1core.fused_linear_grpo_loss(h, w, targets, torch.randn(3, generator=gen), mask, **how)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(w.grad).all() and torch.isfinite(h.grad).all()
    assert (h.grad[~mask] == 0).all()


def test_no_grad_and_grad_output_scaling(gen, use_plan):
    how = use_plan("chunked")
    h, w, b, targets, mask = make(gen, 2, 5, 16, 33, torch.float32, bias=True)
    adv = torch.randn(2, generator=gen)
    with torch.no_grad():
        l0, _ = r1core.fused_linear_grpo_loss(h, w, targets, adv, mask, bias=b, **how)
    assert not l0.requires_grad
    grads = []
    for scale in (1.0, -2.5):
        hp, wp, bp = (t.clone().requires_grad_() for t in (h, w, b))
        loss, _ = r1core.fused_linear_grpo_loss(hp, wp, targets, adv, mask, bias=bp, **how)
        assert torch.equal(loss.detach(), l0)
        (scale * loss + hp.sum() * 0).backward()
        grads.append((hp.grad, wp.grad, bp.grad))
    for g1, g2 in zip(*grads):
        torch.testing.assert_close(g2, -2.5 * g1, rtol=1e-6, atol=1e-9)


def test_second_backward_is_a_clear_error(gen, use_plan):
    how = use_plan("chunked")
    h, w, _, targets, mask = make(gen, 2, 4, 16, 20, torch.float32)
    w.requires_grad_()
    loss, _ = r1core.fused_linear_grpo_loss(h, w, targets, torch.randn(2, generator=gen), mask, **how)
    loss.backward(retain_graph=True)
    with pytest.raises(RuntimeError, match="backward called twice"):
        loss.backward()


def test_only_some_inputs_require_grad(gen, use_plan):
    """e.g. a frozen backbone: only the lm_head trains; no gradient is computed for the others."""
    how = use_plan("chunked")
    h, w, b, targets, mask = make(gen, 2, 5, 16, 33, torch.float32, bias=True)
    adv = torch.randn(2, generator=gen)
    wp = w.clone().requires_grad_()
    loss, _ = r1core.fused_linear_grpo_loss(h, wp, targets, adv, mask, bias=b, **how)
    loss.backward()
    _, _, (_, dw, _) = oracle(h, w, b, targets, adv, mask, rounded=False)
    assert rel(wp.grad, dw) <= 1e-5
    assert not h.requires_grad and h.grad is None and b.grad is None


@pytest.mark.parametrize("plan", ["chunked", pytest.param("triton-onchip", marks=pytest.mark.interpret)])
def test_weight_views_and_tied_embeddings(gen, use_plan, plan):
    """A weight that is a transposed view (stride over H != 1) and hidden states that are a
    non-contiguous slice work, with the gradient landing on the base tensors."""
    how = use_plan(plan)
    h, w, _, targets, mask = make(gen, 2, 6, 16, 40, torch.float32, strided=True)
    base = w.t().contiguous().requires_grad_()          # [H, V]
    adv = torch.randn(2, generator=gen)
    loss, _ = r1core.fused_linear_grpo_loss(h, base.t(), targets, adv, mask, **how)
    loss.backward()
    _, _, (dh, dw, _) = oracle(h, w, None, targets, adv, mask, rounded=False)
    assert rel(base.grad.t(), dw) <= 1e-5


# ---------------------------------------------------------------------------------------------
# errors: same as grpo_loss, plus the lm_head's own
# ---------------------------------------------------------------------------------------------
def _args(gen):
    h, w, b, targets, mask = make(gen, 2, 3, 8, 10, torch.float32, bias=True)
    return dict(hidden=h, weight=w, targets=targets, advantages=torch.randn(2, generator=gen), mask=mask, bias=b)


@pytest.mark.parametrize("change, match, exc", [
    (dict(hidden=torch.randn(6, 8)), "hidden", ValueError),
    (dict(weight=torch.randn(10, 9)), "weight", ValueError),
    (dict(weight=torch.randn(10, 8, dtype=torch.float64)), "weight.*dtype", TypeError),
    (dict(bias=torch.randn(11)), "bias", ValueError),
    (dict(chunk_size=0), "chunk_size", ValueError),
    (dict(chunk_size=True), "chunk_size", TypeError),
    (dict(targets=torch.full((2, 3), 10)), "targets", ValueError),
    (dict(targets=torch.zeros(2, 4, dtype=torch.long)), "targets", ValueError),
    (dict(targets=torch.zeros(2, 3)), "targets", TypeError),
    (dict(advantages=torch.randn(3)), "advantages", ValueError),
    (dict(mask=torch.ones(2, 4)), "mask", ValueError),
    (dict(beta=0.1), "ref_logp", ValueError),
    (dict(loss_agg="mean"), "loss_agg", ValueError),
    (dict(temperature=0.0), "temperature", ValueError),
    (dict(eps_low=-0.1), "eps_low", ValueError),
    (dict(max_len=0), "max_len", ValueError),
    (dict(old_logp=torch.randn(2, 4)), "old_logp", ValueError),
    (dict(backend="fast"), "backend", ValueError),
])
def test_errors(gen, change, match, exc):
    """TypeError for a wrong type or dtype, ValueError for a bad value; the argument named."""
    kw = {**_args(gen), **change}
    with pytest.raises(exc, match=match):
        r1core.fused_linear_grpo_loss(kw.pop("hidden"), kw.pop("weight"), kw.pop("targets"), kw.pop("advantages"),
                                      kw.pop("mask"), **kw)


def test_unavailable_backends_raise(gen):
    kw = _args(gen)
    with pytest.raises(BackendUnavailable):
        r1core.fused_linear_grpo_loss(kw["hidden"], kw["weight"], kw["targets"], kw["advantages"], kw["mask"],
                                      backend="cuda")
    with pytest.raises(ValueError, match="float64"):
        r1core.fused_linear_grpo_loss(kw["hidden"].double(), kw["weight"].double(), kw["targets"],
                                      kw["advantages"], kw["mask"], backend="triton")


def test_logprobs_errors(gen):
    h, w, b, targets, _ = make(gen, 2, 3, 8, 10, torch.float32, bias=True)
    with pytest.raises(ValueError, match="targets"):
        r1core.fused_linear_logprobs(h, w, torch.full((2, 3), 10))
    with pytest.raises(ValueError, match="targets"):
        r1core.fused_linear_logprobs(h, w, targets[:, :2])
    with pytest.raises(ValueError, match="temperature"):
        r1core.fused_linear_logprobs(h, w, targets.clamp_min(0), temperature=-1.0)
    with pytest.raises(ValueError, match="weight"):
        r1core.fused_linear_logprobs(h, w[:, :4], targets)


# ---------------------------------------------------------------------------------------------
# memory: the full [B·T, V] logits are never held (measured in a fresh process)
# ---------------------------------------------------------------------------------------------
MEMORY_SCRIPT = textwrap.dedent("""
    import ctypes, sys, torch, r1core
    ctypes.CDLL("libc.so.6").mallopt(-3, 1 << 20)   # big blocks via mmap: RSS tracks what is held
    torch.set_num_threads(1)                         # beside other pytest workers: no oversubscription
    def status(field):
        for line in open("/proc/self/status"):
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    N, H, V = 16384, 16, 65536                      # full float32 logits: 4 GiB
    g = torch.Generator().manual_seed(0)
    h = (torch.randn(1, N, H, generator=g) / 4).requires_grad_()
    w = (torch.randn(V, H, generator=g) / 4).requires_grad_()
    targets = torch.randint(0, V, (1, N), generator=g)
    adv = torch.ones(1)
    loss, _ = r1core.fused_linear_grpo_loss(h[:, :32], w, targets[:, :32], adv)   # warm up (imports, pools)
    loss.backward()
    h.grad = w.grad = None
    try:
        open("/proc/self/clear_refs", "w").write("5")   # reset the high-water mark to the current RSS
    except OSError:
        pass
    before = status("VmRSS")
    loss, stats = r1core.fused_linear_grpo_loss(h, w, targets, adv, chunk_size=int(sys.argv[1]) or None)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(w.grad).all() and torch.isfinite(h.grad).all()
    print((status("VmHWM") - before) / 2**20)
""")


@pytest.mark.slow
def test_peak_memory_is_independent_of_tokens():
    out = subprocess.run([sys.executable, "-c", MEMORY_SCRIPT, "0"], capture_output=True, text=True, cwd=ROOT,
                         env={**os.environ, "PYTHONWARNINGS": "ignore"}, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    peak_mib = float(out.stdout.strip().splitlines()[-1])
    # the chunk buffer (64 MiB) + gradients (dW 4 MiB, dh 1 MiB) + slack; materialised logits: >= 4096 MiB
    assert peak_mib < 1024, f"peak extra memory {peak_mib:.0f} MiB: the logits were materialised"


# ---------------------------------------------------------------------------------------------
# the on-chip kernels directly: tile multiples and non-multiples, vocabulary slices, masked blocks
# ---------------------------------------------------------------------------------------------
@pytest.mark.interpret
@pytest.mark.parametrize("N, H, V, slices", [(32, 32, 64, 1), (5, 17, 37, 1), (40, 48, 100, 3), (16, 16, 16, 1)])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_onchip_kernels(gen, N, H, V, slices, dtype):
    from r1core import _backend
    k = _backend.kernels("fused_linear")
    grid = dtype == torch.bfloat16
    h, w, b, _, _ = make(gen, 1, N, H, V, dtype, bias=True, grid=grid)
    h, targets = h[0], torch.randint(0, V, (N,), generator=gen)
    targets[1] = -100                                     # no target: x_target = 0
    T = 0.8
    lse, x_t = k.lse_fwd(h, w, b, targets, temperature=T, num_slices=slices)
    x = (h.double() @ w.double().T + b.double()) / T
    assert (lse.double() - x.logsumexp(-1)).abs().max() <= 1e-5 * x.abs().max()
    want_t = torch.where(targets >= 0, x.gather(1, targets.clamp_min(0)[:, None])[:, 0], 0.0)
    assert (x_t.double() - want_t).abs().max() <= 1e-5 * x.abs().max()
    # gradient of sum_n g_n · T · logp_n, with g = 0 on some tokens (a fully masked block included)
    g = torch.randn(N, generator=gen)
    g[:16] = 0.0
    g[targets < 0] = 0.0
    L = x.clone().requires_grad_()
    (torch.log_softmax(L, -1).gather(1, targets.clamp_min(0)[:, None])[:, 0] * g.double() * T).sum().backward()
    dx = L.grad / T                                       # d/dlogits = d/dx · 1/T
    dh, dw, db = k.grad_bwd(h, w, b, targets, lse, g, temperature=T, need_dh=True, need_dw=True, need_db=True)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    assert rel(dh, dx @ w.double()) <= tol
    assert rel(dw, dx.T @ h.double()) <= tol
    assert rel(db, dx.sum(0)) <= 1e-5
    assert (dh[:16] == 0).all()
    only_dw = k.grad_bwd(h, w, None, targets, lse, g, temperature=T, need_dh=False, need_dw=True, need_db=False)
    assert only_dw[0] is None and only_dw[2] is None and only_dw[1].shape == (V, H)


# ---------------------------------------------------------------------------------------------
# GPU (skipped without CUDA): both Triton strategies at a real size, and their memory
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("strategy", ["chunked", "onchip"])
def test_gpu_strategies_and_memory(strategy):
    g = torch.Generator().manual_seed(0)
    N, H, V = 16384, 256, 65536                           # full bf16 logits: 2 GiB, fp32: 4 GiB
    h = (torch.randn(1, N, H, generator=g) / 4).to("cuda", torch.bfloat16).requires_grad_()
    w = (torch.randn(V, H, generator=g) / 16).to("cuda", torch.bfloat16).requires_grad_()
    targets = torch.randint(0, V, (1, N), generator=g).cuda()
    adv = torch.randn(1, generator=g).cuda()
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    loss, stats = r1core.fused_linear_grpo_loss(h, w, targets, adv, backend="triton", strategy=strategy)
    loss.backward()
    torch.cuda.synchronize()
    peak = torch.cuda.max_memory_allocated() - before
    assert peak < 1.5 * 2**30, f"{peak / 2**20:.0f} MiB"
    sub = slice(0, 512)                                   # check a slice of tokens against float64
    x = h[0, sub].double() @ w.double().T
    want = torch.log_softmax(x, -1).gather(1, targets[0, sub, None])[:, 0]
    assert (stats.logp[0, sub].double() - want).abs().max() <= 2e-2   # bf16 logits (chunked) vs exact
    assert torch.isfinite(h.grad).all() and torch.isfinite(w.grad).all()
