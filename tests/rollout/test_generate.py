"""generate(): greedy equal token for token to transformers.generate on every architecture; the Rollout
layout; shared prefill; early exit (EOS, stop strings, compaction) changes nothing but the cost;
sampled log-probs equal the recomputed ones; seeds reproduce; MoE expert ids replay; bad arguments."""
import pytest
import torch
from tiny import MOE, TINY

import r1core
from r1core.rollout.sampling import sampling_logprobs

PROMPTS = [[5, 6, 7, 8, 9], [11, 12, 13], [20, 21, 22, 23, 24, 25, 26], [40]]


@pytest.fixture(scope="module")
def models(saved_tiny):
    cache = {}

    def get(name):
        if name not in cache:
            hf, folder = saved_tiny(name)
            cache[name] = (hf, r1core.load_model(folder))
        return cache[name]
    return get


def _hf_greedy(hf, prompt, n, eos=None):
    out = hf.generate(torch.tensor([prompt]), max_new_tokens=n, do_sample=False, eos_token_id=eos, pad_token_id=0)
    return out[0, len(prompt):].tolist()


def _hf_greedy_batch(hf, prompts, n):
    """transformers.generate on the left-padded batch (one call: transformers is the slow side here)."""
    P = max(map(len, prompts))
    ids = torch.zeros(len(prompts), P, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, p in enumerate(prompts):
        ids[i, P - len(p):], mask[i, P - len(p):] = torch.tensor(p), 1
    out = hf.generate(ids, attention_mask=mask, max_new_tokens=n, do_sample=False, eos_token_id=None,
                      pad_token_id=0)
    return out[:, P:].tolist()


@pytest.mark.parametrize("name", [n for n in TINY if n != "llama-dynamic"])
def test_greedy_equals_transformers(name, models):
    hf, ours = models(name)
    roll = r1core.generate(ours, PROMPTS, max_new_tokens=10, temperature=0, eos_token_id=[])
    assert roll.completions() == _hf_greedy_batch(hf, PROMPTS, 10)


def test_greedy_static_cache_equals_dynamic(models):
    _, ours = models("qwen3")
    a = r1core.generate(ours, PROMPTS, max_new_tokens=8, temperature=0, eos_token_id=[])
    b = r1core.generate(ours, PROMPTS, max_new_tokens=8, temperature=0, eos_token_id=[], static=True)
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logp, b.logp, atol=1e-5, rtol=0)


def test_rollout_layout(models):
    _, ours = models("llama")
    G, new = 3, 6
    r = r1core.generate(ours, PROMPTS, num_samples=G, max_new_tokens=new, eos_token_id=[], seed=0)
    N = len(PROMPTS) * G
    assert r.tokens.shape == (N, max(map(len, PROMPTS)) + new) and r.tokens.dtype == torch.int64
    assert r.prompt_lens.tolist() == [len(p) for p in PROMPTS for _ in range(G)]
    assert r.completion_lens.tolist() == [new] * N and not r.finished.any()
    assert r.prompt_index.tolist() == [i for i in range(len(PROMPTS)) for _ in range(G)]
    for n in range(N):
        p = int(r.prompt_lens[n])
        assert r.tokens[n, :p].tolist() == PROMPTS[n // G]                    # prompt first, unpadded
        assert r.completion_mask[n].nonzero()[:, 0].tolist() == list(range(p, p + new))
        assert (r.logp[n][~r.completion_mask[n]] == 0).all() and (r.logp[n][r.completion_mask[n]] < 0).all()
    assert r.expert_ids is None


def test_prefill_shared_by_samples(models):
    """Greedy samples of one prompt are identical; and prompt i's rows equal prompt i generated alone."""
    _, ours = models("deepseek_v3")
    r = r1core.generate(ours, PROMPTS, num_samples=3, max_new_tokens=6, temperature=0, eos_token_id=[])
    for i, p in enumerate(PROMPTS):
        rows = r.tokens[3 * i:3 * i + 3]
        assert (rows == rows[0]).all()
        alone = r1core.generate(ours, [p], max_new_tokens=6, temperature=0, eos_token_id=[])
        assert alone.completions()[0] == r.completions()[3 * i]


@pytest.mark.parametrize("name", ["llama", "qwen3_moe"])
def test_sampled_logp_equals_recomputed(name, models):
    _, ours = models(name)
    for kw in (dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8)):
        r = r1core.generate(ours, PROMPTS, num_samples=2, max_new_tokens=7, eos_token_id=[], seed=3, **kw)
        with torch.no_grad():
            for n in range(r.tokens.shape[0]):
                L = int(r.prompt_lens[n] + r.completion_lens[n])
                logits = ours(r.tokens[n:n + 1, :L])[0, :-1]                # position t scores token t + 1
                ref = sampling_logprobs(logits, **kw).gather(1, r.tokens[n, 1:L, None])[:, 0]
                m = r.completion_mask[n, 1:L]
                torch.testing.assert_close(r.logp[n, 1:L][m], ref[m], atol=2e-5, rtol=0)
                assert torch.isfinite(ref[m]).all()                        # never a filtered-out token


