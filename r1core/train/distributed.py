"""Data parallelism through `torchrun` and `torch.distributed` (no launcher of our own).

    torchrun --nproc-per-node 8 -m r1core train --config configs/gpu_r1_distill.yaml

Each rank samples and scores its share of the step's prompts, then trains on its own rollouts; the
loss normalisers (token counts, sequence counts) are all-reduced so the summed gradient equals the
single-process gradient of the same global batch, whatever the number of ranks.

How the policy is wrapped, in this order (the model itself knows nothing of parallelism):
1. `PolicyHead(model)`: one module whose forward runs the model and then the fused linear loss (or
   log-prob) op on its hidden states and lm_head weight, so FSDP/DDP hooks see every use of a weight.
2. `dist="fsdp"` (default): FSDP2 `fully_shard` on every transformer block, then on the PolicyHead
   (embeddings, final norm and lm_head live in the root unit).  Rollouts unshard the whole model once
   (`full_params`) instead of gathering every layer at every decoded token.
   `dist="ddp"`: the fallback when FSDP2 is unavailable (torch < 2.6) or unwanted: DDP over the
   PolicyHead (each rank holds the full model and optimizer state).
Both average gradients over ranks, so the local loss is multiplied by the world size.
"""
from __future__ import annotations

import contextlib
import datetime
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from r1core.train.policy_head import PolicyHead  # noqa: F401 (wrap/unwrap take it; its old home)


@dataclass
class DistInfo:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world > 1

    @property
    def main(self) -> bool:
        return self.rank == 0


def init(device: str = "auto") -> DistInfo:
    """Join the process group torchrun describes in the environment (gloo on CPU, NCCL on CUDA)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    use_cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("model.device='cuda' but torch sees no CUDA device")
    dev = torch.device("cuda", local) if use_cuda else torch.device("cpu")
    if use_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if use_cuda else "gloo", timeout=datetime.timedelta(minutes=30))
    return DistInfo(rank=rank, world=world, local_rank=local, device=dev)


def shutdown(info: DistInfo) -> None:
    if info.enabled and dist.is_initialized():
        dist.destroy_process_group()


# ---------------------------------------------------------------------------------------------
# collectives on small values (normalisers, statistics)
# ---------------------------------------------------------------------------------------------
def all_reduce(values: list[float] | torch.Tensor, op: str = "sum", info: DistInfo | None = None) -> torch.Tensor:
    """Sum (or max) of a small float64 vector over ranks; identity in a single process."""
    t = torch.as_tensor(values, dtype=torch.float64).clone()
    if info is not None and info.enabled:
        dev_t = t.to(info.device)
        dist.all_reduce(dev_t, op=dist.ReduceOp.SUM if op == "sum" else dist.ReduceOp.MAX)
        t = dev_t.cpu()
    return t


def all_gather_cat(x: torch.Tensor, info: DistInfo) -> torch.Tensor:
    """Concatenate equally-shaped tensors of every rank, in rank order."""
    if not info.enabled:
        return x
    parts = [torch.empty_like(x, device=info.device) for _ in range(info.world)]
    dist.all_gather(parts, x.to(info.device).contiguous())
    return torch.cat([p.to(x.device) for p in parts])


def all_gather_objects(obj, info: DistInfo) -> list:
    if not info.enabled:
        return [obj]
    out = [None] * info.world
    dist.all_gather_object(out, obj)
    return out


def barrier(info: DistInfo) -> None:
    if info.enabled:
        dist.barrier()


# ---------------------------------------------------------------------------------------------
# wrapping the policy
# ---------------------------------------------------------------------------------------------
def transformer_blocks(model: nn.Module) -> list[nn.Module]:
    """The repeated decoder blocks: the children of the first ModuleList named `layers` (or `h`)."""
    for name, mod in model.named_modules():
        if isinstance(mod, nn.ModuleList) and name.split(".")[-1] in ("layers", "h", "blocks"):
            return list(mod)
    return []


def fsdp_available() -> bool:
    try:
        from torch.distributed.fsdp import fully_shard  # noqa: F401
    except ImportError:
        return False
    return True


def wrap(head: PolicyHead, info: DistInfo, kind: str) -> nn.Module:
    """Apply data parallelism to the PolicyHead (see the module docstring for the order)."""
    if not info.enabled:
        return head
    if kind == "fsdp":
        if not fsdp_available():
            raise ValueError("run.dist='fsdp' needs torch >= 2.6 (torch.distributed.fsdp.fully_shard); use run.dist=ddp")
        from torch.distributed.fsdp import fully_shard
        for block in transformer_blocks(head.model):
            fully_shard(block)
        fully_shard(head)
        with torch.no_grad():   # FSDP2 picks its root at the first forward: make it the PolicyHead, not a
            head(torch.zeros(1, 1, dtype=torch.long, device=info.device), lambda h, w, b: h)  # block in generate()
        head.reshard()          # the root stays gathered after a forward: give the optimizer the sharded params
        return head
    if kind == "ddp":
        from torch.nn.parallel import DistributedDataParallel
        ids = [info.device.index] if info.device.type == "cuda" else None
        return DistributedDataParallel(head, device_ids=ids)
    raise ValueError(f"run.dist must be 'fsdp' or 'ddp', got {kind!r}")


def unwrap(module: nn.Module) -> nn.Module:
    """The CausalLM inside a (possibly DDP-wrapped) PolicyHead."""
    m = module.module if hasattr(module, "module") and isinstance(module.module, PolicyHead) else module
    return m.model if isinstance(m, PolicyHead) else m


@contextlib.contextmanager
def full_params(module: nn.Module):
    """Inside the block every FSDP2-sharded parameter is a plain, full tensor (rollouts, saving).
    No-op for unsharded modules."""
    try:
        from torch.distributed.fsdp import FSDPModule
    except ImportError:
        yield
        return
    units = [m for m in module.modules() if isinstance(m, FSDPModule)]
    if not units:
        yield
        return
    inner = [u for u in units if u is not module]   # the root never reshards after forward anyway
    for u in units:
        u.unshard()
    for u in inner:
        u.set_reshard_after_forward(False, recurse=False)
    try:
        yield
    finally:
        for u in inner:
            u.set_reshard_after_forward(True, recurse=False)
        for u in units:
            u.reshard()
