"""What a careless caller passes and the ops used to take silently (issue 31): each is a ValueError
naming the argument, and R1CORE_SKIP_CHECKS=1 turns the checks that need a device sync off."""
from __future__ import annotations

import pytest
import torch

import r1core

BACKENDS = ["torch", "cpp", pytest.param("triton", marks=pytest.mark.interpret)]


def inputs(gen, B=2, T=4, V=9, H=5):
    return dict(logits=torch.randn(B, T, V, generator=gen), targets=torch.randint(0, V, (B, T), generator=gen),
                adv=torch.randn(B, generator=gen), hidden=torch.randn(B, T, H, generator=gen),
                weight=torch.randn(V, H, generator=gen))


def loss(d, op, backend, mask=None, **kw):
    if op == "grpo_loss":
        return r1core.grpo_loss(d["logits"], d["targets"], d["adv"], mask, backend=backend, **kw)
    return r1core.fused_linear_grpo_loss(d["hidden"], d["weight"], d["targets"], d["adv"], mask, backend=backend,
                                         **kw)


@pytest.mark.parametrize("objective", [{}, {"policy": "cispo"}])
@pytest.mark.parametrize("op", ["grpo_loss", "fused_linear"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_non_finite_inputs_are_refused(gen, backend, op, objective):
    d = inputs(gen)
    x = "logits" if op == "grpo_loss" else "hidden"
    for bad in (float("nan"), float("inf")):
        e = {k: v.clone() for k, v in d.items()}
        e[x][1, 2, 3] = bad
        with pytest.raises(ValueError, match=rf"{x} must be finite.*{x}\[1, 2\]"):
            loss(e, op, backend, **objective)
    e = {k: v.clone() for k, v in d.items()}
    e["adv"][0] = float("nan")
    with pytest.raises(ValueError, match="advantages must be finite"):
        loss(e, op, backend, **objective)
    if op == "fused_linear":
        e = {k: v.clone() for k, v in d.items()}
        e["weight"][0, 0] = float("nan")
        with pytest.raises(ValueError, match="weight must be finite"):
            loss(e, op, backend, **objective)


def test_masked_rows_and_banned_tokens_may_hold_anything(gen):
    """NaN logits or advantages where the mask is 0, and -inf logits (banned tokens), are fine."""
    d = inputs(gen)
    d["logits"][0, 1] = float("nan")
    d["logits"][1, 0, 2] = float("-inf")
    d["targets"][1, 0] = 1
    mask = torch.ones(2, 4, dtype=torch.bool)
    mask[0, 1] = False
    l, _ = r1core.grpo_loss(d["logits"], d["targets"], d["adv"], mask)
    assert torch.isfinite(l)
    adv = torch.tensor([float("nan"), 0.5])
    mask[0] = False
    assert torch.isfinite(r1core.grpo_loss(d["logits"], d["targets"], adv, mask)[0])


@pytest.mark.parametrize("bad", [-1.0, float("nan"), float("inf")])
def test_negative_or_non_finite_mask_weights_are_refused(gen, bad):
    d = inputs(gen)
    mask = torch.ones(2, 4)
    mask[1, 3] = bad
    with pytest.raises(ValueError, match=r"mask must hold finite weights >= 0.*mask\[1, 3\]"):
        loss(d, "grpo_loss", None, mask)


def test_eps_low_above_one_is_refused(gen):
    d = inputs(gen)
    for op in ("grpo_loss", "fused_linear"):
        with pytest.raises(ValueError, match="eps_low must be <= 1"):
            loss(d, op, None, eps_low=1.5)
    loss(d, "grpo_loss", None, eps_low=1.0)   # no lower clip at all: allowed


def test_max_len_below_a_sequence_length_is_refused(gen):
    d = inputs(gen)
    mask = torch.ones(2, 4)
    mask[1, 2:] = 0
    kw = dict(loss_agg="seq_mean_token_sum_norm")
    with pytest.raises(ValueError, match="max_len must be >= every sequence's count.*max_len=3.*sequence 0 has 4"):
        loss(d, "grpo_loss", None, mask, max_len=3, **kw)
    with pytest.raises(ValueError, match="max_len=3"):
        loss(d, "fused_linear", None, mask, max_len=3, **kw)
    loss(d, "grpo_loss", None, mask, max_len=4, **kw)        # = the longest sequence: fine
    mask[0, 3] = 0
    loss(d, "grpo_loss", None, mask, max_len=3, **kw)        # T = 4 > max_len but no sequence is longer: fine


@pytest.mark.parametrize("backend", ["torch", pytest.param("triton", marks=pytest.mark.interpret)])
def test_moe_route_refuses_nan_logits_and_duplicate_replay_ids(gen, backend):
    logits = torch.randn(5, 8, generator=gen)
    bad = logits.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(ValueError, match="router_logits must hold no NaN.*row 3"):
        r1core.moe_route(bad, 2, backend=backend)
    off = logits.clone()
    off[:, 0] = float("-inf")                                 # an expert switched off: fine
    w, ids = r1core.moe_route(off, 2, backend=backend)
    assert torch.isfinite(w).all() and not (ids == 0).any()
    replay = torch.tensor([[0, 1], [2, 3], [4, 4], [5, 6], [7, 0]])
    with pytest.raises(ValueError, match=r"replay_ids must name k distinct experts.*token 2"):
        r1core.moe_route(logits, 2, replay_ids=replay, backend=backend)
    with pytest.raises(ValueError, match="correction_bias must be finite"):
        r1core.moe_route(logits, 2, scoring="sigmoid", correction_bias=torch.full((8,), float("nan")),
                         backend=backend)


def test_skip_checks_turns_the_synced_checks_off(gen, monkeypatch):
    monkeypatch.setenv("R1CORE_SKIP_CHECKS", "1")
    d = inputs(gen)
    d["adv"][0] = float("nan")
    loss(d, "grpo_loss", "torch")                             # no ValueError: the caller opted out
    replay = torch.tensor([[0, 0]] * 5)
    r1core.moe_route(torch.randn(5, 8, generator=gen), 2, replay_ids=replay)
