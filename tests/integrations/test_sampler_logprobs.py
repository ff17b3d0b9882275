"""r1core.integrations.sampler_logprobs: r1core's sampler log-probs in TRL's / verl's response layout, and TRL's
importance_sampling_ratio from them (checked against the formula written out from TRL 1.16's
_generate_and_score_completions, here, independently)."""
import math

import pytest
import torch

import r1core
from r1core.integrations import verl as r1verl
from r1core.integrations.sampler_logprobs import completion_logprobs, trl_sampling_inputs
from r1core.models import CausalLM, ModelConfig

PROMPTS = [[3, 4, 5, 6], [7, 8], [9, 10, 11]]
TEMPERATURE = 0.8


@pytest.fixture(scope="module")
def rollout_and_model():
    cfg = ModelConfig.from_hf({"model_type": "llama", "architectures": ["LlamaForCausalLM"], "vocab_size": 40,
                               "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
                               "num_attention_heads": 4, "num_key_value_heads": 2, "tie_word_embeddings": True,
                               "eos_token_id": 1, "max_position_embeddings": 64})
    torch.manual_seed(0)
    model = CausalLM(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0, 0.3)
    r = r1core.generate(model, PROMPTS, num_samples=2, max_new_tokens=6, temperature=TEMPERATURE, top_k=8, seed=0)
    return r, model


def _trl_ratio(old, sampling, mask, mode, clip_min, clip_max):
    """TRL 1.16's vllm importance-sampling ratio, transcribed."""
    d = torch.nan_to_num((old - sampling) * mask, nan=0.0)
    if mode.startswith("sequence"):
        d = d.sum(-1, keepdim=True)
    r = torch.exp(d)
    if mode.endswith("truncate"):
        return torch.clamp(r, min=clip_min, max=clip_max)
    lo = -math.inf if clip_min is None else clip_min
    hi = math.inf if clip_max is None else clip_max
    return r.masked_fill((r < lo) | (r > hi), 0.0)


def _trl_old_logps(model, r):
    """What TRL's own forward gives as old_per_token_logps: log_softmax(logits / T) at the completion tokens,
    left-aligned."""
    with torch.no_grad():
        lp = torch.log_softmax(model(r.tokens).double()[:, :-1] / TEMPERATURE, -1)
        lp = lp.gather(2, r.tokens[:, 1:, None])[..., 0]
    C = int(r.completion_lens.max())
    out = torch.zeros(r.tokens.shape[0], C, dtype=torch.float64)
    for n, (p, c) in enumerate(zip(r.prompt_lens.tolist(), r.completion_lens.tolist())):
        out[n, :c] = lp[n, p - 1:p - 1 + c]
    return out.float()


def test_completion_layout(rollout_and_model):
    r, _ = rollout_and_model
    lp, mask = completion_logprobs(r)
    C = int(r.completion_lens.max())
    assert lp.shape == mask.shape == (r.tokens.shape[0], C)
    for n, (p, c) in enumerate(zip(r.prompt_lens.tolist(), r.completion_lens.tolist())):
        assert mask[n].sum() == c and mask[n, :c].all()
        assert torch.equal(lp[n, :c], r.logp_policy[n, p:p + c]) and (lp[n, c:] == 0).all()
    sampled, _ = completion_logprobs(r, which="sampling")
    assert (sampled[mask] >= lp[mask] - 1e-6).all() and not torch.equal(sampled, lp)     # top_k=8 truncates
    with pytest.raises(ValueError, match="which must be"):
        completion_logprobs(r, which="raw")


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_trl_importance_sampling_ratio(rollout_and_model, mode):
    r, model = rollout_and_model
    old = _trl_old_logps(model, r)
    lp, mask = completion_logprobs(r)
    torch.testing.assert_close(old[mask], lp[mask], atol=1e-5, rtol=0)     # the sampler is the policy it trains
    old = old.clone()
    old[0, :2] += 1.0                 # row 0 drifts: its sequence ratio exceeds C_max = 3 (e^2)
    old[1, 0] = float("nan")          # a token the sampler could not score (TRL: ratio 1)
    for clip_min, clip_max in ((None, 3.0), (0.5, 2.0)):
        got = trl_sampling_inputs(r, old, mode=mode, clip_min=clip_min, clip_max=clip_max)
        assert torch.equal(got["sampling_per_token_logps"], lp)
        want = _trl_ratio(old, lp, mask.float(), mode, clip_min, clip_max)
        torch.testing.assert_close(got["importance_sampling_ratio"], want)
        assert got["importance_sampling_ratio"].shape == ((len(lp), 1) if mode.startswith("sequence") else lp.shape)
    seq = trl_sampling_inputs(r, old)["importance_sampling_ratio"]           # TRL's defaults: sequence_mask, 3
    assert seq[0, 0] == 0 and (seq[2:] - 1).abs().max() < 1e-4
    assert "importance_sampling_ratio" not in trl_sampling_inputs(r)
    with pytest.raises(ValueError, match="completion shape"):
        trl_sampling_inputs(r, old[:, :-1])


def test_verl_rollout_log_probs_feed_its_rollout_weights(rollout_and_model):
    """verl's rollout log-probs = completion_logprobs; the weights from them (rollout_is_weights, as verl's
    rollout correction computes them) enter r1core's verl policy loss: ~1 for r1core's own sampler."""
    from r1core.ops.grpo.objective import rollout_is_weights
    r, model = rollout_and_model
    rollout_log_probs, mask = completion_logprobs(r)
    old = _trl_old_logps(model, r)
    w = rollout_is_weights(old, rollout_log_probs, mask.float(), mode="token_truncate", c_max=2.0)
    assert (w[mask] - 1).abs().max() < 1e-4
    A = torch.linspace(-1, 1, len(old))[:, None].expand_as(old)
    lp = old + 0.01 * torch.randn(old.shape, generator=torch.Generator().manual_seed(0))
    base, _ = r1verl.grpo_policy_loss(old, lp, A, mask.float(), "token-mean")
    weighted, _ = r1verl.grpo_policy_loss(old, lp, A, mask.float(), "token-mean", rollout_is_weights=w)
    torch.testing.assert_close(weighted, base, atol=1e-5, rtol=0)
