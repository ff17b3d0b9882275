"""Shared-prefix packing (r1core.train.packing): the packed forward gives the row layout's completion
log-probs and gradients (fp32, every attention kind, MoE with and without routing replay), and the
trainer's metrics and weights do not depend on grpo.share_prefix."""
import sys
from pathlib import Path

import pytest
import torch

import r1core
from r1core.train.distributed import PolicyHead
from r1core.train.packing import PrefixPacking
from tinyrl import llama_deps, make_tiny_llama, tiny_config

sys.path.insert(0, str(Path(__file__).parents[1] / "models"))
transformers = pytest.importorskip("transformers")
from tiny import tiny_hf  # noqa: E402


def _rows(gen, vocab, G=3, prompt_lens=(6, 9, 1)):
    """Groups of G rows sharing a random prompt, random completions of 1..7 tokens, right-padded."""
    rows, masks, plens = [], [], []
    for L in prompt_lens:
        prompt = torch.randint(1, vocab, (L,), generator=gen).tolist()
        for _ in range(G):
            c = int(torch.randint(1, 8, (1,), generator=gen))
            rows.append(prompt + torch.randint(1, vocab, (c,), generator=gen).tolist())
            masks.append([False] * L + [True] * c)
            plens.append(L)
    T = max(map(len, rows))
    tokens = torch.tensor([r + [0] * (T - len(r)) for r in rows])
    mask = torch.tensor([m + [False] * (T - len(m)) for m in masks])
    return tokens, mask, plens


def _logp_fn(targets):
    return lambda h, w, b: torch.log_softmax((h @ w.T + (0 if b is None else b)).float(), -1).gather(
        -1, targets[..., None]).squeeze(-1)