def test_seed_reproduces_and_differs(models):
    _, ours = models("qwen2")
    kw = dict(num_samples=4, max_new_tokens=8, eos_token_id=[], temperature=1.0)
    a = r1core.generate(ours, PROMPTS, seed=7, **kw)
    b = r1core.generate(ours, PROMPTS, seed=7, **kw)
    c = r1core.generate(ours, PROMPTS, seed=8, **kw)
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.logp, b.logp)
    assert not torch.equal(a.tokens, c.tokens)
    rows = a.tokens.view(len(PROMPTS), 4, -1)
    assert any(len({tuple(r.tolist()) for r in g}) > 1 for g in rows)        # samples of a prompt differ


def test_eos_stops_rows_and_compaction_changes_nothing(models):
    """Rows stop at EOS (included in the completion); finished rows are dropped from the batch, and
    each surviving row's greedy tokens equal that prompt generated alone."""
    hf, ours = models("llama")
    free = r1core.generate(ours, PROMPTS, max_new_tokens=12, temperature=0, eos_token_id=[])
    first = free.completions()[0]
    j = next(j for j in range(2, 12) if first[j] not in first[:j])
    eos = first[j]                                     # make row 0 stop at its (j+1)-th token
    r = r1core.generate(ours, PROMPTS, max_new_tokens=12, temperature=0, eos_token_id=eos)
    for i, p in enumerate(PROMPTS):
        want = _hf_greedy(hf, p, 12, eos=eos)
        got = r.completions()[i]
        assert got == want[:len(got)]
        if eos in want:
            assert got[-1] == eos and r.finished[i] and len(got) == want.index(eos) + 1
        else:
            assert not r.finished[i] and len(got) == 12
    assert r.finished[0] and r.completion_lens[0] == j + 1
    assert r.completion_mask.sum(1).tolist() == r.completion_lens.tolist()


def test_stop_strings(models):
    _, ours = models("llama")

    class DigitTok:          # decodes token t as chr(97 + t % 26): a deterministic toy "text"
        def decode(self, ids):
            return "".join(chr(97 + t % 26) for t in ids)

    free = r1core.generate(ours, PROMPTS, max_new_tokens=10, temperature=0, eos_token_id=[])
    text0 = DigitTok().decode(free.completions()[0])
    stop = text0[2:4]
    r = r1core.generate(ours, PROMPTS, max_new_tokens=10, temperature=0, eos_token_id=[], stop_strings=[stop],
                        tokenizer=DigitTok())
    for i in range(len(PROMPTS)):
        t = DigitTok().decode(r.completions()[i])
        if r.finished[i]:
            assert t.endswith(stop) and stop not in t[:-1]
        else:
            assert stop not in t and len(t) == 10
    assert r.finished[0] and r.completion_lens[0] == text0.index(stop) + len(stop)


@pytest.mark.parametrize("name", MOE)
def test_expert_ids_replay_the_rollout(name, models):
    """Rollout.expert_ids are the experts each token used; the training forward with replay_ids
    reproduces the rollout's routing and its log-probs."""
    _, ours = models(name)
    free = r1core.generate(ours, PROMPTS, num_samples=2, max_new_tokens=6, seed=1, eos_token_id=[])
    eos = free.completions()[0][2]          # some rows stop early: compaction must keep the ids aligned
    r = r1core.generate(ours, PROMPTS, num_samples=2, max_new_tokens=6, seed=1, eos_token_id=eos)
    assert r.finished.any()
    moe = ours.moe_layers
    assert r.expert_ids is not None and len(r.expert_ids) == len(moe)
    N, T = r.tokens.shape
    assert all(e.shape == (N, T, moe[0].top_k) for e in r.expert_ids)
    with torch.no_grad():
        for n in range(N):
            L = int(r.prompt_lens[n] + r.completion_lens[n])
            ours(r.tokens[n:n + 1, :L])
            for e, m in zip(r.expert_ids, moe):
                fed = m.last_ids.view(L, -1)[:L - 1]             # the last token is never fed in a rollout
                assert torch.equal(e[n, :L - 1].sort(-1).values, fed.sort(-1).values)
        replay = [e for e in r.expert_ids]
        logits = ours(r.tokens, replay_ids=replay)
    logp = torch.log_softmax(logits[:, :-1].float(), -1).gather(2, r.tokens[:, 1:, None])[..., 0]
    m = r.completion_mask[:, 1:]
    torch.testing.assert_close(logp[m], r.logp[:, 1:][m], atol=2e-5, rtol=0)


