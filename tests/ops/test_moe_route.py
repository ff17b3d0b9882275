"""moe_route (docs/spec.md §4): every backend against a per-token float64 loop written from the text of docs/spec.md §4,
gradients through the kept weights, routing replay, and bad arguments."""
import pytest
import torch

from r1core import BackendUnavailable
from r1core.ops.moe import moe_route
from r1core.ref.moe import moe_route_ref


def spec_route_loop(logits, k, *, scoring="softmax", n_group=1, topk_group=1, bias=None, norm=True, scale=1.0):
    """One token at a time, Python sorting, float64: the docs/spec.md §4 paragraph, nothing shared with ref/."""
    T, E = logits.shape
    W = torch.zeros(T, k, dtype=torch.float64)
    ids = torch.zeros(T, k, dtype=torch.long)
    for t in range(T):
        x = logits[t].double()
        s = torch.softmax(x, 0) if scoring == "softmax" else torch.sigmoid(x)
        c = [float(s[e]) + (float(bias[e]) if bias is not None else 0.0) for e in range(E)]
        eligible = set(range(E))
        if n_group > 1:
            gsz = E // n_group
            gscore = []
            for g in range(n_group):
                vals = sorted(c[g * gsz:(g + 1) * gsz], reverse=True)
                gscore.append(vals[0] + vals[1] if bias is not None else vals[0])
            keep = sorted(range(n_group), key=lambda g: -gscore[g])[:topk_group]
            eligible = {e for e in range(E) if e // gsz in keep}
        chosen = sorted(eligible, key=lambda e: -c[e])[:k]
        w = [float(s[e]) for e in chosen]
        if norm:
            tot = sum(w) + (1e-20 if scoring == "sigmoid" else 0.0)
            w = [v / tot for v in w]
        W[t] = torch.tensor(w, dtype=torch.float64) * scale
        ids[t] = torch.tensor(chosen)
    return W, ids


def _same_choice(ids_a, ids_b):
    return torch.equal(ids_a.sort(-1).values, ids_b.sort(-1).values)


def _by_id(w, ids):
    order = ids.argsort(-1)
    return w.gather(-1, order)


CASES = [  # (T, E, k, scoring, n_group, topk_group, bias, norm, scale)
    (13, 16, 4, "softmax", 1, 1, False, True, 1.0),
    (7, 10, 1, "softmax", 1, 1, False, False, 1.0),
    (1, 5, 5, "softmax", 1, 1, False, True, 1.0),             # k = E, T = 1
    (9, 12, 3, "softmax", 4, 2, False, False, 1.0),           # DeepSeek-V2 group-limited greedy
    (11, 32, 8, "sigmoid", 8, 4, True, True, 2.5),            # DeepSeek-V3
    (6, 60, 6, "sigmoid", 4, 2, True, True, 1.0),             # groups of 15 (not a power of 2)
    (5, 16, 2, "sigmoid", 1, 1, False, False, 1.0),
]


@pytest.mark.parametrize("case", CASES, ids=[f"T{c[0]}E{c[1]}k{c[2]}{c[3]}G{c[4]}" for c in CASES])
def test_reference_matches_spec_loop(case, gen):
    T, E, k, scoring, G, TG, has_bias, norm, scale = case
    logits = torch.randn(T, E, generator=gen, dtype=torch.float64) * 2
    bias = torch.randn(E, generator=gen, dtype=torch.float64) * 0.3 if has_bias else None
    w_ref, ids_ref = spec_route_loop(logits, k, scoring=scoring, n_group=G, topk_group=TG, bias=bias,
                                     norm=norm, scale=scale)
    for backend in ("torch",):
        w, ids = moe_route(logits, k, scoring=scoring, n_group=G, topk_group=TG, correction_bias=bias,
                           norm_topk=norm, routed_scale=scale, backend=backend)
        assert ids.dtype == torch.int64 and ids.shape == (T, k)
        assert _same_choice(ids, ids_ref)
        torch.testing.assert_close(_by_id(w.double(), ids), _by_id(w_ref, ids_ref), rtol=1e-12, atol=1e-14)


@pytest.mark.interpret
@pytest.mark.parametrize("case", CASES, ids=[f"T{c[0]}E{c[1]}k{c[2]}{c[3]}G{c[4]}" for c in CASES])
def test_triton_matches_reference(case, gen):
    T, E, k, scoring, G, TG, has_bias, norm, scale = case
    logits = (torch.randn(T, E, generator=gen) * 2).requires_grad_()
    bias = torch.randn(E, generator=gen) * 0.3 if has_bias else None
    kw = dict(scoring=scoring, n_group=G, topk_group=TG, correction_bias=bias, norm_topk=norm, routed_scale=scale)
    w, ids = moe_route(logits, k, backend="triton", **kw)
    ld = logits.detach().double().requires_grad_()
    w_ref, ids_ref = moe_route_ref(ld, k, **{**kw, "correction_bias": None if bias is None else bias.double()})
    assert w.dtype == torch.float32 and ids.dtype == torch.int64
    assert torch.equal(ids, ids_ref)  # descending, ties impossible with random logits
    torch.testing.assert_close(w.double(), w_ref, rtol=1e-5, atol=1e-7)
    gw = torch.randn(T, k, generator=gen)
    (g,) = torch.autograd.grad(w, logits, gw)
    (g_ref,) = torch.autograd.grad(w_ref, ld, gw.double())
    assert (g.double() - g_ref).norm() <= 1e-5 * g_ref.norm() + 1e-12


@pytest.mark.interpret
def test_triton_bf16_logits_and_replay(gen):
    T, E, k = 10, 24, 3
    logits = torch.randn(T, E, generator=gen).bfloat16()
    w, ids = moe_route(logits, k, backend="triton")
    w_ref, ids_ref = moe_route_ref(logits.double(), k)  # float64 on the same rounded logits
    assert torch.equal(ids, ids_ref)
    torch.testing.assert_close(w.double(), w_ref, rtol=1e-5, atol=1e-7)
    replay = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)])  # k distinct experts a token
    w2, ids2 = moe_route(logits, k, replay_ids=replay, backend="triton")
    w2_ref, _ = moe_route_ref(logits.double(), k, replay_ids=replay)
    assert torch.equal(ids2, replay)
    torch.testing.assert_close(w2.double(), w2_ref, rtol=1e-5, atol=1e-7)


