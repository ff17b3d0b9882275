"""The MoE layer (r1core.models.moe): its output against transformers' own Qwen3-MoE and DeepSeek-V3
blocks, routing replay, the load statistic, the HF parameter-name mapping, and gradients."""
import pytest
import torch

from r1core.models.moe import MoE, hf_to_moe_state, moe_state_to_hf
from r1core.ref.moe import moe_experts_ref, moe_route_ref


def randomize(module, gen, scale=0.3):
    with torch.no_grad():
        for t in list(module.parameters()) + list(module.buffers()):
            t.copy_(torch.randn(t.shape, generator=gen, dtype=torch.float64) * scale)


def test_forward_composes_route_experts_and_shared(gen):
    m = MoE(24, 20, 8, 3, scoring="sigmoid", n_group=4, topk_group=2, use_correction_bias=True,
            routed_scale=2.5, n_shared_experts=2, dtype=torch.float64)
    randomize(m, gen)
    x = torch.randn(2, 7, 24, generator=gen, dtype=torch.float64)
    y = m(x)
    x_TH = x.reshape(-1, 24)
    w, ids = moe_route_ref(x_TH @ m.gate.weight.t(), 3, scoring="sigmoid", n_group=4, topk_group=2,
                           correction_bias=m.gate.e_score_correction_bias, routed_scale=2.5)
    sh = m.shared_experts
    shared = sh.down_proj(torch.nn.functional.silu(sh.gate_proj(x_TH)) * sh.up_proj(x_TH))
    expect = moe_experts_ref(x_TH, m.experts.w13, m.experts.w2, w, ids) + shared
    torch.testing.assert_close(y.reshape(-1, 24), expect, rtol=1e-12, atol=1e-12)
    assert sh.gate_proj.weight.shape == (40, 24)  # n_shared_experts * intermediate
    assert torch.equal(m.last_ids.sort(-1).values, ids.sort(-1).values)
    assert m.tokens_per_expert.shape == (8,) and int(m.tokens_per_expert.sum()) == 14 * 3
    assert torch.equal(m.tokens_per_expert, torch.bincount(ids.flatten(), minlength=8))


def test_routing_replay(gen):
    m = MoE(16, 12, 6, 2, dtype=torch.float64)
    randomize(m, gen)
    x = torch.randn(5, 16, generator=gen, dtype=torch.float64)
    y = m(x)
    recorded = m.last_ids.clone()
    torch.testing.assert_close(m(x, replay_ids=recorded), y, rtol=0, atol=0)
    # the policy moved: the free choice changes, the replayed one keeps the recorded experts
    with torch.no_grad():
        m.gate.weight.add_(torch.randn(m.gate.weight.shape, generator=gen, dtype=torch.float64))
    forced = torch.stack([torch.randperm(6, generator=gen)[:2] for _ in range(5)])
    x.requires_grad_()
    y_forced = m(x, replay_ids=forced.view(5, 2))
    assert torch.equal(m.last_ids, forced)
    s = torch.softmax(x @ m.gate.weight.t(), -1).gather(1, forced)
    expect = moe_experts_ref(x, m.experts.w13, m.experts.w2, s / s.sum(-1, keepdim=True), forced)
    torch.testing.assert_close(y_forced, expect, rtol=1e-12, atol=1e-12)
    y_forced.sum().backward()  # the router still learns under replay
    assert m.gate.weight.grad is not None and m.gate.weight.grad.abs().sum() > 0
    assert x.grad is not None and m.experts.w13.grad is not None


def test_gradients_of_every_parameter_bf16(gen):
    m = MoE(32, 16, 4, 2, n_shared_experts=1)
    randomize(m, gen)
    m64 = MoE(32, 16, 4, 2, n_shared_experts=1, dtype=torch.float64)
    m.to(torch.bfloat16)
    m64.load_state_dict({k: v.double() for k, v in m.state_dict().items()})
    x = torch.randn(9, 32, generator=gen).bfloat16()
    y = m(x)
    y64 = m64(x.double(), replay_ids=m.last_ids)  # same experts: compare values, not tie-breaks
    assert (y.double() - y64).norm() <= 2e-2 * y64.norm()
    gy = torch.randn(9, 32, generator=gen)
    y.backward(gy.bfloat16())
    y64.backward(gy.double())
    for (name, p), p64 in zip(m.named_parameters(), m64.parameters()):
        assert p.grad is not None and p.grad.dtype == torch.bfloat16, name
        assert (p.grad.double() - p64.grad).norm() <= 3e-2 * p64.grad.norm(), name


def test_router_is_a_linear_and_its_bias_stays_float32(gen):
    m = MoE(16, 8, 8, 2, scoring="sigmoid", use_correction_bias=True)
    assert isinstance(m.gate, torch.nn.Linear) and m.gate.bias is None
    with torch.no_grad():
        m.gate.e_score_correction_bias.copy_(torch.randn(8, generator=gen) * 1e-3 + 1.0)
    exact = m.gate.e_score_correction_bias.clone()
    m.to(torch.bfloat16)
    assert m.gate.weight.dtype == torch.bfloat16 and m.experts.w13.dtype == torch.bfloat16
    assert torch.equal(m.gate.e_score_correction_bias, exact)  # not rounded to bf16
    assert "gate.e_score_correction_bias" in m.state_dict()


