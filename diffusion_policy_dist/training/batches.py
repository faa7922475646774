"""The order training batches come in: a pure function of (seed, epoch, batch index), so a
resumed run sees exactly the batches it would have seen, and DataLoader workers gather them."""

from __future__ import annotations

import numpy as np
import torch


class EpochBatches:
    """Batch ``i`` of epoch ``e`` is a pure function of (seed, e, i): a resumable data order.

    ``batch_size`` is the global batch; with ``world`` processes, process ``rank`` gets its
    contiguous share of every batch (``batch_size / world`` examples), so the processes together
    see exactly the batches one process would."""

    def __init__(self, n: int, batch_size: int, seed: int, rank: int = 0, world: int = 1) -> None:
        self.n, self.seed, self.rank, self.world = n, seed, rank, world
        self.batch_size = min(batch_size, n)
        self.per_epoch = max(1, n // self.batch_size)
        self.local = self.batch_size // world

    def indices(self, epoch: int, i: int) -> np.ndarray:
        perm = np.random.default_rng([self.seed, epoch]).permutation(self.n)
        start = i * self.batch_size + self.rank * self.local
        return perm[start : start + self.local]


class _BatchStream(torch.utils.data.IterableDataset):
    """Yields batches from (epoch, i) onwards; batch fetching runs in DataLoader workers."""

    def __init__(self, dataset, order: EpochBatches, epoch: int, i: int) -> None:
        self.dataset, self.order, self.epoch, self.i = dataset, order, epoch, i

    def __iter__(self):
        info = torch.utils.data.get_worker_info()
        wid, nw = (info.id, info.num_workers) if info else (0, 1)
        e, i = self.epoch, self.i
        k = 0
        while True:
            if k % nw == wid:
                yield self.dataset[self.order.indices(e, i)]
            k += 1
            i += 1
            if i == self.order.per_epoch:
                e, i = e + 1, 0


def batch_loader(
    dataset,
    order: EpochBatches,
    num_workers: int,
    seed: int,
    pin_memory: bool = False,
    start: tuple[int, int] = (0, 0),
) -> torch.utils.data.DataLoader:
    """An endless loader of whole batches in ``order`` from (epoch, batch) ``start`` on; with
    ``num_workers`` > 0 the batches are gathered in worker processes, 4 ahead per worker."""
    return torch.utils.data.DataLoader(
        _BatchStream(dataset, order, *start),
        batch_size=None,
        num_workers=num_workers,
        pin_memory=pin_memory,
        persistent_workers=False,
        prefetch_factor=4 if num_workers > 0 else None,
        # its own generator: creating the iterator must not draw from the global RNG,
        # or a resumed run's noise stream would be shifted by one draw
        generator=torch.Generator().manual_seed(seed),
    )
