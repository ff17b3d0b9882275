"""The R1 recipes as stages in one config (`pipeline.recipe`), each stage one trainer.

    grpo     one GRPO stage with the configured task and template
    cold_start_rl  the first two stages of R1: cold-start SFT on sft.data (default: the built-in
             formatted single-digit arithmetic set), then GRPO on the task (the embedded default run)
    r1zero   R1-Zero: GRPO from the base model with the R1-Zero text template, accuracy + format rewards
    r1       R1: cold-start SFT on sft.data (long chain-of-thought JSONL)
             -> reasoning RL with accuracy + format + language-consistency rewards
             -> rejection sampling of the RL policy (correct, well-formed, target-language answers)
             -> SFT of the base model on those samples mixed with sft.data, two epochs -> a short final RL
             stage (pipeline.final_steps, zero-variance groups dropped)
    distill  sample the teacher (sample.teacher), keep correct well-formed answers, SFT the student
             (model.source) on them (mixed with sft.data when set), two epochs
    study    r1, then distill with the final R1 model as the teacher, then r1zero from the base model:
             the paper's comparisons in one run (r1core.train.study prints them as one table)
    custom   pipeline.stages: [{name, kind: grpo|sft|sample, init, data, set: {key: value}}]

A stage's `init` is "base" (model.source), "prev" (the previous stage's output; the default), the
name of an earlier stage, or any checkpoint / model folder, so a stage can start from any checkpoint.
`data` (sft stages) is a source or a list of sources, mixed: "prev" (the previous sample stage's JSONL;
the default when there is one), the name of an earlier sample stage, "config" (sft.data; skipped in a
list when empty) or a path.  `set` holds overrides for that stage only (`{run.steps: 50, task.rewards:
{...}}`); `teacher: true` on a sample stage evaluates its model first and uses that model's tokenizer.
Stage i writes to `<run.out>/<i>-<name>/` (the single-stage `grpo`/`r1zero` recipes write to run.out
itself) and marks itself done with `stage.json` (with its wall time); with resume=true finished
stages are skipped and the interrupted one resumes from its newest checkpoint.
"""
from __future__ import annotations

import copy
import json
import time
from pathlib import Path

from r1core.train import build, checkpoint as ckpt, distributed as D
from r1core.train import preflight, rundir
from r1core.train.config import SHORTCUTS, Config, options, reset_task_if_renamed, set_option, set_override, validate

KINDS = ("grpo", "sft", "sample")


# The SFT stage after rejection sampling / of a distilled student, chosen by experiment on the embedded
# default (docs/train.md, "The R1 pipeline as stages"; docs/r1_small_scale.md): it mixes the samples
# with sft.data (R1 mixes in non-reasoning data; here the cold-start set keeps the format in every
# batch) and makes two passes, as the paper's SFT does.  With one pass over 38 samples (2 steps) the
# base model never learnt the format.  How many samples are drawn and kept is sample.* (the embedded
# default: 256 prompts x 4, up to 4 distinct correct per prompt).
R1_SFT = {"sft.epochs": 2.0}


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
        return _r1_stages(cfg)
    if recipe == "distill":
        if not cfg.sample.teacher:
            raise ValueError("pipeline.recipe=distill needs sample.teacher: the model that writes the samples")
        return _distill_stages(cfg.sample.teacher)
    if recipe == "study":
        # the paper's comparisons in one run: R1 (whose first two stages are "cold start + RL"), the
        # R1 model distilled into the base, and R1-Zero (pure RL from the base, the R1-Zero template)
        return [*_r1_stages(cfg), *_distill_stages("final_rl"),
                {"name": "r1zero", "kind": "grpo", "init": "base", "set": {"task.template": "r1zero"}}]
    if recipe == "custom":
        if not cfg.pipeline.stages:
            raise ValueError("pipeline.recipe=custom needs pipeline.stages")
        return [dict(s) for s in cfg.pipeline.stages]
    raise ValueError(f"pipeline.recipe: unknown {recipe!r}")


