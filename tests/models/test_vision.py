"""Tests for the vision backbone (diffusion_policy_dist.models.vision)."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from diffusion_policy_dist.models.vision import (
    CropRandomizer,
    ImageEncoder,
    ResNet18GN,
    SpatialSoftmax,
)

# Torchvision's resnet18 has 11,689,512 parameters, of which the fc head is 512*1000 + 1000.
RESNET18_NO_FC_PARAMS = 11_176_512


@pytest.fixture(scope="module")
def backbone() -> ResNet18GN:
    torch.manual_seed(0)
    return ResNet18GN().eval()


# --------------------------------------------------------------------------- ResNet18GN


@pytest.mark.parametrize("hw", [(64, 64), (76, 76), (84, 84), (33, 47)])
def test_resnet_output_shape_matches_forward(backbone: ResNet18GN, hw: tuple[int, int]) -> None:
    h, w = hw
    with torch.no_grad():
        out = backbone(torch.randn(1, 3, h, w))
    assert tuple(out.shape[1:]) == backbone.output_shape((3, h, w))
    assert tuple(out.shape[1:]) == (512, math.ceil(h / 32), math.ceil(w / 32))


def test_resnet_uses_groupnorm_not_batchnorm(backbone: ResNet18GN) -> None:
    norms = [m for m in backbone.modules() if isinstance(m, nn.GroupNorm)]
    # stem + 2 per block * 8 blocks + 3 downsample shortcuts
    assert len(norms) == 1 + 16 + 3
    for gn in norms:
        assert gn.num_groups == gn.num_channels // 16
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in backbone.modules())


def test_resnet_param_count(backbone: ResNet18GN) -> None:
    n = sum(p.numel() for p in backbone.parameters())
    assert n == RESNET18_NO_FC_PARAMS
    # An extra input channel only widens the 7x7 stem conv.
    n4 = sum(p.numel() for p in ResNet18GN(in_channels=4).parameters())
    assert n4 == RESNET18_NO_FC_PARAMS + 64 * 7 * 7


def test_resnet_rejects_bad_groups() -> None:
    with pytest.raises(ValueError, match="groups_per_channel"):
        ResNet18GN(groups_per_channel=48)


# --------------------------------------------------------------------------- SpatialSoftmax


@pytest.mark.parametrize("shape", [(8, 3, 3), (5, 7, 4), (512, 2, 2)])
def test_spatial_softmax_output_shape(shape: tuple[int, int, int]) -> None:
    for k in (32, None):
        ss = SpatialSoftmax(shape, num_keypoints=k)
        out = ss(torch.randn(3, *shape))
        assert tuple(out.shape[1:]) == ss.output_shape(shape)
        assert out.shape == (3, 2 * (shape[0] if k is None else k))


@pytest.mark.parametrize("h,w", [(7, 9), (5, 5)])
def test_spatial_softmax_locates_sharp_peak(h: int, w: int) -> None:
    c = 3
    peaks = [(0, 0), (h - 1, w - 1), (h // 2, 1)]  # (row, col) per channel
    feat = torch.zeros(2, c, h, w)
    for ch, (r, col) in enumerate(peaks):
        feat[:, ch, r, col] = 50.0  # e^-50: the softmax is one-hot to float precision
    ss = SpatialSoftmax((c, h, w), num_keypoints=None)
    out = ss(feat).reshape(2, c, 2)
    expected = torch.tensor(
        [[-1 + 2 * col / (w - 1), -1 + 2 * r / (h - 1)] for r, col in peaks]
    ).expand(2, c, 2)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=0)


def test_spatial_softmax_range_and_temperature() -> None:
    torch.manual_seed(0)
    ss = SpatialSoftmax((16, 6, 5), num_keypoints=8, temperature=0.5, learnable_temperature=True)
    out = ss(10 * torch.randn(4, 16, 6, 5))
    assert out.abs().max() <= 1.0
    out.sum().backward()
    assert ss.log_temperature.grad is not None
    assert torch.isclose(ss.temperature, torch.tensor(0.5))
    # Uniform features: the soft-argmax is the centre of the grid.
    flat = SpatialSoftmax((4, 6, 5), num_keypoints=None)(torch.zeros(1, 4, 6, 5))
    torch.testing.assert_close(flat, torch.zeros(1, 8), atol=1e-6, rtol=0)


# --------------------------------------------------------------------------- CropRandomizer


def _unique_images(n: int, c: int, h: int, w: int) -> torch.Tensor:
    # Every pixel value unique, so any crop identifies its window unambiguously.
    return torch.randperm(n * c * h * w).reshape(n, c, h, w).float()


def _windows_matching(img: torch.Tensor, crop: torch.Tensor) -> list[tuple[int, int]]:
    """All (top, left) offsets where ``crop`` equals a window of ``img`` ([C, H, W])."""
    ch, cw = crop.shape[-2:]
    h, w = img.shape[-2:]
    return [
        (i, j)
        for i in range(h - ch + 1)
        for j in range(w - cw + 1)
        if torch.equal(img[:, i : i + ch, j : j + cw], crop)
    ]


@pytest.mark.parametrize("in_hw,crop_hw", [((11, 13), (6, 9)), ((10, 10), (7, 7))])
def test_crop_eval_is_centre_crop(in_hw: tuple[int, int], crop_hw: tuple[int, int]) -> None:
    (h, w), (ch, cw) = in_hw, crop_hw
    cr = CropRandomizer((2, h, w), crop_hw).eval()
    x = _unique_images(4, 2, h, w)
    out = cr(x)
    top, left = (h - ch) // 2, (w - cw) // 2
    assert torch.equal(out, x[:, :, top : top + ch, left : left + cw])
    assert tuple(out.shape[1:]) == cr.output_shape((2, h, w))


def test_crop_train_random_valid_windows_and_reproducible() -> None:
    n, c, h, w, ch, cw = 16, 2, 12, 10, 7, 6
    cr = CropRandomizer((c, h, w), (ch, cw)).train()
    x = _unique_images(n, c, h, w)
    torch.manual_seed(123)
    out1 = cr(x)
    out2 = cr(x)
    assert tuple(out1.shape[1:]) == cr.output_shape((c, h, w))

    offsets = []
    for img, crop in zip(x, out1):
        found = _windows_matching(img, crop)
        assert len(found) == 1, "each crop must be exactly one window of its own input"
        offsets.append(found[0])
    # Rows and columns must each be drawn per sample; with 6 x 5 choices and 16 samples a
    # constant row or column offset by chance has probability < 5**-15.
    assert len({t for t, _ in offsets}) > 1
    assert len({l for _, l in offsets}) > 1
    assert not torch.equal(out1, out2), "successive calls must draw new crops"

    torch.manual_seed(123)
    assert torch.equal(cr(x), out1)


def test_crop_train_reaches_every_offset() -> None:
    # Pixel value = flat index, so a crop's top-left value encodes its offset.
    h, w, ch, cw = 6, 5, 3, 3
    cr = CropRandomizer((1, h, w), (ch, cw)).train()
    x = torch.arange(h * w).reshape(1, 1, h, w).expand(600, 1, h, w)
    torch.manual_seed(0)
    corner = cr(x)[:, 0, 0, 0]
    seen = {(int(v) // w, int(v) % w) for v in corner}
    # 12 offsets, 600 draws: missing one by chance has probability ~ 12 * (11/12)**600.
    assert seen == {(i, j) for i in range(h - ch + 1) for j in range(w - cw + 1)}


def test_crop_train_supports_uint8_and_leading_dims() -> None:
    cr = CropRandomizer((3, 9, 9), (5, 5)).train()
    x = torch.randint(0, 256, (2, 4, 3, 9, 9), dtype=torch.uint8)
    torch.manual_seed(0)
    out = cr(x)
    assert out.dtype == torch.uint8 and out.shape == (2, 4, 3, 5, 5)
    for img, crop in zip(x.reshape(8, 3, 9, 9), out.reshape(8, 3, 5, 5)):
        assert _windows_matching(img, crop)


def test_crop_larger_than_input_raises() -> None:
    with pytest.raises(ValueError, match="larger than the input"):
        CropRandomizer((3, 32, 32), (33, 16))


# --------------------------------------------------------------------------- ImageEncoder


@pytest.fixture(scope="module")
def encoder() -> ImageEncoder:
    torch.manual_seed(0)
    return ImageEncoder((3, 76, 76), crop_shape=(64, 64), num_keypoints=32, feature_dim=64)


def test_encoder_shapes() -> None:
    torch.manual_seed(0)
    cases = [
        dict(input_shape=(3, 76, 76), crop_shape=(64, 64), num_keypoints=32, feature_dim=64),
        dict(input_shape=(3, 84, 84), crop_shape=(76, 76), num_keypoints=16, feature_dim=None),
        dict(input_shape=(1, 45, 61), crop_shape=None, num_keypoints=None, feature_dim=None),
    ]
    for kw in cases:
        enc = ImageEncoder(**kw).eval()
        with torch.no_grad():
            out = enc(torch.rand(2, *kw["input_shape"]))
        assert tuple(out.shape[1:]) == enc.output_shape(kw["input_shape"])
        assert out.shape[1] == enc.feature_dim
    assert enc.feature_dim == 2 * 512  # last case: one keypoint per backbone channel


def test_encoder_uint8_equals_float(encoder: ImageEncoder) -> None:
    x8 = torch.randint(0, 256, (3, 3, 76, 76), dtype=torch.uint8)
    xf = x8.float() / 255.0
    with torch.no_grad():
        encoder.eval()
        torch.testing.assert_close(encoder(x8), encoder(xf))
        # Train mode: the same seed gives the same crops for both dtypes.
        encoder.train()
        torch.manual_seed(7)
        a = encoder(x8)
        torch.manual_seed(7)
        b = encoder(xf)
    torch.testing.assert_close(a, b)


def test_encoder_gradient_reaches_backbone(encoder: ImageEncoder) -> None:
    encoder.train()
    encoder.zero_grad(set_to_none=True)
    encoder(torch.rand(2, 3, 76, 76)).square().mean().backward()
    for p in (encoder.backbone.conv1.weight, encoder.backbone.layer4[1].conv2.weight):
        assert p.grad is not None and p.grad.abs().sum() > 0


def test_encoder_shape_mismatch_raises(encoder: ImageEncoder) -> None:
    with pytest.raises(ValueError, match=r"\(N, 3, 76, 76\).*\(2, 3, 64, 64\)"):
        encoder(torch.rand(2, 3, 64, 64))
    with pytest.raises(ValueError, match="larger than the input"):
        ImageEncoder((3, 60, 60), crop_shape=(64, 64))
