"""r1core.grpo_loss on every backend against the float64 reference (docs/spec.md §2, tolerances of §7).

Legend: B sequences, T positions, V vocabulary.  The oracle is r1core.ref.grpo_oracle (independent of
every backend, the torch reference included) on the SAME (rounded) logits cast to float64.  Triton runs under the interpreter on CPU tensors (`interpret`, small V) and
on CUDA (`gpu`).  Inputs are fresh random numbers: normal logits, old/ref log-probs near the true
ones so that ratios spread over both clip bounds.
"""
from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

from r1core import _backend
from r1core.ops.grpo.loss import grpo_loss
from r1core.ref.grpo_oracle import oracle_grpo_loss, oracle_logprobs

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def _has_cpp() -> bool:
    return _backend.missing("cpp", "cpu") is None and hasattr(_backend.ext(), "grpo_loss_fwd_cpu")


CPU_BACKENDS = [
    "torch",
    pytest.param("cpp", marks=pytest.mark.skipif(not _has_cpp(), reason="r1core._C without grpo_loss")),
    pytest.param("triton", marks=pytest.mark.interpret),
]
KERNEL_BACKENDS = CPU_BACKENDS[1:]


@dataclass(frozen=True)
class Config:
    """One combination of the options of docs/spec.md §2."""
    name: str
    B: int
    T: int
    V: int
    loss_agg: str = "token_mean"
    per_token_adv: bool = False
    old: bool = True
    ref: bool = False
    beta: float = 0.0
    eps_low: float = 0.2
    eps_high: float = 0.2
    temperature: float = 1.0
    max_len: int | None = None
    strided: bool = True        # logits[:, :-1] of a [B, T + 1, V] tensor
    empty_seq: bool = False     # one sequence without any unmasked token


CONFIGS = [
    Config("token_mean", 3, 7, 1000),
    Config("seq_mean_kl", 4, 5, 4099, loss_agg="seq_mean_token_mean", per_token_adv=True, old=False, ref=True,
           beta=0.04, eps_low=0.2, eps_high=0.28, temperature=0.7, empty_seq=True),
    Config("sum_norm", 2, 6, 257, loss_agg="seq_mean_token_sum_norm", max_len=9, ref=True, beta=0.0,
           temperature=1.3, strided=False, eps_low=0.1, eps_high=0.3),
]


def make(cfg: Config, dtype: torch.dtype, gen: torch.Generator, device="cpu"):
    B, T, V = cfg.B, cfg.T, cfg.V
    full = (torch.randn(B, T + 1, V, generator=gen) * 2).to(dtype)
    logits = full[:, :-1] if cfg.strided else full[:, :-1].contiguous()
    targets = torch.randint(0, V, (B, T), generator=gen)
    mask = torch.rand(B, T, generator=gen) > 0.25
    mask[0, 0] = True
    if cfg.empty_seq:
        mask[-1] = False
    targets[~mask] = -100
    adv = torch.randn(B, T, generator=gen) if cfg.per_token_adv else torch.randn(B, generator=gen)
    true = oracle_logprobs(logits.double(), targets.clamp_min(0), temperature=cfg.temperature).float()
    old = true + 0.3 * torch.randn(B, T, generator=gen) if cfg.old else None
    ref = true + 0.5 * torch.randn(B, T, generator=gen) if cfg.ref else None
    to = lambda t: None if t is None else t.to(device)  # noqa: E731
    kw = dict(old_logp=to(old), ref_logp=to(ref), beta=cfg.beta, eps_low=cfg.eps_low, eps_high=cfg.eps_high,
              temperature=cfg.temperature, loss_agg=cfg.loss_agg, max_len=cfg.max_len)
    return logits.to(device), targets.to(device), adv.to(device), mask.to(device), kw


def oracle(logits, targets, adv, mask, kw):
    """float64 loss, stats and dlogits on the same rounded logits, from r1core.ref.grpo_oracle: it shares
    no code with any backend (the torch backend runs r1core.ref.grpo_loss, the kernels their own code)."""
    return oracle_grpo_loss(logits, targets, adv, mask, **kw)


