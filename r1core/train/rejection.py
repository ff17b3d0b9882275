"""Rejection sampling: sample k answers per training prompt, keep the correct, well-formed,
language-consistent ones, write them as an SFT JSONL (R1 pipeline stage 3; distillation data).

Kept: correctness reward (the task's, e.g. accuracy or countdown) == 1, format reward == 1 (the
<think>…</think><answer>…</answer> shape; sample.require_format), language reward >= sample.min_language; duplicates
dropped; at most sample.keep_per_prompt per prompt.  Records: {"prompt": question, "completion",
"answer"} — the question, not the rendered prompt, so the SFT stage renders it with its own
template and tokenizer (a teacher's chat format never leaks into the student).
"""
from __future__ import annotations

import json
from pathlib import Path

from r1core.train import build, distributed as D
from r1core.train.config import Config
from r1core.train.sampling import sample


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
    records, seen_total = [], 0
    if mine:
        s = sample(model, tok, [ex.prompt for ex in mine], num_samples=sc.k, max_new_tokens=sc.max_new_tokens,
                   temperature=sc.temperature, top_p=cfg.rollout.top_p, seed=build.call_seed(cfg.run.seed, 4242),
                   first_index=first, gen_batch=cfg.rollout.gen_batch, deps=deps)
        correct = _correctness(task, s.completions, mine, sc.k)
        for j, ex in enumerate(mine):
            kept = set()
            for i in range(j * sc.k, (j + 1) * sc.k):
                c = s.completions[i]
                seen_total += 1
                if len(kept) >= sc.keep_per_prompt or c in kept or correct[i] < 1.0:
                    continue
                if sc.require_format and fmt_fn(c) < 1.0:
                    continue
                if sc.min_language > 0 and lang_fn(c, lang=cfg.task.lang) < sc.min_language:
                    continue
                kept.add(c)
                records.append({"prompt": ex.question or ex.prompt, "completion": c, "answer": ex.answer})
    gathered = D.all_gather_objects((records, seen_total), info)
    all_records = [r for recs, _ in gathered for r in recs]
    total = sum(n for _, n in gathered)
    if not all_records:                     # every rank raises: no rank waits at a barrier
        raise ValueError(f"rejection sampling from {model_source} kept none of {total} samples: the model never "
                         "answers correctly in format; sample more (sample.k, sample.prompts) or train longer first")
    path = out / "samples.jsonl"
    if info.main:
        out.mkdir(parents=True, exist_ok=True)
        path.write_text("".join(json.dumps(r) + "\n" for r in all_records))
        (out / "samples_stats.json").write_text(json.dumps(
            {"prompts": len(examples), "samples": total, "kept": len(all_records), "source": model_source}))
        print(f"rejection sampling: kept {len(all_records)} of {total} samples from {len(examples)} prompts -> {path}")
    D.barrier(info)
    return path


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
