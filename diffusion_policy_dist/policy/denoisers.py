"""Denoisers: what the network sees, what its output means, and how it is trained.

Two implementations of one small interface, k-diffusion style, so the policy, the samplers and
the evaluation never branch on the model kind:

- ``x0(x_t, t, cond, generator, known)``: the sampler-facing model, an x0 estimate
  ``[B, H, Da]``;
- ``loss(x0, cond, action_is_pad, known)``: per-example training loss ``[B]`` (time weighting
  applied) and a dict of logged values;

``known`` (models trained with ``prefix_steps``): ``[B, H, Da + 1]``, committed actions (zero
elsewhere) and their mask, extra input channels of the network.
- ``samples_per_example``: network rows per training example.

:class:`MeanDenoiser` is Diffusion Policy's model: it predicts eps, x0 or v from ``x_t`` and is
trained with MSE; its x0 estimate is the posterior mean. :class:`DistributionalDenoiser` also
sees fresh noise ``xi`` (extra input channels, or a FiLM vector) and outputs a *sample* of
p(x0 | x_t, o); it is trained with a scoring rule over ``m`` samples per example, the condition
computed once and repeated.

A denoiser owns its network (``net``) but is not an ``nn.Module``: the policy registers the
network, so parameter names stay ``net.*``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from .. import noise, shard
from ..diffusion.losses import mse_loss, time_weight

# (in_channels, extra condition dims[, noise_dim, noise_levels]) -> network with
# forward(x [B, H, C], t [B], cond [B, D][, noise [B, m, noise_dim]]) (see ConditionalUnet1D)
NetFactory = Callable[..., nn.Module]


class Denoiser:
    """The interface (see the module docstring); subclasses set ``net``."""

    net: nn.Module

    def __init__(self, cfg: Any, process: Any, action_dim: int, horizon: int) -> None:
        self.cfg, self.process = cfg, process
        self.loss_cfg = cfg.loss
        self.action_dim, self.horizon = action_dim, horizon
        self.known_channels = action_dim + 1 if getattr(cfg, "prefix_steps", 0) else 0

    def _inputs(self, parts: list[Tensor], known: Tensor | None) -> Tensor:
        """The network input: ``parts`` and, for prefix-conditioned models, ``known`` (zeros, i.e.
        nothing committed, when None)."""
        if self.known_channels:
            if known is None:
                known = parts[0].new_zeros(*parts[0].shape[:-1], self.known_channels)
            parts = [*parts, known]
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=-1)

    @property
    def samples_per_example(self) -> int:
        return self.loss_cfg.samples_per_example

    def x0(
        self,
        x_t: Tensor,
        t: Tensor,
        cond: Tensor,
        generator: torch.Generator | None = None,
        known: Tensor | None = None,
    ) -> Tensor:
        raise NotImplementedError

    def loss(
        self, x0: Tensor, cond: Tensor, action_is_pad: Tensor | None = None, known=None
    ) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def _mask(self, action_is_pad: Tensor | None) -> Tensor | None:
        if self.loss_cfg.mask_padding and action_is_pad is not None:
            return ~action_is_pad
        return None

    def _weight(self, t: Tensor, space: str = "sample") -> Tensor:
        lc = self.loss_cfg
        return time_weight(lc.weighting, self.process, t, lc.weight_bias, space)


class MeanDenoiser(Denoiser):
    """Predicts eps, x0 or v (``cfg.prediction``) from ``x_t``; x0 estimate = posterior mean.
    In phase space it predicts x0 from z_t."""

    def __init__(self, cfg, process, action_dim, horizon, make_net: NetFactory) -> None:
        super().__init__(cfg, process, action_dim, horizon)
        self.net = make_net(process.channels(action_dim) + self.known_channels, 0)

    def x0(self, x_t, t, cond, generator=None, known=None):
        out = self.net(self._inputs([x_t], known), t, cond)
        return self.process.to_x0(self.cfg.prediction, out, x_t, t)

    def loss(self, x0, cond, action_is_pad=None, known=None):
        t, eps, x_t = self.process.training_draw(x0)
        pred = self.net(self._inputs([x_t], known), t, cond)
        target = self.process.target(self.cfg.prediction, x0, eps, t)
        per_example = mse_loss(pred.float(), target, self._mask(action_is_pad))
        return self._weight(t, self.cfg.prediction) * per_example, {}


class DistributionalDenoiser(Denoiser):
    """Outputs a posterior sample from ``x_t`` and fresh noise ``xi`` (``concat``: extra input
    channels of shape ``[H, noise_dim]``; ``film``: a ``[noise_dim]`` vector joins the
    condition; ``late``: a ``[noise_dim]`` vector enters only the network's last
    ``noise_levels`` decoder levels, so the rest runs once for an example's m samples)."""

    def __init__(self, cfg, process, action_dim, horizon, make_net: NetFactory) -> None:
        super().__init__(cfg, process, action_dim, horizon)
        channels = process.channels(action_dim) + self.known_channels
        if cfg.noise_injection == "concat":
            self.noise_shape: tuple[int, ...] = (horizon, cfg.noise_dim or action_dim)
            self.net = make_net(channels + self.noise_shape[1], 0)
        elif cfg.noise_injection == "late":
            self.noise_shape = (cfg.noise_dim or 32,)
            self.net = make_net(channels, 0, self.noise_shape[0], cfg.noise_levels)
        else:
            self.noise_shape = (cfg.noise_dim or 32,)
            self.net = make_net(channels, self.noise_shape[0])

    @property
    def shares_trunk(self) -> bool:
        """Whether an example's m samples share one pass of the network's trunk."""
        return self.cfg.noise_injection == "late"

    def x0(self, x_t, t, cond, generator=None, known=None, xi: Tensor | None = None):
        """A fresh posterior sample; ``xi [B, *noise_shape]`` is drawn from ``generator`` unless
        given."""
        if xi is None:
            shape = (x_t.shape[0], *self.noise_shape)
            xi = noise.normal(shape, generator, device=x_t.device, dtype=x_t.dtype)
        if self.cfg.noise_injection == "concat":
            return self.net(self._inputs([x_t, xi], known), t, cond)
        if self.shares_trunk:
            return self.net(self._inputs([x_t], known), t, cond, noise=xi)
        return self.net(self._inputs([x_t], known), t, torch.cat([cond, xi], dim=-1))

    def _samples(self, x_t: Tensor, t: Tensor, cond: Tensor, known: Tensor | None) -> Tensor:
        """``m`` posterior samples per example, ``[B, m, H, Da]`` (float32 for the loss)."""
        B, m = x_t.shape[0], self.loss_cfg.m
        xi = shard.randn(B, m, *self.noise_shape, device=x_t.device, dtype=x_t.dtype)
        if self.shares_trunk:
            return self.net(self._inputs([x_t], known), t, cond, noise=xi).float()

        def rep(v: Tensor | None) -> Tensor | None:
            return None if v is None else v.repeat_interleave(m, 0)

        rows = self.x0(rep(x_t), rep(t), rep(cond), known=rep(known), xi=xi.flatten(0, 1))
        return rows.float().view(B, m, *rows.shape[1:])

    def loss(self, x0, cond, action_is_pad=None, known=None):
        t, _, x_t = self.process.training_draw(x0)
        m = self.loss_cfg.m
        samples = self._samples(x_t, t, cond, known)
        per_example = self.loss_cfg.score(samples, x0, self._mask(action_is_pad))
        with torch.no_grad():
            info = {
                "x0_mse": float(((samples.mean(1) - x0) ** 2).mean()),
                "sample_spread": float(samples.std(1).mean()) if m > 1 else 0.0,
            }
        return self._weight(t) * per_example, info


DENOISERS: dict[str, type[Denoiser]] = {
    "mean": MeanDenoiser,
    "distributional": DistributionalDenoiser,
}
