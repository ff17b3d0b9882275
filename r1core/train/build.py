"""Building what a run needs from its config: device, policy, tokenizer, task, optimizer, schedule.

`Deps` names the four functions the trainers take from the rest of r1core (model loading, tokenizer
loading, generation, tasks).  They default to r1core's own; tests and benches pass stand-ins (a
transformers-style generation loop, a tiny model) without patching anything.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import torch

from r1core.train.config import Config

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def _load_model(source, **kw):
    import r1core
    return r1core.load_model(source, **kw)


def _load_tokenizer(source):
    import r1core
    return r1core.load_tokenizer(source)


def _generate(model, prompts, **kw):
    import r1core
    return r1core.generate(model, prompts, **kw)


def _get_task(name, **kw):
    from r1core.tasks import get_task
    return get_task(name, **kw)


@dataclass
class Deps:
    load_model: Callable[..., Any] = _load_model          # (source, *, dtype, device) -> CausalLM
    load_tokenizer: Callable[..., Any] = _load_tokenizer  # (source) -> tokenizer
    generate: Callable[..., Any] = _generate              # r1core.generate's signature -> Rollout
    get_task: Callable[..., Any] = _get_task              # (name, **kw) -> Task


def load_policy(source: str, cfg: Config, device: torch.device, deps: Deps) -> torch.nn.Module:
    model = deps.load_model(source, dtype=DTYPES[cfg.model.dtype], device=device)
    if cfg.model.gradient_checkpointing:
        enable = getattr(model, "gradient_checkpointing_enable", None)
        if enable is None:
            raise ValueError("model.gradient_checkpointing=true but this model has no gradient_checkpointing_enable()")
        every = cfg.model.checkpoint_every
        if every < 1:
            raise ValueError(f"model.checkpoint_every must be >= 1, got {every}")
        enable(every=every) if every != 1 else enable()   # transformers' enable() has no every=
    if cfg.model.train_layers:
        freeze_below(model, cfg.model.train_layers)
    return model


def freeze_below(model: torch.nn.Module, n: int) -> None:
    """Keep only the top `n` transformer blocks and the final norm trainable: the forward is unchanged,
    the backward stops at block L-n, AdamW holds state for those blocks only."""
    from r1core.train.distributed import transformer_blocks
    blocks = transformer_blocks(model)
    if not blocks:
        raise ValueError("model.train_layers needs a model with a `layers` ModuleList")
    if n > len(blocks):
        raise ValueError(f"model.train_layers={n} but the model has {len(blocks)} blocks: set model.train_layers "
                         f"to 1..{len(blocks)} (0 trains every parameter)")
    model.requires_grad_(False)
    for block in blocks[-n:]:
        block.requires_grad_(True)
    norm = getattr(model, "norm", None)
    if isinstance(norm, torch.nn.Module):
        norm.requires_grad_(True)


def count_blocks(source: str) -> int | None:
    """The number of transformer blocks of a model source, read from its config.json or GGUF metadata
    without loading weights; None where the source is not one of those."""
    from r1core.models import resolve_source
    path = resolve_source(source)
    if path.is_dir():
        from r1core.models.config import read_hf_config
        return read_hf_config(path).num_layers
    if path.suffix == ".gguf":
        from r1core.models.gguf_reader import GGUFFile
        meta = GGUFFile(path).meta
        n = meta.get(f"{meta.get('general.architecture')}.block_count")
        return int(n) if n is not None else None
    return None


def scaled_train_layers(recipe_layers: int, recipe_blocks: int, blocks: int) -> int:
    """The same share of another model's blocks as a recipe's `recipe_layers` of `recipe_blocks`
    (rounded, at least 1, at most all): the embedded recipe's top 8 of 30 becomes 1 of 2 or 6 of 24."""
    return min(blocks, max(1, round(recipe_layers * blocks / recipe_blocks)))


def tokenizer_source(cfg: Config) -> str:
    return cfg.model.tokenizer or cfg.model.source


def load_task(cfg: Config, tokenizer, deps: Deps, *, name: str | None = None):
    """The task of cfg.task: a built-in name (reasoning_gym:<name> too), a JSONL file of {question,
    answer} records, or the mixture of cfg.task.mixture when that is not empty."""
    from r1core.tasks.prompts import R1ZERO_SYSTEM
    t = cfg.task
    if t.mixture and name is None:
        name, kw = "mixture", {"tasks": dict(t.mixture)}
    else:
        name, kw = name or t.name, dict(t.args)
    if name.endswith(".jsonl"):
        kw.setdefault("path", name)
        name = "jsonl"
    system = {"r1zero": R1ZERO_SYSTEM, "": None}.get(t.system, t.system)
    task = deps.get_task(name, template=t.template, tokenizer=tokenizer, system=system,
                         reward_weights=dict(t.rewards) or None, **kw)
    task.lang = t.lang          # the language-consistency target, for held-out evaluation
    return task


def make_optimizer(params, cfg: Config, *, lr: float | None = None) -> torch.optim.Optimizer:
    o = cfg.optim
    return torch.optim.AdamW([p for p in params if p.requires_grad], lr=o.lr if lr is None else lr,
                             betas=tuple(o.betas), eps=o.eps, weight_decay=o.weight_decay)


def lr_lambda(step: int, *, warmup: int, total: int, schedule: str, min_ratio: float) -> float:
    """Learning-rate multiplier for the update made at `step` (0-based): linear warm-up over `warmup`
    steps, then constant or cosine down to `min_ratio` at the last step."""
    if warmup > 0 and step < warmup:
        return (step + 1) / warmup
    if schedule == "constant":
        return 1.0
    span = max(1, total - warmup - 1)
    progress = min(1.0, (step - warmup) / span)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_scheduler(optimizer, cfg: Config, total_steps: int) -> torch.optim.lr_scheduler.LambdaLR:
    """One scheduler step per training step (the mu passes and mini-batches of a step share its
    learning rate), so the schedule does not depend on how many groups were dropped."""
    o = cfg.optim
    import functools
    fn = functools.partial(lr_lambda, warmup=o.warmup, total=total_steps, schedule=o.schedule,
                           min_ratio=o.min_lr_ratio)
    return torch.optim.lr_scheduler.LambdaLR(optimizer, fn)


def set_threads(cfg: Config) -> None:
    """run.threads > 0: that many torch CPU threads (fewer than cores avoids OpenMP stalls when the
    CPU is shared with other busy processes)."""
    if cfg.run.threads:
        torch.set_num_threads(cfg.run.threads)


def seed_everything(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def call_seed(*parts: int) -> int:
    """A deterministic 63-bit seed from integers (run seed, step, prompt index…)."""
    h = 1469598103934665603
    for p in parts:
        h = ((h ^ (int(p) & (2**64 - 1))) * 1099511628211) % 2**64
    return h % 2**63