def run(backend, logits, targets, adv, mask, kw, **extra):
    x = logits.detach().clone().requires_grad_()
    loss, stats = grpo_loss(x, targets, adv, mask, backend=backend, **kw, **extra)
    loss.backward()
    return loss.detach(), stats, x.grad


def rel_err(a, b) -> float:
    a, b = a.double(), b.double()
    return float((a - b).norm() / b.norm().clamp_min(1e-30))


def check_against_oracle(got, want, mask, dtype):
    (loss, stats, grad), (loss0, stats0, grad0) = got, want
    fp32 = dtype == torch.float32
    m = mask.bool()
    # logp: fp32 relative 1e-5; bf16/fp16 absolute 1e-4 against float64 on the same rounded logits
    d = (stats.logp.double() - stats0.logp)[m].abs()
    bound = 1e-5 * stats0.logp[m].abs() + 1e-6 if fp32 else torch.full_like(d, 1e-4)
    assert bool((d <= bound).all()), f"logp error {float(d.max()):.3g}"
    assert bool((stats.logp[~m] == 0).all()), "logp must be 0 at masked positions"
    # loss: relative to the size of its terms (it is a sum of signed terms and may be near 0)
    scale = float(grad0.abs().sum()) + abs(float(loss0))
    tol_l = 1e-5 if fp32 else 1e-4
    assert abs(float(loss) - float(loss0)) <= tol_l * max(abs(float(loss0)), 1e-3 * scale), (float(loss), float(loss0))
    for name in ("kl_mean", "ratio_mean", "clip_low_frac", "clip_high_frac"):
        a, b = float(getattr(stats, name)), float(getattr(stats0, name))
        assert abs(a - b) <= (1e-5 if fp32 else 1e-3) * max(1.0, abs(b)), (name, a, b)
    assert grad.dtype == dtype
    assert rel_err(grad, grad0) <= (1e-5 if fp32 else 1e-2), rel_err(grad, grad0)
    assert bool((grad[~m] == 0).all()), "masked rows must get exactly zero gradient"


