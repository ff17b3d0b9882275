"""Activation checkpointing (CausalLM.gradient_checkpointing_enable): gradients in float64 equal the
plain path's, every block or every k-th, in the row layout, under shared-prefix packing (the
mask-free PrefixSegments layout) and for MoE models with and without routing replay; recomputation
really happens (the blocks run again in the backward) and only in training forwards."""
import pytest
import torch

import r1core
from r1core.train.packing import PrefixPacking
from tiny import tiny_hf


def _model(arch, tmp_path):
    hf, _ = tiny_hf(arch)
    hf.save_pretrained(tmp_path)
    return r1core.load_model(tmp_path, dtype=torch.float64).train()


def _grads(model, fn):
    model.zero_grad(set_to_none=True)
    fn().backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def _assert_same(a, b):
    assert a.keys() == b.keys() and a
    for n in a:
        torch.testing.assert_close(a[n], b[n], rtol=1e-10, atol=1e-12, msg=n)


@pytest.mark.parametrize("arch", ["llama", "qwen3_moe", "deepseek_v3"])
@pytest.mark.parametrize("every", [1, 2])
def test_checkpointed_gradients_equal_plain_rows(arch, every, tmp_path, gen):
    model = _model(arch, tmp_path)
    ids = torch.randint(1, model.config.vocab_size, (3, 11), generator=gen)
    w = torch.randn(3, 11, model.config.vocab_size, generator=gen, dtype=torch.float64)
    loss = lambda: (model(ids) * w).sum()                                   # noqa: E731
    plain = _grads(model, loss)
    model.gradient_checkpointing_enable(every=every)
    assert model.is_gradient_checkpointing
    _assert_same(_grads(model, loss), plain)
    model.gradient_checkpointing_disable()
    assert not model.is_gradient_checkpointing


@pytest.mark.parametrize("arch,replay", [("llama", False), ("qwen3", False), ("qwen3_moe", True),
                                         ("deepseek_v3", True), ("deepseek_v3", False)])
def test_checkpointed_gradients_equal_plain_packed(arch, replay, tmp_path, gen, monkeypatch):
    """Packed shared-prefix forward (PrefixSegments), MoE routing replay through the recompute."""
    from r1core.models import segments
    monkeypatch.setattr(segments, "_DENSE_MAX_CPU", 0)          # the mask-free path, not the short-row shortcut
    model = _model(arch, tmp_path)
    V = model.config.vocab_size
    L, G = 5, 3
    prompt = torch.randint(1, V, (L,), generator=gen).tolist()
    lens = [4, 7, 2]
    rows = [prompt + torch.randint(1, V, (c,), generator=gen).tolist() for c in lens]
    T = max(map(len, rows))
    tokens = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    mask = torch.tensor([[False] * L + [True] * c + [False] * (T - L - c) for c in lens])
    inputs, targets, cmask, clens = PrefixPacking.extension_layout(tokens, mask, [L] * G)
    replay_ids = None
    if replay:
        with torch.no_grad():
            model.hidden_states(tokens[:, :-1])
        replay_ids = [m.last_ids.reshape(G, T - 1, -1).clone() for m in model.moe_layers]
    p = PrefixPacking(tokens, [L] * G, clens, torch.zeros(G, dtype=torch.long), replay_ids).pack(
        torch.arange(G), "cpu", inputs.shape[1])
    w = torch.randn(G, inputs.shape[1], model.config.hidden_size, generator=gen, dtype=torch.float64) * cmask[..., None]
    kw = {} if p.replay_ids is None else {"replay_ids": p.replay_ids}

    def loss():
        h = model.hidden_states(p.input_ids, position_ids=p.position_ids, attention_mask=p.attention_mask, **kw)
        return (h[p.select] * w).sum()
    plain = _grads(model, loss)
    model.gradient_checkpointing_enable()
    _assert_same(_grads(model, loss), plain)


def test_recompute_happens_only_when_training(tmp_path, gen, monkeypatch):
    from r1core.models import transformer
    model = _model("llama", tmp_path)
    calls = []
    forward = transformer.DecoderLayer.forward
    monkeypatch.setattr(transformer.DecoderLayer, "forward",
                        lambda self, *a, **k: calls.append(self.index) or forward(self, *a, **k))
    ids = torch.randint(1, model.config.vocab_size, (2, 6), generator=gen)
    model.gradient_checkpointing_enable(every=2)
    model(ids).sum().backward()
    assert calls == [0, 1, 0]                  # block 0 runs again in the backward, block 1 is not checkpointed
    for mode in ("eval", "no_grad"):
        calls.clear()
        model.train(mode != "eval")
        with torch.set_grad_enabled(mode != "no_grad"):
            out = model(ids)
        if out.requires_grad:
            out.sum().backward()
        assert calls == [0, 1], mode           # eval and no-grad forwards are never checkpointed


def test_bad_arguments(tmp_path):
    model = _model("llama", tmp_path)
    with pytest.raises(ValueError, match="every"):
        model.gradient_checkpointing_enable(every=0)
    with pytest.raises(TypeError, match="gradient_checkpointing_kwargs"):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs=[1])
