"""Run folders: one run per folder, never two mixed, and a word on what a resume continues.

    prepare_out(cfg)     refuse a non-empty run.out unless resume=true or overwrite=true; on resume
                         compare the config with the saved run's (run.yaml) and refuse a change
                         unless run.resume_changed=true; write run.yaml
    model_of_run(path)   the model a run folder produced (its newest checkpoint, or its last stage's)
    saved_note(out)      one line: the newest checkpoint under a run folder and how to resume

A run folder holds run.yaml (the config as given), then the stage folders (`<i>-<name>/`) of a
pipeline, or the single stage's files (config.yaml, metrics.jsonl, checkpoints/ …).
"""
from __future__ import annotations

import shutil
from pathlib import Path

import yaml

from r1core.train import checkpoint as ckpt
from r1core.train.config import Config, options, to_dict

RUN_FILE = "run.yaml"

# options that do not change what a run computes: a resume may change them freely
FREE_KEYS = ("run.resume", "run.overwrite", "run.resume_changed", "run.progress", "run.tensorboard", "run.plot",
             "run.threads", "run.profile_steps", "run.out", "model.device", "optim.micro_batch", "rollout.gen_batch",
             "grpo.chunk_size", "grpo.backend", "checkpoint.final_optimizer")

# what r1core writes at the top of a run folder: overwrite=true removes only folders that hold one
MARKERS = (RUN_FILE, "config.yaml", "pipeline.json", "checkpoints", "metrics.jsonl", "stage.json")


def prepare_out(cfg: Config, *, main: bool = True) -> str | None:
    """Apply the run-folder policy to cfg.run.out before anything is written; returns the line to
    print (None: a fresh, empty folder).  Only rank 0 (`main`) removes or writes files."""
    out = Path(cfg.run.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"config key 'run.out' = {str(out)!r} is a file, not a folder")
    entries = sorted(p.name for p in out.iterdir()) if out.is_dir() else []
    note = None
    if entries and cfg.run.resume:
        note = _check_resume(cfg, out)
    elif entries and cfg.run.overwrite:
        if not any((out / m).exists() for m in MARKERS) and not any(_is_stage(out / e) for e in entries):
            raise ValueError(f"run.out={out} is not empty and holds no r1core run ({', '.join(entries[:4])}"
                             f"{' …' if len(entries) > 4 else ''}): overwrite=true removes only run folders; "
                             f"choose another out=")
        if main:
            for e in entries:
                p = out / e
                shutil.rmtree(p) if p.is_dir() and not p.is_symlink() else p.unlink()
        note = f"overwrite=true: removed the previous run in {out}"
    elif entries:
        raise ValueError(f"run.out={out} already holds a run ({', '.join(entries[:4])}{' …' if len(entries) > 4 else ''})"
                         f": resume=true continues it, overwrite=true replaces it, or choose another out=")
    elif cfg.run.resume:
        note = f"resume=true but {out} holds no run yet: starting fresh"
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / RUN_FILE).write_text(yaml.safe_dump(to_dict(cfg), sort_keys=False))
    return note


def _is_stage(p: Path) -> bool:
    return p.is_dir() and p.name.split("-", 1)[0].isdigit() and any((p / m).exists() for m in MARKERS)


def _check_resume(cfg: Config, out: Path) -> str:
    saved_file = out / RUN_FILE
    if not saved_file.exists():
        return f"resume: {out} has no {RUN_FILE} (written by r1core 0.x before run folders were checked): " \
               f"continuing without comparing configs"
    from r1core.train.config import from_dict, read_yaml
    try:
        saved = from_dict(read_yaml(saved_file))
    except ValueError as e:
        raise ValueError(f"{saved_file}: cannot be read back ({e}); resume with overwrite=true instead") from None
    changed = config_changes(saved, cfg)
    if changed and not cfg.run.resume_changed:
        shown = ", ".join(f"{k} ({a!r} -> {b!r})" for k, a, b in changed[:6]) + (" …" if len(changed) > 6 else "")
        raise ValueError(f"resume=true: this config differs from the run in {out} in {shown}; continue with the "
                         f"changes: run.resume_changed=true, start afresh: overwrite=true, or drop the changes "
                         f"(the saved config: {saved_file})")
    where = resume_point(out)
    extra = f" with changed {', '.join(k for k, _, _ in changed)}" if changed else ""
    return f"resume: continuing the run in {out}{extra}: {where}"


def config_changes(saved: Config, now: Config) -> list[tuple[str, object, object]]:
    """[(key, saved value, new value)] for the options that differ, FREE_KEYS left out."""
    old = {k: v for k, v, _, _ in options(saved)}
    return [(k, old[k], v) for k, v, _, _ in options(now) if k not in FREE_KEYS and old.get(k) != v]


def resume_point(out: Path) -> str:
    """'stages done: a, b; <stage> from step k' or 'from step k' or 'no checkpoint yet'."""
    stages = sorted((p for p in out.iterdir() if _is_stage(p)), key=lambda p: int(p.name.split("-", 1)[0]))
    if not stages:
        latest = ckpt.latest_checkpoint(out)
        return f"from step {ckpt.step_of(latest)} ({latest})" if latest else "no checkpoint yet: from step 0"
    done = [p.name for p in stages if (p / "stage.json").exists()]
    open_ = [p for p in stages if not (p / "stage.json").exists()]
    parts = [f"stages done: {', '.join(done)}"] if done else []
    if open_:
        latest = ckpt.latest_checkpoint(open_[0])
        parts.append(f"{open_[0].name} from step {ckpt.step_of(latest)}" if latest else f"{open_[0].name} from its start")
    return "; ".join(parts) or "nothing finished yet"


def model_of_run(path: str | Path) -> Path | None:
    """The model a run folder produced: its newest checkpoint, or (a pipeline) the newest checkpoint of
    its last stage that has one; None when `path` is not a run folder."""
    p = Path(path)
    if not p.is_dir() or (p / "config.json").exists():      # a model / checkpoint folder itself
        return None
    latest = ckpt.latest_checkpoint(p)
    if latest is not None:
        return latest
    stages = sorted((s for s in p.iterdir() if _is_stage(s)), key=lambda s: int(s.name.split("-", 1)[0]))
    for s in reversed(stages):
        latest = ckpt.latest_checkpoint(s)
        if latest is not None:
            return latest
    return None


def saved_note(out: str | Path) -> str:
    """What an interrupted run left: its newest checkpoint (any stage) or that nothing was saved."""
    p = Path(out)
    found = [c for c in [ckpt.latest_checkpoint(p)] if c] if p.is_dir() else []
    if p.is_dir():
        for s in sorted((s for s in p.iterdir() if _is_stage(s)), key=lambda s: int(s.name.split("-", 1)[0])):
            c = ckpt.latest_checkpoint(s)
            if c:
                found.append(c)
    if not found:
        return f"nothing saved yet in {p}"
    newest = found[-1]
    return f"saved up to {newest} (step {ckpt.step_of(newest)})"
