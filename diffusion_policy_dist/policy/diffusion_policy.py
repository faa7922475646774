"""Diffusion policy over action chunks, for either denoiser (see :mod:`.denoisers`).

The policy owns normalization, the observation encoder, the forward process, the denoiser (and its
network) and the optional truncation prior; the network sees none of the first three. Sampling
goes through :func:`diffusion_policy_dist.diffusion.samplers.sample`, which sees only
``model(x_t, t, cond) -> x0``.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from .. import shard
from ..data.normalizer import Normalizer
from ..diffusion.processes import make_process
from ..diffusion.samplers import SAMPLERS, SamplerConfig, sample
from ..diffusion.schedules import t_at_alpha
from ..models.obs_encoders import ObsEncoder, obs_keys_by_type
from ..models.prior import MixtureDensityPrior
from ..models.unet1d import ConditionalUnet1D
from ..noise import NoiseTape
from ..queues import ActionQueue, ObsHistory, camera_chw, select_obs
from ..window import Window
from .config import PolicyConfig, build_choice, policy_config
from .denoisers import DENOISERS
from .prefix import inpaint, known_from_prefix, random_known


def sampler_options(sampler: SamplerConfig | Mapping[str, Any]) -> SamplerConfig:
    """A sampler options object from itself or a plain dict with ``kind`` (``method`` is read as
    ``kind``, the spelling of version 0.1)."""
    if isinstance(sampler, Mapping) and "method" in sampler and "kind" not in sampler:
        d = {k: v for k, v in sampler.items() if v is not None and k != "method"}
        sampler = {"kind": sampler["method"], **d}
    return build_choice(SAMPLERS, sampler, "sampler")


class DiffusionPolicy(nn.Module):
    """Maps an observation history to an action chunk.

    ``forward(batch) -> (loss, info)`` with the batch of :class:`SequenceDataset` (raw, not
    normalized). ``predict_action(obs) -> {"action": [B, Ta, Da], "action_pred": [B, H, Da]}``
    with ``obs = {key: [B, To, *shape]}``. ``select_action(obs_t)`` keeps the observation history
    and the action queue for a control loop; ``reset()`` clears them.
    """

    def __init__(
        self, cfg: PolicyConfig | Mapping, shape_meta: Mapping[str, Any], window: Window
    ) -> None:
        super().__init__()
        cfg = policy_config(cfg)
        self.cfg = cfg
        self.shape_meta = {"obs": dict(shape_meta["obs"]), "action": dict(shape_meta["action"])}
        self.window = window
        window.check_divisible(len(cfg.network.down_dims))
        self.action_dim = int(shape_meta["action"]["shape"][0])
        self.process = make_process(cfg.schedule)
        low_dim = obs_keys_by_type(shape_meta)["low_dim"]
        norm_shapes = {k: tuple(shape_meta["obs"][k]["shape"]) for k in low_dim}
        norm_shapes["action"] = (self.action_dim,)
        self.normalizer = Normalizer(norm_shapes, scheme=cfg.normalizer)
        enc = cfg.obs_encoder
        self.obs_encoder = ObsEncoder(
            shape_meta,
            window.n_obs_steps,
            crop_shape=enc.crop_shape,
            share_rgb_encoder=enc.share_rgb_encoder,
            num_keypoints=enc.num_keypoints,
            image_feature_dim=enc.image_feature_dim,
        )
        self.denoiser = DENOISERS[cfg.kind](
            cfg, self.process, self.action_dim, window.horizon, self._net_factory()
        )
        self.net = self.denoiser.net
        self.t_prime: float | None = None
        self.prior: MixtureDensityPrior | None = None
        if cfg.prior.alpha is not None:
            self.t_prime = t_at_alpha(self.process, cfg.prior.alpha)
            self.prior = MixtureDensityPrior(
                self.obs_encoder.output_dim,
                window.horizon * self.action_dim,
                components=cfg.prior.components,
                hidden=cfg.prior.hidden,
            )
        self.sampler_cfg: SamplerConfig = cfg.sampler
        self._history = ObsHistory(window.n_obs_steps)
        self._queue = ActionQueue()

    def _net_factory(self):
        cond_dim, net = self.obs_encoder.output_dim, self.cfg.network

        def make(
            in_channels: int, extra_cond: int, noise_dim: int = 0, noise_levels: int = 1
        ) -> nn.Module:
            return ConditionalUnet1D(
                in_channels,
                self.action_dim,
                cond_dim + extra_cond,
                down_dims=net.down_dims,
                kernel_size=net.kernel_size,
                n_groups=net.n_groups,
                time_embed_dim=net.time_embed_dim,
                noise_dim=noise_dim,
                noise_levels=noise_levels,
            )

        return make

    # ------------------------------------------------------------------ helpers
    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def samples_per_example(self) -> int:
        """Network rows per training example (``loss.m`` for a distributional model, else 1)."""
        return self.denoiser.samples_per_example

    def set_sampler(self, sampler: SamplerConfig | Mapping) -> None:
        """Change the default sampler used by predict_action / select_action."""
        self.sampler_cfg = sampler_options(sampler)

    def encode_obs(self, obs: Mapping[str, Tensor]) -> Tensor:
        """Normalized features ``[B, D]`` of a raw observation history ``{key: [B, To, ...]}``."""
        return self.obs_encoder(self.normalizer.normalize(obs))

    @torch.no_grad()
    def one_forward(self, cond: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """One network evaluation at t = 0.5 on random ``x_t`` for features ``cond [B, D]``: the
        floor of any sampler's cost per chunk (what latency is compared with)."""
        channels = self.process.channels(self.action_dim)
        shape = (cond.shape[0], self.window.horizon, channels)
        x = torch.randn(shape, generator=generator, device=cond.device)
        t = torch.full((cond.shape[0],), 0.5, device=cond.device)
        return self.denoiser.x0(x, t, cond, generator=generator)

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
        cond = self.encode_obs(obs)  # once per example, shared by a denoiser's samples
        pad = batch.get("action_is_pad")
        known = None
        if self.cfg.prefix_steps:
            known = random_known(x0, self.cfg.prefix_steps, self.window.action_start)
        per_example, info = self.denoiser.loss(
            x0, cond, None if pad is None else pad.to(dev), known=known
        )
        loss = per_example.mean()
        info["denoise_loss"] = float(loss.detach())
        if self.prior is not None:
            a_p = float(self.process.alpha(torch.tensor(self.t_prime)))
            s_p = float(self.process.sigma(torch.tensor(self.t_prime)))
            x_tp = a_p * x0 + s_p * shard.randn_like(x0)
            # the prior is trained on its own term, with features detached, so adding it never
            # changes the denoiser's gradients (joint training == training it afterwards)
            prior_nll = self.prior.nll(x_tp.flatten(1), cond.detach()).mean()
            loss = loss + self.cfg.prior.weight * prior_nll
            info["prior_nll"] = float(prior_nll.detach())
        info["loss"] = float(loss.detach())
        return loss, info

    # ------------------------------------------------------------------ inference
    def _start(self, cond: Tensor, sc: SamplerConfig, generator) -> tuple[Tensor, float, float]:
        """``(x_start, t_start, prior_ms)``: noise at ``sc.t_start``, or a draw of the truncation
        prior at t' (its wall-clock in ms)."""
        shape = (cond.shape[0], self.window.horizon, self.action_dim)
        if self.prior is not None and sc.use_prior and sc.t_start == 1.0:
            if isinstance(generator, NoiseTape):
                raise ValueError(
                    "a truncation prior picks a mixture component per chunk, which a fixed noise "
                    "tape cannot express: use sampler.use_prior=false (or a policy without one)"
                )
            t0 = time.perf_counter()
            x = self.prior.sample(cond, generator=generator).view(shape)
            return x, float(self.t_prime), 1000 * (time.perf_counter() - t0)
        x = self.process.prior_sample(shape, generator=generator, device=cond.device)
        return x, sc.t_start, 0.0

    @torch.no_grad()
    def predict_action(
        self,
        obs: Mapping[str, Tensor],
        sampler: SamplerConfig | Mapping | None = None,
        generator: torch.Generator | None = None,
        return_info: bool = False,
        prefix: Tensor | None = None,
        prefix_lengths: Tensor | None = None,
    ) -> dict[str, Any]:
        """Sample action chunks for raw observation histories ``{key: [B, To, *shape]}``.

        Returns ``{"action": [B, Ta, Da], "action_pred": [B, H, Da]}`` in env units, plus
        ``nfe`` and ``prior_ms`` (wall-clock of the truncation prior) when ``return_info``.
        ``prefix [B, P, Da]`` (env units): actions already committed from the current step on
        (``prefix_lengths [B]`` of them per row); the chunk continues them (see :mod:`.prefix`).
        """
        sc = self.sampler_cfg if sampler is None else sampler_options(sampler)
        dev = self.device
        cond = self.encode_obs({k: torch.as_tensor(v, device=dev) for k, v in obs.items()})
        x_start, t_start, prior_ms = self._start(cond, sc, generator)
        known = None
        if prefix is not None and prefix.shape[1] > 0:
            p = self.normalizer.normalize("action", torch.as_tensor(prefix, device=dev).float())
            known = known_from_prefix(p, prefix_lengths, self.window.horizon,
                                      self.window.action_start)  # fmt: skip
        kw = {"known": known} if known is not None and self.cfg.prefix_steps else {}

        def model(x_t: Tensor, t: Tensor, c: Tensor) -> Tensor:
            x0 = self.denoiser.x0(x_t, t, c, generator=generator, **kw)
            return x0 if known is None else inpaint(x0, known)

        x0, nfe = sample(
            model,
            x_start,
            process=self.process,
            method=sc.kind,
            steps=sc.steps,
            t_start=t_start,
            grid=sc.grid,
            cond=cond,
            generator=generator,
            clip_x0=sc.clip_x0,
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
        """Clear the observation history and the action queue (call at every episode start)."""
        self._history.reset()
        self._queue.reset()

    @torch.no_grad()
    def select_action(
        self, obs: Mapping[str, Any], generator: torch.Generator | None = None
    ) -> Tensor:
        """One action ``[B, Da]`` for the current observation ``{key: [B, *shape]}`` (cameras
        ``[B, C, H, W]`` or ``[B, H, W, C]``; an env's own keys are fine: keys the policy defines
        as slices are cut from them, see :func:`select_obs`).

        Plans a chunk when the action queue is empty and executes it for ``n_action_steps``
        calls. At an episode start the history is padded by repeating the first observation,
        exactly as the dataset pads training windows.
        """
        obs = select_obs({k: torch.as_tensor(v) for k, v in obs.items()}, self.shape_meta)
        obs = camera_chw(obs, self.shape_meta)
        self._history.push(obs)
        if not len(self._queue):
            chunk = self.predict_action(self._history.stacked(), generator=generator)["action"]
            self._queue.set(chunk)
        return self._queue.pop()
