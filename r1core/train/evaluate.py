"""Held-out evaluation as the R1 paper reports it: pass@1 averaged over k samples per question,
cons@k (majority vote over the extracted answers), the mean format reward and, when the task rewards
language consistency (R1's reasoning RL), the mean language reward of the chains of thought.

Questions are split over ranks in contiguous blocks and gathered on every rank, so the numbers do not depend
on the number of ranks.  Used by the trainer (before / during / after) and by `r1core eval`.
"""
from __future__ import annotations

from r1core.train import distributed as D
from r1core.train.build import Deps
from r1core.train.sampling import sample


def evaluate_policy(model, tokenizer, task, *, n: int, k: int = 1, temperature: float = 0.0, top_p: float = 1.0,
                    max_new_tokens: int = 64, seed: int = 0, gen_batch: int = 0, info: D.DistInfo | None = None,
                    deps: Deps | None = None, return_samples: bool = False, lang: str | None = None,
                    progress: bool = False, unmarked: str | None = None) -> dict:
    """{"pass@1", "cons@k", "format", "completion_len", "questions", "samples"} on task.test(n), plus
    "language" (share of target-language words in the chain of thought) when `lang` is given or the
    task's rewards include "language" (then `lang` defaults to the task's `lang`, else "en").
    progress=True shows a bar over the decode steps with the time left (rank 0; needs tqdm).
    `unmarked` is the accuracy reward's policy for answers without a marker ("last" in `r1core eval`:
    a model that ends on a bare number is judged on it; None: the training reward's own default)."""
    from r1core.rewards import get
    from r1core.tasks import evaluate
    info = info or D.DistInfo()
    examples = task.test(n)
    if not examples:
        raise ValueError(f"task {getattr(task, 'name', task)!r} has no held-out examples")
    per_rank = -(-len(examples) // info.world)
    mine = list(range(info.rank * per_rank, min(len(examples), (info.rank + 1) * per_rank)))
    comps: list[list[str]] = []
    lens: list[list[int]] = []
    if mine:
        was_training = model.training
        model.eval()
        calls = -(-len(mine) // gen_batch) if gen_batch > 0 else 1
        bar = _bar(calls * max_new_tokens, f"eval {len(mine)}x{k}") if progress and info.main else None
        hook = None if bar is None else (lambda call, done, total: bar.update(call * total + done - bar.n))
        try:
            s = sample(model, tokenizer, [examples[i].prompt for i in mine], num_samples=k,
                       max_new_tokens=max_new_tokens, temperature=temperature, top_p=top_p, seed=seed,
                       first_index=mine[0] if mine else 0, gen_batch=gen_batch, deps=deps, progress=hook)
        finally:
            if bar is not None:
                bar.update(bar.total - bar.n)       # rows that all hit EOS end a call early
                bar.close()
        model.train(was_training)
        per_row = s.mask_NT.sum(1).tolist()
        comps = [s.completions[j * k:(j + 1) * k] for j in range(len(mine))]
        lens = [per_row[j * k:(j + 1) * k] for j in range(len(mine))]
    gathered = D.all_gather_objects((mine, comps, lens), info)
    by_index: dict[int, tuple[list[str], list[int]]] = {}
    for idx, cs, ls in gathered:
        for i, c, l in zip(idx, cs, ls):
            by_index[i] = (c, l)
    completions_QK = [by_index[i][0] for i in range(len(examples))]
    result = evaluate(task, examples, completions_QK, unmarked=unmarked)
    fmt = get("format")
    result["format"] = sum(fmt(c) for cs in completions_QK for c in cs) / sum(len(cs) for cs in completions_QK)
    if lang is None and "language" in getattr(task, "reward_weights", {}):
        lang = getattr(task, "lang", None) or "en"
    if lang is not None:
        lang_fn = get("language")
        result["language"] = sum(lang_fn(c, lang=lang) for cs in completions_QK for c in cs) / \
            sum(len(cs) for cs in completions_QK)
    all_lens = [l for i in range(len(examples)) for l in by_index[i][1]]
    result["completion_len"] = sum(all_lens) / max(1, len(all_lens))
    if return_samples:
        result["samples_text"] = [{"prompt": ex.prompt, "answer": ex.answer, "completions": cs}
                                  for ex, cs in zip(examples, completions_QK)]
    return result


def _bar(total: int, desc: str):
    """A progress bar over decode steps (the time left is an upper bound: calls may end early on EOS)."""
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    import sys
    return tqdm(total=total, desc=desc, unit="tok", file=sys.stderr, dynamic_ncols=True, leave=False)
