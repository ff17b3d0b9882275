"""Checkpoints: `out/checkpoints/step-<N>/`, written atomically, the newest N kept.

A checkpoint folder holds
    config.json, model.safetensors   the policy in the Hugging Face layout (model.save_pretrained):
                                     `r1core.load_model(folder)` and `transformers` both read it
    optimizer.pt                     AdamW state keyed by parameter name (so 1 and N ranks can
                                     resume each other's checkpoints), the LR scheduler; left out of a
                                     stage's final checkpoint unless checkpoint.final_optimizer=true
    rng/rank-<r>.pt                  torch (CPU and CUDA), numpy and python RNG states of each rank
    rollout/rank-<r>.pt              rollout.async only: the rollout in flight for the next step (its
                                     tensors, texts and step), so a resume trains on the same samples
    trainer.json                     step, data order, the run's "before" evaluation, config
Every file is loaded with `torch.load(weights_only=True)` or as JSON: no pickle of arbitrary objects,
and a missing or corrupted file raises a ValueError naming it.  checkpoint.dtype=bfloat16 stores the
weights in bfloat16 (half the size of float32).  Every file is written with the same mode (0666 less
the umask: 0644 usually).

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
import warnings
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


def step_of(path: str | Path) -> int:
    """The step of a checkpoint folder `step-<N>` (r1core.train.rundir's resume and Ctrl-C lines)."""
    m = _STEP_DIR.match(Path(path).name)
    if not m:
        raise ValueError(f"{str(path)!r} is not a checkpoint folder (step-<N>)")
    return int(m.group(1))


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
                    trainer_state: dict, info: D.DistInfo, keep_last: int = 2, tokenizer=None,
                    dtype: str = "", with_optimizer: bool = True, rank_files: dict | None = None) -> Path:
    """Write checkpoint `step` atomically and prune to the newest `keep_last`. Collective: every rank
    calls it.  `dtype` (e.g. "bfloat16") stores the weights in that dtype (empty: as they are);
    with_optimizer=False leaves out optimizer.pt (a final checkpoint that nobody trains further).
    rank_files {name: tensors / lists / numbers} are this rank's `name/rank-<r>.pt` (load_rank_file)."""
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
            if dtype:
                cast_weights(tmp, dtype)
            if tokenizer is not None and hasattr(tokenizer, "save_pretrained"):
                try:
                    tokenizer.save_pretrained(str(tmp))
                except Exception:  # a tokenizer that cannot save itself is reloaded from the source
                    pass
    opt_sd = optimizer_state(policy, optimizer, info) if with_optimizer else None
    if info.main:
        if with_optimizer:
            torch.save({"optimizer": opt_sd, "scheduler": scheduler.state_dict()}, tmp / "optimizer.pt")
        (tmp / "trainer.json").write_text(json.dumps({"step": step, "optimizer": with_optimizer, **trainer_state},
                                                     indent=1))
    torch.save(rng_state(), tmp / "rng" / f"rank-{info.rank}.pt")
    for name, obj in (rank_files or {}).items():
        (tmp / name).mkdir(exist_ok=True)
        torch.save(obj, tmp / name / f"rank-{info.rank}.pt")
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


def cast_weights(folder: Path, dtype: str) -> None:
    """Rewrite the folder's *.safetensors with floating tensors in `dtype` (config.json's torch_dtype
    follows), whatever wrote them (r1core or transformers)."""
    from safetensors.torch import load_file, save_file
    target = getattr(torch, dtype)
    for f in sorted(Path(folder).glob("*.safetensors")):
        state = load_file(str(f))
        if all(t.dtype == target or not t.is_floating_point() for t in state.values()):
            continue
        state = {k: t.to(target) if t.is_floating_point() else t for k, t in state.items()}
        save_file(state, str(f), metadata={"format": "pt"})
    cfg_file = Path(folder) / "config.json"
    if cfg_file.exists():
        hf = json.loads(cfg_file.read_text())
        hf["torch_dtype"] = dtype
        cfg_file.write_text(json.dumps(hf, indent=2))


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: missing (an incomplete checkpoint? resume from another step, or overwrite=true)") \
            from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid JSON ({e}): the checkpoint is corrupted") from None
    if not isinstance(data, dict) or not isinstance(data.get("step"), int):
        raise ValueError(f"{path}: not a trainer state (expected a JSON object with an integer step)")
    return data


def _torch_load(path: Path, what: str):
    try:
        return torch.load(path, weights_only=True, map_location="cpu")
    except FileNotFoundError:
        raise ValueError(f"{path}: missing ({what})") from None
    except Exception as e:  # noqa: BLE001  (torch raises RuntimeError, UnpicklingError, EOFError, …)
        raise ValueError(f"{path}: cannot be read as {what} ({type(e).__name__}: {str(e)[:200]}): "
                         f"the checkpoint is corrupted") from None


def load_checkpoint(path: str | Path, *, policy: torch.nn.Module, optimizer, scheduler, info: D.DistInfo) -> dict:
    """Restore optimizer, scheduler and this rank's RNG from `path` (the weights are loaded with the
    model, `r1core.load_model(path)`); returns trainer.json.  Every file is checked: a missing or
    corrupted one raises a ValueError naming it.  A checkpoint saved without optimizer state (a final
    one, checkpoint.final_optimizer=false) resumes with a fresh AdamW at the saved schedule position."""
    path = Path(path)
    state = _read_json(path / "trainer.json")
    opt_file = path / "optimizer.pt"
    if state.get("optimizer", True) or opt_file.exists():
        blob = _torch_load(opt_file, "optimizer state") if info.main or not info.enabled \
            else {"optimizer": {}, "scheduler": None}
        if not isinstance(blob, dict) or not {"optimizer", "scheduler"} <= set(blob):
            raise ValueError(f"{opt_file}: not an optimizer checkpoint (expected optimizer and scheduler entries)")
        try:
            load_optimizer_state(policy, optimizer, blob["optimizer"], info)
            sched = D.all_gather_objects(blob["scheduler"], info)[0] if info.enabled else blob["scheduler"]
            scheduler.load_state_dict(sched)
        except (KeyError, TypeError, RuntimeError) as e:
            raise ValueError(f"{opt_file}: does not match this model's optimizer ({type(e).__name__}: {e})") from None
    else:
        with warnings.catch_warnings():      # the schedule continues where it stopped
            warnings.filterwarnings("ignore", message="Detected call of `lr_scheduler.step")
            for _ in range(state["step"]):
                scheduler.step()
    rng_file = path / "rng" / f"rank-{info.rank}.pt"
    if rng_file.exists():                          # a different number of ranks: fresh RNG is fine,
        set_rng_state(_torch_load(rng_file, "RNG state"))   # rollouts are seeded per step
    return state


def load_rank_file(path: str | Path, name: str, info: D.DistInfo):
    """This rank's `name/rank-<r>.pt` of checkpoint `path` (save_checkpoint's rank_files), None if absent."""
    f = Path(path) / name / f"rank-{info.rank}.pt"
    return _torch_load(f, name) if f.exists() else None


def resume_line(path: Path, state: dict, total: int) -> str:
    """'resuming from step k of N (path)', and what a checkpoint without optimizer state means."""
    fresh = "" if state.get("optimizer", True) else "; it has no optimizer state (a final checkpoint): AdamW restarts"
    return f"resuming from step {state['step']} of {total} ({path}){fresh}"


def _fsync_tree(folder: Path) -> None:
    mode = 0o666 & ~_umask()
    for p in folder.rglob("*"):
        if p.is_file():
            os.chmod(p, mode)       # safetensors writes 0600; every file of a checkpoint gets the same mode
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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
