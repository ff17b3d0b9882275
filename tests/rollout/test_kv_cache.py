"""KVCache.compact: finished rows leave the cache in place; every live row keeps its keys, values and
validity, wherever it lands (keep[i] = the old row now at i)."""
import pytest
import torch

from r1core.models import ModelConfig
from r1core.models.kv_cache import KVCache


def _cfg(mla: bool) -> ModelConfig:
    cfg = {"model_type": "llama", "vocab_size": 50, "hidden_size": 16, "intermediate_size": 32,
           "num_hidden_layers": 2, "num_attention_heads": 4, "num_key_value_heads": 2}
    if mla:
        cfg.update(model_type="deepseek_v3", kv_lora_rank=8, qk_rope_head_dim=4, qk_nope_head_dim=4,
                   v_head_dim=4, q_lora_rank=None, n_routed_experts=4, num_experts_per_tok=2,
                   moe_intermediate_size=8, first_k_dense_replace=2, n_group=1, topk_group=1)
    return ModelConfig.from_hf(cfg)


def _cache(gen, mla: bool, B=9, S=12, used=7):
    cache = KVCache.allocate(_cfg(mla), B, S, dtype=torch.float32, device="cpu")
    for t in cache.k + cache.v:
        if t is not None:
            t[:, :, :used] = torch.randn(t[:, :, :used].shape, generator=gen)
    cache.valid[:, :used] = torch.rand(B, used, generator=gen) > 0.3
    cache.length = used
    return cache


@pytest.mark.parametrize("mla", [False, True])
@pytest.mark.parametrize("pattern", ["random", "tail dead", "head dead", "none dead", "one alive"])
def test_compact_keeps_every_live_row(gen, mla, pattern):
    cache = _cache(gen, mla)
    B, used = cache.batch, cache.length
    alive = {"random": torch.rand(B, generator=gen) > 0.5, "tail dead": torch.arange(B) < 5,
             "head dead": torch.arange(B) >= 4, "none dead": torch.ones(B, dtype=torch.bool),
             "one alive": torch.arange(B) == 6}[pattern]
    before = ([t.clone() for t in cache.k], [None if t is None else t.clone() for t in cache.v], cache.valid.clone())
    keep = cache.compact(alive)
    assert sorted(keep.tolist()) == alive.nonzero()[:, 0].tolist()
    assert cache.batch == int(alive.sum()) and cache.length == used
    for old, new in zip(before[0] + before[1], cache.k + cache.v):
        if old is not None:
            assert new.shape[0] == keep.numel()
            torch.testing.assert_close(new[:, :, :used], old[keep, :, :used], rtol=0, atol=0)
    assert torch.equal(cache.valid[:, :used], before[2][keep, :used])
    # the cache still takes writes and gives a mask of the new batch size
    k_new = torch.randn(cache.batch, *cache.k[0].shape[1:2], 1, cache.k[0].shape[-1], generator=gen)
    v_new = None if cache.v[0] is None else torch.randn_like(k_new)
    cache.mark(torch.ones(cache.batch, 1, dtype=torch.bool))
    K, _ = cache.write(0, k_new, v_new)
    assert K.shape[2] == used + 1 and cache.attention_mask(1).shape == (cache.batch, 1, 1, used + 1)


def test_static_cache_refuses_compaction(gen):
    cache = _cache(gen, False)
    cache.static = True
    with pytest.raises(ValueError, match="static"):
        cache.compact(torch.ones(cache.batch, dtype=torch.bool))


@pytest.mark.parametrize("mla", [False, True])
def test_cache_memory_follows_the_live_rows(gen, mla):
    """Once half the rows are dead the buffers are reallocated to the live rows (memory released);
    with fewer dead rows they stay in place.  bytes_per_token is what allocate() holds per slot."""
    cache = _cache(gen, mla)
    B, S = cache.batch, cache.capacity
    per_token = KVCache.bytes_per_token(_cfg(mla), torch.float32)
    assert cache.nbytes() == per_token * B * S
    storage = cache.k[0].untyped_storage().data_ptr()
    cache.compact(torch.arange(B) != 3)                         # one dead row: in place
    assert cache.k[0].untyped_storage().data_ptr() == storage
    cache.compact(torch.arange(cache.batch) < 3)                # 3 of 8 alive: released
    assert cache.k[0].untyped_storage().nbytes() == cache.k[0].nbytes
    assert cache.valid.untyped_storage().nbytes() == cache.valid.nbytes == 3 * S
