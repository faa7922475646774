"""Training noise that does not depend on how a batch is split across processes.

With W processes (torchrun), each trains on its contiguous share of every global batch. For the
W processes to compute exactly what one process computes on the whole batch, each example must
get the same random numbers either way. Every per-example draw of training (diffusion times,
noise, generator noise, committed prefixes, random crops) goes through these functions: inside
``batch_shard(rank, world)`` they draw the rows of the whole global batch, from a random stream
that every process keeps identical, and return this process's rows. Outside it (one process)
they are the plain torch calls, so results are unchanged. Drawing the whole batch's noise costs
a few microseconds; the network, which runs on the local rows only, costs milliseconds.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextvars import ContextVar

import torch
from torch import Tensor

_SHARD: ContextVar[tuple[int, int]] = ContextVar("batch_shard", default=(0, 1))


@contextlib.contextmanager
def batch_shard(rank: int, world: int) -> Iterator[None]:
    """Draws in this block are process ``rank``'s rows of a batch split over ``world``."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not in a world of {world} processes")
    token = _SHARD.set((rank, world))
    try:
        yield
    finally:
        _SHARD.reset(token)


def current() -> tuple[int, int]:
    """``(rank, world)`` of the block we are in; ``(0, 1)`` outside any."""
    return _SHARD.get()


def _rows(draw: Callable[..., Tensor], rows: int, rest: tuple[int, ...], **kw) -> Tensor:
    rank, world = _SHARD.get()
    if world == 1:
        return draw((rows, *rest), **kw)
    return draw((rows * world, *rest), **kw)[rank * rows : (rank + 1) * rows]


def rand(rows: int, *rest: int, device=None, dtype=None) -> Tensor:
    """Uniform [0, 1) numbers ``[rows, *rest]``, this process's rows of the global draw."""
    return _rows(torch.rand, rows, rest, device=device, dtype=dtype)


def randn(rows: int, *rest: int, device=None, dtype=None) -> Tensor:
    """Standard normal numbers ``[rows, *rest]``, this process's rows of the global draw."""
    return _rows(torch.randn, rows, rest, device=device, dtype=dtype)


def randn_like(x: Tensor) -> Tensor:
    return randn(*x.shape, device=x.device, dtype=x.dtype)


def randint(low: int, high: int, rows: int, *rest: int, device=None) -> Tensor:
    """Integers in [low, high) ``[rows, *rest]``, this process's rows of the global draw."""

    def draw(shape, device=None):
        return torch.randint(low, high, shape, device=device)

    return _rows(draw, rows, rest, device=device)
