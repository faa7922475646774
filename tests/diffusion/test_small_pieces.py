"""Known answers for the small pieces every model relies on: prediction targets and x0
conversions, the loss configs' checks and scores, the phase-space score and log-SNR, and how a
sampler describes itself."""

import math

import pytest
import torch

from diffusion_policy_dist.diffusion.losses import (
    EnergyLoss,
    KernelLoss,
    energy_score,
    kernel_score,
)
from diffusion_policy_dist.diffusion.parameterization import (
    expand_like,
    prediction_target,
    to_x0,
)
from diffusion_policy_dist.diffusion.phase_space import PhaseSpace
from diffusion_policy_dist.diffusion.sampling import sampler_config


@pytest.mark.parametrize("kind", ["epsilon", "sample", "v"])
def test_each_prediction_target_converts_back_to_x0(kind):
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(4, 3, generator=g), torch.randn(4, 3, generator=g)
    a = torch.tensor([0.9, 0.5, 0.2, 0.7])[:, None]
    s = torch.tensor([0.3, 0.8, 1.1, 0.6])[:, None]  # not VP: a^2 + s^2 != 1
    x_t = a * x0 + s * eps
    target = prediction_target(kind, x0, eps, a, s)
    want = {"epsilon": eps, "sample": x0, "v": a * eps - s * x0}[kind]
    torch.testing.assert_close(target, want)
    torch.testing.assert_close(to_x0(kind, target, x_t, a, s), x0, atol=1e-5, rtol=1e-5)


def test_unknown_prediction_kinds_are_errors():
    z = torch.zeros(1)
    with pytest.raises(ValueError, match="unknown prediction type 'x'"):
        prediction_target("x", z, z, z, z)
    with pytest.raises(ValueError, match="unknown prediction type 'x'"):
        to_x0("x", z, z, z, z)


def test_expand_like_broadcasts_per_example_values():
    v = torch.tensor([1.0, 2.0], dtype=torch.float64)
    out = expand_like(v, torch.zeros(2, 3, 4))
    assert out.shape == (2, 1, 1) and out.dtype == torch.float32
    assert out[:, 0, 0].tolist() == [1.0, 2.0]


def test_energy_loss_checks_its_settings_and_scores_like_the_formula():
    for bad in ({"beta": 0.0}, {"beta": 2.5}, {"lam": -0.1}, {"lam": 1.5}, {"m": 1}):
        with pytest.raises(ValueError, match=r"loss\."):
            EnergyLoss(**bad)
    assert EnergyLoss(lam=0.0, m=1).m == 1  # one sample is enough without interaction
    with pytest.raises(ValueError, match="integer >= 1"):
        EnergyLoss(lam=0.0, m=0)
    assert EnergyLoss(beta=2.0).beta == 2.0 and EnergyLoss(lam=1.0).lam == 1.0
    samples = torch.tensor([[[0.0, 0.0], [3.0, 4.0]]])  # m = 2 samples of one example
    target = torch.tensor([[0.0, 0.0]])
    # E|X - y| - lam/2 E|X - X'|: (0 + 5)/2 - 0.5 * (5 + 5)/2 = 2.5 - 2.5
    assert float(EnergyLoss(m=2).score(samples, target)) == pytest.approx(0.0, abs=1e-6)
    got = EnergyLoss(m=2, lam=0.5, beta=2.0).score(samples, target)
    torch.testing.assert_close(got, energy_score(samples, target, beta=2.0, lam=0.5))


def test_kernel_loss_checks_its_settings_and_uses_its_kernel():
    with pytest.raises(ValueError, match=r"loss\.kernel"):
        KernelLoss(kernel="cubic")
    with pytest.raises(ValueError, match=r"loss\.bandwidth"):
        KernelLoss(bandwidth=0.0)
    with pytest.raises(ValueError, match="integer >= 2"):
        KernelLoss(m=1)
    assert KernelLoss(bandwidth=None).bandwidth is None
    g = torch.Generator().manual_seed(1)
    samples, target = torch.randn(3, 4, 2, generator=g), torch.randn(3, 2, generator=g)
    for kernel in ("rbf", "imq"):
        got = KernelLoss(kernel=kernel, bandwidth=0.7, m=4).score(samples, target)
        torch.testing.assert_close(got, kernel_score(samples, target, kernel, 0.7))
    rbf = KernelLoss(kernel="rbf", bandwidth=0.7, m=4).score(samples, target)
    assert not torch.allclose(rbf, kernel_score(samples, target, "imq", 0.7))


def test_phase_space_score_is_the_gaussian_score_of_the_marginal():
    ps = PhaseSpace()
    t = 0.4
    a, S = ps.marginal(t)
    g = torch.Generator().manual_seed(2)
    x0 = torch.randn(5, 3, generator=g, dtype=torch.float64)
    z = torch.randn(5, 6, generator=g, dtype=torch.float64)
    got = ps.score(z, t, x0)
    P = torch.linalg.inv(S)
    for d in range(3):  # each coordinate's (x, m) pair: -P (z - a x0)
        r = torch.stack([z[:, d] - a[0] * x0[:, d], z[:, 3 + d] - a[1] * x0[:, d]], dim=-1)
        want = -(r @ P.T)
        torch.testing.assert_close(got[:, d], want[:, 0])
        torch.testing.assert_close(got[:, 3 + d], want[:, 1])


