"""Long-completion machinery in the trainer: model.gradient_checkpointing on r1core's own models
(every block or every k-th) leaves the run unchanged, and a bad checkpoint_every is refused."""
import pytest
import torch

from tinyrl import llama_deps, make_tiny_llama, tiny_config


def _run(tmp_path, folder, name, *overrides):
    from r1core.train.grpo import GRPOTrainer
    t = GRPOTrainer(tiny_config(tmp_path / name, "steps=2", "rollout.max_new_tokens=4", *overrides),
                    deps=llama_deps(folder))
    metrics = [t.step(s) for s in (1, 2)]
    return t, metrics, {k: v.detach().clone() for k, v in t.model.state_dict().items()}


@pytest.mark.parametrize("every", [1, 2])
def test_gradient_checkpointing_leaves_the_run_unchanged(tmp_path, every):
    folder = make_tiny_llama(tmp_path / "llama")
    _, m_plain, w_plain = _run(tmp_path, folder, "plain")
    t, m_ckpt, w_ckpt = _run(tmp_path, folder, "ckpt", "model.gradient_checkpointing=true",
                             f"model.checkpoint_every={every}")
    assert t.model.checkpoint_every == every
    for a, b in zip(m_plain, m_ckpt):
        for key in ("loss", "grad_norm", "reward_mean"):
            assert a[key] == pytest.approx(b[key], rel=1e-5, abs=1e-7), key
    for k in w_plain:
        torch.testing.assert_close(w_ckpt[k], w_plain[k], rtol=1e-5, atol=1e-6, msg=k)


def test_bad_checkpoint_every(tmp_path):
    from r1core.train.grpo import GRPOTrainer
    folder = make_tiny_llama(tmp_path / "llama")
    with pytest.raises(ValueError, match="checkpoint_every"):
        GRPOTrainer(tiny_config(tmp_path / "x", "model.gradient_checkpointing=true", "model.checkpoint_every=0"),
                    deps=llama_deps(folder))


def test_long_cot_recipe_loads_and_states_its_computed_memory():
    """configs/gpu_long_cot.yaml parses, checkpoints every block, and the memory it states is what
    the bench's plan computes (shape arithmetic: parameter states and the KV cache)."""
    import sys
    from pathlib import Path
    root = Path(__file__).parents[2]
    sys.path.insert(0, str(root))
    from benches.bench_long_cot import plan
    from r1core.train.config import load_config
    cfg = load_config(root / "configs/gpu_long_cot.yaml")
    assert cfg.model.gradient_checkpointing and cfg.rollout.max_new_tokens == 32768 and cfg.rollout.gen_batch == 1
    text = (root / "configs/gpu_long_cot.yaml").read_text()
    p = plan(T=32768, prompt=512, G=cfg.rollout.group_size, micro_rows=cfg.optim.micro_batch,
             gen_batch=cfg.rollout.gen_batch)
    for key in ("states_gib", "rollout_kv_gib", "update_activations_ckpt_gib"):
        assert f"{p[key]:.1f}" in text, key
