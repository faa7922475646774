"""Exponential moving average of a model's weights, kept as a frozen copy used for inference."""

from __future__ import annotations

import copy

import torch
from torch import nn


class EMA:
    """EMA with the warm-up decay ``1 - (1 + step / inv_gamma) ** -power`` clipped to
    ``[min_decay, max_decay]`` (power 0.75 reaches 0.999 after ~10k steps, as in DP).

    ``module`` is the averaged copy; buffers (e.g. normalizer statistics) are copied, not
    averaged.
    """

    def __init__(
        self,
        model: nn.Module,
        power: float = 0.75,
        inv_gamma: float = 1.0,
        min_decay: float = 0.0,
        max_decay: float = 0.9999,
    ) -> None:
        self.module = copy.deepcopy(model).eval().requires_grad_(False)
        self.power, self.inv_gamma = power, inv_gamma
        self.min_decay, self.max_decay = min_decay, max_decay
        self.step = 0

    def decay(self, step: int) -> float:
        d = 1.0 - (1.0 + step / self.inv_gamma) ** -self.power
        return min(max(d, self.min_decay), self.max_decay)

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        d = self.decay(self.step)
        for p_ema, p in zip(self.module.parameters(), model.parameters()):
            p_ema.lerp_(p.detach(), 1.0 - d)
        for b_ema, b in zip(self.module.buffers(), model.buffers()):
            b_ema.copy_(b)
        self.step += 1

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.module.state_dict()

    def load_state_dict(self, state: dict[str, torch.Tensor], step: int) -> None:
        self.module.load_state_dict(state)
        self.step = step
