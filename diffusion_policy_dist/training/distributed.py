"""Several training processes (torchrun, DDP): who this process is, and what the processes
agree on.

``torchrun --nproc_per_node=N [--nnodes ... --rdzv-endpoint ...] -m diffusion_policy_dist train
...`` starts N processes per node with ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set;
:func:`join` reads them and joins the process group (gloo on CPU, nccl on CUDA, one GPU per
process). Without them there is one process and nothing here does anything.

What the design guarantees (DESIGN §12): ``training.batch_size`` is the global batch; every
process draws the same global batch order from (seed, epoch) and trains on its contiguous share
(``batch_size / world`` examples); training noise is drawn for the whole batch and sliced
(:mod:`..shard`), so after DDP's gradient all-reduce W processes compute what one process
computes on the whole batch, up to float summation order. Only rank 0 writes.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist


@dataclass(frozen=True)
class World:
    """This process's place: ``rank`` of ``size`` processes, ``local_rank`` on its node."""

    rank: int = 0
    size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Whether this process writes checkpoints, metrics and progress (rank 0)."""
        return self.rank == 0

    @property
    def active(self) -> bool:
        return self.size > 1

    def max(self, value: int) -> int:
        """The largest ``value`` over the ranks, on every rank (e.g. the number of a signal
        that reached any one of them: 0 when none did)."""
        if not self.active:
            return value
        t = torch.tensor([int(value)], dtype=torch.int64, device=_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return int(t.item())

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Each value averaged over the ranks (the ranks hold equal shares of a batch)."""
        if not self.active or not values:
            return values
        keys = sorted(values)
        t = torch.tensor([float(values[k]) for k in keys], dtype=torch.float64)
        t = t.to(_comm_device())
        dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return {k: float(v) / self.size for k, v in zip(keys, t.cpu().tolist(), strict=True)}

    def broadcast(self, obj):
        """Rank 0's ``obj`` on every rank (a picklable value made in our own code)."""
        if not self.active:
            return obj
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def barrier(self) -> None:
        if self.active:
            dist.barrier()


def _comm_device() -> torch.device:
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def world_from_env(env: os._Environ | dict | None = None) -> World:
    """The world torchrun describes in the environment (one process when it describes none)."""
    env = os.environ if env is None else env
    size = int(env.get("WORLD_SIZE", "1"))
    if size < 1:
        raise ValueError(f"WORLD_SIZE={size} is not a number of processes")
    rank, local = int(env.get("RANK", "0")), int(env.get("LOCAL_RANK", "0"))
    if not 0 <= rank < size:
        raise ValueError(f"RANK={rank} is not in a world of WORLD_SIZE={size}")
    return World(rank, size, local)


def join(device: torch.device) -> tuple[World, torch.device]:
    """Join the process group torchrun set up (if any); returns the world and this process's
    device (``cuda:LOCAL_RANK`` for a CUDA run, the CPU otherwise)."""
    world = world_from_env()
    if not world.active:
        return world, device
    if device.type == "cuda":
        device = torch.device("cuda", world.local_rank)
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return world, device


def leave(world: World) -> None:
    """Leave the process group (after the last collective call)."""
    if world.active and dist.is_initialized():
        dist.destroy_process_group()