@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_matches_float64(backend, dtype, cfg, gen):
    logits, targets, adv, mask, kw = make(cfg, DTYPES[dtype], gen)
    check_against_oracle(run(backend, logits, targets, adv, mask, kw), oracle(logits, targets, adv, mask, kw),
                         mask, DTYPES[dtype])


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_inplace_backward_writes_the_gradient_over_the_logits(backend, gen):
    cfg = CONFIGS[1]
    logits, targets, adv, mask, kw = make(cfg, torch.float32, gen)
    _, _, g_ref = run(backend, logits, targets, adv, mask, kw)
    extra = torch.randn(cfg.B, 1, cfg.V, generator=gen)
    w = torch.cat([logits, extra], dim=1).requires_grad_()
    y = w * 1.0                 # the usual case: the logits are an intermediate (the lm_head's output)
    x = y[:, :-1]               # a strided view: backward overwrites its rows of y's storage
    loss, _ = grpo_loss(x, targets, adv, mask, backend=backend, inplace_backward=True, **kw)
    loss.backward()
    torch.testing.assert_close(w.grad[:, :-1], g_ref, rtol=0, atol=0)
    assert bool((w.grad[:, -1] == 0).all())
    torch.testing.assert_close(y.detach()[:, :-1], g_ref, rtol=0, atol=0)  # the logits now hold dlogits
    torch.testing.assert_close(y.detach()[:, -1:], extra, rtol=0, atol=0)  # the row outside the view is intact


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum_norm"])
@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_no_unmasked_token_gives_zero_loss_and_gradient(backend, loss_agg, gen):
    logits = torch.randn(2, 3, 50, generator=gen, requires_grad=True)
    targets = torch.full((2, 3), -100)
    mask = torch.zeros(2, 3, dtype=torch.bool)
    loss, stats = grpo_loss(logits, targets, torch.randn(2, generator=gen), mask, loss_agg=loss_agg,
                            ref_logp=torch.randn(2, 3, generator=gen), beta=0.1, backend=backend)
    loss.backward()
    assert float(loss) == 0.0 and bool((logits.grad == 0).all())
    for name in ("kl_mean", "ratio_mean", "clip_low_frac", "clip_high_frac"):
        assert float(getattr(stats, name)) == 0.0


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_masked_rows_are_never_read(backend, gen):
    """NaN logits and garbage old/ref log-probs on masked rows change nothing."""
    cfg = CONFIGS[0]
    logits, targets, adv, mask, kw = make(cfg, torch.float32, gen)
    kw = dict(kw, ref_logp=torch.randn(cfg.B, cfg.T, generator=gen), beta=0.1)
    loss0, stats0, g0 = run(backend, logits, targets, adv, mask, kw)
    poisoned = logits.clone()
    poisoned[~mask] = float("nan")
    kw["old_logp"] = kw["old_logp"].masked_fill(~mask, float("nan"))
    kw["ref_logp"] = kw["ref_logp"].masked_fill(~mask, float("inf"))
    targets = targets.masked_fill(~mask, 10**9)
    loss1, stats1, g1 = run(backend, poisoned, targets, adv, mask, kw)
    assert float(loss1) == float(loss0)
    torch.testing.assert_close(g1, g0, rtol=0, atol=0)
    assert float(stats1.kl_mean) == float(stats0.kl_mean)


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_on_policy_ratio_is_one_and_grad_scales_with_upstream(backend, gen):
    logits, targets, adv, mask, kw = make(CONFIGS[0], torch.float32, gen)
    kw = dict(kw, old_logp=None)
    loss, stats, g = run(backend, logits, targets, adv, mask, kw)
    assert float(stats.ratio_mean) == 1.0 and float(stats.clip_low_frac) == 0.0
    x = logits.detach().clone().requires_grad_()
    loss3, _ = grpo_loss(x, targets, adv, mask, backend=backend, **kw)
    (loss3 * 3).backward()
    torch.testing.assert_close(x.grad, 3 * g, rtol=1e-6, atol=0)
    # stats.logp is the next update's old_logp: the ratio is then 1 again
    _, again = grpo_loss(logits, targets, adv, mask, backend=backend, **dict(kw, old_logp=stats.logp))
    assert abs(float(again.ratio_mean) - 1.0) < 1e-6


