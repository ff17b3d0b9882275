"""Pipeline stages on the tiny model: SFT -> GRPO -> rejection sampling -> SFT on the samples, each
starting from the previous stage's checkpoint; finished stages are skipped on resume; recipes and
stage specs are validated."""
import json

import pytest
import torch

from r1core.train import checkpoint as ckpt
from r1core.train.config import load_config
from r1core.train.pipeline import check_stages, recipe_stages, run_pipeline
from r1core.train.sft import SFTTrainer, read_sft_jsonl
from tinyrl import load_tiny, tiny_config, tiny_deps


def test_custom_pipeline_runs_every_stage_from_the_previous(tmp_path):
    data = tmp_path / "cold.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "completion": str(2 * a % 10)}) + "\n" for a in range(10)))
    stages = [{"name": "cold", "kind": "sft", "init": "base", "data": str(data)},
              {"name": "rl", "kind": "grpo", "set": {"run.steps": 2}},
              {"name": "rs", "kind": "sample", "set": {"sample.require_format": False, "sample.k": 8,
                                                       "sample.prompts": 16, "sample.max_new_tokens": 2}},
              {"name": "sft2", "kind": "sft", "init": "base"}]
    cfg = tiny_config(tmp_path / "run", "recipe=custom", "sft.batch=4", "sft.epochs=1", "save_every=0",
                      "sample.temperature=1.0")
    cfg.pipeline.stages = stages
    seen = []
    deps = tiny_deps()
    deps.load_model = lambda src, **kw: seen.append(str(src)) or load_tiny(src, **kw)
    out = run_pipeline(cfg, deps=deps)
    root = tmp_path / "run"
    assert out["cold"].endswith("0-cold/checkpoints/step-2")          # 10 records / batch 4 -> 2 steps
    assert out["rl"].endswith("1-rl/checkpoints/step-2") and out["rs"].endswith("samples.jsonl")
    assert seen[:2] == ["tiny", out["cold"]]                            # RL started from the SFT checkpoint
    assert seen[-1] == "tiny"                                          # sft2: init=base
    kept = read_sft_jsonl(out["rs"])
    assert kept and all({"prompt", "completion", "answer"} <= set(r) for r in kept)
    assert all(r["completion"][:1] == r["answer"] for r in kept)       # only correct samples kept
    assert json.loads((root / "pipeline.json").read_text())["outputs"] == out
    # resume: every stage is done, nothing is loaded again
    seen.clear()
    cfg.run.resume = True
    assert run_pipeline(cfg, deps=deps) == out and seen == []


def test_sft_loss_is_cross_entropy_and_falls(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"prompt": "1+1=", "completion": "2"}) + "\n" for _ in range(8)))
    cfg = tiny_config(tmp_path / "run", "sft.batch=8", "sft.epochs=6", "sft.lr=0.05", "optim.micro_batch=3")
    t = SFTTrainer(cfg, data=str(data), deps=tiny_deps())
    seq, p = t.seqs[0]
    ids = torch.tensor([seq])
    with torch.no_grad():
        logp = torch.log_softmax(t.model(ids[:, :-1]), -1)[0, p - 1:].gather(-1, ids[0, p:, None])
    first = t.step(1)
    assert first["loss"] == pytest.approx(-logp.mean().item(), rel=1e-5)
    last = [t.step(s) for s in range(2, 7)][-1]
    assert last["loss"] < 0.5 * first["loss"]


def test_recipes_and_stage_checks():
    assert [s["kind"] for s in recipe_stages(load_config(None, ["recipe=r1"]))] == ["sft", "grpo", "sample", "sft", "grpo"]
    assert [s["kind"] for s in recipe_stages(load_config(None, ["recipe=cold_start_rl"]))] == ["sft", "grpo"]
    r1 = recipe_stages(load_config(None, ["recipe=r1"]))
    assert "language" in r1[1]["set"]["task.rewards"]
    with pytest.raises(ValueError, match="sample.teacher"):
        recipe_stages(load_config(None, ["recipe=distill"]))
    assert [s["kind"] for s in recipe_stages(load_config(None, ["recipe=distill", "sample.teacher=/t"]))] == ["sample", "sft"]
    with pytest.raises(ValueError, match="kind"):
        check_stages([{"kind": "dpo"}])
    with pytest.raises(ValueError, match="unknown keys"):
        check_stages([{"kind": "sft", "lr": 1}])
    with pytest.raises(ValueError, match="unique"):
        check_stages([{"kind": "sft", "name": "a"}, {"kind": "grpo", "name": "a"}])
    assert ckpt.latest_checkpoint("/nonexistent") is None
