"""rollout.async (one-step off-policy GRPO) and the sampler/trainer log-prob gap (issue 29): the gap metrics
are logged and tiny in float32; max_staleness=0 is the synchronous trainer bit for bit; a resume after a
checkpoint trains on the rollout that was in flight (bit for bit); a failing worker raises, never hangs;
bad settings fail naming their key."""
import json
import threading

import pytest
import torch

from r1core.train import checkpoint as ckpt
from r1core.train.config import load_config, rollout_is_options
from r1core.train.grpo import GRPOTrainer
from r1core.train.pipeline import check_async, recipe_stages
from tinyrl import llama_deps, make_tiny_llama, naive_generate, tiny_config, tiny_deps

TIMING = ("tokens_per_s", "step_time", "cpu_time")
GAP = ("rollout/logp_gap_mean", "rollout/logp_gap_max", "rollout/kl_k3")


def _metrics(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in r.items() if k not in TIMING and not k.startswith("time/")} for r in rows]


def _same_weights(a, b):
    sa, sb = a.model.state_dict(), b.model.state_dict()
    return all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.fixture(scope="module")
def llama(tmp_path_factory):
    return make_tiny_llama(tmp_path_factory.mktemp("llama") / "m")


@pytest.mark.parametrize("opts", [(), ("grpo.mu=2",), ("grpo.share_prefix=false", "rollout.top_k=4")])
def test_gap_metrics_logged_and_tiny_in_float32(tmp_path, llama, opts):
    """The real sampler (KV-cache decode) against the trainer's forward: the loss pass's log-probs (mu=1) or the
    recomputed old log-probs (mu=2), packed or row layout; top-k does not matter (logp_policy is untruncated)."""
    t = GRPOTrainer(tiny_config(tmp_path, "steps=2", "rollout.max_new_tokens=6", "rollout.temperature=0.8", *opts),
                    deps=llama_deps(llama))
    t.train()
    rows = _metrics(tmp_path)
    for r in rows:
        assert all(k in r for k in GAP), r
        assert 0 <= r["rollout/logp_gap_mean"] <= r["rollout/logp_gap_max"] < 1e-5, r
        assert 0 <= r["rollout/kl_k3"] < 1e-9
        assert "rollout/staleness" not in r


def test_async_staleness_0_is_the_synchronous_trainer(tmp_path):
    common = ["steps=3", "grpo.mu=2", "optim.mini_batches=2"]
    sync = GRPOTrainer(tiny_config(tmp_path / "sync", *common), deps=tiny_deps())
    sync.train()
    asy = GRPOTrainer(tiny_config(tmp_path / "async", *common, "rollout.async=true", "rollout.max_staleness=0"),
                      deps=tiny_deps())
    asy.train()
    a, b = _metrics(tmp_path / "sync"), _metrics(tmp_path / "async")
    assert [r.pop("rollout/staleness") for r in b] == [0, 0, 0]
    assert a == b
    assert _same_weights(sync, asy)


def test_one_step_off_policy_samples_from_the_previous_weights(tmp_path):
    """Step k's rollout comes from the weights before step k-1's update; rollout_is=auto is TRL's sequence_mask."""
    cfg = tiny_config(tmp_path, "steps=3", "rollout.async=true")
    assert rollout_is_options(cfg) == {"rollout_is": "sequence_mask", "rollout_is_min": None, "rollout_is_max": 3.0}
    seen = []

    def spy(model, prompts, **kw):
        seen.append((threading.current_thread().name, {k: v.clone() for k, v in model.state_dict().items()}))
        return naive_generate(model, prompts, **kw)
    deps = tiny_deps()
    deps.generate = spy
    t = GRPOTrainer(cfg, deps=deps)
    weights = [{k: v.clone() for k, v in t.model.state_dict().items()}]
    for step in (1, 2, 3):
        t.step(step)
        weights.append({k: v.clone() for k, v in t.model.state_dict().items()})
    t.worker.close()
    assert len(seen) == 3 and all(n.startswith("r1core-rollout") for n, _ in seen)     # all in the worker
    for k, (_, w) in enumerate(seen):        # rollout of step k+1 from W_{max(k-1, 0)}
        assert all(torch.equal(w[n], weights[max(k - 1, 0)][n]) for n in w)