@pytest.mark.parametrize("backend", CPU_BACKENDS)
def test_empty_and_single_token_shapes(backend, gen):
    x = torch.randn(2, 0, 11, generator=gen, requires_grad=True)
    loss, stats = grpo_loss(x, torch.zeros(2, 0, dtype=torch.long), torch.randn(2, generator=gen), backend=backend)
    loss.backward()
    assert float(loss) == 0.0 and stats.logp.shape == (2, 0) and x.grad.shape == x.shape
    x = torch.randn(1, 1, 1, generator=gen, requires_grad=True)  # V = 1: logp = 0, gradient 0
    loss, stats = grpo_loss(x, torch.zeros(1, 1, dtype=torch.long), torch.ones(1), backend=backend)
    loss.backward()
    assert abs(float(stats.logp)) <= 1e-6 and abs(float(loss) + 1.0) <= 1e-6 and abs(float(x.grad)) <= 1e-6


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_skip_checks_env_never_reads_out_of_bounds(backend, monkeypatch, gen):
    monkeypatch.setenv("R1CORE_SKIP_CHECKS", "1")
    logits = torch.randn(1, 3, 20, generator=gen, requires_grad=True)
    targets = torch.tensor([[1, 25, -3]])
    loss, stats = grpo_loss(logits, targets, torch.ones(1), backend=backend)
    loss.backward()
    assert stats.logp[0, 1] == 0 and stats.logp[0, 2] == 0
    p = torch.softmax(logits.detach()[0, 1], -1)   # no one-hot term for the bad target, nothing out of bounds
    torch.testing.assert_close(logits.grad[0, 1], p / 3, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------------------------------
# errors: a ValueError naming the argument, from the Python boundary and from the C++ entry points
# ---------------------------------------------------------------------------------------------
def _ok(gen):
    return dict(logits=torch.randn(2, 3, 8, generator=gen), targets=torch.randint(0, 8, (2, 3), generator=gen),
                advantages=torch.randn(2, generator=gen))


BAD = [
    ("logits", dict(logits=torch.randn(6, 8)), ValueError),
    ("logits", dict(logits=torch.randint(0, 3, (2, 3, 8))), TypeError),
    ("logits", dict(logits=torch.randn(2, 3, 0)), ValueError),
    ("contiguous", dict(logits=torch.randn(2, 8, 3).transpose(1, 2)), ValueError),
    ("targets", dict(targets=torch.randint(0, 8, (2, 4))), ValueError),
    ("targets", dict(targets=torch.zeros(2, 3)), TypeError),
    ("targets", dict(targets=torch.full((2, 3), 8)), ValueError),
    ("targets", dict(targets=torch.full((2, 3), -1)), ValueError),
    ("advantages", dict(advantages=torch.randn(3)), ValueError),
    ("advantages", dict(advantages=torch.randint(0, 2, (2,))), TypeError),
    ("mask", dict(mask=torch.ones(2, 4)), ValueError),
    ("old_logp", dict(old_logp=torch.zeros(2, 4)), ValueError),
    ("old_logp", dict(old_logp=torch.zeros(2, 3, dtype=torch.long)), TypeError),
    ("ref_logp", dict(ref_logp=torch.zeros(3, 3)), ValueError),
    ("ref_logp", dict(beta=0.1), ValueError),
    ("beta", dict(beta=-0.1, ref_logp=torch.zeros(2, 3)), ValueError),
    ("beta", dict(beta=float("nan")), ValueError),
    ("eps_low", dict(eps_low=-0.2), ValueError),
    ("eps_high", dict(eps_high=float("inf")), ValueError),
    ("temperature", dict(temperature=0.0), ValueError),
    ("temperature", dict(temperature=float("inf")), ValueError),
    ("temperature", dict(temperature="hot"), TypeError),
    ("loss_agg", dict(loss_agg="mean"), ValueError),
    ("max_len", dict(max_len=0), ValueError),
    ("max_len", dict(max_len=2.5), TypeError),
    ("inplace_backward", dict(inplace_backward="yes"), TypeError),
    ("backend", dict(backend="cuda-graph"), ValueError),
    ("logits", dict(logits=[[[0.5, 1.0]]]), TypeError),        # not a tensor: TypeError in every op
    ("advantages", dict(advantages=[0.1, -0.1]), TypeError),
    ("mask", dict(mask=[[True] * 3] * 2), TypeError),
]


@pytest.mark.parametrize("arg,change,exc", BAD, ids=[f"{a}-{i}" for i, (a, _, _) in enumerate(BAD)])
def test_bad_arguments_raise_an_error_naming_them(arg, change, exc, gen):
    """TypeError for a wrong type or dtype, ValueError for a bad value (r1core.ops._args)."""
    kw = _ok(gen)
    kw.update(change)
    logits, targets, adv = kw.pop("logits"), kw.pop("targets"), kw.pop("advantages")
    mask = kw.pop("mask", None)
    with pytest.raises(exc, match=arg):
        grpo_loss(logits, targets, adv, mask, **kw)


def test_masked_targets_may_be_anything(gen):
    kw = _ok(gen)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]], dtype=torch.bool)
    kw["targets"][~mask] = -100
    grpo_loss(kw["logits"], kw["targets"], kw["advantages"], mask)


def test_unavailable_backend_is_an_error(gen):
    kw = _ok(gen)
    with pytest.raises(_backend.BackendUnavailable):
        grpo_loss(kw["logits"], kw["targets"], kw["advantages"], backend="cuda")
    with pytest.raises(ValueError, match="float64"):
        grpo_loss(kw["logits"].double(), kw["targets"], kw["advantages"], backend="cpp")


