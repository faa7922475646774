"""Fit a truncated-diffusion prior to a trained policy, afterwards (Franzese et al. 2023).

The prior ``p_phi(x_t' | o)`` has a loss of its own on detached observation features, so it
can be trained jointly with the denoiser (``policy.prior.alpha``) or, as here, later on a
frozen policy: one denoiser then serves several truncation points.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from ..diffusion.schedules import t_at_alpha
from ..models.prior import MixtureDensityPrior
from ..policy.config import PriorConfig


def fit_prior(
    policy,
    dataset,
    alpha: float,
    steps: int = 1000,
    batch_size: int = 256,
    lr: float = 1e-3,
    components: int = 8,
    hidden: int = 256,
    seed: int = 0,
) -> list[float]:
    """Give ``policy`` a prior at the time t' where alpha_t' = ``alpha``, trained by maximum
    likelihood on ``alpha a0 + sigma eps`` (fresh noise every step) of ``dataset``'s action
    chunks given the policy's frozen features. Returns the NLL per step (nats per dimension)."""
    gen = torch.Generator().manual_seed(seed)
    t_prime = t_at_alpha(policy.process, alpha)
    a = float(policy.process.alpha(torch.tensor(t_prime)))
    s = float(policy.process.sigma(torch.tensor(t_prime)))
    dev = policy.device
    prior = MixtureDensityPrior(
        policy.obs_encoder.output_dim, policy.window.horizon * policy.action_dim, components, hidden
    ).to(dev)
    opt = torch.optim.AdamW(prior.parameters(), lr=lr)
    rng, losses = np.random.default_rng(seed), []
    policy.eval()
    for _ in range(steps):
        batch = dataset[rng.integers(0, len(dataset), size=min(batch_size, len(dataset)))]
        with torch.no_grad():
            cond = policy.encode_obs({k: v.to(dev) for k, v in batch["obs"].items()})
            x0 = policy.normalizer.normalize("action", batch["action"].to(dev)).flatten(1)
            noise = torch.randn(x0.shape, generator=gen).to(dev)
        loss = prior.nll(a * x0 + s * noise, cond).mean()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    policy.prior, policy.t_prime = prior.eval(), t_prime
    cfg = PriorConfig(alpha=alpha, components=components, hidden=hidden)
    policy.cfg = dataclasses.replace(policy.cfg, prior=cfg)
    return losses
