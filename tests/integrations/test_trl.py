"""R1GRPOTrainer (r1core.integrations.trl) against TRL's own GRPOTrainer on a tiny Llama, on CPU:
the same loss and gradients for every mapped loss_type, the same advantages for every scale_rewards,
one full training step, every newer TRL loss setting (cispo, sapo, luspo, vespo, GSPO, delta, bias-corrected
KL, vLLM importance sampling, off-policy mask, entropy bonus / top-entropy mask), and a clear error for what
is not mapped."""
import copy
import functools

import pytest
import torch

trl = pytest.importorskip("trl")
transformers = pytest.importorskip("transformers")
datasets = pytest.importorskip("datasets")

from r1core.integrations.trl import R1GRPOTrainer, loss_kwargs, trl_advantages  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore")
CHARS = list("abcdefghijklmnopqrstuvwxyz0123456789 +=?.")
PROMPTS = ["1+2=", "3+4=", "12+5=", "2+7="]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 1-layer Llama (V=48, H=32) and a character tokenizer, saved to a folder as a model id."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "<eos>": 1, "<unk>": 2, **{c: i + 3 for i, c in enumerate(CHARS)}}
    tk = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Split("", "isolated")
    tok = PreTrainedTokenizerFast(tokenizer_object=tk, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>")
    cfg = LlamaConfig(vocab_size=48, hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2,
                      num_key_value_heads=1, max_position_embeddings=64, pad_token_id=0, eos_token_id=1,
                      bos_token_id=1, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg)
    with torch.no_grad():  # a sharper head than the init: logits of a few units, ratios that clip
        model.lm_head.weight.mul_(20)
    folder = tmp_path_factory.mktemp("tiny-llama")
    model.save_pretrained(folder)
    tok.save_pretrained(folder)
    return str(folder), tok


def reward_len(completions, **kw):
    return [float(len(c) % 3) for c in completions]


def trainer(cls, tiny, **cfg):
    path, tok = tiny
    args = trl.GRPOConfig(output_dir="/tmp/r1core-trl-test", per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=6, max_steps=1, report_to=[], logging_steps=1, use_cpu=True,
                          save_strategy="no", disable_dropout=True, **{"bf16": False, **cfg})
    ds = datasets.Dataset.from_dict({"prompt": PROMPTS})
    return cls(model=path, reward_funcs=reward_len, args=args, train_dataset=ds, processing_class=tok)


def batch(tr, gen, empty_row: bool):
    """A hand-made micro-batch as TRL's _prepare_inputs hands it to _compute_loss."""
    B, P, C = 4, 3, 6
    prompt_ids = torch.randint(3, 48, (B, P), generator=gen)
    prompt_mask = torch.ones(B, P, dtype=torch.long)
    prompt_mask[0, 0] = 0                                      # left padding
    prompt_ids[0, 0] = 0
    completion_ids = torch.randint(3, 48, (B, C), generator=gen)
    lengths = torch.tensor([6, 4, 1, 0 if empty_row else 3])
    completion_mask = (torch.arange(C)[None] < lengths[:, None]).long()
    completion_ids[completion_mask == 0] = 0
    inputs = dict(prompt_ids=prompt_ids, prompt_mask=prompt_mask, completion_ids=completion_ids,
                  completion_mask=completion_mask, advantages=torch.randn(B, generator=gen),
                  num_items_in_batch=completion_mask.sum() * 2)
    with torch.no_grad():
        logp, _, _ = tr._get_per_token_logps_and_entropies(
            tr.model, torch.cat([prompt_ids, completion_ids], 1), torch.cat([prompt_mask, completion_mask], 1), C)
    inputs["old_per_token_logps"] = logp + 0.3 * torch.randn(B, C, generator=gen)
    inputs["ref_per_token_logps"] = logp + 0.3 * torch.randn(B, C, generator=gen)
    return inputs


def loss_and_grads(tr, inputs):
    tr.model.train()
    tr.model.zero_grad(set_to_none=True)
    tr.current_gradient_accumulation_steps = 2
    loss = tr._compute_loss(tr.model, inputs)
    loss.backward()
    return loss.detach(), {n: p.grad.clone() for n, p in tr.model.named_parameters() if p.grad is not None}


def assert_loss_and_grads_match(ref_tr, r1_tr, inputs):
    """r1core's _compute_loss against TRL's on the same inputs: loss to 1e-5 of its scale, every
    parameter's gradient to 1e-4 relative."""
    want_loss, want_grads = loss_and_grads(ref_tr, copy.deepcopy(inputs))
    got_loss, got_grads = loss_and_grads(r1_tr, copy.deepcopy(inputs))
    assert abs(got_loss - want_loss) <= 1e-5 * (abs(want_loss) + inputs["advantages"].abs().mean())
    assert want_grads.keys() == got_grads.keys() and len(want_grads) > 5
    for name, g in want_grads.items():
        err = (got_grads[name] - g).norm() / g.norm().clamp_min(1e-30)
        assert err <= 1e-4, (name, err.item())

@pytest.mark.parametrize("loss_type", ["grpo", "bnpo", "dr_grpo", "dapo"])
def test_loss_and_gradients_match_trl(tiny, loss_type):
    cfg = dict(loss_type=loss_type, beta=0.04, epsilon=0.2, epsilon_high=0.28, temperature=0.9,
               use_bias_correction_kl=False)
    ref_tr = trainer(trl.GRPOTrainer, tiny, **cfg)
    r1_tr = trainer(R1GRPOTrainer, tiny, **cfg)
    r1_tr.model.load_state_dict(ref_tr.model.state_dict())
    inputs = batch(ref_tr, torch.Generator().manual_seed(1), empty_row=loss_type == "grpo")
    assert_loss_and_grads_match(ref_tr, r1_tr, inputs)
    # the logged statistics are TRL's names
    for key in ("kl", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean"):
        assert key in r1_tr._metrics["train"], key
        torch.testing.assert_close(torch.tensor(r1_tr._metrics["train"][key][-1]),
                                   torch.tensor(ref_tr._metrics["train"][key][-1]), rtol=1e-4, atol=1e-6)


def test_bf16_autocast_matches_trl(tiny):
    """With bf16=True TRL runs the lm_head in the autocast dtype; so does R1GRPOTrainer."""
    cfg = dict(loss_type="bnpo", beta=0.0, bf16=True)
    ref_tr = trainer(trl.GRPOTrainer, tiny, **cfg)
    r1_tr = trainer(R1GRPOTrainer, tiny, **cfg)
    inputs = batch(ref_tr, torch.Generator().manual_seed(2), empty_row=False)
    want_loss, want_grads = loss_and_grads(ref_tr, copy.deepcopy(inputs))
    got_loss, got_grads = loss_and_grads(r1_tr, copy.deepcopy(inputs))
    assert abs(got_loss - want_loss) <= 1e-2 * (abs(want_loss) + inputs["advantages"].abs().mean())
    for name, g in want_grads.items():
        assert (got_grads[name] - g).norm() / g.norm() <= 3e-2, name


def test_mapping(tiny):
    tr = trainer(R1GRPOTrainer, tiny, loss_type="dr_grpo", beta=0.1, epsilon=0.1, epsilon_high=0.3, temperature=0.7,
                 use_bias_correction_kl=False)
    assert loss_kwargs(tr) == dict(loss_agg="seq_mean_token_sum_norm", eps_low=0.1, eps_high=0.3, beta=0.1,
                                   temperature=0.7, max_len=6)


@pytest.mark.parametrize("scale_rewards", ["group", "batch", "none"])
def test_advantages_match_trl(tiny, scale_rewards):
    """Same seed, same weights: same completions and rewards; r1core's advantages equal TRL's."""
    outs = []
    for cls in (trl.GRPOTrainer, R1GRPOTrainer):
        tr = trainer(cls, tiny, scale_rewards=scale_rewards, beta=0.0)
        tr.model.train()
        torch.manual_seed(0)
        outs.append(tr._generate_and_score_completions([{"prompt": p} for p in PROMPTS[:1] for _ in range(4)]
                                                       + [{"prompt": PROMPTS[1]}] * 4))
    want, got = outs[0]["advantages"], outs[1]["advantages"]
    assert torch.equal(outs[0]["completion_ids"], outs[1]["completion_ids"])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_trl_advantage_formula():
    r = torch.tensor([1.0, 0.0, 2.0, 2.0, 3.0, 3.0, 3.0, 3.0])
    std_g = r.view(2, 4).std(1).repeat_interleave(4)
    mean_g = r.view(2, 4).mean(1).repeat_interleave(4)
    torch.testing.assert_close(trl_advantages(r, 4, "group"), (r - mean_g) / (std_g + 1e-4))
    torch.testing.assert_close(trl_advantages(r, 4, "batch"), (r - mean_g) / (r.std() + 1e-4))
    torch.testing.assert_close(trl_advantages(r, 4, "none"), r - mean_g)
    assert (trl_advantages(r, 4, "group")[4:] == 0).all()  # equal rewards: exactly 0


def test_one_training_step(tiny):
    tr = trainer(R1GRPOTrainer, tiny, loss_type="dapo", beta=0.04, use_bias_correction_kl=False)
    before = {n: p.detach().clone() for n, p in tr.model.named_parameters()}
    out = tr.train()
    assert torch.isfinite(torch.tensor(out.training_loss))
    changed = [n for n, p in tr.model.named_parameters() if not torch.equal(p.detach(), before[n])]
    assert "lm_head.weight" in changed and any("layers.0" in n for n in changed)
    assert "kl" in tr._metrics["train"] or any("kl" in str(h) for h in tr.state.log_history)


# TRL 1.16 settings beyond the four aggregations of docs/spec.md §2b (docs/objectives.md): (GRPOConfig overrides, extra inputs)
NEW_SETTINGS = {
    "trl_defaults": (dict(beta=0.04), {}),    # use_bias_correction_kl=True, loss_type="dapo"
    "cispo": (dict(loss_type="cispo", epsilon_high=1.1), {}),
    "sapo": (dict(loss_type="sapo"), {}),
    "gspo": (dict(loss_type="grpo", importance_sampling_level="sequence", epsilon=3e-3, epsilon_high=4e-3), {}),
    "luspo": (dict(loss_type="luspo", importance_sampling_level="sequence"), {}),
    "vespo": (dict(loss_type="vespo"), {}),
    "delta": (dict(loss_type="bnpo", delta=1.2, epsilon_high=0.05), {}),
    "off_policy_mask": (dict(off_policy_mask_threshold=0.02, beta=0.0), {}),
    "entropy_bonus": (dict(loss_type="grpo", entropy_coef=0.05), {}),
    "top_entropy": (dict(top_entropy_quantile=0.5), {}),
    "vllm_is_token": (dict(vllm_importance_sampling_mode="token_truncate"), dict(vllm=(4, 6))),
    "vllm_is_sequence": (dict(vllm_importance_sampling_mode="sequence_mask", loss_type="cispo"), dict(vllm=(4, 1))),
    "vllm_is_vespo": (dict(vllm_importance_sampling_mode="token_mask", loss_type="vespo"), dict(vllm=(4, 6))),
}


@pytest.mark.parametrize("name", sorted(NEW_SETTINGS))
def test_new_settings_match_trl(tiny, name):
    """Loss, every gradient and the logged entropy (and kl / clip metrics) equal TRL's own _compute_loss."""
    cfg, extra = NEW_SETTINGS[name]
    cfg = {"beta": 0.04, "temperature": 0.9, **cfg}
    ref_tr = trainer(trl.GRPOTrainer, tiny, **cfg)
    r1_tr = trainer(R1GRPOTrainer, tiny, **cfg)
    r1_tr.model.load_state_dict(ref_tr.model.state_dict())
    gen = torch.Generator().manual_seed(3)
    inputs = batch(ref_tr, gen, empty_row=True)
    if "vllm" in extra:  # the rollouts came from another engine: TRL's truncated/masked IS ratio is an input
        for tr in (ref_tr, r1_tr):
            tr.use_vllm = True
        r1_tr._r1core_kwargs = loss_kwargs(r1_tr)
        inputs["importance_sampling_ratio"] = torch.rand(*extra["vllm"], generator=gen) * 1.5 + 0.25
    want_loss, want_grads = loss_and_grads(ref_tr, copy.deepcopy(inputs))
    got_loss, got_grads = loss_and_grads(r1_tr, copy.deepcopy(inputs))
    assert abs(got_loss - want_loss) <= 1e-5 * (abs(want_loss) + inputs["advantages"].abs().mean()), name
    assert want_grads.keys() == got_grads.keys() and len(want_grads) > 5
    for pname, g in want_grads.items():
        err = (got_grads[pname] - g).norm() / g.norm().clamp_min(1e-30)
        assert err <= 1e-4, (pname, err.item())
    keys = ["entropy"] + (["kl"] if cfg["beta"] else [])
    keys += {"cispo": ["cispo_clip_ratio"], "sapo": [], "vespo": []}.get(
        cfg.get("loss_type", "dapo"), [] if cfg.get("importance_sampling_level") == "sequence"
        else ["clip_ratio/low_mean", "clip_ratio/high_mean"])
    for key in keys:
        torch.testing.assert_close(torch.tensor(r1_tr._metrics["train"][key][-1]),
                                   torch.tensor(ref_tr._metrics["train"][key][-1]), rtol=1e-4, atol=1e-6)


def test_trl_default_mapping(tiny):
    """TRL's defaults (dapo, use_bias_correction_kl=True) run; with beta = 0 the single-pass loss is kept."""
    tr = trainer(R1GRPOTrainer, tiny, beta=0.0)
    assert loss_kwargs(tr) == dict(loss_agg="token_mean", eps_low=0.2, eps_high=0.2, beta=0.0, temperature=1.0,
                                   max_len=None, use_bias_correction_kl=True)
    tr = trainer(R1GRPOTrainer, tiny, loss_type="cispo", beta=0.1, importance_sampling_level="sequence")
    kw = loss_kwargs(tr)
    assert kw["policy"] == "cispo" and kw["importance_sampling_level"] == "sequence" and kw["beta"] == 0.1


@pytest.mark.parametrize("cfg, match", [
    (dict(vllm_importance_sampling_mode="sequence_truncate", loss_type="vespo"), "vespo"),
])
def test_unmapped_options_raise(tiny, cfg, match):
    path, tok = tiny
    args = trl.GRPOConfig(output_dir="/tmp/r1core-trl-test", per_device_train_batch_size=4, num_generations=4,
                          max_completion_length=6, max_steps=1, report_to=[], use_cpu=True, bf16=False, **cfg)
    ds = datasets.Dataset.from_dict({"prompt": PROMPTS})
    orig = trl.GRPOTrainer.__init__

    def init(self, *a, **k):  # pretend the rollouts come from vLLM (not installed here)
        orig(self, *a, **k)
        self.use_vllm = True
    try:
        trl.GRPOTrainer.__init__ = init
        with pytest.raises(ValueError, match=match):
            R1GRPOTrainer(model=path, reward_funcs=reward_len, args=args, train_dataset=ds, processing_class=tok)
    finally:
        trl.GRPOTrainer.__init__ = orig


# ---------------------------------------------------------------------------------------------------
# R1GRPOTrainer._compute_loss against TRL's own under TRL's KL defaults (beta=0.04,
# use_bias_correction_kl=True) and their alternatives: every loss_type × importance_sampling_level ×
# use_bias_correction_kl × num_iterations ∈ {1, 2} (1: no old log-probs, on-policy); and `policy_loss`
# logged like TRL's when the entropy bonus is on (issue 31).
# ---------------------------------------------------------------------------------------------------
LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")


@functools.lru_cache(maxsize=None)
def _pair(path, loss_type):
    """One TRL and one r1core trainer per loss type (building them is the slow part); the options under
    test are set on both per case."""
    tok = _TOK[path]
    ref_tr = trainer(trl.GRPOTrainer, (path, tok), loss_type=loss_type, beta=0.04, temperature=0.9,
                     epsilon=0.2, epsilon_high=0.28)
    r1_tr = trainer(R1GRPOTrainer, (path, tok), loss_type=loss_type, beta=0.04, temperature=0.9,
                    epsilon=0.2, epsilon_high=0.28)
    r1_tr.model.load_state_dict(ref_tr.model.state_dict())
    return ref_tr, r1_tr


_TOK = {}


def _configure(tr, level: str, bias: bool, num_iterations: int):
    tr.args.importance_sampling_level = tr.importance_sampling_level = level
    tr.args.use_bias_correction_kl = bias
    tr.args.num_iterations = tr.num_iterations = num_iterations
    if isinstance(tr, R1GRPOTrainer):
        tr._r1core_kwargs = loss_kwargs(tr)


@pytest.mark.parametrize("num_iterations", [1, 2])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("loss_type", LOSS_TYPES)
def test_compute_loss_equals_trl(tiny, loss_type, level, bias, num_iterations):
    path, tok = tiny
    _TOK[path] = tok
    ref_tr, r1_tr = _pair(path, loss_type)
    for tr in (ref_tr, r1_tr):
        _configure(tr, level, bias, num_iterations)
    inputs = batch(ref_tr, torch.Generator().manual_seed(7), empty_row=True)
    if num_iterations == 1:   # TRL computes no old log-probs then: the ratio is 1, on-policy
        inputs["old_per_token_logps"] = None
    assert_loss_and_grads_match(ref_tr, r1_tr, inputs)
    torch.testing.assert_close(torch.tensor(r1_tr._metrics["train"]["kl"][-1]),
                               torch.tensor(ref_tr._metrics["train"]["kl"][-1]), rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("cfg", [dict(loss_type="grpo", entropy_coef=0.05),
                                 dict(loss_type="dapo", entropy_coef=0.05),
                                 dict(loss_type="bnpo", entropy_coef=0.05, top_entropy_quantile=0.5)])
def test_policy_loss_logged_like_trl(tiny, cfg):
    """TRL logs `policy_loss` (the loss before the entropy bonus, before the accumulation divide) when the
    entropy bonus is on; R1GRPOTrainer logs the same number."""
    cfg = dict(beta=0.04, temperature=0.9, **cfg)
    ref_tr = trainer(trl.GRPOTrainer, tiny, **cfg)
    r1_tr = trainer(R1GRPOTrainer, tiny, **cfg)
    r1_tr.model.load_state_dict(ref_tr.model.state_dict())
    inputs = batch(ref_tr, torch.Generator().manual_seed(5), empty_row=True)
    want_loss, _ = loss_and_grads(ref_tr, copy.deepcopy(inputs))
    got_loss, _ = loss_and_grads(r1_tr, copy.deepcopy(inputs))
    assert abs(got_loss - want_loss) <= 1e-5 * (abs(want_loss) + inputs["advantages"].abs().mean())
    want = ref_tr._metrics["train"]["policy_loss"]
    got = r1_tr._metrics["train"]["policy_loss"]
    assert len(got) == len(want) == 1
    torch.testing.assert_close(torch.tensor(got[-1]), torch.tensor(want[-1]), rtol=1e-5, atol=1e-6)
