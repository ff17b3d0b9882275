"""Pipeline stages on the tiny model: SFT -> GRPO -> rejection sampling -> SFT on the samples, each
starting from the previous stage's checkpoint; finished stages are skipped on resume; recipes and
stage specs are validated."""
import json

import pytest
import torch

from r1core.train import checkpoint as ckpt
from r1core.train.config import load_config
from r1core.train.pipeline import check_stages, columns_table, recipe_stages, run_pipeline
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
    assert out["cold"].endswith("0-cold/checkpoints/step-3")          # 10 records / batch 4 -> 3 steps
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


def test_r1_final_rl_is_short_and_drops_flat_groups():
    """The final RL starts from an SFT model that already does the task (r1_small_scale.md): a third
    of run.steps, zero-variance groups dropped; pipeline.final_steps sets its length."""
    final = recipe_stages(load_config(None, ["recipe=r1", "steps=30"]))[-1]
    assert final["name"] == "final_rl" and final["set"] == {"run.steps": 10, "grpo.drop_zero_variance": True}
    assert recipe_stages(load_config(None, ["recipe=r1", "steps=2"]))[-1]["set"]["run.steps"] == 1
    assert recipe_stages(load_config(None, ["recipe=r1", "steps=0"]))[-1]["set"]["run.steps"] == 0
    assert recipe_stages(load_config(None, ["recipe=study", "steps=30", "pipeline.final_steps=25"]))[4]["set"][
        "run.steps"] == 25
    with pytest.raises(ValueError, match="pipeline.final_steps"):
        load_config(None, ["recipe=r1", "pipeline.final_steps=-1"])


def _cold_data(tmp_path, n=10):
    data = tmp_path / "cold.jsonl"
    data.write_text("".join(json.dumps({"prompt": f"{a}+{a}=", "completion": str(2 * a % 10)}) + "\n" for a in range(n)))
    return data


def _recording_deps(seen):
    deps = tiny_deps()
    deps.load_model = lambda src, **kw: seen.append(str(src)) or load_tiny(src, **kw)
    return deps


SMALL = ("sft.batch=4", "run.eval_n=4", "steps=2", "sample.prompts=16", "sample.k=8", "sample.max_new_tokens=2",
         "sample.temperature=1.0")


