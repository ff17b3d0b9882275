"""Checkpoints: `out/checkpoints/step-<N>/`, written atomically, the newest N kept.

A checkpoint folder holds
    config.json, model.safetensors   the policy in the Hugging Face layout (model.save_pretrained):
                                     `r1core.load_model(folder)` and `transformers` both read it
    optimizer.pt                     AdamW state keyed by parameter name (so 1 and N ranks can
                                     resume each other's checkpoints), the LR scheduler
    rng/rank-<r>.pt                  torch (CPU and CUDA), numpy and python RNG states of each rank
    trainer.json                     step, data order, the run's "before" evaluation, config
Every file is loaded with `torch.load(weights_only=True)` or as JSON: no pickle of arbitrary objects.

Atomicity: everything is written into `checkpoints/.tmp-step-<N>/`, fsynced, then renamed to
`step-<N>` in one `os.rename`; a folder named `step-<N>` is therefore always complete, and a process
killed at any moment loses at most the steps since the last checkpoint (`save_every=1`: the current
step only).  Leftover `.tmp-*` folders are removed at the next save.
"""
from __future__ import annotations

import json
import os
import random
import re
import shutil
from pathlib import Path

import numpy as np
import torch

from r1core.train import distributed as D

_STEP_DIR = re.compile(r"^step-(\d+)$")


def checkpoint_dirs(out: str | Path) -> list[Path]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(out) / "checkpoints"
    if not root.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in root.iterdir() if (m := _STEP_DIR.match(p.name)) and p.is_dir()]
    return [p for _, p in sorted(found)]


def latest_checkpoint(out: str | Path) -> Path | None:
    dirs = checkpoint_dirs(out)
    return dirs[-1] if dirs else None


# ---------------------------------------------------------------------------------------------
# RNG state, as tensors and lists (weights_only-loadable)
# ---------------------------------------------------------------------------------------------
def rng_state() -> dict:
    py = random.getstate()
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "python": [py[0], list(py[1]), py[2]],
        "numpy": [np_state[0], torch.from_numpy(np_state[1].astype(np.int64)), int(np_state[2]), int(np_state[3]),
                  float(np_state[4])],
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    v, internal, gauss = state["python"]
    random.setstate((v, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# ---------------------------------------------------------------------------------------------
# optimizer state keyed by parameter name
# ---------------------------------------------------------------------------------------------
def optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, info: D.DistInfo) -> dict:
    """Full (unsharded) optimizer state keyed by parameter name; on rank 0 only when distributed."""
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict
    return get_optimizer_state_dict(module, optimizer,
                                    options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def load_optimizer_state(module: torch.nn.Module, optimizer: torch.optim.Optimizer, sd: dict,
                         info: D.DistInfo) -> None:
    if info.enabled:
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict
        set_optimizer_state_dict(module, optimizer, sd if info.main else {},
                                 options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=True))
        return
    # single process: map names back to the optimizer's positional ids
    name_of = {id(p): n for n, p in module.named_parameters()}
    index, groups, i = {}, [], 0
    for g_sd, group in zip(sd["param_groups"], optimizer.param_groups):
        ids = []
        for p in group["params"]:
            index[name_of[id(p)]] = i
            ids.append(i)
            i += 1
        groups.append({**g_sd, "params": ids})
    missing = set(index) - set(sd["state"]) if sd["state"] else set()
    if missing:
        raise ValueError(f"optimizer state lacks parameters {sorted(missing)[:3]}…: not this model's checkpoint")
    optimizer.load_state_dict({"state": {index[n]: v for n, v in sd["state"].items()}, "param_groups": groups})


# ---------------------------------------------------------------------------------------------
# save / load
# ---------------------------------------------------------------------------------------------
def save_checkpoint(out: str | Path, step: int, *, policy: torch.nn.Module, optimizer, scheduler,
                    trainer_state: dict, info: D.DistInfo, keep_last: int = 2, tokenizer=None) -> Path:
    """Write checkpoint `step` atomically and prune to the newest `keep_last`. Collective: every rank
    calls it."""
    root = Path(out) / "checkpoints"
    tmp = root / f".tmp-step-{step}"
    final = root / f"step-{step}"
    if info.main:
        root.mkdir(parents=True, exist_ok=True)
        for old in root.glob(".tmp-*"):
            shutil.rmtree(old, ignore_errors=True)
        (tmp / "rng").mkdir(parents=True)
    D.barrier(info)
    model = D.unwrap(policy)
    with D.full_params(policy):
        if info.main:
            model.save_pretrained(str(tmp))
            if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
                try:
                    tokenizer.save_pretrained(str(tmp))
                except Exception:  # a tokenizer that cannot save itself is reloaded from the source
                    pass
    opt_sd = optimizer_state(policy, optimizer, info)
    if info.main:
        torch.save({"optimizer": opt_sd, "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        (tmp / "trainer.json").write_text(json.dumps({"step": step, **trainer_state}, indent=1))
    torch.save(rng_state(), tmp / "rng" / f"rank-{info.rank}.pt")
    D.barrier(info)
    if info.main:
        _fsync_tree(tmp)
        if final.exists():                         # re-saving a step (after a resume): replace it
            stale = root / f".tmp-old-step-{step}"
            os.rename(final, stale)
            os.rename(tmp, final)
            shutil.rmtree(stale, ignore_errors=True)
        else:
            os.rename(tmp, final)
        _fsync_dir(root)
        for old in checkpoint_dirs(out)[:-keep_last] if keep_last > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    D.barrier(info)
    return final


def load_checkpoint(path: str | Path, *, policy: torch.nn.Module, optimizer, scheduler, info: D.DistInfo) -> dict:
    """Restore optimizer, scheduler and this rank's RNG from `path` (the weights are loaded with the
    model, `r1core.load_model(path)`); returns trainer.json."""
    path = Path(path)
    state = json.loads((path / "trainer.json").read_text())
    blob = torch.load(path / "optimizer.pt", weights_only=True, map_location="cpu") if info.main or not info.enabled \
        else {"optimizer": {}, "scheduler": None}
    load_optimizer_state(policy, optimizer, blob["optimizer"], info)
    sched = D.all_gather_objects(blob["scheduler"], info)[0] if info.enabled else blob["scheduler"]
    scheduler.load_state_dict(sched)
    rng_file = path / "rng" / f"rank-{info.rank}.pt"
    if rng_file.exists():                          # a different number of ranks: fresh RNG is fine,
        set_rng_state(torch.load(rng_file, weights_only=True))   # rollouts are seeded per step
    return state


def _fsync_tree(folder: Path) -> None:
    for p in folder.rglob("*"):
        if p.is_file():
            with open(p, "rb") as f:
                os.fsync(f.fileno())
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
