"""The sampler on tiny distributions: empirical frequencies match the temperature / top-k / top-p
distribution, filtered tokens are never drawn, logp is exact, seeds reproduce."""
import math

import pytest
import torch

from r1core.rollout.sampling import sample, sampling_logprobs

LOGITS = torch.tensor([2.0, 1.0, 0.5, 0.0, -1.0, -3.0, 0.5])


def _expected(temperature, top_k, top_p):
    """The distribution written out by hand from its definition (sort, keep, renormalise)."""
    x = LOGITS.double() / temperature
    order = torch.argsort(x, descending=True, stable=True)
    keep = torch.zeros(len(x), dtype=torch.bool)
    p_all = torch.softmax(x, 0)
    kth = x[order[top_k - 1]] if top_k else -math.inf
    cand = [i for i in order.tolist() if x[i] >= kth]
    p_cand = torch.softmax(x[cand], 0)
    mass = 0.0
    for j, i in enumerate(cand):
        if mass >= top_p:
            break
        keep[i] = True
        mass += float(p_cand[j])
    p = torch.where(keep, p_all, torch.zeros_like(p_all))
    return p / p.sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 0, 1.0), (0.5, 0, 1.0), (1.0, 3, 1.0), (1.0, 0, 0.7),
                                                     (2.0, 4, 0.9), (1.0, 1, 1.0), (1.0, 0, 0.01)])
def test_frequencies_match_the_distribution(temperature, top_k, top_p):
    n = 100_000
    gen = torch.Generator().manual_seed(0)
    tokens, logp = sample(LOGITS.expand(n, -1), temperature=temperature, top_k=top_k, top_p=top_p, generator=gen)
    want = _expected(temperature, top_k, top_p)
    freq = torch.bincount(tokens, minlength=len(LOGITS)).double() / n
    assert (freq[want == 0] == 0).all()                          # filtered tokens: never
    sigma = (want * (1 - want) / n).sqrt()
    assert ((freq - want).abs() <= 5 * sigma + 1e-9).all(), (freq, want)
    torch.testing.assert_close(logp.double(), want[tokens].log(), atol=1e-5, rtol=0)
    torch.testing.assert_close(sampling_logprobs(LOGITS[None], temperature=temperature, top_k=top_k,
                                                 top_p=top_p)[0].exp().double(), want, atol=1e-6, rtol=0)


def test_greedy_and_its_logp():
    logits = torch.randn(5, 3001, generator=torch.Generator().manual_seed(1))
    tokens, logp = sample(logits, temperature=0)
    assert torch.equal(tokens, logits.argmax(-1))
    torch.testing.assert_close(logp, torch.log_softmax(logits, -1).gather(1, tokens[:, None])[:, 0])


def test_large_vocab_blocks_and_reproducibility():
    """A vocabulary that is not a multiple of the sampler's block; a peaked row picks its peak."""
    logits = torch.randn(64, 5000, generator=torch.Generator().manual_seed(2)) * 4
    logits[0, 4999] = 1e4                                   # the last token, in the padded last block
    a = sample(logits, generator=torch.Generator().manual_seed(5), top_k=50)
    b = sample(logits, generator=torch.Generator().manual_seed(5), top_k=50)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) and a[0][0] == 4999
    ref = sampling_logprobs(logits, temperature=1.0, top_k=50).gather(1, a[0][:, None])[:, 0]
    assert torch.isfinite(ref).all()
    torch.testing.assert_close(a[1], ref, atol=1e-5, rtol=0)


def test_bf16_logits():
    logits = torch.randn(8, 300, generator=torch.Generator().manual_seed(3)).bfloat16()
    tokens, logp = sample(logits, generator=torch.Generator().manual_seed(0))
    assert logp.dtype == torch.float32 and tokens.dtype == torch.int64
    torch.testing.assert_close(logp, torch.log_softmax(logits.float(), -1).gather(1, tokens[:, None])[:, 0])


@pytest.mark.parametrize("temperature", [0, 0.6, 1.0, 1.7])
def test_policy_logp_is_the_untruncated_log_softmax(temperature):
    from r1core.rollout.sampling import policy_logp, truncates
    logits = torch.randn(5, 3000, generator=torch.Generator().manual_seed(0)) * 3
    tok, _ = sample(logits, temperature=temperature, top_k=7, generator=torch.Generator().manual_seed(1))
    want = torch.log_softmax(logits.double() / (temperature or 1.0), -1).gather(1, tok[:, None])[:, 0]
    torch.testing.assert_close(policy_logp(logits, tok, temperature=temperature).double(), want, atol=2e-6, rtol=0)
    assert truncates(temperature, 1.0, 7, 3000) == (temperature != 0)
    assert not truncates(0.7, 1.0, 3000, 3000) and not truncates(0.7, 1.0, 0, 3000) and truncates(0.7, 0.9, 0, 3000)
