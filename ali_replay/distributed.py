"""Multi-process data-parallel training started by torchrun: ranks, sharding, and one writer."""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ali_replay.errors import ConfigError

log = logging.getLogger(__name__)


@dataclass
class DistContext:
    """This process's place among the training processes (a single process is rank 0 of 1)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        """Whether several processes train together."""
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0 alone writes checkpoints, logs and pictures."""
        return self.rank == 0

    def device(self, requested: torch.device) -> torch.device:
        """One GPU per process when training on CUDA; the CPU otherwise."""
        if requested.type == "cuda" and self.enabled:
            return torch.device("cuda", self.local_rank)
        return requested

    def local_batch(self, global_batch: int) -> int:
        """Each process's share of the global batch."""
        if global_batch % self.world_size:
            raise ConfigError(f"train.batch_size={global_batch} must be divisible by the number of processes "
                              f"({self.world_size}); choose a multiple of {self.world_size}")
        return global_batch // self.world_size

    def mean(self, value: torch.Tensor) -> torch.Tensor:
        """The mean of a tensor over all processes."""
        if not self.enabled:
            return value
        value = value.clone()
        dist.all_reduce(value, op=dist.ReduceOp.SUM)
        return value / self.world_size


def init_from_env(device: torch.device) -> DistContext:
    """Join the process group that torchrun describes in the environment (or stay single)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return DistContext()
    ctx = DistContext(int(os.environ["RANK"]), world_size, int(os.environ.get("LOCAL_RANK", "0")))
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(ctx.local_rank)
        dist.init_process_group(backend=backend)
        log.info("rank %d/%d joined the %s process group", ctx.rank, world_size, backend)
    return ctx


def shutdown(ctx: DistContext) -> None:
    """Leave the process group."""
    if ctx.enabled and dist.is_initialized():
        dist.destroy_process_group()


def current() -> DistContext:
    """This process's place in an already joined process group (rank 0 of 1 when there is none)."""
    if not (dist.is_available() and dist.is_initialized()):
        return DistContext()
    return DistContext(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


def wrap(module: torch.nn.Module) -> torch.nn.Module:
    """`module` in DistributedDataParallel when several processes train together; itself otherwise."""
    if not current().enabled:
        return module
    from torch.nn.parallel import DistributedDataParallel as DDP

    device = next(module.parameters()).device
    return DDP(module, device_ids=[device.index] if device.type == "cuda" else None)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The network inside a DistributedDataParallel wrapper (or the module itself)."""
    from torch.nn.parallel import DistributedDataParallel as DDP

    return module.module if isinstance(module, DDP) else module


def broadcast_object(obj, src: int = 0):
    """`obj` of rank `src`, on every process (itself on a single process)."""
    if not current().enabled:
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=src)
    return box[0]