def test_async_run_logs_staleness_and_resumes_bit_for_bit(tmp_path):
    common = ["steps=4", "save_every=1", "rollout.async=true", "optim.lr=0.03"]
    whole = GRPOTrainer(tiny_config(tmp_path / "a", *common), deps=tiny_deps())
    whole.train()
    rows = _metrics(tmp_path / "a")
    assert [r["rollout/staleness"] for r in rows] == [0, 1, 1, 1]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    first = GRPOTrainer(tiny_config(tmp_path / "b", *common), deps=tiny_deps())
    first.train(stop_after=2)                                  # "killed" after checkpoint 2
    saved = ckpt.latest_checkpoint(tmp_path / "b")
    assert saved.name == "step-2" and (saved / "rollout" / "rank-0.pt").exists()
    resumed = GRPOTrainer(tiny_config(tmp_path / "b", *common, "resume=true"), deps=tiny_deps())
    assert resumed._resumed_rollout[0] == 3
    resumed.train()
    assert _metrics(tmp_path / "a") == _metrics(tmp_path / "b")
    assert _same_weights(whole, resumed)
    assert not (ckpt.latest_checkpoint(tmp_path / "b") / "rollout").exists()     # the last step has none in flight


def test_a_failing_worker_raises_instead_of_hanging(tmp_path):
    calls = []

    def flaky(model, prompts, **kw):
        calls.append(1)
        if len(calls) == 2:                     # step 2's rollout, in the worker thread
            raise OSError("injected failure")
        return naive_generate(model, prompts, **kw)
    deps = tiny_deps()
    deps.generate = flaky
    t = GRPOTrainer(tiny_config(tmp_path, "steps=3", "rollout.async=true"), deps=deps)
    with pytest.raises(RuntimeError, match="rollout worker failed while generating step 2's rollout: OSError: "
                                           "injected failure"):
        t.train()
    assert t.worker is None                     # the thread was shut down


def test_rollout_is_without_sampler_logprobs_names_the_key(tmp_path):
    def no_policy_logp(model, prompts, **kw):
        r = naive_generate(model, prompts, **kw)
        r.logp_policy = None
        return r
    deps = tiny_deps()
    deps.generate = no_policy_logp
    t = GRPOTrainer(tiny_config(tmp_path, "steps=1", "grpo.rollout_is=token_truncate"), deps=deps)
    with pytest.raises(ValueError, match="'grpo.rollout_is' = 'token_truncate' needs the sampler's log-probs"):
        t.step(1)


def test_rollout_is_uses_the_sampler_logprobs(tmp_path, llama):
    """grpo.rollout_is on the synchronous trainer: the weights exp(trainer − sampler) are ~1, so the run is
    the plain one up to rounding."""
    common = ["steps=2", "rollout.max_new_tokens=5"]
    plain = GRPOTrainer(tiny_config(tmp_path / "a", *common), deps=llama_deps(llama))
    plain.train()
    corrected = GRPOTrainer(tiny_config(tmp_path / "b", *common, "grpo.rollout_is=token_truncate"),
                            deps=llama_deps(llama))
    corrected.train()
    for x, y in zip(_metrics(tmp_path / "a"), _metrics(tmp_path / "b")):
        assert x["loss"] == pytest.approx(y["loss"], abs=1e-5)
    sa, sb = plain.model.state_dict(), corrected.model.state_dict()
    assert all(torch.allclose(sa[k], sb[k], atol=1e-5) for k in sa)


@pytest.mark.parametrize("override, message", [
    ("rollout.max_staleness=-1", r"'rollout.max_staleness' = -1: must be >= 0"),
    ("rollout.max_staleness=2", r"'rollout.max_staleness' = 2: 0 or 1"),
    ("grpo.rollout_is=sequence", r"'grpo.rollout_is' must be one of"),
    ("grpo.rollout_is_max=0", r"'grpo.rollout_is_max' = 0"),
])
def test_bad_async_settings_name_the_key(override, message):
    with pytest.raises(ValueError, match=message):
        load_config(None, [override])


def test_async_on_stages_that_cannot_be_async():
    cfg = load_config(None, ["rollout.async=true", "recipe=custom"])
    stages = [{"name": "sft", "kind": "sft", "set": {"rollout.async": True}}, {"name": "rl", "kind": "grpo"}]
    with pytest.raises(ValueError, match=r"stage 0 \(sft\): config key 'rollout.async' = true, but a sft stage"):
        check_async(cfg, stages)
    stages = [{"name": "rs", "kind": "sample", "set": {"rollout.async": "true"}}, {"name": "rl", "kind": "grpo"}]
    with pytest.raises(ValueError, match=r"stage 0 \(rs\): config key 'rollout.async' = true, but a sample stage"):
        check_async(cfg, stages)
    check_async(cfg, [{"name": "sft", "kind": "sft"}, {"name": "rl", "kind": "grpo"}])   # async = the grpo stages
    cfg = load_config(None, ["rollout.async=true", "recipe=distill", "sample.teacher=x"])
    with pytest.raises(ValueError, match="'rollout.async' = true, but pipeline.recipe=distill has no grpo stage"):
        check_async(cfg, recipe_stages(cfg))
