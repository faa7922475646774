"""Image-conditioned policies: the same policy, losses and runner, with camera encoders picked by
shape_meta (per camera or shared), fused with low-dim state. The image end-to-end smoke test is
in test_e2e.py."""

import numpy as np
import pytest
import torch

from diffusion_policy_dist.models.obs_encoders import ObsEncoder, resolve_crop
from diffusion_policy_dist.policy import DiffusionPolicy, Window

TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}
TO = 2


def shape_meta(cam_shapes=((3, 64, 64), (3, 64, 64)), state_dim=3):
    obs = {f"cam{i}": {"shape": list(s), "type": "rgb"} for i, s in enumerate(cam_shapes)}
    if state_dim:
        obs["state"] = {"shape": [state_dim], "type": "low_dim"}
    return {"obs": obs, "action": {"shape": [2]}}


def image_policy(m=8, share=False, crop="auto"):
    torch.manual_seed(0)
    sm = shape_meta()
    cfg = {
        "network": TINY,
        "loss": {"kind": "energy", "m": m},
        "obs_encoder": {
            "crop_shape": crop,
            "share_rgb_encoder": share,
            "num_keypoints": 8,
            "image_feature_dim": 16,
        },
    }
    pol = DiffusionPolicy(cfg, sm, Window(8, TO, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit({"state": rng.normal(size=(30, 3)), "action": rng.normal(size=(30, 2))})
    return pol


def image_batch(B=3):
    g = torch.Generator().manual_seed(0)
    return {
        "obs": {
            "cam0": torch.randint(0, 256, (B, TO, 3, 64, 64), generator=g, dtype=torch.uint8),
            "cam1": torch.randint(0, 256, (B, TO, 3, 64, 64), generator=g, dtype=torch.uint8),
            "state": torch.randn(B, TO, 3, generator=g),
        },
        "action": torch.randn(B, 8, 2, generator=g),
    }


def test_auto_crop_keeps_seven_eighths_and_none_means_no_crop():
    assert resolve_crop("auto", (3, 96, 96)) == (84, 84)
    assert resolve_crop("auto", (3, 64, 80)) == (56, 70)
    assert resolve_crop([40, 30], (3, 64, 64)) == (40, 30)
    assert resolve_crop(None, (3, 64, 64)) is None
    pol = image_policy(crop=None)
    assert all(e.crop is None for e in pol.obs_encoder.image_encoders.values())
    with pytest.raises(ValueError, match="crop_shape must be 'auto'"):
        image_policy(crop="centre")


def test_image_encoders_run_once_per_example_not_per_generator_sample():
    B, m = 3, 8
    pol = image_policy(m=m)
    rows = {}
    for key, enc in pol.obs_encoder.image_encoders.items():
        enc.backbone.register_forward_hook(
            lambda mod, inp, out, key=key: rows.setdefault(key, []).append(inp[0].shape[0])
        )
    net_rows = []
    pol.net.register_forward_hook(lambda mod, inp, out: net_rows.append(tuple(out.shape[:2])))
    encoder_calls = []
    pol.obs_encoder.register_forward_hook(lambda mod, inp, out: encoder_calls.append(1))
    loss, _ = pol(image_batch(B))
    loss.backward()
    assert len(encoder_calls) == 1
    # each camera's backbone sees the B x To frames once; the UNet (late noise injection, the
    # default) runs its trunk on B rows and returns m samples of each
    assert rows == {"cam0": [B * TO], "cam1": [B * TO]}
    assert net_rows == [(B, m)]
    backbone = pol.obs_encoder.image_encoders["cam0"].backbone
    assert backbone.conv1.weight.grad is not None and backbone.conv1.weight.grad.abs().sum() > 0


def test_shared_encoder_has_one_backbone_and_the_same_feature_layout():
    per_cam, shared = image_policy(share=False), image_policy(share=True)
    assert sorted(per_cam.obs_encoder.image_encoders) == ["cam0", "cam1"]
    assert list(shared.obs_encoder.image_encoders) == ["shared"]
    n_enc = sum(p.numel() for p in per_cam.obs_encoder.image_encoders["cam0"].parameters())
    n_per = sum(p.numel() for p in per_cam.obs_encoder.parameters())
    n_shared = sum(p.numel() for p in shared.obs_encoder.parameters())
    assert n_per - n_shared == n_enc
    assert per_cam.obs_encoder.output_dim == shared.obs_encoder.output_dim
    with pytest.raises(ValueError, match="equal camera shapes"):
        ObsEncoder(shape_meta(((3, 64, 64), (3, 72, 72))), TO, share_rgb_encoder=True)


def test_fusion_layout_follows_shape_meta():
    enc = ObsEncoder(
        shape_meta(state_dim=3), TO, crop_shape=None, num_keypoints=8, image_feature_dim=16
    ).eval()
    assert enc.per_step_dims() == {"cam0": 16, "cam1": 16, "state": 3}
    assert enc.output_dim == TO * (16 + 16 + 3)
    obs = image_batch(4)["obs"]
    with torch.no_grad():
        f = enc(obs)
        assert f.shape == (4, enc.output_dim)
        # keys are concatenated in sorted order: cam0, cam1, then state (flattened over To)
        torch.testing.assert_close(f[:, -TO * 3 :], obs["state"].reshape(4, -1))
        changed = dict(obs, cam1=255 - obs["cam1"])
        g = enc(changed)
    torch.testing.assert_close(g[:, : TO * 16], f[:, : TO * 16])  # cam0's features untouched
    assert not torch.allclose(g[:, TO * 16 : 2 * TO * 16], f[:, TO * 16 : 2 * TO * 16])
    with pytest.raises(ValueError, match="rgb shape must be"):
        ObsEncoder({"obs": {"cam": {"shape": [64, 64], "type": "rgb"}}}, TO)


def test_predict_action_with_cameras_in_eval_mode_is_deterministic_per_seed():
    pol = image_policy().eval()
    obs = image_batch(2)["obs"]
    a = pol.predict_action(obs, generator=torch.Generator().manual_seed(1))["action"]
    b = pol.predict_action(obs, generator=torch.Generator().manual_seed(1))["action"]
    assert a.shape == (2, 4, 2) and torch.equal(a, b)