def test_phase_space_log_snr_is_that_of_the_position_channel():
    ps = PhaseSpace()
    for t in (0.1, 0.5, 0.9):
        a, S = ps.marginal(t)
        want = math.log(float(a[0]) ** 2 / float(S[0, 0]))
        assert float(ps.log_snr(torch.tensor(t, dtype=torch.float64))) == pytest.approx(want)
    assert ps.log_snr(torch.tensor(0.5)).dtype == torch.float32
    assert ps.log_snr(torch.tensor([0.2, 0.8])).shape == (2,)
    early, late = ps.log_snr(torch.tensor([0.0, 1e-9], dtype=torch.float64))
    assert float(early) == float(late)  # clamped to t_min, not infinite


def test_a_sampler_describes_itself_with_its_own_options():
    assert sampler_config("ddpm", steps=100).describe() == "ddpm-100"
    assert sampler_config("distributional", steps=2, churn=1.0).describe() == (
        "distributional-2 (churn=1.0)"
    )
    text = sampler_config("conjugate", steps=4, lam=-0.1).describe()
    assert text.startswith("conjugate-4 (") and "lam=-0.1" in text and "quad_points" not in text


@pytest.mark.parametrize(
    "kw,msg",
    [
        ({"beta": 0.0}, r"needs beta, gamma, nu > 0 .*got beta=0.0, gamma=0.01, nu=4.01"),
        ({"gamma": 0.0}, r"needs beta, gamma, nu > 0 .*gamma=0.0,"),
        ({"nu": 0.0}, r"needs beta, gamma, nu > 0 .*nu=0.0$"),
        ({"gamma": 1.0, "nu": 1.0}, r"^PhaseSpace: gamma == nu gives M\^-1 = 0 \(infinite mass\)$"),
        ({"kappa": -0.1}, r"^PhaseSpace: kappa must be >= 0, got -0.1$"),
        ({"t_min": 0.0}, r"^PhaseSpace: t_min must be in \(0, 1\), got 0.0$"),
        ({"t_min": 1.0}, r"t_min must be in \(0, 1\), got 1.0$"),
    ],
)
def test_phase_space_refuses_bad_constants_with_the_reason(kw, msg):
    with pytest.raises(ValueError, match=msg):
        PhaseSpace(**kw)


def test_phase_space_accepts_small_positive_constants():
    ps = PhaseSpace(beta=0.5, gamma=0.5, nu=0.6, kappa=0.0, t_min=0.5)
    assert ps.mass_inv == pytest.approx(0.0025)


def test_mse_loss_known_values_with_and_without_a_mask():
    from diffusion_policy_dist.diffusion.losses import mse_loss

    pred = torch.tensor([[[1.0], [3.0]], [[0.0], [0.0]]])  # [B=2, H=2, D=1]
    target = torch.tensor([[[0.0], [1.0]], [[2.0], [0.0]]])
    assert mse_loss(pred, target).tolist() == [2.5, 2.0]  # (1 + 4) / 2, (4 + 0) / 2
    mask = torch.tensor([[True, False], [False, False]])
    assert mse_loss(pred, target, mask).tolist() == [1.0, 0.0]  # all masked: 0, not NaN


def test_scores_pass_the_padding_mask_on():
    samples = torch.tensor([[[0.0], [0.0]], [[0.0], [0.0]]]).view(1, 2, 2, 1)  # B=1, m=2, H=2
    samples = samples.clone()
    samples[0, :, 1] = 10.0  # far off at the padded step only
    target = torch.zeros(1, 2, 1)
    mask = torch.tensor([[True, False]])
    assert float(EnergyLoss(m=2).score(samples, target, mask)) == pytest.approx(0.0, abs=1e-6)
    assert float(EnergyLoss(m=2).score(samples, target)) > 1.0
    k = KernelLoss(bandwidth=1.0, m=2)
    assert float(k.score(samples, target, mask)) < float(k.score(samples, target))


def test_loss_settings_errors_say_why():
    with pytest.raises(ValueError, match=r"m must be an integer >= 2 \(the interaction term"):
        EnergyLoss(m=1)
    with pytest.raises(ValueError, match=r">= 1 \(generator samples per example\), got 0"):
        EnergyLoss(lam=0.0, m=0)
    with pytest.raises(ValueError, match=r">= 2 \(the kernel score compares samples in pairs\)"):
        KernelLoss(m=1)
    with pytest.raises(ValueError, match=r"loss.weighting must be one of \['uniform', 'sigmoid'\]"):
        EnergyLoss(weighting="cubic")
    with pytest.raises(ValueError, match=r"loss\.kind is 'kernel', but these options are 'energy'"):
        EnergyLoss(kind="kernel")


def test_time_weight_defaults_and_dtype():
    from diffusion_policy_dist.diffusion.losses import time_weight
    from diffusion_policy_dist.diffusion.schedules import make_schedule

    sched = make_schedule({"kind": "cosine"})
    t = torch.tensor([0.2, 0.7])
    for space in ("sample", "epsilon", "v"):
        w = time_weight("sigmoid", sched, t, space=space)
        assert w.dtype == torch.float32
        torch.testing.assert_close(w, time_weight("sigmoid", sched, t, 0.0, space))
    with pytest.raises(ValueError, match="unknown loss space 'x'"):
        time_weight("sigmoid", sched, t, space="x")


def test_description_lists_options_with_commas():
    sc = sampler_config("distributional", steps=3, churn=0.5)
    assert sc.describe() == "distributional-3 (churn=0.5)"
    sc = sampler_config("conjugate", steps=3, lam=0.2)
    shown = [f"{k}={v}" for k, v in sc.opts().items() if k != "quad_points"]
    assert len(shown) >= 2 and sc.describe() == f"conjugate-3 ({', '.join(shown)})"
