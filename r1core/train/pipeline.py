"""The R1 recipes as stages in one config (`pipeline.recipe`), each stage one trainer.

    grpo     one GRPO stage with the configured task and template
    cold_start_rl  the first two stages of R1: cold-start SFT on sft.data (default: the built-in
             formatted single-digit arithmetic set), then GRPO on the task (the embedded default run)
    r1zero   R1-Zero: GRPO from the base model with the R1-Zero text template, accuracy + format rewards
    r1       R1: cold-start SFT on sft.data (long chain-of-thought JSONL)
             -> reasoning RL with accuracy + format + language-consistency rewards
             -> rejection sampling of the RL policy (correct, well-formed, target-language answers)
             -> SFT of the base model on those samples -> a final RL stage
    distill  sample the teacher (sample.teacher), keep correct well-formed answers, SFT the student
             (model.source) on them
    custom   pipeline.stages: [{name, kind: grpo|sft|sample, init, data, set: {key: value}}]

A stage's `init` is "base" (model.source), "prev" (the previous stage's output; the default) or
any checkpoint / model folder, so a stage can start from any checkpoint.  `data` (sft stages) is
"prev" (the previous sample stage's JSONL; the default when there is one), "config" (sft.data) or a
path.  `set` holds overrides for that stage only (`{run.steps: 50, task.rewards: {...}}`).  Stage i
writes to `<run.out>/<i>-<name>/` (the single-stage `grpo`/`r1zero` recipes write to run.out itself)
and marks itself done with `stage.json`; with resume=true finished stages are skipped and the
interrupted one resumes from its newest checkpoint.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from r1core.train import build, checkpoint as ckpt, distributed as D
from r1core.train.config import Config, set_option, set_override, validate

KINDS = ("grpo", "sft", "sample")


def recipe_stages(cfg: Config) -> list[dict]:
    """The stage list of cfg.pipeline.recipe."""
    recipe = cfg.pipeline.recipe
    if recipe == "grpo":
        return [{"name": "rl", "kind": "grpo"}]
    if recipe == "cold_start_rl":
        return [{"name": "cold_start", "kind": "sft", "init": "base", "data": "config"},
                {"name": "rl", "kind": "grpo", "init": "prev"}]
    if recipe == "r1zero":
        return [{"name": "r1zero", "kind": "grpo", "set": {"task.template": "r1zero"}}]
    if recipe == "r1":
        if not cfg.sft.data:
            raise ValueError("pipeline.recipe=r1 needs sft.data: a JSONL of {prompt, completion} cold-start "
                             "examples (long chain of thought in <think>…</think><answer>…</answer>)")
        lang = {"task.rewards": {**(cfg.task.rewards or {"accuracy": 1.0, "format": 0.1}), "language": 0.1}}
        return [
            {"name": "cold_start", "kind": "sft", "init": "base", "data": "config"},
            {"name": "reasoning_rl", "kind": "grpo", "init": "prev", "set": lang},
            {"name": "rejection", "kind": "sample", "init": "prev"},
            {"name": "sft", "kind": "sft", "init": "base", "data": "prev"},
            {"name": "final_rl", "kind": "grpo", "init": "prev"},
        ]
    if recipe == "distill":
        if not cfg.sample.teacher:
            raise ValueError("pipeline.recipe=distill needs sample.teacher: the model that writes the samples")
        return [
            {"name": "teacher_samples", "kind": "sample", "init": cfg.sample.teacher},
            {"name": "student_sft", "kind": "sft", "init": "base", "data": "prev"},
        ]
    if recipe == "custom":
        if not cfg.pipeline.stages:
            raise ValueError("pipeline.recipe=custom needs pipeline.stages")
        return [dict(s) for s in cfg.pipeline.stages]
    raise ValueError(f"pipeline.recipe: unknown {recipe!r}")


def check_stages(stages: list[dict]) -> None:
    names = set()
    for i, s in enumerate(stages):
        if not isinstance(s, dict):
            raise ValueError(f"pipeline stage {i}: expected a mapping, got {s!r}")
        unknown = set(s) - {"name", "kind", "init", "data", "set"}
        if unknown:
            raise ValueError(f"pipeline stage {i}: unknown keys {sorted(unknown)} (name, kind, init, data, set)")
        if s.get("kind") not in KINDS:
            raise ValueError(f"pipeline stage {i}: kind must be one of {KINDS}, got {s.get('kind')!r}")
        name = s.setdefault("name", f"{s['kind']}{i}")
        if name in names:
            raise ValueError(f"pipeline stage names must be unique, {name!r} repeats")
        names.add(name)
        if not isinstance(s.get("set", {}), dict):
            raise ValueError(f"pipeline stage {name!r}: set must be a mapping of config keys")


def stage_config(cfg: Config, stage: dict, out: Path) -> Config:
    sc = copy.deepcopy(cfg)
    for k, v in stage.get("set", {}).items():
        if isinstance(v, str):
            set_override(sc, k, v)
        else:
            set_option(sc, k, v)
    set_option(sc, "run.out", str(out))
    validate(sc)
    return sc


def run_pipeline(cfg: Config, *, deps: build.Deps | None = None) -> dict:
    """Run every stage of the recipe; returns {stage name: its output (checkpoint or JSONL path)}."""
    deps = deps or build.Deps()
    stages = recipe_stages(cfg)
    check_stages(stages)
    info = D.init(cfg.model.device)
    build.set_threads(cfg)
    root = Path(cfg.run.out)
    single = len(stages) == 1
    t0, c0 = time.perf_counter(), time.process_time()
    outputs: dict[str, str] = {}
    prev_model, prev_data = None, None
    columns: list[tuple[str, dict]] = []
    try:
        if cfg.run.eval_n and not single and any(s["kind"] == "grpo" for s in stages):
            columns.append(("base", _evaluate_base(cfg, deps, info, root)))
        for i, stage in enumerate(stages):
            out = root if single else root / f"{i}-{stage['name']}"
            marker = out / "stage.json"
            if cfg.run.resume and marker.exists() and not single:
                done = json.loads(marker.read_text())
                outputs[stage["name"]] = done["output"]
                prev_model, prev_data = _advance(stage, done["output"], prev_model, prev_data)
                if info.main:
                    print(f"stage {i} {stage['name']}: done earlier -> {done['output']}")
                continue
            sc = stage_config(cfg, stage, out)
            init = _resolve_init(stage.get("init", "prev"), cfg, prev_model)
            if info.main and not single:
                print(f"\n== stage {i}: {stage['name']} ({stage['kind']}) from {init} -> {out}")
            output = _run_stage(stage, sc, init, prev_data, deps, info)
            outputs[stage["name"]] = output
            prev_model, prev_data = _advance(stage, output, prev_model, prev_data)
            if info.main:
                out.mkdir(parents=True, exist_ok=True)
                marker.write_text(json.dumps({"stage": stage, "output": output}))
    finally:
        D.shutdown(info)
    if info.main and not single:
        for i, stage in enumerate(stages):
            ev = root / f"{i}-{stage['name']}" / "eval.json"
            if stage["kind"] == "grpo" and ev.exists():
                data = json.loads(ev.read_text())
                if i > 0 and data.get("before"):
                    columns.append((f"after {stages[i - 1]['name']}", data["before"]))
                if data.get("after"):
                    columns.append((f"after {stage['name']}", data["after"]))
        (root / "pipeline.json").write_text(json.dumps({"outputs": outputs, "eval": dict(columns)}, indent=1))
        print("\npipeline outputs:\n" + "\n".join(f"  {k}: {v}" for k, v in outputs.items()))
        print(f"time: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU (rank 0, all threads)")
        if columns:
            print("\n" + columns_table(columns))
    return outputs


def columns_table(columns: list[tuple[str, dict]], keys=("pass@1", "format", "completion_len")) -> str:
    """Held-out metrics side by side, one column per model (base, after each stage)."""
    keys = [k for k in keys if all(k in c for _, c in columns)] + \
        sorted({k for _, c in columns for k in c if k.startswith("cons@")} & set.intersection(*(set(c) for _, c in columns)))
    w = max(12, *(len(n) + 2 for n, _ in columns))
    lines = [f"{'held-out':16s}" + "".join(f"{n:>{w}s}" for n, _ in columns)]
    for k in keys:
        lines.append(f"{k:16s}" + "".join(f"{c[k]:{w}.3f}" for _, c in columns))
    return "\n".join(lines)


def _evaluate_base(cfg: Config, deps, info, root: Path) -> dict:
    """Held-out metrics of model.source before any stage (cached in <out>/eval_base.json)."""
    from r1core.train.evaluate import evaluate_policy
    path = root / "eval_base.json"
    if cfg.run.resume and path.exists():
        return json.loads(path.read_text())
    tok = deps.load_tokenizer(build.tokenizer_source(cfg))
    task = build.load_task(cfg, tok, deps)
    model = build.load_policy(cfg.model.source, cfg, info.device, deps).eval()
    result = evaluate_policy(model, tok, task, n=cfg.run.eval_n, k=cfg.run.eval_k, temperature=cfg.run.eval_temperature,
                             max_new_tokens=cfg.rollout.max_new_tokens, seed=build.call_seed(cfg.run.seed, 7),
                             gen_batch=cfg.rollout.gen_batch, info=info, deps=deps)
    if info.main:
        root.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(result, indent=1))
        print(f"base model on held-out {cfg.task.name}: pass@1 {result['pass@1']:.3f}  format {result['format']:.3f}")
    del model
    return result


def _advance(stage, output, prev_model, prev_data):
    return (prev_model, output) if stage["kind"] == "sample" else (output, prev_data)


def _resolve_init(init: str, cfg: Config, prev_model: str | None) -> str:
    if init == "base":
        return cfg.model.source
    if init == "prev":
        return prev_model or cfg.model.source
    p = Path(init)
    if p.is_dir() and (p / "checkpoints").is_dir():   # a run folder: its newest checkpoint
        latest = ckpt.latest_checkpoint(p)
        if latest is None:
            raise ValueError(f"stage init {init!r} is a run folder without checkpoints")
        return str(latest)
    return init


def _run_stage(stage: dict, sc: Config, init: str, prev_data: str | None, deps, info) -> str:
    kind = stage["kind"]
    if kind == "grpo":
        from r1core.train.grpo import GRPOTrainer
        trainer = GRPOTrainer(sc, deps=deps, info=info, init=init)
        trainer.train()
        return str(ckpt.latest_checkpoint(sc.run.out))
    if kind == "sft":
        from r1core.train.sft import SFTTrainer
        data = stage.get("data", "prev" if prev_data else "config")
        data = sc.sft.data if data == "config" else (prev_data if data == "prev" else data)
        if not data:
            raise ValueError(f"stage {stage['name']!r}: no SFT data (set sft.data or put a sample stage before it)")
        return str(SFTTrainer(sc, data=data, init=init, deps=deps, info=info).train())
    from r1core.train.rejection import rejection_sample
    teacher = sc.sample.teacher if stage.get("init") == sc.sample.teacher else None
    return str(rejection_sample(sc, model_source=init, out=sc.run.out, deps=deps, info=info,
                                tokenizer_source=teacher))
