"""Where sampling's random numbers come from: a torch generator, or a tape of given tensors.

Every normal draw of sampling (the starting state, a generator model's noise, a stochastic
step's noise) goes through :func:`normal`. A :class:`NoiseTape` passed where a
``torch.Generator`` goes replays given tensors instead, in order: the whole sampler becomes a pure
function of (observation, noise), which is what a captured CUDA graph, a compiled chunk and an
exported graph need, and the same noise reproduces the same actions. A tape can also record the
draws a real generator makes (their shapes are the noise inputs of a fixed-shape sampler).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


class NoiseTape:
    """Replays ``tensors`` in order (``record_from=None``), or draws from the generator
    ``record_from`` and keeps what it drew (``record_from`` a generator, or True for the global
    stream). ``position`` counts the draws so far."""

    def __init__(
        self,
        tensors: Sequence[Tensor] = (),
        record_from: torch.Generator | bool | None = None,
    ) -> None:
        self.tensors = list(tensors)
        self.recording = record_from is not None and record_from is not False
        self._generator = record_from if isinstance(record_from, torch.Generator) else None
        self.position = 0

    def next(self, shape: tuple[int, ...], device=None, dtype=None) -> Tensor:
        if self.recording:
            t = torch.randn(shape, generator=self._generator, device=device, dtype=dtype)
            self.tensors.append(t)
            self.position += 1
            return t
        if self.position >= len(self.tensors):
            raise ValueError(f"the noise tape holds {len(self.tensors)} draws; draw "
                             f"{self.position + 1} ({list(shape)}) was asked for")  # fmt: skip
        t = self.tensors[self.position]
        if tuple(t.shape) != tuple(shape):
            raise ValueError(
                f"noise draw {self.position}: the tape holds {list(t.shape)}, the sampler asks "
                f"for {list(shape)}"
            )
        self.position += 1
        return t.to(device=device, dtype=dtype)

    @property
    def shapes(self) -> list[tuple[int, ...]]:
        return [tuple(t.shape) for t in self.tensors]


def normal(
    shape: Sequence[int],
    generator: torch.Generator | NoiseTape | None = None,
    device=None,
    dtype=None,
) -> Tensor:
    """Standard normal numbers of ``shape``, from ``generator`` (a tape replays its next draw)."""
    if isinstance(generator, NoiseTape):
        return generator.next(tuple(shape), device=device, dtype=dtype)
    return torch.randn(tuple(shape), generator=generator, device=device, dtype=dtype)
