"""Diffusion policy over action chunks: a mean (MSE/DDPM) model or a distributional one.

- **mean**: the UNet sees ``x_t`` and predicts eps, x0 or v; trained with masked MSE.
- **distributional**: the UNet also sees fresh noise ``xi`` (extra input channels, or a FiLM
  vector) and outputs a *sample* of p(x0 | x_t, o); trained with the energy or kernel score
  over ``m`` samples per example. The observation encoder runs once per example and its
  features are repeated for the m samples.

The policy owns normalization, the schedule and the parameterization; the network sees none
of them. Sampling goes through :func:`diffusion_policy_dist.diffusion.sampling.sample`, which
sees only ``model(x_t, t, cond) -> x0``.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ..data.normalizer import Normalizer
from ..diffusion.losses import energy_score, kernel_score, mse_loss, time_weight
from ..diffusion.parameterization import expand_like, prediction_target, to_x0
from ..diffusion.sampling import sample
from ..diffusion.schedules import make_schedule, t_at_alpha
from ..models.obs_encoders import ObsEncoder, obs_keys_by_type
from ..models.prior import MixtureDensityPrior
from ..models.unet1d import ConditionalUnet1D
from ..window import Window
from .config import PolicyConfig, SamplerConfig, from_dict


class DiffusionPolicy(nn.Module):
    """Maps an observation history to an action chunk.

    ``forward(batch) -> (loss, info)`` with the batch of :class:`SequenceDataset` (raw, not
    normalized). ``predict_action(obs) -> {"action": [B, Ta, Da], "action_pred": [B, H, Da]}``
    with ``obs = {key: [B, To, *shape]}``. ``select_action(obs_t)`` keeps observation and
    action queues for a control loop; ``reset()`` clears them.
    """

    def __init__(
        self, cfg: PolicyConfig | Mapping, shape_meta: Mapping[str, Any], window: Window
    ) -> None:
        super().__init__()
        cfg = from_dict(PolicyConfig, cfg, "policy")
        self.cfg = cfg
        self.shape_meta = {"obs": dict(shape_meta["obs"]), "action": dict(shape_meta["action"])}
        self.window = window
        window.check_divisible(len(cfg.network.down_dims))
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.schedule = make_schedule(cfg.schedule)
        groups = obs_keys_by_type(shape_meta)
        norm_shapes = {k: tuple(shape_meta["obs"][k]["shape"]) for k in groups["low_dim"]}
        norm_shapes["action"] = (self.action_dim,)
        self.normalizer = Normalizer(norm_shapes, mode=cfg.normalizer_mode)
        enc = cfg.obs_encoder
        self.obs_encoder = ObsEncoder(
            shape_meta,
            window.n_obs_steps,
            crop_shape=enc.crop_shape,
            share_rgb_encoder=enc.share_rgb_encoder,
            num_keypoints=enc.num_keypoints,
            image_feature_dim=enc.image_feature_dim,
        )
        cond_dim = self.obs_encoder.output_dim
        in_channels = self.action_dim
        self.distributional = cfg.kind == "distributional"
        if self.distributional:
            if cfg.noise_injection == "concat":
                self.noise_shape = (window.horizon, cfg.noise_dim or self.action_dim)
                in_channels += self.noise_shape[1]
            else:  # film: a noise vector joins the global condition
                self.noise_shape = (cfg.noise_dim or 32,)
                cond_dim += self.noise_shape[0]
        self.net = ConditionalUnet1D(
            in_channels,
            self.action_dim,
            cond_dim,
            down_dims=cfg.network.down_dims,
            kernel_size=cfg.network.kernel_size,
            n_groups=cfg.network.n_groups,
            time_embed_dim=cfg.network.time_embed_dim,
        )
        self.t_prime: float | None = None
        self.prior: MixtureDensityPrior | None = None
        if cfg.prior.alpha is not None:
            self.t_prime = t_at_alpha(self.schedule, cfg.prior.alpha)
            self.prior = MixtureDensityPrior(
                self.obs_encoder.output_dim,
                window.horizon * self.action_dim,
                components=cfg.prior.components,
                hidden=cfg.prior.hidden,
            )
        self.sampler_cfg = cfg.sampler
        self.reset()

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    def set_sampler(self, sampler: SamplerConfig | Mapping) -> None:
        """Change the default sampler used by predict_action / select_action."""
        self.sampler_cfg = from_dict(SamplerConfig, sampler, "sampler")

    def encode_obs(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Normalized features ``[B, D]`` of a raw observation history ``{key: [B, To, ...]}``."""
        return self.obs_encoder(self.normalizer.normalize(obs))

    def x0_estimate(
        self,
        x_t: Tensor,
        t: Tensor,
        cond: Tensor,
        generator: torch.Generator | None = None,
        xi: Tensor | None = None,
    ) -> Tensor:
        """The sampler-facing model: an x0 estimate ``[B, H, Da]`` of normalized actions.

        Mean model: the posterior mean. Distributional model: a fresh posterior sample (noise
        ``xi`` drawn here from ``generator`` unless given, shape ``[B, *noise_shape]``).
        """
        if not self.distributional:
            a = expand_like(self.schedule.alpha(t), x_t)
            s = expand_like(self.schedule.sigma(t), x_t)
            return to_x0(self.cfg.prediction, self.net(x_t, t, cond), x_t, a, s)
        if xi is None:
            xi = torch.randn(
                (x_t.shape[0], *self.noise_shape),
                generator=generator,
                device=x_t.device,
                dtype=x_t.dtype,
            )
        if self.cfg.noise_injection == "concat":
            return self.net(torch.cat([x_t, xi], dim=-1), t, cond)
        return self.net(x_t, t, torch.cat([cond, xi], dim=-1))

    # ------------------------------------------------------------------ training
    def forward(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        return self.compute_loss(batch)

    def compute_loss(self, batch: Mapping[str, Any]) -> tuple[Tensor, dict[str, float]]:
        """Training loss on a raw batch (never mutated). Returns ``(loss, info)``."""
        if not bool(self.normalizer.fitted):
            raise RuntimeError("the policy's normalizer is not fitted; call policy.normalizer.fit")
        dev = self.device
        obs = {k: v.to(dev, non_blocking=True) for k, v in batch["obs"].items()}
        x0 = self.normalizer.normalize("action", batch["action"].to(dev, non_blocking=True))
        cond = self.encode_obs(obs)  # once per example, shared by the m generator samples
        B = x0.shape[0]
        lc = self.cfg.loss
        mask = None
        if lc.mask_padding and "action_is_pad" in batch:
            mask = ~batch["action_is_pad"].to(dev)
        t = torch.rand(B, device=dev)
        eps = torch.randn_like(x0)
        a = expand_like(self.schedule.alpha(t), x0)
        s = expand_like(self.schedule.sigma(t), x0)
        x_t = a * x0 + s * eps
        w = time_weight(lc.weighting, self.schedule, t, lc.weight_bias)
        info: dict[str, float] = {}
        if not self.distributional:
            pred = self.net(x_t, t, cond)
            target = prediction_target(self.cfg.prediction, x0, eps, a, s)
            per_example = mse_loss(pred, target, mask)
        else:
            m = lc.m
            samples = self.x0_estimate(
                x_t.repeat_interleave(m, 0), t.repeat_interleave(m, 0), cond.repeat_interleave(m, 0)
            ).view(B, m, *x0.shape[1:])
            if lc.name == "energy":
                per_example = energy_score(samples, x0, beta=lc.beta, lam=lc.lam, mask=mask)
            else:
                per_example = kernel_score(samples, x0, lc.kernel, lc.bandwidth, mask=mask)
            with torch.no_grad():
                info["x0_mse"] = float(((samples.mean(1) - x0) ** 2).mean())
                info["sample_spread"] = float(samples.std(1).mean()) if m > 1 else 0.0
        loss = (w * per_example).mean()
        info["denoise_loss"] = float(loss.detach())
        if self.prior is not None:
            a_p = float(self.schedule.alpha(torch.tensor(self.t_prime)))
            s_p = float(self.schedule.sigma(torch.tensor(self.t_prime)))
            x_tp = a_p * x0 + s_p * torch.randn_like(x0)
            # the prior is trained on its own term, with features detached, so adding it never
            # changes the denoiser's gradients (joint training == training it afterwards)
            prior_nll = self.prior.nll(x_tp.flatten(1), cond.detach()).mean()
            loss = loss + self.cfg.prior.weight * prior_nll
            info["prior_nll"] = float(prior_nll.detach())
        info["loss"] = float(loss.detach())
        return loss, info

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def predict_action(
        self,
        obs: Mapping[str, Tensor],
        sampler: SamplerConfig | Mapping | None = None,
        generator: torch.Generator | None = None,
        return_info: bool = False,
    ) -> dict[str, Any]:
        """Sample action chunks for raw observation histories ``{key: [B, To, *shape]}``.

        Returns ``{"action": [B, Ta, Da], "action_pred": [B, H, Da]}`` in env units, plus
        ``nfe`` and ``prior_ms`` (wall-clock of the truncation prior) when ``return_info``.
        """
        sc = self.sampler_cfg if sampler is None else from_dict(SamplerConfig, sampler, "sampler")
        dev = self.device
        obs = {k: torch.as_tensor(v, device=dev) for k, v in obs.items()}
        cond = self.encode_obs(obs)
        B = cond.shape[0]
        shape = (B, self.window.horizon, self.action_dim)
        t_start = sc.t_start
        prior_ms = 0.0
        if self.prior is not None and sc.use_prior and t_start == 1.0:
            t0 = time.perf_counter()
            x_T = self.prior.sample(cond, generator=generator).view(shape)
            prior_ms = 1000 * (time.perf_counter() - t0)
            t_start = self.t_prime
        else:
            x_T = torch.randn(shape, generator=generator, device=dev)

        def model(x_t: Tensor, t: Tensor, c: Tensor) -> Tensor:
            return self.x0_estimate(x_t, t, c, generator=generator)

        x0, nfe = sample(
            model,
            x_T,
            schedule=self.schedule,
            method=sc.method,
            steps=sc.steps,
            t_start=t_start,
            grid=sc.grid,
            cond=cond,
            generator=generator,
            **sc.opts(),
        )
        action_pred = self.normalizer.unnormalize("action", x0)
        out: dict[str, Any] = {
            "action": self.window.executed(action_pred),
            "action_pred": action_pred,
        }
        if return_info:
            out.update(nfe=nfe, prior_ms=prior_ms)
        return out

    def reset(self) -> None:
        """Clear the observation and action queues (call at every episode start)."""
        self._obs_queue: collections.deque = collections.deque(maxlen=self.window.n_obs_steps)
        self._action_queue: collections.deque = collections.deque()

    @torch.no_grad()
    def select_action(
        self, obs: Mapping[str, Tensor], generator: torch.Generator | None = None
    ) -> Tensor:
        """One action ``[B, Da]`` for the current observation ``{key: [B, *shape]}``.

        Plans a chunk when the action queue is empty and executes it for ``n_action_steps``
        calls. At an episode start the history is padded by repeating the first observation,
        exactly as the dataset pads training windows.
        """
        obs = {k: torch.as_tensor(v) for k, v in obs.items()}
        if not self._obs_queue:
            for _ in range(self.window.n_obs_steps - 1):
                self._obs_queue.append(obs)
        self._obs_queue.append(obs)
        if not self._action_queue:
            history = {k: torch.stack([o[k] for o in self._obs_queue], dim=1) for k in obs}
            actions = self.predict_action(history, generator=generator)["action"]
            self._action_queue.extend(actions.unbind(1))
        return self._action_queue.popleft()
