"""Observation encoders: an observation history dict -> one global condition vector.

``shape_meta["obs"]`` drives construction: each key has ``shape`` and ``type`` (``low_dim`` or
``rgb``). Low-dim keys are flattened over the history; each camera goes through an image
encoder (one per camera, or one shared), applied to every frame of the history. Features are
concatenated in sorted key order so the layout never depends on dict ordering.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

OBS_TYPES = ("low_dim", "rgb")


def obs_keys_by_type(shape_meta: Mapping[str, Any]) -> dict[str, list[str]]:
    """Sorted observation keys grouped by type, e.g. ``{"low_dim": [...], "rgb": [...]}``."""
    groups: dict[str, list[str]] = {t: [] for t in OBS_TYPES}
    for key, spec in sorted(shape_meta["obs"].items()):
        kind = spec.get("type", "low_dim")
        if kind not in OBS_TYPES:
            raise ValueError(f"shape_meta.obs.{key}: unknown type {kind!r}; use one of {OBS_TYPES}")
        groups[kind].append(key)
    return groups


def _module_name(key: str) -> str:
    """A camera key as a module name (torch forbids dots: LeRobot's ``observation.images.top``
    becomes ``observation__images__top``)."""
    return key.replace(".", "__")


def resolve_crop(
    crop_shape: tuple[int, int] | str | None, image_shape: tuple[int, ...]
) -> tuple[int, int] | None:
    """The (h, w) crop for a ``[C, H, W]`` camera: ``"auto"`` keeps 7/8 of each side (the
    96 -> 84 of Diffusion Policy and robomimic), None means no crop."""
    if crop_shape is None:
        return None
    if crop_shape == "auto":
        return (image_shape[-2] * 7 // 8, image_shape[-1] * 7 // 8)
    return (int(crop_shape[0]), int(crop_shape[1]))


class ObsEncoder(nn.Module):
    """Encodes ``{key: [B, To, *shape]}`` (low-dim already normalized, images uint8 or float in
    [0, 1], channels first) into ``[B, output_dim]``.

    Args:
        shape_meta: ``{"obs": {key: {"shape": [...], "type": "low_dim" | "rgb"}}, ...}``.
        n_obs_steps: history length To.
        crop_shape: random-crop size (H, W) for cameras in training (centre crop in eval),
            ``"auto"`` for 7/8 of each camera's sides, or None for no crop.
        share_rgb_encoder: one image encoder for all cameras instead of one each.
        num_keypoints, image_feature_dim: spatial-softmax keypoints and the per-frame image
            feature size.
    """

    def __init__(
        self,
        shape_meta: Mapping[str, Any],
        n_obs_steps: int,
        crop_shape: tuple[int, int] | str | None = "auto",
        share_rgb_encoder: bool = False,
        num_keypoints: int = 32,
        image_feature_dim: int | None = 64,
    ) -> None:
        super().__init__()
        groups = obs_keys_by_type(shape_meta)
        self.low_dim_keys = groups["low_dim"]
        self.rgb_keys = groups["rgb"]
        if not self.low_dim_keys and not self.rgb_keys:
            raise ValueError("shape_meta.obs lists no observation keys")
        self.n_obs_steps = n_obs_steps
        self.shapes = {
            k: tuple(int(d) for d in shape_meta["obs"][k]["shape"])
            for k in sorted(shape_meta["obs"])
        }
        self.image_encoders = nn.ModuleDict()
        if self.rgb_keys:
            from .vision import ImageEncoder  # only image policies pay for the import

            def make(key: str) -> nn.Module:
                shape = self.shapes[key]
                if len(shape) != 3:
                    raise ValueError(
                        f"shape_meta.obs.{key}: rgb shape must be [C, H, W], got {shape}"
                    )
                return ImageEncoder(
                    shape,
                    crop_shape=resolve_crop(crop_shape, shape),
                    num_keypoints=num_keypoints,
                    feature_dim=image_feature_dim,
                )

            if share_rgb_encoder:
                shapes = {self.shapes[k] for k in self.rgb_keys}
                if len(shapes) > 1:
                    raise ValueError(
                        f"a shared rgb encoder needs equal camera shapes, got {shapes}"
                    )
                self.image_encoders["shared"] = make(self.rgb_keys[0])
            else:
                for key in self.rgb_keys:
                    self.image_encoders[_module_name(key)] = make(key)
        self.share_rgb_encoder = share_rgb_encoder

    def _image_encoder(self, key: str) -> nn.Module:
        return self.image_encoders["shared" if self.share_rgb_encoder else _module_name(key)]

    def per_step_dims(self) -> dict[str, int]:
        """Feature size contributed per history step by each key (computed, never typed)."""
        dims = {k: math.prod(self.shapes[k]) for k in self.low_dim_keys}
        for k in self.rgb_keys:
            (dims[k],) = self._image_encoder(k).output_shape(self.shapes[k])
        return dims

    @property
    def output_dim(self) -> int:
        return self.n_obs_steps * sum(self.per_step_dims().values())

    def output_shape(self, input_shape: Any = None) -> tuple[int]:
        return (self.output_dim,)

    def forward(self, obs: Mapping[str, Tensor]) -> Tensor:
        feats = []
        for key in sorted(self.shapes):
            if key not in obs:
                raise KeyError(f"observation key {key!r} missing; got keys {sorted(obs)}")
            x = obs[key]
            B, To = x.shape[:2]
            if To != self.n_obs_steps or tuple(x.shape[2:]) != self.shapes[key]:
                raise ValueError(
                    f"observation {key!r}: expected [B, {self.n_obs_steps}, "
                    f"{', '.join(map(str, self.shapes[key]))}], got {tuple(x.shape)}"
                )
            if key in self.rgb_keys:
                f = self._image_encoder(key)(x.reshape(B * To, *x.shape[2:])).reshape(B, -1)
            else:
                f = x.reshape(B, -1).float()
            feats.append(f)
        return torch.cat(feats, dim=-1)
