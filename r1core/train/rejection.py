"""Rejection sampling: sample k answers per training prompt, keep the correct, well-formed,
language-consistent ones, write them as an SFT JSONL (R1 pipeline stage 3; distillation data).

Kept: correctness reward (the task's, e.g. accuracy or countdown) == 1, format reward == 1 (the
<think>…</think><answer>…</answer> shape; sample.require_format), language reward >= sample.min_language; duplicates
dropped; at most sample.keep_per_prompt per prompt.  Records: {"prompt": question, "completion",
"answer"} — the question, not the rendered prompt, so the SFT stage renders it with its own
template and tokenizer (a teacher's chat format never leaks into the student).

When no sample passes every filter (a smoke run's barely trained policy), the filters are relaxed one
at a time — first the language filter, then the format filter — and the relaxation is printed and
recorded in samples_stats.json ("relaxed").  Correctness is never relaxed: with no correct sample at
all the stage fails, since SFT on wrong answers would teach them.
"""
from __future__ import annotations

import json
from pathlib import Path

from r1core.train import build, distributed as D
from r1core.train.config import Config
from r1core.train.sampling import sample

# prompts per generate() call when rollout.gen_batch is 0: hundreds of prompts x k samples in one call
# would hold a KV cache of every row at once (1024 rows of SmolLM2-135M at 60 positions: ~2.8 GB)
CHUNK = 64


def rejection_sample(cfg: Config, *, model_source: str, out: str | Path, deps: build.Deps | None = None,
                     info: D.DistInfo | None = None, tokenizer_source: str | None = None) -> Path:
    """Write `out`/samples.jsonl from `model_source` (a teacher, or the stage's own checkpoint)."""
    from r1core.rewards import get
    deps = deps or build.Deps()
    info = info or D.init(cfg.model.device)
    build.set_threads(cfg)
    out = Path(out)
    sc = cfg.sample
    tok = deps.load_tokenizer(tokenizer_source or build.tokenizer_source(cfg))
    task = build.load_task(cfg, tok, deps)
    model = build.load_policy(model_source, cfg, info.device, deps).eval()
    examples = task.train(sc.prompts or 1024, seed=build.call_seed(cfg.run.seed, 31337))
    per = -(-len(examples) // info.world)
    first = info.rank * per
    mine = examples[first:first + per]
    fmt_fn, lang_fn = get("format"), get("language")
    seen_total, scored = 0, []            # per prompt: [(completion, correct, format, language)]
    if mine:
        s = sample(model, tok, [ex.prompt for ex in mine], num_samples=sc.k, max_new_tokens=sc.max_new_tokens,
                   temperature=sc.temperature, top_p=cfg.rollout.top_p, seed=build.call_seed(cfg.run.seed, 4242),
                   first_index=first, gen_batch=cfg.rollout.gen_batch or CHUNK, deps=deps)
        correct = _correctness(task, s.completions, mine, sc.k)
        seen_total = len(s.completions)
        need_lang = sc.min_language > 0
        for j in range(len(mine)):
            rows = range(j * sc.k, (j + 1) * sc.k)
            scored.append([(s.completions[i], correct[i] >= 1.0, fmt_fn(s.completions[i]) >= 1.0,
                            lang_fn(s.completions[i], lang=cfg.task.lang) if need_lang else 1.0) for i in rows])
    del model
    levels = filter_levels(sc.require_format, sc.min_language)
    for level, (_, require_format, min_language) in enumerate(levels):
        records = [{"prompt": ex.question or ex.prompt, "completion": c, "answer": ex.answer}
                   for ex, group in zip(mine, scored)
                   for c in keep(group, require_format=require_format, min_language=min_language,
                                 limit=sc.keep_per_prompt)]
        gathered = D.all_gather_objects((records, seen_total), info)
        all_records = [r for recs, _ in gathered for r in recs]
        total = sum(n for _, n in gathered)
        if all_records:                     # every rank sees the same gathered count: all stop together
            break
    if not all_records:                     # every rank raises: no rank waits at a barrier
        raise ValueError(f"rejection sampling from {model_source} kept none of {total} samples: the model never "
                         "answers correctly; sample more (sample.k, sample.prompts) or train longer first")
    relaxed = [levels[i][0] for i in range(1, level + 1)]
    path = out / "samples.jsonl"
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in all_records))
        (out / "samples_stats.json").write_text(json.dumps(
            {"prompts": len(examples), "samples": total, "kept": len(all_records), "source": model_source,
             "relaxed": relaxed}))
        if relaxed:
            print(f"rejection sampling: NOTE no sample passed every filter; relaxed: {', '.join(relaxed)} "
                  "(expected in a smoke run only: the policy is barely trained)")
        print(f"rejection sampling: kept {len(all_records)} of {total} samples from {len(examples)} prompts -> {path}")
    D.barrier(info)
    return path


def filter_levels(require_format: bool, min_language: float) -> list[tuple[str, bool, float]]:
    """The filters to try in order: as configured, then without the language filter, then without
    the format filter (correct answers only).  Each entry: (what was dropped, format?, min language)."""
    levels = [("none", require_format, min_language)]
    if min_language > 0:
        levels.append(("the language filter", require_format, 0.0))
    if require_format:
        levels.append(("the format filter", False, 0.0))
    return levels


def keep(group: list[tuple[str, bool, bool, float]], *, require_format: bool, min_language: float,
         limit: int) -> list[str]:
    """The completions of one prompt that pass: correct, well-formed if required, language share >=
    min_language; duplicates dropped, at most `limit`."""
    kept: list[str] = []
    for c, right, formatted, language in group:
        if len(kept) >= limit:
            break
        if right and (formatted or not require_format) and language >= min_language and c not in kept:
            kept.append(c)
    return kept


def _correctness(task, completions: list[str], examples, k: int) -> list[float]:
    """The task's correctness reward (1 = right) of every completion, as the task scores it."""
    rb = task.reward(completions, examples, group_size=k)
    names = list(rb.names)
    if task.correctness in names:
        j = names.index(task.correctness)
        return [float(row[j]) for row in rb.per_reward]
    from r1core.rewards import get
    fn = get(task.correctness)
    return [fn(c, **examples[i // k].columns()) for i, c in enumerate(completions)]