def test_bad_arguments(models):
    _, ours = models("qwen2")
    ok = dict(max_new_tokens=2)
    for bad, match in [(dict(prompts=[]), "prompts"), (dict(prompts=[[]]), "prompts\\[0\\]"),
                       (dict(prompts=[[1, 97]]), "outside"), (dict(prompts=[[1.5]]), "prompts\\[0\\]"),
                       (dict(num_samples=0), "num_samples"), (dict(max_new_tokens=0), "max_new_tokens"),
                       (dict(temperature=-1.0), "temperature"), (dict(top_p=0.0), "top_p"),
                       (dict(top_p=1.5), "top_p"), (dict(top_k=-2), "top_k"), (dict(top_k=2.5), "top_k"),
                       (dict(eos_token_id=500), "eos_token_id"), (dict(stop_strings=["x"]), "tokenizer"),
                       (dict(stop_strings="x", tokenizer=object()), "stop_strings")]:
        kw = {"prompts": [[1, 2]], **ok, **bad}
        prompts = kw.pop("prompts")
        with pytest.raises(ValueError, match=match):
            r1core.generate(ours, prompts, **kw)


@pytest.mark.parametrize("name", ["qwen3", "qwen3_moe", "deepseek_v3"])
def test_chunked_prefill_changes_nothing(name, models):
    """Prefill in chunks of 2 and 3 tokens (prompts of 1..7 tokens, left-padded): the same greedy
    tokens, log-probs and MoE expert ids as one prefill forward."""
    _, ours = models(name)
    ref = r1core.generate(ours, PROMPTS, max_new_tokens=6, temperature=0, eos_token_id=[], num_samples=2)
    for chunk in (2, 3):
        out = r1core.generate(ours, PROMPTS, max_new_tokens=6, temperature=0, eos_token_id=[], num_samples=2,
                              prefill_chunk=chunk)
        assert torch.equal(out.tokens, ref.tokens)
        torch.testing.assert_close(out.logp, ref.logp, atol=1e-5, rtol=0)
        if ref.expert_ids is not None:
            for a, b in zip(out.expert_ids, ref.expert_ids):
                assert torch.equal(a, b)
    with pytest.raises(ValueError, match="prefill_chunk"):
        r1core.generate(ours, PROMPTS, max_new_tokens=2, prefill_chunk=0)


@pytest.mark.parametrize("name", ["llama", "qwen3_moe"])
def test_policy_logp_against_float64_forward(name, models):
    """Rollout.logp_policy = log_softmax(logits / T) at each sampled token with no top-k / top-p, checked
    against a float64 copy of the model run over prompt + completion in one forward; with truncation
    active, logp (the truncated distribution's) differs from it, without it the two are equal."""
    import copy
    _, ours = models(name)
    ref64 = copy.deepcopy(ours).double()
    for kw in (dict(temperature=1.0), dict(temperature=0.7, top_k=5), dict(temperature=1.3, top_p=0.8),
               dict(temperature=0)):
        r = r1core.generate(ours, PROMPTS, num_samples=2, max_new_tokens=7, eos_token_id=[], seed=3, **kw)
        assert r.logp_policy.shape == r.logp.shape and r.logp_policy.dtype == torch.float32
        m = r.completion_mask
        assert (r.logp_policy[~m] == 0).all()
        T = kw["temperature"] or 1.0                       # greedy: the plain log_softmax
        with torch.no_grad():
            logits = ref64(r.tokens).double()[:, :-1]       # right-padded: no row sees another's padding
            want = torch.log_softmax(logits / T, -1).gather(2, r.tokens[:, 1:, None])[..., 0]
        mm = m[:, 1:]
        torch.testing.assert_close(r.logp_policy[:, 1:][mm].double(), want[mm], atol=5e-5, rtol=0)
        if "top_k" in kw or "top_p" in kw:
            assert (r.logp[m] >= r.logp_policy[m] - 1e-6).all()      # renormalised over fewer tokens
            assert (r.logp[m] - r.logp_policy[m]).abs().max() > 1e-3
        else:
            assert torch.equal(r.logp, r.logp_policy)