@pytest.mark.parametrize("arch", ["llama", "qwen3", "qwen3_moe", "deepseek_v3"])
@pytest.mark.parametrize("replay", [False, True])
def test_packed_forward_equals_rows(arch, replay, tmp_path, gen, monkeypatch):
    from r1core.models import segments
    monkeypatch.setattr(segments, "_DENSE_MAX_CPU", 0)          # the mask-free path, not the short-row shortcut
    if replay and arch not in ("qwen3_moe", "deepseek_v3"):
        pytest.skip("routing replay is for MoE models")
    hf, _ = tiny_hf(arch)
    hf.save_pretrained(tmp_path)
    model = r1core.load_model(tmp_path)
    head = PolicyHead(model)
    tokens, mask, plens = _rows(gen, model.config.vocab_size)
    N = tokens.shape[0]
    inputs, targets, cmask, lens = PrefixPacking.extension_layout(tokens, mask, plens)
    cols = torch.tensor(plens)[:, None] - 1 + torch.arange(inputs.shape[1])[None]       # row-layout columns
    cols = cols.clamp(max=tokens.shape[1] - 2)
    weights = torch.randn(cmask.shape, generator=gen) * cmask

    # the row layout: every row computed on its own (right padding is invisible to causal attention)
    ids = tokens[:, :-1]
    replay_rows = None
    if replay:
        with torch.no_grad():
            model.hidden_states(ids)
        replay_rows = [m.last_ids.reshape(N, ids.shape[1], -1).clone() for m in model.moe_layers]
    kw = {} if replay_rows is None else {"replay_ids": replay_rows}
    lp_rows = head(ids, _logp_fn(tokens[:, 1:]), **kw)
    lp_rows = lp_rows.gather(1, cols)                                                    # -> extension layout
    (lp_rows * weights).sum().backward()
    grads_rows = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)

    # packed, over a subset of rows in a shuffled order (micro-batches need not hold whole groups)
    packing = PrefixPacking(tokens, plens, lens, torch.arange(N) // 3, replay_rows)
    sub = torch.tensor([7, 0, 4, 2, 1, 5, 8, 3, 6])[: N]
    p = packing.pack(sub, "cpu", inputs.shape[1])
    assert p.input_ids.shape[0] == 3 and p.input_ids.shape[1] < sub.numel() * (tokens.shape[1] - 1)
    kw = {} if p.replay_ids is None else {"replay_ids": p.replay_ids}
    lp_packed = head(p.input_ids, _logp_fn(targets[sub]), position_ids=p.position_ids,
                     attention_mask=p.attention_mask, select=p.select, **kw)
    m = cmask[sub]
    torch.testing.assert_close(lp_packed[m], lp_rows[sub][m], rtol=1e-5, atol=2e-5)
    (lp_packed * weights[sub]).sum().backward()
    for n, p_ in model.named_parameters():
        if n in grads_rows:
            scale = grads_rows[n].abs().max().item() + 1e-6
            torch.testing.assert_close(p_.grad / scale, grads_rows[n] / scale, rtol=0, atol=2e-5, msg=n)


def test_pack_layout_and_mask(gen):
    """A hand-checked case: prompt [a b c], completions [x y] and [z]."""
    tokens = torch.tensor([[1, 2, 3, 4, 5], [1, 2, 3, 6, 0]])
    mask = torch.tensor([[0, 0, 0, 1, 1], [0, 0, 0, 1, 0]], dtype=torch.bool)
    inputs, targets, cmask, lens = PrefixPacking.extension_layout(tokens, mask, [3, 3])
    assert inputs.tolist() == [[3, 4], [3, 0]] and targets.tolist() == [[4, 5], [6, 0]] and lens == [2, 1]
    p = PrefixPacking(tokens, [3, 3], lens, torch.tensor([0, 0])).pack(torch.tensor([0, 1]), "cpu", 2, dense=True)
    assert p.input_ids.tolist() == [[1, 2, 3, 4, 3]]
    assert p.position_ids.tolist() == [[0, 1, 2, 3, 2]]
    a = p.attention_mask[0, 0].int().tolist()
    assert a == [[1, 0, 0, 0, 0],
                 [1, 1, 0, 0, 0],
                 [1, 1, 1, 0, 0],
                 [1, 1, 1, 1, 0],
                 [1, 1, 0, 0, 1]]
    assert p.select[0].tolist() == [[0, 0], [0, 0]] and p.select[1].tolist() == [[2, 3], [4, 4]]


def test_trainer_share_prefix_matches_rows(tmp_path):
    """Same metrics and weights with and without packing: reference and old log-probs (beta > 0,
    mu = 2), micro-batches that split groups (micro_batch 3, G 4)."""
    folder = make_tiny_llama(tmp_path / "llama")
    from r1core.train.grpo import GRPOTrainer
    runs = {}
    for share in (True, False):
        cfg = tiny_config(tmp_path / f"run-{share}", "steps=2", "grpo.beta=0.1", "grpo.mu=2", "optim.micro_batch=3",
                          "rollout.max_new_tokens=4", f"grpo.share_prefix={str(share).lower()}", "optim.lr=0.01")
        t = GRPOTrainer(cfg, deps=llama_deps(folder))
        assert t.share_prefix is share
        metrics = [t.step(s) for s in (1, 2)]
        assert t.layout == ("packed" if share else "rows")
        runs[share] = (metrics, {k: v.detach().clone() for k, v in t.model.state_dict().items()})
    (m_on, w_on), (m_off, w_off) = runs[True], runs[False]
    for a, b in zip(m_on, m_off):
        assert a["tokens"] == b["tokens"] and a["reward_mean"] == b["reward_mean"]
        for key in ("loss", "kl_mean", "ratio_mean", "grad_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
    for k in w_on:
        torch.testing.assert_close(w_on[k], w_off[k], rtol=1e-4, atol=1e-5, msg=k)


def test_trainer_falls_back_to_rows_for_other_models(tmp_path):
    from r1core.train.grpo import GRPOTrainer
    from tinyrl import tiny_deps
    t = GRPOTrainer(tiny_config(tmp_path, "steps=1"), deps=tiny_deps())
    assert t.share_prefix is False          # TinyLM is not an r1core CausalLM
    t.step(1)


def test_bad_4d_masks_are_refused(tmp_path):
    hf, _ = tiny_hf("llama")
    hf.save_pretrained(tmp_path)
    model = r1core.load_model(tmp_path)
    ids = torch.randint(1, 50, (2, 5))
    pos = torch.arange(5)[None].expand(2, 5)
    good = torch.ones(2, 1, 5, 5, dtype=torch.bool).tril()
    with pytest.raises(ValueError, match="attention_mask"):
        model.hidden_states(ids, attention_mask=good.float(), position_ids=pos)        # not bool
    with pytest.raises(ValueError, match="attention_mask"):
        model.hidden_states(ids, attention_mask=good[:, :, :4], position_ids=pos)      # wrong shape
    with pytest.raises(ValueError, match="position_ids"):
        model.hidden_states(ids, attention_mask=good)                                 # positions missing
    torch.testing.assert_close(model.hidden_states(ids, attention_mask=good, position_ids=pos),
                               model.hidden_states(ids), rtol=1e-5, atol=1e-5)         # causal mask = plain


def test_layout_cost_picks_packed_only_when_it_saves_work():
    from types import SimpleNamespace
    cfg = SimpleNamespace(head_dim=64, num_heads=9, num_kv_heads=3, hidden_size=576, intermediate_size=1536,
                          is_mla=False, is_moe=False)
    from r1core.train.packing import layout_cost
    G = 4
    # a shared 200-token prompt, 512-token completions: packed computes the prompt once
    c = layout_cost([200] * G, [512] * G, [0] * G, 200 + 512 - 1, cfg)
    assert c["packed"] < 0.85 * c["rows"]
    # a 1-token prompt, equal completions: nothing to share, the layouts cost the same -> rows
    c = layout_cost([1] * G, [512] * G, [0] * G, 512, cfg)
    assert c["packed"] >= c["rows"]
    # long completions: the attention of both grows, but packed never exceeds rows
    c = layout_cost([100] * 2, [16000, 300], [0, 0], 16099, cfg)
    assert c["packed"] < c["rows"]