def _r1_stages(cfg: Config) -> list[dict]:
    if not cfg.sft.data:
        raise ValueError(f"pipeline.recipe={cfg.pipeline.recipe} needs sft.data: a JSONL of {{prompt, completion}} "
                         "cold-start examples (long chain of thought in <think>…</think><answer>…</answer>)")
    lang = {"task.rewards": {**(cfg.task.rewards or {"accuracy": 1.0, "format": 0.1}), "language": 0.1}}
    return [
        {"name": "cold_start", "kind": "sft", "init": "base", "data": "config"},
        {"name": "reasoning_rl", "kind": "grpo", "init": "prev", "set": lang},
        {"name": "rejection", "kind": "sample", "init": "prev"},
        {"name": "sft", "kind": "sft", "init": "base", "data": ["prev", "config"], "set": dict(R1_SFT)},
        {"name": "final_rl", "kind": "grpo", "init": "prev", "set": final_rl_settings(cfg)},
    ]


def final_rl_settings(cfg: Config) -> dict:
    """The r1 recipe's second RL stage: pipeline.final_steps GRPO steps (0: a third of run.steps) that drop
    the groups whose rewards are all equal.  It starts from an SFT model that already does the task: on
    the embedded default the SFT model's held-out pass@1 is 0.996 and 96% of its groups are all-correct,
    so with 30 full steps it spent 10 of the recipe's 28 minutes on updates whose advantages are all zero
    (docs/r1_small_scale.md)."""
    steps = cfg.pipeline.final_steps or (max(1, cfg.run.steps // 3) if cfg.run.steps else 0)
    return {"run.steps": steps, "grpo.drop_zero_variance": True}


def _distill_stages(teacher: str) -> list[dict]:
    """Sample the teacher, SFT the base model on its correct answers (plus sft.data when set, as in r1)."""
    return [
        {"name": "teacher_samples", "kind": "sample", "init": teacher, "teacher": True},
        {"name": "student_sft", "kind": "sft", "init": "base", "data": ["prev", "config"], "set": dict(R1_SFT)},
    ]


def check_stages(stages: list[dict]) -> None:
    names = set()
    for i, s in enumerate(stages):
        if not isinstance(s, dict):
            raise ValueError(f"pipeline stage {i}: expected a mapping, got {s!r}")
        unknown = set(s) - STAGE_KEYS
        if unknown:
            raise ValueError(f"pipeline stage {i}: unknown keys {sorted(unknown)} ({', '.join(sorted(STAGE_KEYS))})")
        if s.get("kind") not in KINDS:
            raise ValueError(f"pipeline stage {i}: kind must be one of {KINDS}, got {s.get('kind')!r}")
        name = s.setdefault("name", f"{s['kind']}{i}")
        if name in names:
            raise ValueError(f"pipeline stage names must be unique, {name!r} repeats")
        names.add(name)
        if not isinstance(s.get("set", {}), dict):
            raise ValueError(f"pipeline stage {name!r}: set must be a mapping of config keys")
        data = s.get("data", [])
        if not isinstance(data, (str, list)) or not all(isinstance(d, str) for d in ([data] if isinstance(data, str) else data)):
            raise ValueError(f"pipeline stage {name!r}: data must be a source or a list of sources, got {data!r}")


STAGE_KEYS = {"name", "kind", "init", "data", "set", "teacher"}


def stage_config(cfg: Config, stage: dict, out: Path) -> Config:
    sc = copy.deepcopy(cfg)
    sets = stage.get("set", {})
    renamed = [v for k, v in sets.items() if SHORTCUTS.get(k, k) == "task.name"]
    if renamed:                      # a stage on another task starts from that task's own args and rewards
        reset_task_if_renamed(sc, str(renamed[-1]))
    for k, v in sets.items():
        if isinstance(v, str):
            set_override(sc, k, v)
        else:
            set_option(sc, k, v)
    set_option(sc, "run.out", str(out))
    validate(sc)
    return sc


def check_stage_configs(cfg: Config, stages: list[dict], root: Path, deps) -> None:
    """Every stage's config (the run's plus the stage's `set`) validated and its task built once, before
    the first stage starts: a bad setting of stage 3 fails now, not after stages 0-2."""
    preflight.check_task(cfg, deps)
    check_async(cfg, stages)
    for i, stage in enumerate(stages):
        if not stage.get("set"):
            continue
        try:
            sc = stage_config(cfg, stage, root)
            if stage["kind"] != "sft":
                preflight.check_task(sc, deps)
        except ValueError as e:
            raise ValueError(f"pipeline stage {i} ({stage['name']}): {e}") from None


def check_async(cfg: Config, stages: list[dict]) -> None:
    """rollout.async overlaps a GRPO stage's rollout with its update: an sft or sample stage has no update to
    overlap (a run-wide rollout.async=true applies to the grpo stages only), so asking it of one fails here."""
    for i, stage in enumerate(stages):
        if stage["kind"] != "grpo" and "rollout.async" in stage.get("set", {}):
            sc = copy.deepcopy(cfg)
            v = stage["set"]["rollout.async"]
            set_override(sc, "rollout.async", v) if isinstance(v, str) else set_option(sc, "rollout.async", v)
            if sc.rollout.async_:
                raise ValueError(f"pipeline stage {i} ({stage['name']}): config key 'rollout.async' = true, but a "
                                 f"{stage['kind']} stage cannot run asynchronously (only grpo stages overlap their "
                                 "rollout with the update)")
    if cfg.rollout.async_ and not any(s["kind"] == "grpo" for s in stages):
        raise ValueError(f"config key 'rollout.async' = true, but pipeline.recipe={cfg.pipeline.recipe} has no grpo "
                         f"stage (its {', '.join(sorted({s['kind'] for s in stages}))} stages cannot run asynchronously)")


def _prepare_out(cfg: Config, info) -> None:
    """rundir.prepare_out on rank 0; the other ranks raise the same error or wait for its folder."""
    result = None
    if info.main:
        try:
            result = ("ok", rundir.prepare_out(cfg))
        except ValueError as e:
            result = ("error", str(e))
    result = D.all_gather_objects(result, info)[0]
    if result[0] == "error":
        raise ValueError(result[1])
    if result[1] and info.main:
        print(result[1], flush=True)


def run_pipeline(cfg: Config, *, deps: build.Deps | None = None) -> dict:
    """Run every stage of the recipe; returns {stage name: its output (checkpoint or JSONL path)}.

    Every model a stage produces is evaluated on the held-out split (GRPO stages evaluate themselves
    before and after; an SFT stage is evaluated by the GRPO stage that starts from it, or here when
    none does; a teacher is evaluated before it is sampled, unless it is an earlier stage's output that
    stage has evaluated with the same settings) and the end prints them side by side with
    each stage's wall time and the total time of the stages each model depends on."""
    deps = deps or build.Deps()
    stages = recipe_stages(cfg)
    check_stages(stages)
    root = Path(cfg.run.out)
    single = len(stages) == 1
    check_stage_configs(cfg, stages, root, deps)
    info = D.init(cfg.model.device)
    build.set_threads(cfg)
    t0, c0 = time.perf_counter(), time.process_time()
    outputs: dict[str, str] = {}
    seconds: dict[str, float | None] = {}
    lineage: dict[str, set[str]] = {}        # the stages a stage's output depends on (itself included)
    prev_model, prev_data = None, None       # names of the stages that made the current model / data
    measured: dict[tuple[str, str], dict] = {}   # (checkpoint, eval settings) -> its held-out metrics
    try:
        _prepare_out(cfg, info)
        if cfg.run.eval_n and not single:
            _evaluate_model(cfg, cfg.model.source, root / "eval_base.json", deps, info, label="base model")
        for i, stage in enumerate(stages):
            name, kind = stage["name"], stage["kind"]
            out = root if single else root / f"{i}-{name}"
            init_ref = _init_stage(stage, prev_model, outputs)
            data_refs = _data_stages(stage, prev_data, outputs) if kind == "sft" else []
            lineage[name] = {name}.union(*(lineage[r] for r in [init_ref, *data_refs] if r))
            marker = out / "stage.json"
            if cfg.run.resume and marker.exists() and not single:
                done = _read_marker(marker)
                outputs[name], seconds[name] = done["output"], done.get("seconds")
                if kind == "grpo":
                    _remember_eval(measured, outputs[name], stage_config(cfg, stage, out), out / "eval.json")
                prev_model, prev_data = (prev_model, name) if kind == "sample" else (name, prev_data)
                if info.main:
                    print(f"stage {i} {name}: done earlier -> {done['output']}")
                continue
            sc = stage_config(cfg, stage, out)
            init = _resolve_init(stage.get("init", "prev"), cfg, prev_model and outputs[prev_model], outputs)
            if info.main and not single:
                print(f"\n== stage {i}: {name} ({kind}) from {init} -> {out}")
            if kind == "sample" and stage.get("teacher") and sc.run.eval_n:
                _evaluate_model(sc, init, out / "eval_teacher.json", deps, info, label="teacher", tokenizer=init,
                                measured=measured)
            ts = time.perf_counter()
            data = _resolve_data(stage, sc, data_refs, outputs) if kind == "sft" else None
            output = _run_stage(stage, sc, init, data, deps, info)
            if kind == "sft" and sc.run.eval_n and not _next_evaluates(stages, i):
                _evaluate_model(sc, output, out / "eval.json", deps, info, label=f"after {name}", key="after")
            seconds[name] = time.perf_counter() - ts
            outputs[name] = output
            if kind == "grpo":
                _remember_eval(measured, output, sc, out / "eval.json")
            prev_model, prev_data = (prev_model, name) if kind == "sample" else (name, prev_data)
            if info.main:
                out.mkdir(parents=True, exist_ok=True)
                marker.write_text(json.dumps({"stage": stage, "output": output, "seconds": seconds[name]}))
    finally:
        D.shutdown(info)
    if info.main and not single:
        columns = stage_columns(stages, root, seconds, lineage)
        summary = {"outputs": outputs, "seconds": seconds, "eval": {n: c for n, c, _ in columns},
                   "time": {n: t for n, _, t in columns}}
        (root / "pipeline.json").write_text(json.dumps(summary, indent=1))
        print("\npipeline outputs:\n" + "\n".join(f"  {k}: {v}" for k, v in outputs.items()))
        print(f"time: {time.perf_counter() - t0:.0f} s wall, {time.process_time() - c0:.0f} s CPU (rank 0, all threads)")
        if columns:
            print("\n" + columns_table(columns))
        if cfg.pipeline.recipe == "study":
            from r1core.train.study import report
            report(root, columns, plot=cfg.run.plot)
    return outputs


def _read_marker(marker: Path) -> dict:
    try:
        done = json.loads(marker.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{marker}: not valid JSON ({e}); delete it to rerun that stage") from None
    if not isinstance(done, dict) or not isinstance(done.get("output"), str):
        raise ValueError(f"{marker}: not a stage marker (no output path); delete it to rerun that stage")
    return done


def stage_columns(stages: list[dict], root: Path, seconds: dict, lineage: dict) -> list[tuple[str, dict, dict]]:
    """[(column name, held-out metrics, {"stage": s, "total": s})] in stage order: the base model, a
    teacher before its samples, each model a stage produced (and a GRPO stage's starting point when
    no earlier column is that model, e.g. the base model under another template)."""
    def load(path, key=None):
        if not path.exists():
            return None
        d = json.loads(path.read_text())
        return d.get(key) if key else d

    def timing(name):
        own = seconds.get(name)
        parts = [seconds.get(n) for n in lineage.get(name, {name})]
        return {"stage": own, "total": None if any(p is None for p in parts) else sum(parts)}

    cols = []
    base = load(root / "eval_base.json")
    if base:
        cols.append(("base", base, {"stage": None, "total": None}))
    consumed = set()
    for i, stage in enumerate(stages):
        d, name = root / f"{i}-{stage['name']}", stage["name"]
        if stage["kind"] == "sample":
            teacher = load(d / "eval_teacher.json")
            if teacher:
                cols.append(("teacher", teacher, {"stage": None, "total": None}))
            continue
        if stage["kind"] == "grpo":
            before = load(d / "eval.json", "before")
            if before and i not in consumed:
                cols.append((f"before {name}", before, {"stage": None, "total": None}))
            after = load(d / "eval.json", "after")
        else:
            after = load(d / "eval.json", "after")
            if after is None and _next_evaluates(stages, i):
                after = load(root / f"{i + 1}-{stages[i + 1]['name']}" / "eval.json", "before")
                consumed.add(i + 1)
        if after:
            cols.append((f"after {name}", after, timing(name)))
    return cols


def columns_table(columns, keys=("pass@1", "format", "language", "completion_len")) -> str:
    """Held-out metrics side by side, one column per model (base, after each stage), then the
    stage's wall time and the total time of the stages that model depends on ("-": not measured)."""
    columns = [(c[0], c[1], c[2] if len(c) > 2 else {}) for c in columns]
    have = set().union(*(set(c) for _, c, _ in columns))
    rows = [k for k in keys if k in have] + sorted(k for k in have if k.startswith("cons@"))
    w = max(12, *(len(n) + 2 for n, _, _ in columns))
    lines = [f"{'held-out':16s}" + "".join(f"{n:>{w}s}" for n, _, _ in columns)]
    for k in rows:
        lines.append(f"{k:16s}" + "".join(f"{c[k]:{w}.3f}" if k in c else f"{'-':>{w}s}" for _, c, _ in columns))
    if any(t for _, _, t in columns):
        for k, label in (("stage", "stage time s"), ("total", "total time s")):
            lines.append(f"{label:16s}" + "".join(f"{t[k]:{w}.0f}" if t.get(k) is not None else f"{'-':>{w}s}"
                                                 for _, _, t in columns))
    return "\n".join(lines)


def _evaluate_model(cfg: Config, source: str, path: Path, deps, info, *, label: str, tokenizer: str | None = None,
                    key: str | None = None, measured: dict | None = None) -> dict:
    """Held-out metrics of `source` (cached in `path`, under `key` when given).  `measured` holds earlier
    evaluations by (checkpoint, settings): one of `source` with these settings is reused, not repeated
    (the study's teacher is the final RL stage's output, which that stage has just evaluated)."""
    from r1core.train.evaluate import evaluate_policy
    if cfg.run.resume and path.exists():
        d = json.loads(path.read_text())
        return d[key] if key else d
    known = (measured or {}).get((source, _eval_signature(cfg)))
    if known is not None:
        result, note = {k: v for k, v in known.items() if k != "step"}, " (measured earlier, not repeated)"
    else:
        tok = deps.load_tokenizer(tokenizer or build.tokenizer_source(cfg))
        task = build.load_task(cfg, tok, deps)
        model = build.load_policy(source, cfg, info.device, deps).eval()
        result = evaluate_policy(model, tok, task, n=cfg.run.eval_n, k=cfg.run.eval_k,
                                 temperature=cfg.run.eval_temperature, max_new_tokens=cfg.rollout.max_new_tokens,
                                 seed=build.call_seed(cfg.run.seed, 7), gen_batch=cfg.rollout.gen_batch, info=info,
                                 deps=deps, progress=cfg.run.progress)
        note = ""
        del model
    if info.main:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({key: result} if key else result, indent=1))
        print(f"{label} on held-out {cfg.task.name}: pass@1 {result['pass@1']:.3f}  format {result['format']:.3f}{note}")
    return result


def _eval_signature(cfg: Config) -> str:
    """The values of every option that changes what a held-out evaluation of a given checkpoint measures."""
    return json.dumps({k: v for k, v, *_ in options(cfg) if k.startswith(_MEASURE_KEYS)}, sort_keys=True,
                      default=str)


def _remember_eval(measured: dict, output: str, cfg: Config, path: Path) -> None:
    """A GRPO stage's final evaluation is that of the checkpoint it returns (same seed and settings)."""
    if path.exists():
        after = json.loads(path.read_text()).get("after")
        if after:
            measured[(output, _eval_signature(cfg))] = after


# options that change what a held-out evaluation measures: a GRPO stage that sets none of them and
# starts from the previous stage's model evaluates exactly that model first (its "before")
_EVAL_KEYS = ("task.name", "task.args", "task.template", "task.system", "rollout.max_new_tokens", "run.eval",
              "run.seed", "model.tokenizer")
# every option that changes an evaluation's numbers (the list above, which decides the columns, leaves
# some out): two evaluations of one checkpoint are the same measurement only if they agree on all of them
_MEASURE_KEYS = _EVAL_KEYS + ("task.mixture", "task.rewards", "task.lang", "rollout.gen_batch", "model.dtype")


def _next_evaluates(stages: list[dict], i: int) -> bool:
    if i + 1 >= len(stages):
        return False
    nxt = stages[i + 1]
    return nxt["kind"] == "grpo" and nxt.get("init", "prev") == "prev" and \
        not any(k.startswith(_EVAL_KEYS) for k in nxt.get("set", {}))


def _init_stage(stage: dict, prev_model: str | None, outputs: dict) -> str | None:
    """The name of the stage whose output `stage` starts from (None: the base model or a path)."""
    init = stage.get("init", "prev")
    if init == "prev":
        return prev_model
    return init if init in outputs else None


def _data_stages(stage: dict, prev_data: str | None, outputs: dict) -> list[str]:
    """Names of the sample stages whose JSONL an sft stage reads."""
    refs = []
    for d in _data_list(stage, prev_data):
        if d == "prev":
            if prev_data is None:
                raise ValueError(f"stage {stage['name']!r}: data 'prev' but no sample stage comes before it")
            refs.append(prev_data)
        elif d in outputs:
            refs.append(d)
    return refs


def _data_list(stage: dict, prev_data: str | None) -> list[str]:
    data = stage.get("data", "prev" if prev_data else "config")
    return [data] if isinstance(data, str) else list(data)


def _resolve_data(stage: dict, sc: Config, refs: list[str], outputs: dict) -> list[str]:
    """The JSONL files (or builtin: sets) of an sft stage.  In a list, "config" without sft.data is
    skipped (the distillation data alone); alone it must name data."""
    items = _data_list(stage, refs[0] if refs else None)
    out, at = [], 0
    for d in items:
        if d == "prev" or d in outputs:
            out.append(outputs[refs[at]])
            at += 1
        elif d == "config":
            if sc.sft.data:
                out.append(sc.sft.data)
        else:
            out.append(d)
    if not out:
        raise ValueError(f"stage {stage['name']!r}: no SFT data (set sft.data or put a sample stage before it)")
    return out


def _resolve_init(init: str, cfg: Config, prev_output: str | None, outputs: dict) -> str:
    if init == "base":
        return cfg.model.source
    if init == "prev":
        return prev_output or cfg.model.source
    if init in outputs:                                   # an earlier stage, by name
        return outputs[init]
    p = Path(init)
    if p.is_dir() and (p / "checkpoints").is_dir():   # a run folder: its newest checkpoint
        latest = ckpt.latest_checkpoint(p)
        if latest is None:
            raise ValueError(f"stage init {init!r} is a run folder without checkpoints")
        return str(latest)
    return init


def _run_stage(stage: dict, sc: Config, init: str, data: list[str] | None, deps, info) -> str:
    kind = stage["kind"]
    if kind == "grpo":
        from r1core.train.grpo import GRPOTrainer
        trainer = GRPOTrainer(sc, deps=deps, info=info, init=init)
        trainer.train()
        return str(ckpt.latest_checkpoint(sc.run.out))
    if kind == "sft":
        from r1core.train.sft import SFTTrainer
        trainer = SFTTrainer(sc, data=data, init=init, deps=deps, info=info)
        if info.main:
            mix = ", ".join(f"{n} from {Path(k).parent.name + '/' + Path(k).name if '/' in k else k}"
                            for k, n in trainer.data_counts.items())
            print(f"sft: {len(trainer.seqs)} records ({mix}), {trainer.total} steps of {sc.sft.batch} "
                  f"at lr {sc.sft.lr:g}")
        return str(trainer.train())
    from r1core.train.rejection import rejection_sample
    teacher = init if stage.get("teacher") else None
    return str(rejection_sample(sc, model_source=init, out=sc.run.out, deps=deps, info=info,
                                tokenizer_source=teacher))
