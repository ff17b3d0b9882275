"""torch.compile(fullgraph=True) on CPU through the public ops that are torch.library custom ops end to
end (issue 31): no graph break, the eager numbers (loss, statistics, gradients), and the value checks still
raise inside the compiled graph (they run as custom ops there; R1CORE_SKIP_CHECKS=1 drops them).

The fused linear ops compile too: their unmasked-row gather (a data-dependent size) happens inside
their custom ops (r1core/ops/grpo/fused_linear.py)."""
import pytest
import torch

import r1core
from r1core.ops.grpo.loss import logp_entropy

pytestmark = pytest.mark.filterwarnings("ignore")
B, T, V = 2, 5, 33


def inputs(gen):
    x = torch.randn(B, T + 1, V, generator=gen)[:, :T]        # strided, as logits[:, :-1]
    t = torch.randint(0, V, (B, T), generator=gen)
    a = torch.randn(B, generator=gen)
    m = torch.rand(B, T, generator=gen) < 0.8
    old = torch.log_softmax(x, -1).gather(-1, t[..., None])[..., 0] + 0.1 * torch.randn(B, T, generator=gen)
    return x, t, a, m, old


CASES = {
    "grpo_loss": lambda x, t, a, m, old: r1core.grpo_loss(x, t, a, m, old_logp=old, entropy=True),
    "grpo_loss_cispo": lambda x, t, a, m, old: r1core.grpo_loss(x, t, a, m, old_logp=old, policy="cispo",
                                                                eps_high=1.1),
    "grpo_loss_gspo_entropy_bonus": lambda x, t, a, m, old: r1core.grpo_loss(
        x, t, a, m, old_logp=old, importance_sampling_level="sequence", entropy_coef=0.01),
    "logprobs": lambda x, t, a, m, old: (r1core.logprobs(x, t, entropy=True),),
    "logp_entropy": lambda x, t, a, m, old: (logp_entropy(x, t, m),),
}


def _flat(out):
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, (tuple, list)):
        return [y for o in out for y in _flat(o)]
    if hasattr(out, "__dataclass_fields__"):
        return [y for k in out.__dataclass_fields__ for y in _flat(getattr(out, k))]
    return []


def _run(fn, leaves0, *rest):
    """fn(*leaves, *rest) with fresh leaf copies requiring grad -> (outputs detached, the leaves' grads)."""
    leaves = [x.detach().clone().requires_grad_(True) for x in leaves0]
    outs = _flat(fn(*leaves, *rest))
    scalar = sum((o.float().sum() for o in outs if o.requires_grad), torch.zeros(()))
    if scalar.requires_grad:
        scalar.backward()
    return [o.detach() for o in outs], [x.grad for x in leaves]