def test_hf_per_expert_names_roundtrip(gen):
    E, H, I = 3, 8, 6
    prefix = "model.layers.1.mlp."
    sd = {f"{prefix}gate.weight": torch.randn(E, H, generator=gen),
          f"{prefix}gate.e_score_correction_bias": torch.randn(E, generator=gen),
          f"{prefix}shared_experts.down_proj.weight": torch.randn(H, I, generator=gen),
          "model.layers.2.mlp.gate.weight": torch.randn(E, H, generator=gen)}  # another layer: ignored
    for e in range(E):
        for name, shape in (("gate_proj", (I, H)), ("up_proj", (I, H)), ("down_proj", (H, I))):
            sd[f"{prefix}experts.{e}.{name}.weight"] = torch.randn(*shape, generator=gen)
    ours = hf_to_moe_state(sd, prefix, E)
    assert set(ours) == {"gate.weight", "gate.e_score_correction_bias", "shared_experts.down_proj.weight",
                         "experts.w13", "experts.w2"}
    assert torch.equal(ours["experts.w13"][1, :I], sd[f"{prefix}experts.1.gate_proj.weight"])
    assert torch.equal(ours["experts.w13"][1, I:], sd[f"{prefix}experts.1.up_proj.weight"])
    assert torch.equal(ours["experts.w2"][2], sd[f"{prefix}experts.2.down_proj.weight"])
    back = moe_state_to_hf(ours, prefix)
    assert set(back) == set(sd) - {"model.layers.2.mlp.gate.weight"}
    assert all(torch.equal(back[k], sd[k]) for k in back)
    with pytest.raises(ValueError, match="experts.2.up_proj"):
        hf_to_moe_state({k: v for k, v in sd.items() if "experts.2.up_proj" not in k}, prefix, E)


def test_from_hf_config_dicts():
    qwen = MoE.from_hf_config(dict(model_type="qwen3_moe", hidden_size=16, moe_intermediate_size=8, num_experts=8,
                                   num_experts_per_tok=2, norm_topk_prob=True))
    assert (qwen.scoring, qwen.top_k, qwen.norm_topk, qwen.shared_experts) == ("softmax", 2, True, None)
    v3 = MoE.from_hf_config(dict(model_type="deepseek_v3", hidden_size=16, moe_intermediate_size=8,
                                 n_routed_experts=16, num_experts_per_tok=4, n_group=4, topk_group=2,
                                 norm_topk_prob=True, routed_scaling_factor=2.5, n_shared_experts=1))
    assert (v3.scoring, v3.n_group, v3.topk_group, v3.routed_scale) == ("sigmoid", 4, 2, 2.5)
    assert v3.gate.e_score_correction_bias.shape == (16,)
    assert v3.shared_experts.up_proj.weight.shape == (8, 16)
    v2 = MoE.from_hf_config(dict(model_type="deepseek_v2", hidden_size=16, moe_intermediate_size=8,
                                 n_routed_experts=16, num_experts_per_tok=6, topk_method="greedy", n_group=None,
                                 norm_topk_prob=False, n_shared_experts=2))
    assert (v2.scoring, v2.n_group, v2.norm_topk, v2.gate.e_score_correction_bias) == ("softmax", 1, False, None)
    with pytest.raises(ValueError, match="not a MoE"):
        MoE.from_hf_config(dict(hidden_size=16, intermediate_size=32))


@pytest.mark.parametrize("kw, match", [(dict(scoring="relu"), "scoring"), (dict(top_k=9), "top_k"),
                                       (dict(n_group=3), "n_group"), (dict(use_correction_bias=True), "sigmoid")])
def test_bad_layer_config(kw, match):
    args = dict(top_k=2) | kw
    with pytest.raises(ValueError, match=match):
        MoE(8, 8, 8, args.pop("top_k"), **args)


# ---------------------------------------------------------------------------------------------
# against transformers' own blocks (stacked v5 expert layout)
# ---------------------------------------------------------------------------------------------
def test_matches_transformers_qwen3_moe(gen):
    tf = pytest.importorskip("transformers")
    from transformers.models.qwen3_moe.modeling_qwen3_moe import Qwen3MoeSparseMoeBlock
    cfg = tf.Qwen3MoeConfig(hidden_size=24, moe_intermediate_size=16, num_experts=8, num_experts_per_tok=3,
                            norm_topk_prob=True, hidden_act="silu")
    hf = Qwen3MoeSparseMoeBlock(cfg).double()
    randomize(hf, gen)
    ours = MoE.from_hf_config(cfg, dtype=torch.float64)
    ours.load_state_dict(hf_to_moe_state(hf.state_dict(), "", cfg.num_experts))
    x = torch.randn(2, 5, 24, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ours(x), hf(x), rtol=1e-5, atol=1e-6)  # HF's softmax runs in float32


def test_matches_transformers_deepseek_v3(gen):
    tf = pytest.importorskip("transformers")
    from transformers.models.deepseek_v3.modeling_deepseek_v3 import DeepseekV3MoE
    cfg = tf.DeepseekV3Config(hidden_size=24, moe_intermediate_size=16, n_routed_experts=16, num_experts_per_tok=4,
                              n_group=4, topk_group=2, routed_scaling_factor=2.5, n_shared_experts=1,
                              norm_topk_prob=True, hidden_act="silu")
    hf = DeepseekV3MoE(cfg).double()
    randomize(hf, gen)
    ours = MoE.from_hf_config(cfg, dtype=torch.float64)
    ours.load_state_dict(hf_to_moe_state(hf.state_dict(), "", 16))
    x = torch.randn(3, 4, 24, generator=gen, dtype=torch.float64)
    torch.testing.assert_close(ours(x), hf(x), rtol=1e-5, atol=1e-6)  # HF's router runs in float32
