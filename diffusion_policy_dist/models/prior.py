"""Conditional mixture-density prior ``p_phi(x | cond)`` over flattened vectors.

Used for truncated diffusion: it models ``x_t' = alpha_t' a0 + sigma_t' eps`` given observation
features, so sampling can start at t' < 1 instead of at pure noise. It knows nothing about
schedules; the policy builds its training targets.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class MixtureDensityPrior(nn.Module):
    """K diagonal Gaussians whose weights, means and scales come from an MLP on ``cond``.

    ``nll(x [B, D], cond [B, C]) -> [B]``; ``sample(cond [B, C]) -> [B, D]``.
    """

    def __init__(self, cond_dim: int, dim: int, components: int = 8, hidden: int = 256) -> None:
        super().__init__()
        self.dim, self.components = dim, components
        self.trunk = nn.Sequential(
            nn.Linear(max(cond_dim, 1), hidden), nn.Mish(), nn.Linear(hidden, hidden), nn.Mish()
        )
        self.logits = nn.Linear(hidden, components)
        self.means = nn.Linear(hidden, components * dim)
        self.log_scales = nn.Linear(hidden, components * dim)
        self.cond_dim = cond_dim

    def _params(self, cond: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        if self.cond_dim == 0:
            cond = torch.zeros(cond.shape[0], 1, device=cond.device, dtype=cond.dtype)
        h = self.trunk(cond)
        B = h.shape[0]
        log_w = F.log_softmax(self.logits(h), dim=-1)
        mu = self.means(h).view(B, self.components, self.dim)
        log_s = self.log_scales(h).view(B, self.components, self.dim).clamp(-7.0, 3.0)
        return log_w, mu, log_s

    def nll(self, x: Tensor, cond: Tensor) -> Tensor:
        """Negative log-likelihood per example, in nats per dimension."""
        log_w, mu, log_s = self._params(cond)
        z = (x.unsqueeze(1) - mu) * torch.exp(-log_s)
        log_n = -0.5 * (z * z).sum(-1) - log_s.sum(-1) - 0.5 * self.dim * math.log(2 * math.pi)
        return -torch.logsumexp(log_w + log_n, dim=-1) / self.dim

    @torch.no_grad()
    def sample(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        log_w, mu, log_s = self._params(cond)
        B = cond.shape[0]
        k = torch.multinomial(log_w.exp(), 1, generator=generator).squeeze(1)
        idx = torch.arange(B, device=cond.device)
        z = torch.randn(B, self.dim, generator=generator, device=cond.device, dtype=mu.dtype)
        return mu[idx, k] + torch.exp(log_s[idx, k]) * z