def test_r1_recipe_wires_and_evaluates_every_stage(tmp_path, capsys):
    data = _cold_data(tmp_path)
    cfg = tiny_config(tmp_path / "run", "recipe=r1", f"sft.data={data}", *SMALL)
    seen = []
    out = run_pipeline(cfg, deps=_recording_deps(seen))
    root = tmp_path / "run"
    assert list(out) == ["cold_start", "reasoning_rl", "rejection", "sft", "final_rl"]
    # base eval, cold start from the base, RL from it, samples from RL, SFT of the *base*, final RL from the SFT
    assert seen == ["tiny", "tiny", out["cold_start"], out["reasoning_rl"], "tiny", out["sft"]]
    stats = json.loads((root / "2-rejection" / "samples_stats.json").read_text())
    assert stats["kept"] > 0 and stats["relaxed"] == ["the format filter"]     # the tiny model never writes tags
    assert "relaxed: the format filter" in capsys.readouterr().out
    # the SFT set mixes the rejection samples with the cold-start set, two epochs (R1_SFT)
    steps = 2 * -(-(stats["kept"] + 10) // 4)
    assert out["sft"].endswith(f"3-sft/checkpoints/step-{steps}")
    summary = json.loads((root / "pipeline.json").read_text())
    assert list(summary["eval"]) == ["base", "after cold_start", "after reasoning_rl", "after sft", "after final_rl"]
    assert all("pass@1" in c and "format" in c for c in summary["eval"].values())
    secs = summary["seconds"]
    assert summary["time"]["after final_rl"]["total"] == pytest.approx(sum(secs.values()))
    assert summary["time"]["after sft"]["total"] == pytest.approx(sum(secs[n] for n in ("cold_start", "reasoning_rl",
                                                                                        "rejection", "sft")))
    table = columns_table([(n, c, summary["time"][n]) for n, c in summary["eval"].items()])
    assert "after final_rl" in table and "total time s" in table and "cons@4" not in table


def test_distill_recipe_shows_teacher_and_student(tmp_path):
    from tinyrl import TinyLM
    teacher = tmp_path / "teacher"
    TinyLM(seed=1).save_pretrained(teacher)
    cfg = tiny_config(tmp_path / "run", "recipe=distill", f"sample.teacher={teacher}", "sft.data=", *SMALL)
    seen = []
    out = run_pipeline(cfg, deps=_recording_deps(seen))
    assert seen == ["tiny", str(teacher), str(teacher), "tiny", out["student_sft"]]   # student from the base
    summary = json.loads((tmp_path / "run" / "pipeline.json").read_text())
    assert list(summary["eval"]) == ["base", "teacher", "after student_sft"]
    kept = read_sft_jsonl(out["teacher_samples"])
    assert out["student_sft"].endswith(f"step-{2 * -(-len(kept) // 4)}")   # the samples only: sft.data is empty


def test_study_recipe_runs_every_arm_and_resumes(tmp_path, capsys):
    data = _cold_data(tmp_path)
    cfg = tiny_config(tmp_path / "run", "recipe=study", f"sft.data={data}", *SMALL)
    seen = []
    deps = _recording_deps(seen)
    out = run_pipeline(cfg, deps=deps)
    root = tmp_path / "run"
    assert list(out) == ["cold_start", "reasoning_rl", "rejection", "sft", "final_rl", "teacher_samples",
                         "student_sft", "r1zero"]
    # the teacher is the final R1 model (sampled; its evaluation is final_rl's own, not repeated); the
    # student and R1-Zero start from the base model
    assert seen[-4:] == [out["final_rl"], "tiny", out["student_sft"], "tiny"]
    evals = json.loads((root / "pipeline.json").read_text())["eval"]
    teacher, final = evals["teacher"], evals["after final_rl"]
    assert teacher == {k: v for k, v in final.items() if k != "step"}
    study = json.loads((root / "study.json").read_text())
    assert list(study) == ["base", "R1-Zero", "cold start + RL", "R1", "distilled"]
    assert study["R1"]["time_s"] > study["cold start + RL"]["time_s"] > 0
    assert study["distilled"]["time_s"] > study["R1"]["time_s"]             # distillation needs the teacher first
    assert "before r1zero" in json.loads((root / "pipeline.json").read_text())["eval"]   # base, R1-Zero template
    printed = capsys.readouterr().out
    assert "the paper's comparisons" in printed and "71.0" in printed
    seen.clear()
    cfg.run.resume = True
    assert run_pipeline(cfg, deps=deps) == out and seen == []               # every stage and evaluation cached


def test_rejection_filters_relax_in_order():
    from r1core.train.rejection import filter_levels, keep
    assert [lvl[0] for lvl in filter_levels(True, 0.5)] == ["none", "the language filter", "the format filter"]
    assert filter_levels(False, 0.0) == [("none", False, 0.0)]
    group = [("a", True, False, 1.0), ("b", True, True, 0.2), ("b", True, True, 0.2), ("c", False, True, 1.0),
             ("d", True, True, 0.9)]
    assert keep(group, require_format=True, min_language=0.5, limit=4) == ["d"]
    assert keep(group, require_format=True, min_language=0.0, limit=4) == ["b", "d"]        # duplicates dropped
    assert keep(group, require_format=False, min_language=0.0, limit=2) == ["a", "b"]       # at most `limit`


def test_rejection_never_keeps_wrong_answers(tmp_path):
    from r1core.train.rejection import rejection_sample
    cfg = tiny_config(tmp_path / "run", "sample.prompts=2", "sample.k=2", "sample.max_new_tokens=1")
    deps = tiny_deps()
    deps.generate = lambda model, prompts, **kw: _fixed_rollout(prompts, kw["num_samples"], "a")
    with pytest.raises(ValueError, match="kept none of 4 samples"):
        rejection_sample(cfg, model_source="tiny", out=tmp_path / "rs", deps=deps)


def _fixed_rollout(prompts, G, text, tokenizer=None, eos=None):
    """A rollout whose every completion is `text` (tokens of the tiny vocabulary or of `tokenizer`)."""
    from tinyrl import EOS, CharTokenizer, Rollout
    tok = tokenizer or CharTokenizer()
    eos = EOS if eos is None else eos
    rows, plens = [], []
    for p in prompts:
        for _ in range(G):
            c = text(tok.decode(p)) if callable(text) else text
            ids = list(getattr(tok.encode(c), "ids", tok.encode(c)))
            rows.append(list(p) + ids + [eos])
            plens.append(len(p))
    T = max(map(len, rows))
    tokens = torch.tensor([r + [eos] * (T - len(r)) for r in rows])
    mask = torch.zeros_like(tokens, dtype=torch.bool)
    for i, (r, p) in enumerate(zip(rows, plens)):
        mask[i, p:len(r)] = True
    return Rollout(tokens, torch.tensor(plens), mask, torch.zeros(tokens.shape))


def test_embedded_default_r1_settings_give_real_rejection_and_sft_sets(tmp_path):
    """The r1/distill settings on the embedded default (the real task, rewards and tokenizer): a policy
    as good as the default run's RL checkpoint (right 40% of the time, always in format) yields a rejection
    set of well over one batch, and the SFT of the base on it (mixed with the cold-start set) runs tens of
    steps, not the 2 that lost the format."""
    import random
    import r1core
    from r1core.rewards import get
    from r1core.train.config import embedded_default
    from r1core.train.pipeline import stage_config
    from r1core.train.rejection import rejection_sample
    from r1core.train.sft import SFTTrainer
    from tinyrl import TinyLM
    tok = r1core.load_tokenizer("smollm2-135m-instruct")
    rng = random.Random(0)

    def answer(prompt):                     # "What is 47 + 38?" -> the R1 format, right 40% of the time
        a, b = (int(x) for x in prompt.removeprefix("What is ").rstrip("?").split(" + "))
        v = a + b if rng.random() < 0.4 else a + b + 1
        return f"<think>\n{a} + {b} = {v}\n</think>\n<answer>{v}</answer>"

    cfg = embedded_default()
    cfg.model.train_layers = 0
    deps = build_deps(tok, lambda prompts, G: _fixed_rollout(prompts, G, answer, tok, tok.eos_token_id))
    for recipe in ("r1", "distill"):
        cfg.pipeline.recipe, cfg.sample.teacher = recipe, "teacher"
        stages = recipe_stages(cfg)
        i = [s["kind"] for s in stages].index("sample")
        sc = stage_config(cfg, stages[i], tmp_path / recipe / "rs")
        path = rejection_sample(sc, model_source="tiny", out=sc.run.out, deps=deps)
        kept = read_sft_jsonl(path)
        assert len(kept) >= 2 * cfg.sft.batch
        assert all(get("format")(r["completion"]) == 1.0 and get("accuracy")(r["completion"], answer=r["answer"]) == 1.0
                   for r in kept)
        sft = stages[i + 1]
        sc = stage_config(cfg, sft, tmp_path / recipe / "sft")
        assert sft["data"] == ["prev", "config"] and sft["init"] == "base"
        t = SFTTrainer(sc, data=[str(path), sc.sft.data], init="tiny", deps=deps)
        assert t.data_counts == {str(path): len(kept), "builtin:arithmetic": cfg.sft.examples}
        assert t.total >= 20


def build_deps(tok, rollout):
    from r1core.train.build import Deps
    from tinyrl import load_tiny
    return Deps(load_model=load_tiny, load_tokenizer=lambda src: tok,
                generate=lambda model, prompts, **kw: rollout(prompts, kw["num_samples"]))
