"""r1core's decoder against transformers (the oracle) on tiny random models of every architecture:
logits within 1e-4 in float32, with and without padding, packed rows, hidden_states/lm_head, and the
save -> transformers round trip."""
import json

import pytest
import torch
from tiny import MOE, TINY

import r1core

TOL = 1e-4


def _fresh(name, hf, folder):
    """transformers' dynamic-NTK rope is stateful (it keeps the frequencies of the longest sequence
    seen so far); r1core's is a function of the current positions.  A fresh model for those tests."""
    if name != "llama-dynamic":
        return hf
    import transformers
    return transformers.AutoModelForCausalLM.from_pretrained(folder).eval()


def _ids(B, T, V, seed):
    return torch.randint(0, V, (B, T), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("name", TINY)
def test_logits_match_transformers(name, saved_tiny):
    hf, folder = saved_tiny(name)
    hf = _fresh(name, hf, folder)
    ours = r1core.load_model(folder)
    ids = _ids(3, 13, hf.config.vocab_size, 0)   # 13 > max_position_embeddings of llama-dynamic
    with torch.no_grad():
        ref = hf(ids).logits
        out = ours(ids)
        hidden = ours.hidden_states(ids)
    assert out.shape == ref.shape and out.dtype == torch.float32
    torch.testing.assert_close(out, ref, atol=TOL, rtol=0)
    torch.testing.assert_close(ours.lm_head(hidden), out, atol=1e-6, rtol=0)
    assert ours.lm_head.weight.shape == (hf.config.vocab_size, hf.config.hidden_size)


@pytest.mark.parametrize("name", TINY)
def test_left_and_right_padding(name, saved_tiny):
    hf, folder = saved_tiny(name)
    hf = _fresh(name, hf, folder)
    ours = r1core.load_model(folder)
    ids = _ids(3, 11, hf.config.vocab_size, 1)
    mask = torch.ones(3, 11, dtype=torch.long)
    mask[0, :4] = 0          # left padding
    mask[2, 8:] = 0          # right padding
    pos = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ref = hf(ids, attention_mask=mask, position_ids=pos).logits
        out = ours(ids, attention_mask=mask)             # positions derived from the mask
        alone = ours(ids[0:1, 4:])                        # the left-padded row, unpadded
    real = mask.bool()
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[real], ref[real], atol=TOL, rtol=0)
    if name != "llama-dynamic":  # dynamic NTK scales by the batch's longest position: rows interact
        torch.testing.assert_close(out[0, 4:], alone[0], atol=TOL, rtol=0)


@pytest.mark.parametrize("name", ["llama", "qwen3_moe", "deepseek_v3"])
def test_packed_rows_equal_separate_sequences(name, saved_tiny):
    _, folder = saved_tiny(name)
    ours = r1core.load_model(folder)
    a, b, c = _ids(1, 5, 97, 2), _ids(1, 7, 97, 3), _ids(1, 3, 97, 4)
    packed = torch.cat([a, b, c], dim=1)
    pos = torch.cat([torch.arange(5), torch.arange(7), torch.arange(3)])[None]
    with torch.no_grad():
        out = ours(packed, position_ids=pos)
        parts = [ours(x)[0] for x in (a, b, c)]
    torch.testing.assert_close(out[0], torch.cat(parts), atol=TOL, rtol=0)


@pytest.mark.parametrize("name", TINY)
def test_save_then_transformers_loads_it(name, saved_tiny, tmp_path):
    import transformers
    hf, folder = saved_tiny(name)
    hf = _fresh(name, hf, folder)
    ours = r1core.load_model(folder)
    ours.save_pretrained(tmp_path)
    back = transformers.AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    ids = _ids(2, 9, hf.config.vocab_size, 5)
    with torch.no_grad():
        torch.testing.assert_close(back(ids).logits, hf(ids).logits, atol=1e-6, rtol=0)
    # and the per-expert / per-projection layout is Hugging Face's, not ours
    keys = set(json.loads((tmp_path / "config.json").read_text()))
    assert {"model_type", "architectures", "vocab_size"} <= keys


def test_sharded_save_and_load(saved_tiny, tmp_path):
    hf, folder = saved_tiny("qwen3_moe")
    ours = r1core.load_model(folder)
    ours.save_pretrained(tmp_path, max_shard_bytes=40_000)
    shards = sorted(p.name for p in tmp_path.glob("*.safetensors"))
    assert len(shards) > 2 and (tmp_path / "model.safetensors.index.json").exists()
    again = r1core.load_model(tmp_path)
    ids = _ids(2, 6, 97, 6)
    with torch.no_grad():
        torch.testing.assert_close(again(ids), ours(ids), atol=0, rtol=0)


@pytest.mark.parametrize("name", MOE)
def test_moe_experts_packed_and_replayable(name, saved_tiny):
    hf, folder = saved_tiny(name)
    ours = r1core.load_model(folder)
    moe = ours.moe_layers
    assert moe and all(m.experts.w13.shape[1] == 2 * m.experts.w2.shape[2] for m in moe)
    ids = _ids(2, 7, 97, 7)
    with torch.no_grad():
        out = ours(ids)
        chosen = [m.last_ids.view(2, 7, -1).clone() for m in moe]
        replayed = ours(ids, replay_ids=chosen)
        forced = [(c + 1) % m.num_experts for c, m in zip(chosen, moe)]
        diverted = ours(ids, replay_ids=forced)
    torch.testing.assert_close(replayed, out, atol=1e-6, rtol=0)
    assert all(torch.equal(m.last_ids.view(2, 7, -1), f) for m, f in zip(moe, forced))
    assert not torch.allclose(diverted, out)


def test_bf16_load_is_close(saved_tiny):
    hf, folder = saved_tiny("qwen3")
    ours = r1core.load_model(folder, dtype=torch.bfloat16)
    assert ours.lm_head.weight.dtype == torch.bfloat16
    ids = _ids(2, 8, 97, 8)
    with torch.no_grad():
        out = ours(ids).float()
        ref = hf(ids).logits
    assert (out - ref).abs().max() < 0.05 * ref.abs().max()
