"""Late noise injection: an example's m samples share one trunk pass and differ only after it."""

import numpy as np
import pytest
import torch

from diffusion_policy_dist.models.unet1d import ConditionalUnet1D
from diffusion_policy_dist.policy import DiffusionPolicy, Window

DIMS = (16, 32, 64)


def net(levels=1, noise_dim=6):
    torch.manual_seed(0)
    return ConditionalUnet1D(3, 2, 5, down_dims=DIMS, kernel_size=3, noise_dim=noise_dim,
                             noise_levels=levels)  # fmt: skip


def inputs(B=3):
    g = torch.Generator().manual_seed(1)
    return torch.randn(B, 8, 3, generator=g), torch.rand(B, generator=g), torch.randn(B, 5)


@pytest.mark.parametrize("levels", [1, 2])
def test_m_samples_equal_one_call_per_noise_vector(levels):
    n, (x, t, c) = net(levels), inputs()
    xi = torch.randn(3, 4, 6)
    out = n(x, t, c, noise=xi)
    assert out.shape == (3, 4, 8, 2)
    each = torch.stack([n(x, t, c, noise=xi[:, j]) for j in range(4)], dim=1)
    torch.testing.assert_close(out, each, rtol=1e-5, atol=1e-5)
    # the noise matters, and the same noise gives the same sample
    assert (out[:, 0] - out[:, 1]).abs().mean() > 1e-3
    torch.testing.assert_close(n(x, t, c, noise=xi[:, 2]), out[:, 2], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("levels", [1, 2])
def test_trunk_runs_once_per_row_and_only_late_levels_per_sample(levels):
    n, (x, t, c) = net(levels), inputs(B=3)
    rows = {}

    def hook(name):
        def record(mod, args, out):
            rows[name] = out.shape[0]

        return record

    for i, level in enumerate(n.down):
        level[0].register_forward_hook(hook(f"down{i}"))
    n.mid[0].register_forward_hook(hook("mid"))
    for i, level in enumerate(n.up):
        level[0].register_forward_hook(hook(f"up{i}"))
    n.head.register_forward_hook(hook("head"))
    n(x, t, c, noise=torch.randn(3, 5, 6))
    late = {f"up{i}" for i in range(len(n.up))[len(n.up) - levels :]} | {"head"}
    assert {k for k, v in rows.items() if v == 15} == late
    assert all(v == 3 for k, v in rows.items() if k not in late)
    # only late blocks see the noise: their FiLM takes it as 6 extra inputs
    base = n.down[0][0].film[1].in_features
    for i, level in enumerate(n.up):
        extra = 6 if f"up{i}" in late else 0
        assert [blk.film[1].in_features for blk in level[:2]] == [base + extra] * 2


def test_noise_refusals():
    n, (x, t, c) = net(), inputs()
    with pytest.raises(ValueError, match=r"expected noise \[3, m, 6\], got None"):
        n(x, t, c)
    with pytest.raises(ValueError, match=r"got \(3, 2, 5\)"):
        n(x, t, c, noise=torch.randn(3, 2, 5))
    plain = ConditionalUnet1D(3, 2, 5, down_dims=DIMS, kernel_size=3)
    with pytest.raises(ValueError, match="takes no noise"):
        plain(x, t, c, noise=torch.randn(3, 6))
    for bad in (0, 3):
        with pytest.raises(ValueError, match=r"noise_levels must be in \[1, 2\]"):
            ConditionalUnet1D(3, 2, 5, down_dims=DIMS, noise_dim=4, noise_levels=bad)


SHAPE_META = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}


def late_policy(m=4):
    cfg = {"kind": "distributional", "network": TINY, "noise_injection": "late",
           "noise_dim": 6, "loss": {"kind": "energy", "m": m}}  # fmt: skip
    pol = DiffusionPolicy(cfg, SHAPE_META, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit({"state": rng.normal(size=(50, 3)), "action": rng.normal(size=(50, 2))})
    return pol


def test_late_policy_loss_uses_m_distinct_samples_of_one_trunk_pass():
    pol = late_policy(m=4)
    d = pol.denoiser
    assert d.shares_trunk and d.noise_shape == (6,) and pol.samples_per_example == 4
    x_t, t, cond = torch.randn(5, 8, 2), torch.rand(5), torch.randn(5, pol.obs_encoder.output_dim)
    torch.manual_seed(3)
    samples = d._samples(x_t, t, cond, None)
    torch.manual_seed(3)
    xi = torch.randn(5, 4, 6)
    each = torch.stack([d.x0(x_t, t, cond, xi=xi[:, j]) for j in range(4)], dim=1)
    assert samples.shape == (5, 4, 8, 2) and samples.dtype == torch.float32
    torch.testing.assert_close(samples, each, rtol=1e-5, atol=1e-5)
    assert samples.std(1).mean() > 1e-4  # the interaction term sees m distinct samples
    g = torch.Generator().manual_seed(0)
    obs = {"state": torch.randn(2, 2, 3, generator=g)}
    out = pol.predict_action(obs, generator=torch.Generator().manual_seed(7))
    again = pol.predict_action(obs, generator=torch.Generator().manual_seed(7))
    assert out["action"].shape == (2, 4, 2) and torch.equal(out["action"], again["action"])


def test_late_policy_refuses_bad_levels_by_name():
    from diffusion_policy_dist.policy.config import PolicyOptions

    with pytest.raises(ValueError, match=r"policy\.noise_levels must be >= 1, got 0"):
        PolicyOptions(noise_levels=0)
    with pytest.raises(ValueError, match=r"noise_levels must be in \[1, 1\]"):
        DiffusionPolicy(
            {"kind": "distributional", "network": TINY, "noise_injection": "late",
             "noise_levels": 2},
            SHAPE_META, Window(8, 2, 4),
        )  # fmt: skip