def test_gradient_flows_through_kept_weights_only(gen):
    T, E, k = 6, 8, 2
    logits = torch.randn(T, E, generator=gen, dtype=torch.float64, requires_grad=True)

    def f(lg):
        return moe_route(lg, k, backend="torch")[0]
    assert torch.autograd.gradcheck(f, (logits,))
    # sigmoid without normalisation: d w / d logit is nonzero only at the chosen experts
    w, ids = moe_route(logits, k, scoring="sigmoid", norm_topk=False, backend="torch")
    (g,) = torch.autograd.grad(w.sum(), logits)
    chosen = torch.zeros(T, E, dtype=torch.bool).scatter_(1, ids, True)
    assert (g[~chosen] == 0).all() and (g[chosen] != 0).all()


def test_replay_keeps_the_given_experts(gen):
    T, E, k = 9, 16, 4
    logits = torch.randn(T, E, generator=gen, dtype=torch.float64)
    w, ids = moe_route(logits, k, backend="torch")
    w_same, ids_same = moe_route(logits, k, replay_ids=ids, backend="torch")
    assert torch.equal(ids_same, ids)
    torch.testing.assert_close(w_same, w)
    other = torch.stack([torch.randperm(E, generator=gen)[:k] for _ in range(T)])
    w_o, ids_o = moe_route(logits, k, replay_ids=other.int(), backend="torch")
    assert torch.equal(ids_o, other)
    s = torch.softmax(logits, -1).gather(1, other)
    torch.testing.assert_close(w_o, s / s.sum(-1, keepdim=True))


@pytest.mark.parametrize("kwargs, match", [
    (dict(top_k=0), "top_k"),
    (dict(top_k=17), "top_k"),
    (dict(top_k=2, scoring="relu"), "scoring"),
    (dict(top_k=2, n_group=3), "n_group"),
    (dict(top_k=2, n_group=4, topk_group=5), "topk_group"),
    (dict(top_k=9, n_group=4, topk_group=2), "exceeds"),
    (dict(top_k=2, correction_bias=torch.zeros(16)), "sigmoid"),
    (dict(top_k=2, scoring="sigmoid", correction_bias=torch.zeros(15)), "correction_bias"),
    (dict(top_k=2, scoring="sigmoid", n_group=16, topk_group=2, correction_bias=torch.zeros(16)), "two best"),
    (dict(top_k=2, replay_ids=torch.full((4, 2), 16)), r"\[0, E=16\)"),
    (dict(top_k=2, replay_ids=torch.full((4, 2), -1)), r"\[0, E=16\)"),
    (dict(top_k=2, replay_ids=torch.zeros(4, 3, dtype=torch.long)), "shape"),
])
def test_bad_arguments_raise_value_error(kwargs, match):
    logits = torch.randn(4, 16)
    top_k = kwargs.pop("top_k")
    with pytest.raises(ValueError, match=match):
        moe_route(logits, top_k, **kwargs)


def test_bad_types_and_backends():
    with pytest.raises(TypeError, match="top_k"):
        moe_route(torch.randn(2, 4), True)
    with pytest.raises(TypeError, match="router_logits"):
        moe_route([[0.1, 0.2]], 1)
    with pytest.raises(ValueError, match="router_logits"):
        moe_route(torch.randn(2, 3, 4), 1)
    with pytest.raises(TypeError, match="router_logits"):
        moe_route(torch.ones(2, 4, dtype=torch.long), 1)
    with pytest.raises(TypeError, match="replay_ids"):
        moe_route(torch.randn(2, 4), 1, replay_ids=torch.zeros(2, 1))
    with pytest.raises(BackendUnavailable):
        moe_route(torch.randn(2, 4), 1, backend="cpp")
    with pytest.raises(ValueError, match="backend"):
        moe_route(torch.randn(2, 4), 1, backend="fast")


@pytest.mark.gpu
@pytest.mark.parametrize("E, k, G, TG, scoring", [(256, 8, 8, 4, "sigmoid"), (128, 8, 1, 1, "softmax"), (60, 6, 4, 2, "softmax")])
def test_triton_on_gpu(E, k, G, TG, scoring):
    gen = torch.Generator().manual_seed(3)
    T = 3000
    logits = torch.randn(T, E, generator=gen)
    bias = torch.randn(E, generator=gen) * 0.1 if scoring == "sigmoid" else None
    kw = dict(scoring=scoring, n_group=G, topk_group=TG, correction_bias=bias, routed_scale=2.5)
    w, ids = moe_route(logits.cuda(), k, backend="triton",
                       **{**kw, "correction_bias": None if bias is None else bias.cuda()})
    w_ref, ids_ref = moe_route_ref(logits.double(), k, **{**kw, "correction_bias": None if bias is None else bias.double()})
    same = (ids.cpu() == ids_ref).all(1)  # float32 vs float64 may order a near-tie differently
    assert same.float().mean() > 0.999
    torch.testing.assert_close(w.cpu().double()[same], w_ref[same], rtol=1e-5, atol=1e-6)
