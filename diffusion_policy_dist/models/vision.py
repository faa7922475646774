"""Vision backbone for image observations.

The pipeline used by image policies is::

    uint8/float images [N, C, H, W]
      -> CropRandomizer   (random crop in train(), centre crop in eval())
      -> [0, 1] -> [-1, 1]
      -> ResNet18GN       (ResNet-18 trunk, GroupNorm instead of BatchNorm)
      -> SpatialSoftmax   (expected 2-D keypoint coordinates)
      -> Linear           (optional projection to ``feature_dim``)
      -> [N, F]

GroupNorm replaces BatchNorm because policies are trained with small, highly correlated
batches (consecutive frames of the same episode) and are often run under EMA weights, where
BatchNorm's running statistics are a poor fit. Every module reports ``output_shape`` so that
downstream layer sizes are derived from the input shape instead of being typed by hand.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .. import shard

__all__ = ["CropRandomizer", "ImageEncoder", "ResNet18GN", "SpatialSoftmax"]


def _conv_out(size: int, kernel: int, stride: int, padding: int) -> int:
    """Output length of a conv / pool along one axis (dilation 1, floor mode)."""
    return (size + 2 * padding - kernel) // stride + 1


def _fmt(shape: tuple[int, ...]) -> str:
    return ", ".join(map(str, shape))


def _check_chw(name: str, shape: tuple[int, ...]) -> tuple[int, int, int]:
    if len(shape) != 3 or any(int(s) <= 0 for s in shape):
        raise ValueError(f"{name} expects a positive (C, H, W) shape, got {tuple(shape)}")
    c, h, w = (int(s) for s in shape)
    return c, h, w


class _BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with GroupNorm: [N, Cin, H, W] -> [N, Cout, H', W']."""

    def __init__(self, in_ch: int, out_ch: int, stride: int, groups_per_channel: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv1 = nn.Conv2d(in_ch, out_ch, 3, stride=stride, padding=1, bias=False)
        self.norm1 = nn.GroupNorm(out_ch // groups_per_channel, out_ch)
        self.conv2 = nn.Conv2d(out_ch, out_ch, 3, stride=1, padding=1, bias=False)
        self.norm2 = nn.GroupNorm(out_ch // groups_per_channel, out_ch)
        self.downsample: nn.Module | None = None
        if stride != 1 or in_ch != out_ch:
            # A projection shortcut is needed whenever the residual changes shape.
            self.downsample = nn.Sequential(
                nn.Conv2d(in_ch, out_ch, 1, stride=stride, bias=False),
                nn.GroupNorm(out_ch // groups_per_channel, out_ch),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = F.relu(self.norm1(self.conv1(x)), inplace=True)
        out = self.norm2(self.conv2(out))
        return F.relu(out + identity, inplace=True)

    def output_hw(self, h: int, w: int) -> tuple[int, int]:
        # conv1 carries the stride; conv2 and the 1x1 shortcut agree with it by construction.
        return _conv_out(h, 3, self.stride, 1), _conv_out(w, 3, self.stride, 1)


class ResNet18GN(nn.Module):
    """ResNet-18 trunk with GroupNorm and no global pool / fc head.

    forward: ``[N, in_channels, H, W]`` float -> ``[N, 512, ceil(H/32), ceil(W/32)]``.

    Args:
        in_channels: number of input image channels.
        groups_per_channel: channels per GroupNorm group; each norm over ``C`` channels uses
            ``C // groups_per_channel`` groups (16 -> 4 groups at width 64, 32 at width 512).
    """

    widths = (64, 128, 256, 512)
    out_channels = 512

    def __init__(self, in_channels: int = 3, groups_per_channel: int = 16) -> None:
        super().__init__()
        if in_channels <= 0:
            raise ValueError(f"in_channels must be positive, got {in_channels}")
        if groups_per_channel <= 0 or 64 % groups_per_channel != 0:
            raise ValueError(
                f"groups_per_channel must be a positive divisor of 64, got {groups_per_channel}"
            )
        self.in_channels = in_channels
        self.groups_per_channel = groups_per_channel

        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.norm1 = nn.GroupNorm(64 // groups_per_channel, 64)
        self.maxpool = nn.MaxPool2d(3, stride=2, padding=1)
        stages = []
        in_ch = 64
        for i, width in enumerate(self.widths):
            stride = 1 if i == 0 else 2
            stages.append(
                nn.Sequential(
                    _BasicBlock(in_ch, width, stride, groups_per_channel),
                    _BasicBlock(width, width, 1, groups_per_channel),
                )
            )
            in_ch = width
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.GroupNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[N, in_channels, H, W]`` -> ``[N, 512, ceil(H/32), ceil(W/32)]``."""
        x = F.relu(self.norm1(self.conv1(x)), inplace=True)
        x = self.maxpool(x)
        x = self.layer1(x)
        x = self.layer2(x)
        x = self.layer3(x)
        return self.layer4(x)

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """Feature-map shape ``(512, H', W')`` for an input ``(C, H, W)``, from conv arithmetic."""
        c, h, w = _check_chw("ResNet18GN.output_shape", input_shape)
        if c != self.in_channels:
            raise ValueError(f"ResNet18GN expects {self.in_channels} input channels, got {c}")
        h, w = _conv_out(h, 7, 2, 3), _conv_out(w, 7, 2, 3)
        h, w = _conv_out(h, 3, 2, 1), _conv_out(w, 3, 2, 1)
        for stage in (self.layer1, self.layer2, self.layer3, self.layer4):
            for block in stage:
                h, w = block.output_hw(h, w)
        return (self.out_channels, h, w)


class SpatialSoftmax(nn.Module):
    """Soft-argmax keypoints of a feature map.

    forward: ``[N, C, H, W]`` -> ``[N, 2 * K]`` laid out as ``(x_0, y_0, x_1, y_1, ...)``, each
    coordinate the softmax-weighted mean position in ``[-1, 1]`` (x along W, y along H; -1 is
    the first column/row, +1 the last).

    Args:
        input_shape: ``(C, H, W)`` of the feature map; fixes the coordinate grid.
        num_keypoints: ``K``; a 1x1 conv maps ``C -> K`` channels first. ``None`` keeps ``K = C``.
        temperature: softmax temperature (logits are divided by it); must be positive.
        learnable_temperature: make the temperature a trained parameter.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        num_keypoints: int | None = 32,
        temperature: float = 1.0,
        learnable_temperature: bool = False,
    ) -> None:
        super().__init__()
        c, h, w = _check_chw("SpatialSoftmax", input_shape)
        if temperature <= 0:
            raise ValueError(f"temperature must be positive, got {temperature}")
        if num_keypoints is not None and num_keypoints <= 0:
            raise ValueError(f"num_keypoints must be positive or None, got {num_keypoints}")
        self.input_shape = (c, h, w)
        self.num_keypoints = c if num_keypoints is None else num_keypoints
        self.keypoint_net: nn.Module | None = (
            None if num_keypoints is None else nn.Conv2d(c, num_keypoints, kernel_size=1)
        )
        # Stored as a log so that a learned temperature can never reach zero or go negative.
        log_t = torch.tensor(float(temperature)).log()
        if learnable_temperature:
            self.log_temperature = nn.Parameter(log_t)
        else:
            self.register_buffer("log_temperature", log_t)

        # A 1-pixel axis has no extent; linspace(-1, 1, 1) gives -1, so pin it to the centre.
        xs = torch.linspace(-1.0, 1.0, w) if w > 1 else torch.zeros(1)
        ys = torch.linspace(-1.0, 1.0, h) if h > 1 else torch.zeros(1)
        grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
        pos = torch.stack([grid_x.reshape(-1), grid_y.reshape(-1)], dim=-1)  # [H*W, 2]
        self.register_buffer("pos", pos, persistent=False)

    @property
    def temperature(self) -> torch.Tensor:
        return self.log_temperature.exp()

    def forward(self, feature: torch.Tensor) -> torch.Tensor:
        """``[N, C, H, W]`` -> ``[N, 2 * num_keypoints]``."""
        if tuple(feature.shape[1:]) != self.input_shape:
            raise ValueError(
                f"SpatialSoftmax expected features of shape (N, {_fmt(self.input_shape)}), "
                f"got {tuple(feature.shape)}"
            )
        if self.keypoint_net is not None:
            feature = self.keypoint_net(feature)
        n = feature.shape[0]
        # At least float32: a softmax-weighted sum over many positions loses precision in half.
        dtype = torch.promote_types(feature.dtype, torch.float32)
        logits = feature.reshape(n, self.num_keypoints, -1).to(dtype)
        attention = torch.softmax(logits / self.temperature.to(dtype), dim=-1)  # [N, K, H*W]
        coords = attention @ self.pos.to(dtype)  # [N, K, 2]
        return coords.reshape(n, 2 * self.num_keypoints)

    def output_shape(self, input_shape: tuple[int, int, int] | None = None) -> tuple[int]:
        """``(2 * num_keypoints,)``; ``input_shape`` is accepted for interface uniformity."""
        return (2 * self.num_keypoints,)


class CropRandomizer(nn.Module):
    """Random crop in ``train()``, deterministic centre crop in ``eval()``.

    forward: ``[..., C, H, W]`` (any dtype) -> ``[..., C, crop_h, crop_w]``. In training each
    image gets its own offset, drawn from torch's global RNG so ``torch.manual_seed`` makes it
    reproducible.
    """

    def __init__(self, input_shape: tuple[int, int, int], crop_shape: tuple[int, int]) -> None:
        super().__init__()
        c, h, w = _check_chw("CropRandomizer", input_shape)
        if len(crop_shape) != 2 or any(int(s) <= 0 for s in crop_shape):
            raise ValueError(f"crop_shape must be a positive (H, W) pair, got {tuple(crop_shape)}")
        ch, cw = (int(s) for s in crop_shape)
        if ch > h or cw > w:
            raise ValueError(
                f"crop_shape {(ch, cw)} is larger than the input image {(h, w)} "
                f"(input_shape {(c, h, w)})"
            )
        self.input_shape = (c, h, w)
        self.crop_shape = (ch, cw)

    def output_shape(self, input_shape: tuple[int, int, int]) -> tuple[int, int, int]:
        """``(C, crop_h, crop_w)`` for an input ``(C, H, W)``."""
        c, _, _ = _check_chw("CropRandomizer.output_shape", input_shape)
        return (c, *self.crop_shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C, H, W]`` -> ``[..., C, crop_h, crop_w]``."""
        if x.dim() < 3 or tuple(x.shape[-3:]) != self.input_shape:
            raise ValueError(
                f"CropRandomizer expected images of shape (..., {_fmt(self.input_shape)}), "
                f"got {tuple(x.shape)}"
            )
        _, h, w = self.input_shape
        ch, cw = self.crop_shape
        if not self.training:
            top, left = (h - ch) // 2, (w - cw) // 2
            return x[..., top : top + ch, left : left + cw]
        if (ch, cw) == (h, w):
            return x

        lead = x.shape[:-3]
        flat = x.reshape(-1, *self.input_shape)
        n, c = flat.shape[:2]
        # Offsets are drawn on the CPU generator so the crops for a given seed do not depend
        # on the device the images live on.
        top = shard.randint(0, h - ch + 1, n).to(x.device)
        left = shard.randint(0, w - cw + 1, n).to(x.device)
        rows = top[:, None] + torch.arange(ch, device=x.device)  # [N, ch]
        cols = left[:, None] + torch.arange(cw, device=x.device)  # [N, cw]
        # Two gathers (rows, then columns) keep memory at O(N*C*ch*W), with no batch loop.
        out = flat.gather(2, rows[:, None, :, None].expand(n, c, ch, w))
        out = out.gather(3, cols[:, None, None, :].expand(n, c, ch, cw))
        return out.reshape(*lead, c, ch, cw)


class ImageEncoder(nn.Module):
    """Image -> feature vector: crop, normalise, ResNet18GN, SpatialSoftmax, optional Linear.

    forward: ``[..., C, H, W]`` uint8 (0..255) or float (already in [0, 1]) -> ``[..., F]``.

    Args:
        input_shape: ``(C, H, W)`` of the raw images.
        crop_shape: ``(h, w)`` crop (random in train, centre in eval), or ``None`` for no crop.
        num_keypoints: spatial-softmax keypoints ``K`` (``None``: one per backbone channel).
        feature_dim: output size of a final Linear; ``None`` returns the ``2 * K`` keypoints.
    """

    def __init__(
        self,
        input_shape: tuple[int, int, int],
        crop_shape: tuple[int, int] | None = None,
        num_keypoints: int | None = 32,
        feature_dim: int | None = 64,
    ) -> None:
        super().__init__()
        self.input_shape = _check_chw("ImageEncoder", input_shape)
        self.crop: CropRandomizer | None = None
        shape = self.input_shape
        if crop_shape is not None:
            self.crop = CropRandomizer(shape, crop_shape)
            shape = self.crop.output_shape(shape)
        self.backbone = ResNet18GN(in_channels=shape[0])
        shape = self.backbone.output_shape(shape)
        self.pool = SpatialSoftmax(shape, num_keypoints=num_keypoints)
        (dim,) = self.pool.output_shape(shape)
        self.proj: nn.Linear | None = None
        if feature_dim is not None:
            if feature_dim <= 0:
                raise ValueError(f"feature_dim must be positive or None, got {feature_dim}")
            self.proj = nn.Linear(dim, feature_dim)
            dim = feature_dim
        self._feature_dim = dim

    @property
    def feature_dim(self) -> int:
        """Size ``F`` of the output feature vector."""
        return self._feature_dim

    def output_shape(self, input_shape: tuple[int, int, int] | None = None) -> tuple[int]:
        """``(F,)``; if given, ``input_shape`` must equal the constructor's ``input_shape``."""
        if input_shape is not None and tuple(input_shape) != self.input_shape:
            raise ValueError(
                f"ImageEncoder was built for input shape {self.input_shape}, "
                f"got {tuple(input_shape)}"
            )
        return (self._feature_dim,)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C, H, W]`` uint8 or float -> ``[..., F]``."""
        if x.dim() < 4 or tuple(x.shape[-3:]) != self.input_shape:
            raise ValueError(
                f"ImageEncoder expected images of shape (N, {_fmt(self.input_shape)}), "
                f"got {tuple(x.shape)}"
            )
        lead = x.shape[:-3]
        x = x.reshape(-1, *self.input_shape)
        # Crop before the dtype conversion: uint8 crops move a quarter of the bytes.
        if self.crop is not None:
            x = self.crop(x)
        if x.dtype == torch.uint8:
            x = x.float() / 255.0
        elif not x.is_floating_point():
            raise TypeError(f"ImageEncoder expects uint8 or floating images, got {x.dtype}")
        x = (x - 0.5) / 0.5
        x = self.pool(self.backbone(x))
        if self.proj is not None:
            x = self.proj(x)
        return x.reshape(*lead, self._feature_dim)
