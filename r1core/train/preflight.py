"""Checks of a whole run before any work starts: what typing and ranges (config.validate) cannot see.

    check_sources(cfg)        the model / tokenizer / reference / teacher / SFT data sources exist
    check_task(cfg, deps)     the task builds with its arguments, the reward names are known

A run that would fail at its first rollout, or at stage 3 of a pipeline after an hour, fails here in
seconds with an error naming the config key, the value and what is allowed.
"""
from __future__ import annotations

import copy
import inspect
from pathlib import Path

from r1core.train.config import Config


def check_config(cfg: Config, deps=None) -> None:
    """Raise a ValueError naming the key when the task, its arguments, its rewards or a source is wrong
    (run_pipeline checks the task of every stage itself; the command line checks the sources too)."""
    check_sources(cfg)
    check_task(cfg, deps)


def check_sources(cfg: Config) -> None:
    from r1core.models import resolve_source
    for key, value in (("model.source", cfg.model.source), ("model.tokenizer", cfg.model.tokenizer),
                       ("model.ref", cfg.model.ref), ("sample.teacher", cfg.sample.teacher)):
        if value:
            try:
                resolve_source(value)
            except ValueError as e:
                raise ValueError(f"config key {key!r}: {e}") from None
    data = cfg.sft.data
    if data and not data.startswith("builtin:") and not Path(data).is_file():
        raise ValueError(f"config key 'sft.data' = {data!r}: no such file (a JSONL of {{prompt, completion}} records, "
                         f"or builtin:arithmetic)")


def check_task(cfg: Config, deps=None) -> None:
    """Build the task once without a tokenizer (the `plain` template needs none): an unknown name, an
    argument the task does not take, a bad argument value or an unknown reward fails here."""
    from r1core.rewards import registry
    from r1core.train import build
    from r1core.tasks import task_names
    deps = deps or build.Deps()
    unknown = sorted(set(cfg.task.rewards) - set(registry.names()))
    if unknown:
        raise ValueError(f"config key 'task.rewards.{unknown[0]}': no reward named {unknown[0]!r}; "
                         f"rewards: {', '.join(registry.names())}")
    plain = copy.deepcopy(cfg)
    plain.task.template = "plain"
    name = cfg.task.name
    try:
        build.load_task(plain, None, deps)
    except TypeError as e:            # an argument the task's constructor does not take
        raise ValueError(f"config key 'task.args' = {cfg.task.args!r}: task {name!r} {_takes(name, deps)} ({e})") \
            from None
    except (ValueError, OSError) as e:
        missing_file = name.endswith(".jsonl") and "path" not in cfg.task.args and not Path(name).is_file()
        key = "task.name" if missing_file or (name not in task_names() and not name.endswith(".jsonl")) \
            else "task.args"
        raise ValueError(f"config key {key!r} ({name!r}, args {cfg.task.args!r}): {e}") from None


def _takes(name: str, deps) -> str:
    """'takes digits, ops, test_fraction' from the registered factory's keyword arguments (its class
    hierarchy's, since subclasses pass **kw up)."""
    from r1core.tasks.base import _REGISTRY
    factory = _REGISTRY.get(name)
    if factory is None:
        return "is not registered"
    names: list[str] = []
    for klass in (factory.__mro__ if isinstance(factory, type) else [factory]):
        init = klass.__init__ if isinstance(klass, type) else klass
        try:
            params = inspect.signature(init).parameters.values()
        except (TypeError, ValueError):
            continue
        names += [p.name for p in params if p.kind is p.KEYWORD_ONLY and p.name not in names
                  and p.name not in ("template", "tokenizer", "system", "reward_weights")]
    return f"takes {', '.join(names)}" if names else "takes no arguments"