@pytest.mark.skipif(not _has_cpp(), reason="r1core._C without grpo_loss")
def test_cpp_entry_points_check_their_inputs(gen):
    C = _backend.ext()
    x = torch.randn(2, 3, 8, generator=gen)
    t = torch.randint(0, 8, (6,), generator=gen)
    f = torch.zeros(6)
    ok = (x, t, f, f, f, None, None, 0.0, 0.2, 0.2, 1.0)
    C.grpo_loss_fwd_cpu(*ok)
    for i, bad, word in [(0, x.double(), "logits"), (0, x.transpose(1, 2), "logits"), (1, t.int(), "targets"),
                         (2, torch.zeros(5), "advantages"), (4, f.double(), "weights"), (5, torch.zeros(7), "old_logp"),
                         (10, 0.0, "temperature"), (7, -1.0, "beta")]:
        args = list(ok)
        args[i] = bad
        with pytest.raises(ValueError, match=word):
            C.grpo_loss_fwd_cpu(*args)
    lse, dl = torch.zeros(6), torch.zeros(6)
    with pytest.raises(ValueError, match="lse"):
        C.grpo_loss_bwd_cpu(x, t, torch.zeros(3), dl, 1.0, 1.0, False)
    with pytest.raises(ValueError, match="temperature"):
        C.grpo_loss_bwd_cpu(x, t, lse, dl, 1.0, -1.0, False)
    with pytest.raises(ValueError, match="logits"):
        C.logprobs_cpu(x.cuda() if torch.cuda.is_available() else x[0], t, 1.0)


# ---------------------------------------------------------------------------------------------
# GPU: the real kernels at a realistic size (int64 row offsets: N·V > 2^31)
# ---------------------------------------------------------------------------------------------
@pytest.mark.gpu
@pytest.mark.parametrize("cfg", CONFIGS, ids=lambda c: c.name)
@pytest.mark.parametrize("dtype", list(DTYPES), ids=list(DTYPES))
def test_triton_on_cuda_matches_float64(dtype, cfg, gen):
    logits, targets, adv, mask, kw = make(cfg, DTYPES[dtype], gen, device="cuda")
    check_against_oracle(run("triton", logits, targets, adv, mask, kw), oracle(logits, targets, adv, mask, kw),
                         mask, DTYPES[dtype])