def _compiled_equals_eager(fn, leaves, *rest):
    want, g_want = _run(fn, leaves, *rest)
    got, g_got = _run(torch.compile(fn, fullgraph=True), leaves, *rest)
    assert len(got) == len(want)
    for u, v in zip(got + g_got, want + g_want):
        assert (u is None) == (v is None)
        if u is not None:
            torch.testing.assert_close(u, v, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("name", sorted(CASES))
def test_compiles_fullgraph_with_the_eager_numbers(name, backend, gen, monkeypatch):
    monkeypatch.setenv("R1CORE_BACKEND", backend)
    torch._dynamo.reset()
    x, t, a, m, old = inputs(gen)
    _compiled_equals_eager(CASES[name], [x], t, a, m, old)


H = 12
FL_CASES = {
    "fused_linear_grpo_loss": lambda h, w, b, t, a, m, old: r1core.fused_linear_grpo_loss(
        h, w, t, a, m, bias=b, old_logp=old, entropy=True),
    "fused_linear_grpo_loss_chunked": lambda h, w, b, t, a, m, old: r1core.fused_linear_grpo_loss(
        h, w, t, a, m, bias=b, old_logp=old, strategy="chunked", chunk_size=3),
    "fused_linear_grpo_loss_cispo": lambda h, w, b, t, a, m, old: r1core.fused_linear_grpo_loss(
        h, w, t, a, m, bias=b, old_logp=old, policy="cispo", eps_high=1.1, chunk_size=4),
    "fused_linear_logprobs": lambda h, w, b, t, a, m, old: (r1core.fused_linear_logprobs(h, w, t, bias=b),
                                                            r1core.fused_linear_logprobs(h, w, t, entropy=True)),
    "fused_linear_logp_entropy": lambda h, w, b, t, a, m, old: (r1core.fused_linear_logp_entropy(h, w, t, m, bias=b),),
}


@pytest.mark.parametrize("backend", ["cpp", "torch"])
@pytest.mark.parametrize("name", sorted(FL_CASES))
def test_fused_linear_ops_compile_fullgraph_with_the_eager_numbers(name, backend, gen, monkeypatch):
    monkeypatch.setenv("R1CORE_BACKEND", backend)
    torch._dynamo.reset()
    _, t, a, m, old = inputs(gen)
    h = torch.randn(B, T + 1, H, generator=gen)[:, 1:]       # strided rows
    w, b = torch.randn(V, H, generator=gen) / 3, torch.randn(V, generator=gen) / 5
    _compiled_equals_eager(FL_CASES[name], [h, w, b], t, a, m, old)


def test_checks_still_raise_inside_the_compiled_graph(gen):
    torch._dynamo.reset()
    x, t, a, m, old = inputs(gen)
    f = torch.compile(CASES["grpo_loss"], fullgraph=True)
    f(x, t, a, m, old)
    bad = x.clone()
    bad[1, 2, 3] = float("nan")
    m[1, 2] = True
    with pytest.raises(ValueError, match=r"logits must be finite"):
        f(bad, t, a, m, old)
    t_bad = t.clone()
    t_bad[0, 0] = V
    g = torch.compile(lambda x, t: r1core.logprobs(x, t), fullgraph=True)
    with pytest.raises(ValueError, match=r"targets must lie in \[0, V\)"):
        g(x, t_bad)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_advantages_and_moe_route_compile_fullgraph(backend, gen, monkeypatch):
    monkeypatch.setenv("R1CORE_BACKEND", backend)
    torch._dynamo.reset()
    r = torch.randn(12, generator=gen)
    adv = lambda r: r1core.grpo_advantages(r, 4, scale="batch")  # noqa: E731
    torch.testing.assert_close(torch.compile(adv, fullgraph=True)(r), adv(r), rtol=1e-6, atol=1e-6)
    with pytest.raises(ValueError, match="rewards must be finite"):
        torch.compile(adv, fullgraph=True)(torch.tensor([1.0, float("nan")] * 6))

    monkeypatch.setenv("R1CORE_BACKEND", "torch")   # moe_route has torch and triton backends
    logits = torch.randn(7, 8, generator=gen)

    def route(lg):
        w, ids = r1core.moe_route(lg, 2, scoring="sigmoid", n_group=2, topk_group=1)
        return w, ids

    want_lg, got_lg = logits.clone().requires_grad_(True), logits.clone().requires_grad_(True)
    w0, i0 = route(want_lg)
    w1, i1 = torch.compile(route, fullgraph=True)(got_lg)
    assert torch.equal(i0, i1)
    torch.testing.assert_close(w1, w0)
    w0.sum().backward()
    w1.sum().backward()
    torch.testing.assert_close(got_lg.grad, want_lg.grad)
    bad = logits.clone()
    bad[2, 3] = float("nan")
    with pytest.raises(ValueError, match="router_logits must hold no NaN"):
        torch.compile(route, fullgraph=True)(bad)


@pytest.mark.parametrize("backend", ["cpp", "torch"])
def test_moe_experts_compiles_fullgraph_with_the_eager_numbers(backend, gen, monkeypatch):
    """moe_experts on its CPU backends: the C++ passes and the torch loop are custom ops with a registered
    autograd formula."""
    monkeypatch.setenv("R1CORE_BACKEND", backend)
    torch._dynamo.reset()
    Tn, Hd, I, E, k = 9, 8, 6, 5, 2
    x = torch.randn(Tn, Hd, generator=gen)
    w13, w2 = torch.randn(E, 2 * I, Hd, generator=gen) / 3, torch.randn(E, Hd, I, generator=gen) / 3
    w, ids = r1core.moe_route(torch.randn(Tn, E, generator=gen), k, backend="torch")

    def f(x, w13, w2, w):   # a non-uniform upstream gradient
        return r1core.moe_experts(x, w13, w2, w, ids) * torch.linspace(-1, 1, Hd)
    _compiled_equals_eager(f, [x, w13, w2, w])
    bad = ids.clone()
    bad[3, 1] = E
    with pytest.raises(ValueError, match=r"ids must lie in \[0, E=5\)"):
        torch.compile(lambda x: r1core.moe_experts(x, w13, w2, w, bad), fullgraph=True)(x)