@pytest.mark.gpu
def test_triton_on_cuda_large_offsets(gen):
    N, V = 16384, 151936   # N·V = 2.5e9 elements > 2^31
    logits = torch.randn(1, N, V, device="cuda", dtype=torch.bfloat16)
    targets = torch.randint(0, V, (1, N), device="cuda")
    adv = torch.randn(1, device="cuda")
    x = logits.requires_grad_()
    loss, stats = grpo_loss(x, targets, adv, backend="triton")
    loss.backward()
    rows = torch.tensor([0, N // 2, N - 1], device="cuda")
    want = oracle_logprobs(logits.detach()[:, rows].double(), targets[:, rows])
    assert float((stats.logp[:, rows].double() - want).abs().max()) <= 1e-4
    p = torch.softmax(logits.detach()[0, N - 1].double(), -1)
    g = -p
    g[targets[0, N - 1]] += 1
    g *= -float(adv) / N
    assert rel_err(x.grad[0, N - 1], g) <= 1e-2


@pytest.mark.parametrize("backend", KERNEL_BACKENDS)
def test_inplace_backward_is_caught_when_another_node_saved_the_logits(backend, gen):
    logits, targets, adv, mask, kw = make(CONFIGS[0], torch.float32, gen)
    w = logits.detach().clone().requires_grad_()
    x = w * 1.0
    other = (x.sin() * 0).sum()   # sin saves x for its backward
    loss, _ = grpo_loss(x, targets, adv, mask, backend=backend, inplace_backward=True, **kw)
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        (loss + other).backward()


# ---------------------------------------------------------------------------------------------
# torch.library: the kernels are custom ops, so torch.compile traces grpo_loss without a break
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_custom_op_registration(gen, backend):
    if backend == "cpp" and not _has_cpp():
        pytest.skip("r1core._C without grpo_loss")
    from r1core.ops.grpo import rows as G
    x = torch.randn(2, 5, 37, generator=gen, requires_grad=True)
    N = 10
    args = (x, torch.randint(0, 37, (N,), generator=gen), torch.randn(N, generator=gen), torch.ones(N),
            torch.rand(N, generator=gen), torch.randn(N, generator=gen) - 3, None, 0.0, 0.2, 0.2, 1.0, backend, False)
    torch.library.opcheck(G.grpo_loss_fwd, args,
                          test_utils=("test_schema", "test_faketensor", "test_autograd_registration"))


@pytest.mark.skipif(not _has_cpp(), reason="r1core._C without grpo_loss")
def test_torch_compile_fullgraph(monkeypatch, gen):
    monkeypatch.setenv("R1CORE_SKIP_CHECKS", "1")  # the target-range check is a data-dependent branch
    logits, targets, adv, mask, kw = make(CONFIGS[0], torch.float32, gen)
    fn = torch.compile(lambda x: grpo_loss(x, targets, adv, mask, backend="cpp", **kw)[0],
                       backend="aot_eager", fullgraph=True)
    x = logits.detach().clone().requires_grad_()
    loss = fn(x)
    loss.backward()
    loss0, _, g0 = run("cpp", logits, targets, adv, mask, kw)
    assert float(loss) == float(loss0)
    torch.testing.assert_close(x.grad, g0, rtol=0, atol=0)


# ---------------------------------------------------------------------------------------------
# the per-token terms layout is defined once (r1core/ops/grpo/math.py); the kernels point to it
# ---------------------------------------------------------------------------------------------
def test_terms_layout_is_defined_once():
    import re
    from pathlib import Path

    from r1core.ops.grpo.math import N_TERMS, TERMS
    root = Path(__file__).resolve().parents[2]
    assert N_TERMS == len(TERMS) == 5 and TERMS[0] == "loss"
    for path, pattern in (("csrc/grpo_loss/grpo_loss_cpu.cpp", r"constexpr int kTerms = (\d+);\s*//(.*)"),
                          ("kernels/grpo_loss.py", r"^N_TERMS = (\d+)\s*#(.*)")):
        m = re.search(pattern, (root / path).read_text(), re.M)
        assert m, f"{path}: no terms constant"
        assert int(m.group(1)) == N_TERMS, path
        assert "r1core/ops/grpo/math.py TERMS" in m.group(2), f"{path}: the constant must point to its definition"
    for f in (root / "r1core").rglob("*.py"):  # no second Python definition
        if f.relative_to(root).as_posix() != "r1core/ops/grpo/math.py":
            assert not re.search(r"^N_TERMS\s*=", f.read_text(), re.M), f


def test_row_kernels_are_chosen_once_and_unknown_backends_refused():
    """One Rows object per backend (issue 31), the same objects in every GRPO op's table: a name outside
    the table is a ValueError, never a silent fall into the C++ kernels."""
    from r1core.ops.grpo.rows import ROWS, CppRows, TorchRows, TritonRows, rows
    from r1core.ops.grpo import fused_linear, loss
    assert isinstance(rows("cpp"), CppRows) and isinstance(rows("triton"), TritonRows)
    assert isinstance(rows("torch"), TorchRows) and set(ROWS) == {"torch", "cpp", "triton"}
    for op in (loss.GRPO_LOSS, loss.LOGPROBS, loss.LOGP_ENTROPY, fused_linear.FUSED_LINEAR,
               fused_linear.FUSED_LINEAR_LOGPROBS, fused_linear.FUSED_LINEAR_LOGP_ENTROPY):
        assert all(op.impls[name] is ROWS[name] for name in ROWS), op.name
    for bad in ("cuda", "tritonx", "torchx"):
        with pytest.raises(ValueError, match="no GRPO row kernels for backend"):
            rows(bad)
