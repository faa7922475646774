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
from diffusion_policy_dist.diffusion.processes.phase_space import PhaseSpace
from diffusion_policy_dist.diffusion.samplers import sampler_config


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
    with pytest.raises(
        ValueError, match=r"loss\.kind is 'kernel', but these options are for 'energy'"
    ):
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


def test_energy_score_edges_beta_two_is_exact_and_m_one_needs_lam_zero():
    y = torch.randn(3, 4, dtype=torch.float64)
    same = y[:, None].expand(3, 5, 4)
    # beta = 2 squares exactly (no smoothing constant): identical samples score exactly 0
    assert torch.equal(
        energy_score(same, y, beta=2.0, lam=0.0), torch.zeros(3, dtype=torch.float64)
    )
    with pytest.raises(ValueError, match=r"beta must be in \(0, 2\], got 0.0"):
        energy_score(same, y, beta=0.0)
    with pytest.raises(
        ValueError, match=r"^energy_score: the interaction term needs m >= 2 samples$"
    ):
        energy_score(same[:, :1], y, lam=1.0)
    assert energy_score(same[:, :1], y, lam=0.0).shape == (3,)
    meta = energy_score(torch.empty(3, 5, 4, device="meta"), torch.empty(3, 4, device="meta"))
    assert meta.device.type == "meta"


def test_vp_schedule_log_snr_dtype_follows_the_time():
    from diffusion_policy_dist.diffusion.schedules import make_schedule

    sched = make_schedule("cosine")
    assert sched.log_snr(torch.tensor([0.5])).dtype == torch.float32
    assert sched.log_snr(torch.tensor([0.5], dtype=torch.float64)).dtype == torch.float64
    ints = sched.log_snr(torch.tensor([0, 1]))  # integer times: computed and returned in float64
    assert ints.dtype == torch.float64
    assert float(ints[0]) == pytest.approx(float(sched.log_snr(torch.tensor([0.0]).double())[0]))


@pytest.mark.parametrize("alpha", [0.0, 1.0, 1.5, -0.2])
def test_t_at_alpha_refuses_alphas_outside_the_open_interval(alpha):
    from diffusion_policy_dist.diffusion.schedules import make_schedule, t_at_alpha

    with pytest.raises(ValueError, match=rf"alpha must be in \(0, 1\), got {alpha}"):
        t_at_alpha(make_schedule("cosine"), alpha)


def test_sampler_option_errors_say_which_option_and_why():
    with pytest.raises(ValueError, match=r"sampler.eta must be >= 0, got -0.1"):
        sampler_config("ddim", steps=2, eta=-0.1)
    for churn in (1.5, -0.5):
        with pytest.raises(ValueError, match=rf"sampler.churn must be in \[0, 1\], got {churn}"):
            sampler_config("distributional", steps=2, churn=churn)


def test_mixture_draws_come_only_from_the_callers_generator():
    from diffusion_policy_dist.diffusion.oracle import GaussianMixture

    gm = GaussianMixture(
        torch.tensor([0.5, 0.5]),
        torch.tensor([[-1.0, 0.0], [1.0, 0.5]]),
        torch.eye(2).expand(2, 2, 2) * 0.1,
    )

    def draws(global_seed):
        torch.manual_seed(global_seed)
        x = gm.sample(50, generator=torch.Generator().manual_seed(3))
        model = gm.as_model("cosine", kind="sample", generator=torch.Generator().manual_seed(4))
        return x, model(torch.zeros(50, 2), torch.full((50,), 0.5))

    (x1, p1), (x2, p2) = draws(0), draws(1)
    assert torch.equal(x1, x2) and torch.equal(p1, p2)
    assert x1.dtype == torch.float64 and x1.shape == (50, 2)


def test_vp_schedules_match_their_closed_forms():
    from diffusion_policy_dist.diffusion.schedules import make_schedule

    t = torch.tensor([0.0, 0.25, 0.5, 0.9], dtype=torch.float64)
    cos = make_schedule("cosine")
    s = 0.008
    want = torch.cos(0.5 * math.pi * (t.clamp_min(1e-4) + s) / (1 + s)) / math.cos(
        0.5 * math.pi * s / (1 + s)
    )
    torch.testing.assert_close(cos.alpha(t), want, rtol=1e-12, atol=0)
    # another offset too: at s = 0.008, cos(pi/2 / s / (1 + s)) equals cos(pi/2 s / (1 + s)) to
    # 1e-15 (the angle is 62 pi away), so a swapped operator there would go unseen
    s2 = 0.02
    want2 = torch.cos(0.5 * math.pi * (t.clamp_min(1e-4) + s2) / (1 + s2)) / math.cos(
        0.5 * math.pi * s2 / (1 + s2)
    )
    torch.testing.assert_close(make_schedule("cosine", s=s2).alpha(t), want2, rtol=1e-12, atol=0)
    # t is clamped to 1e-4: alpha(0) = 1 - 2e-6, and the normaliser makes it so
    assert float(cos.alpha(torch.tensor(0.0, dtype=torch.float64))) == pytest.approx(1.0, abs=1e-5)
    lin = make_schedule("linear")  # beta(t) = 0.1 + 19.9 t
    tc = t.clamp_min(1e-4)
    integral = 0.1 * tc + 0.5 * 19.9 * tc * tc
    torch.testing.assert_close(lin.alpha(t), torch.exp(-0.5 * integral), rtol=1e-12, atol=0)
    torch.testing.assert_close(
        lin.sigma(t), torch.sqrt(1 - torch.exp(-integral)), rtol=1e-10, atol=0
    )


def test_lambda_ddim_trapezoid_with_three_points_by_hand():
    """quad_points = 3: I = 1/2 (w0 + w1)(rho1 - rho0) + 1/2 (w1 + w2)(rho2 - rho1), nodes at s,
    (s + t)/2 and t, rho = sigma/alpha, w = e^{lam (u - s)}."""
    from diffusion_policy_dist.diffusion.schedules import make_schedule

    sched, lam, t, s = make_schedule("cosine"), 0.3, 0.7, 0.35
    u = [s, 0.5 * (s + t), t]
    rho = [float(sched.sigma(torch.tensor(v, dtype=torch.float64)) / sched.alpha(
        torch.tensor(v, dtype=torch.float64))) for v in u]  # fmt: skip
    w = [math.exp(lam * (v - s)) for v in u]
    integral = 0.5 * (w[0] + w[1]) * (rho[1] - rho[0]) + 0.5 * (w[1] + w[2]) * (rho[2] - rho[1])
    a = {v: float(sched.alpha(torch.tensor(v, dtype=torch.float64))) for v in (s, t)}
    sg = {v: float(sched.sigma(torch.tensor(v, dtype=torch.float64))) for v in (s, t)}
    h = t - s
    k_x = (a[s] / a[t]) * (1 - lam * h) * math.exp(lam * h) - a[s] * integral / sg[t]
    k_0 = a[s] * integral * a[t] / sg[t]
    got = sampler_config("conjugate", steps=2, lam=lam, quad_points=3).coefs(sched, t, s)
    assert got == pytest.approx((k_x, k_0, 0.0), rel=1e-12, abs=1e-15)
    assert sampler_config("conjugate", steps=2, quad_points=2).quad_points == 2
    with pytest.raises(ValueError, match=r"sampler.quad_points must be >= 2, got 1"):
        sampler_config("conjugate", steps=2, quad_points=1)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match=rf"sampler.alpha_min must be in \(0, 1\), got {bad}"):
            sampler_config("conjugate", steps=2, alpha_min=bad)


def test_t_at_alpha_solves_to_the_requested_tolerance():
    from diffusion_policy_dist.diffusion.schedules import make_schedule, t_at_alpha

    sched = make_schedule("cosine")
    for alpha in (0.02, 0.4, 0.9):
        t = t_at_alpha(sched, alpha, tol=1e-13)
        assert float(sched.alpha(torch.tensor(t, dtype=torch.float64))) == pytest.approx(
            alpha, abs=1e-11
        )


def test_mixture_posterior_draws_with_a_time_per_example_match_the_posterior():
    """Different times per row give different posterior covariances per row (the general
    path, not the shared-covariance shortcut): each row's draws must match its own posterior."""
    from diffusion_policy_dist.diffusion.oracle import GaussianMixture

    covs = torch.stack([torch.eye(2) * 0.2, torch.tensor([[0.3, 0.1], [0.1, 0.2]])])
    gm = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.0, 0.5], [1.0, -0.5]]), covs)
    n = 20000
    x_t = torch.tensor([[0.2, -0.1], [0.9, 0.4]], dtype=torch.float64).repeat_interleave(n, 0)
    a = torch.tensor([0.9, 0.4], dtype=torch.float64).repeat_interleave(n)
    s = (1 - a * a).sqrt()
    draws = gm.posterior_sample(x_t, a, s, generator=torch.Generator().manual_seed(0))
    w, means, pcovs = gm.posterior(x_t[::n], a[::n], s[::n])
    for i in range(2):
        mean = (w[i, :, None] * means[i]).sum(0)
        d = means[i] - mean
        cov = (w[i, :, None, None] * (pcovs[i] + d[:, :, None] * d[:, None, :])).sum(0)
        got = draws[i * n : (i + 1) * n]
        torch.testing.assert_close(got.mean(0), mean, atol=0.02, rtol=0)
        torch.testing.assert_close(torch.cov(got.T), cov, atol=0.02, rtol=0)


def test_vp_sampler_takes_an_explicit_grid_and_checks_it():
    from diffusion_policy_dist.diffusion.oracle import GaussianMixture
    from diffusion_policy_dist.diffusion.samplers import sample

    gm = GaussianMixture(torch.ones(2), torch.tensor([[-1.0], [1.0]]), torch.ones(2, 1, 1) * 0.1)
    model = gm.as_model("cosine")
    x = torch.randn(4, 1, generator=torch.Generator().manual_seed(0))
    seen = []
    named, _ = sample(model, x, schedule="cosine", method="ddim", steps=3, grid="uniform")
    mine, nfe = sample(
        model, x, schedule="cosine", method="ddim", steps=3, grid=[1.0, 2 / 3, 1 / 3, 0.0],
        callback=lambda i, t, xx, x0: seen.append(t),
    )  # fmt: skip
    torch.testing.assert_close(mine, named)
    assert nfe == 3 and seen == pytest.approx([1.0, 2 / 3, 1 / 3], abs=1e-15)
    for grid, steps, msg in [
        ([1.0, 0.5, 0.0], 3, r"steps\+1=4 points ending at 0"),
        ([1.0, 0.5, 0.2], 2, r"steps\+1=3 points ending at 0"),
        ([[1.0, 0.5, 0.0]], 2, "1-D"),
        ([0.5, 1.0, 0.0], 2, r"descend from at most 1, got \[0.5, 1.0, 0.0\]"),
    ]:
        with pytest.raises(ValueError, match=msg):
            sample(model, x, schedule="cosine", method="ddim", steps=steps, grid=grid)


def test_a_schedule_returning_nan_is_named_in_the_error():
    from diffusion_policy_dist.diffusion.samplers import sample

    class HalfBroken:  # finite sigma, NaN alpha
        def alpha(self, t):
            return torch.full_like(torch.as_tensor(t, dtype=torch.float64), float("nan"))

        def sigma(self, t):
            return torch.ones_like(torch.as_tensor(t, dtype=torch.float64))

    def model(x, t, cond=None):
        return torch.zeros_like(x)

    with pytest.raises(ValueError, match=r"^schedule returned alpha=nan, sigma=1.0 at t=1.0$"):
        sample(model, torch.zeros(2, 1), schedule=HalfBroken(), method="ddim", steps=2)


def test_oracle_model_kind_error_names_the_kind():
    from diffusion_policy_dist.diffusion.oracle import GaussianMixture

    gm = GaussianMixture(torch.ones(1), torch.zeros(1, 1), torch.ones(1, 1, 1))
    with pytest.raises(ValueError, match=r"^kind must be 'mean' or 'sample', got 'mode'$"):
        gm.as_model("cosine", kind="mode")


@pytest.mark.parametrize(
    "options,msg",
    [
        ({"steps": 0}, r"sampler.steps must be an integer >= 1, got 0"),
        ({"steps": 2.5}, r"sampler.steps must be an integer >= 1, got 2.5"),
        (
            {"grid": "log"},
            r"sampler.grid must be one of \['uniform', 'quadratic', 'edm', 'logsnr'\]",
        ),
        ({"t_start": 0.0}, r"sampler.t_start must be in \(0, 1\], got 0.0"),
        ({"t_start": 1.5}, r"sampler.t_start must be in \(0, 1\], got 1.5"),
        ({"clip_x0": 0.0}, r"sampler.clip_x0 must be > 0 or null, got 0.0"),
        ({"kind": "ddpm"}, r"does not take option\(s\) \['kind'\]; its own options are \['eta'\]"),
    ],
)
def test_common_sampler_options_are_checked_with_the_value(options, msg):
    with pytest.raises(ValueError, match=msg):
        sampler_config("ddim", **options)


def test_a_sampler_class_refuses_another_kind():
    from diffusion_policy_dist.diffusion.samplers import SAMPLERS

    with pytest.raises(
        ValueError,
        match=r"^sampler.kind is 'ddpm', but these options are for 'ddim'; pick another sampler "
        r"with sampler=ddpm$",
    ):
        SAMPLERS["ddim"](kind="ddpm")
    assert sampler_config("ddim", clip_x0=None, t_start=1.0).clip_x0 is None


def test_make_schedule_from_names_configs_and_objects():
    from diffusion_policy_dist.diffusion.schedules import CosineSchedule, make_schedule

    class Mapping:  # anything with keys() reads like a config (omegaconf's DictConfig does)
        def __init__(self, d):
            self.d = d

        def keys(self):
            return self.d.keys()

        def __getitem__(self, k):
            return self.d[k]

    assert make_schedule({"kind": "cosine", "s": 0.02}).s == 0.02
    assert make_schedule(Mapping({"kind": "cosine", "s": 0.03})).s == 0.03
    assert make_schedule({"name": "linear", "beta_max": 10.0}).beta_max == 10.0  # written by 0.1
    assert make_schedule({"kind": "cosine"}, s=0.05).s == 0.05
    own = CosineSchedule(s=0.01)
    assert make_schedule(own) is own
    with pytest.raises(ValueError, match=r"^schedule config \{'s': 0.02\} has no 'kind'$"):
        make_schedule({"s": 0.02})

    class AlphaOnly:
        def alpha(self, t):
            return t

    with pytest.raises(TypeError, match="object with alpha"):
        make_schedule(AlphaOnly())


def test_oracle_model_keeps_the_input_dtype():
    from diffusion_policy_dist.diffusion.oracle import GaussianMixture

    gm = GaussianMixture(torch.ones(2), torch.tensor([[-1.0], [1.0]]), torch.ones(2, 1, 1) * 0.1)
    for kind in ("mean", "sample"):
        out = gm.as_model("cosine", kind=kind)(torch.zeros(3, 1), torch.full((3,), 0.5))
        assert out.dtype == torch.float32 and out.shape == (3, 1)


def _kernel_score_by_hand(x, y, kind, h):
    """-2/m sum_j k(x_j, y) + 1/(m(m-1)) sum_{j != j'} k(x_j, x_j'), one example at a time."""

    def k(a, b):
        d2 = float(((a - b) ** 2).sum())
        return math.exp(-0.5 * d2 / h**2) if kind == "rbf" else (1 + d2 / h**2) ** -0.5

    out = []
    for xb, yb in zip(x, y, strict=True):
        m = len(xb)
        fit = sum(k(xj, yb) for xj in xb)
        pair = sum(k(xb[i], xb[j]) for i in range(m) for j in range(m) if i != j)
        out.append(-2.0 * fit / m + pair / (m * (m - 1)))
    return torch.tensor(out, dtype=torch.float64)


@pytest.mark.parametrize("kind", ["rbf", "imq"])
def test_kernel_score_by_hand_in_float64(kind):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 4, 2, generator=g, dtype=torch.float64)
    y = torch.randn(3, 2, generator=g, dtype=torch.float64)
    got = kernel_score(x, y, kernel=kind, bandwidth=0.3)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, _kernel_score_by_hand(x, y, kind, 0.3), rtol=1e-12, atol=0)
    if kind == "rbf":  # the default kernel
        torch.testing.assert_close(kernel_score(x, y, bandwidth=0.3), got, rtol=0, atol=0)


def test_kernel_score_refuses_bad_shapes_and_kernels_and_follows_the_device():
    x, y = torch.randn(2, 3, 4), torch.randn(2, 4)
    with pytest.raises(
        ValueError,
        match=r"^kernel_score: samples must be \[B, m, \*shape\] with target \[B, \*shape\]; "
        r"got samples \(2, 3, 4\) and target \(2, 5\)$",
    ):
        kernel_score(x, torch.randn(2, 5))
    with pytest.raises(ValueError, match=r"^kernel_score needs m >= 2 samples per example$"):
        kernel_score(x[:, :1], y)
    with pytest.raises(
        ValueError, match=r"^unknown kernel 'laplace'; choose one of \('rbf', 'imq'\)$"
    ):
        kernel_score(x, y, kernel="laplace", bandwidth=1.0)
    meta = kernel_score(x.to("meta"), y.to("meta"), bandwidth=1.0)
    assert meta.device.type == "meta" and meta.shape == (2,)


def test_kernel_score_mask_zeroes_the_padded_steps_of_every_sample():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 3, 5, 2, generator=g)  # [B, m, H, D] with H != m
    y = torch.randn(2, 5, 2, generator=g)
    keep = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.bool)
    want = kernel_score(x * keep[:, None, :, None], y * keep[:, :, None], bandwidth=0.7)
    torch.testing.assert_close(kernel_score(x, y, bandwidth=0.7, mask=keep), want)


def test_data_bandwidth_is_the_median_squared_distance_between_targets():
    from diffusion_policy_dist.diffusion.losses import data_bandwidth2

    assert data_bandwidth2(torch.zeros(1, 3)) == 1.0  # a batch of one: no pairs
    two = torch.tensor([[0.0, 0.0], [0.3, 0.4]], dtype=torch.float64)
    assert data_bandwidth2(two) == pytest.approx(0.25, rel=1e-12)
    col = torch.tensor([[0.0], [0.01], [0.03], [0.06], [0.1]], dtype=torch.float64)  # D = 1
    d2 = sorted((a - b) ** 2 for i, a in enumerate(col[:, 0].tolist())
                for b in col[i + 1 :, 0].tolist())  # fmt: skip
    assert data_bandwidth2(col) == pytest.approx(0.5 * (d2[4] + d2[5]), rel=1e-9)
    assert data_bandwidth2(torch.ones(4, 2)) == 1e-6  # identical targets: the floor
    odd = torch.tensor([[0.0], [0.1], [0.3]], dtype=torch.float64)  # pairs 0.01, 0.04, 0.09
    assert data_bandwidth2(odd) == pytest.approx(0.04, rel=1e-12)


def test_data_bandwidth_of_a_large_batch_uses_a_strided_subset():
    """torch.quantile refused batches over ~4,096 targets; a large batch is now subsampled
    evenly (first and last target kept) and gives the subset's median exactly."""
    from diffusion_policy_dist.diffusion.losses import BANDWIDTH_TARGETS, data_bandwidth2

    B = 3 * BANDWIDTH_TARGETS + 5
    y = torch.linspace(0.0, 1.0, B, dtype=torch.float64)[:, None] ** 2
    idx = torch.linspace(0, B - 1, BANDWIDTH_TARGETS).long()
    assert idx[0] == 0 and idx[-1] == B - 1 and len(set(idx.tolist())) == BANDWIDTH_TARGETS
    pairs = torch.pdist(y[idx]).square().sort().values
    n = pairs.numel()
    want = 0.5 * float(pairs[(n - 1) // 2] + pairs[n // 2])
    assert data_bandwidth2(y) == pytest.approx(want, rel=1e-12)
    assert data_bandwidth2(torch.randn(5000, 4)) > 0  # no longer "input tensor is too large"


@pytest.mark.parametrize(
    "method,opts,msg",
    [
        ("distributional", {"clip_x0": 0.0}, r"^sampler\.clip_x0 must be > 0 or null, got 0.0$"),
        ("distributional", {"churn": 1.5}, r"^sampler\.churn must be in \[0, 1\], got 1.5$"),
        ("lambda_ddim", {"lam": float("inf")}, r"^sampler\.lam must be finite, got inf$"),
        ("conjugate_vv", {"lam": float("nan")}, r"^sampler\.lam must be finite, got nan$"),
        ("lambda_ddim", {"quad_points": 5.0}, r"odd integer >= 3 \(Simpson\), got 5.0$"),
        ("lambda_ddim", {"quad_points": 1}, r"odd integer >= 3 \(Simpson\), got 1$"),
        ("conjugate_se", {"quad_points": True}, r"odd integer >= 3 \(Simpson\), got True$"),
        ("reduced_vv", {"extrapolate": 1}, r"^sampler\.extrapolate must be a bool, got 1$"),
        ("conjugate_vv", {"extrapolate": "no"}, r"^sampler\.extrapolate must be a bool, got 'no'$"),
    ],
)
def test_phase_space_options_are_refused_with_the_value(method, opts, msg):
    with pytest.raises(ValueError, match=msg):
        sampler_config(method, **opts)


def test_phase_space_options_smallest_simpson_rule_is_accepted():
    assert sampler_config("lambda_ddim", quad_points=3).quad_points == 3
    assert sampler_config("conjugate_se", lam=-0.5).lam == -0.5


def test_masks_do_not_change_the_scores_dtype():
    x, y = torch.randn(2, 3, 4, 2), torch.randn(2, 4, 2)
    keep = torch.tensor([[1.0, 1.0, 0.0, 0.0], [1.0, 1.0, 1.0, 1.0]], dtype=torch.float64)
    assert energy_score(x, y, mask=keep).dtype == torch.float32
    assert kernel_score(x, y, mask=keep, bandwidth=1.0).dtype == torch.float32


class _Trig:
    """alpha = cos(pi t / 2), sigma = sin(pi t / 2), not clamped, no t_min (grids assume 1e-4)."""

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * torch.as_tensor(t, dtype=torch.float64))

    def sigma(self, t):
        return torch.sin(0.5 * math.pi * torch.as_tensor(t, dtype=torch.float64))


class _TrigFrom(_Trig):
    t_min = 1e-2


def test_log_snr_of_any_schedule_uses_its_own_when_it_has_one():
    from diffusion_policy_dist.diffusion.schedules import log_snr

    class Own(_Trig):
        def log_snr(self, t):
            return torch.full_like(torch.as_tensor(t), 42.0)

    t = torch.tensor([0.25, 0.5])
    got = log_snr(_Trig(), t)
    want = 2 * torch.log(
        torch.cos(0.5 * math.pi * t.double()) / torch.sin(0.5 * math.pi * t.double())
    )
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, want.float())
    assert log_snr(Own(), t).tolist() == [42.0, 42.0]


def test_gaussian_mixture_normalises_weights_in_float64_and_checks_shapes():
    from diffusion_policy_dist.diffusion.oracle import GaussianMixture

    gm = GaussianMixture(torch.tensor([1.0, 3.0]), torch.zeros(2, 1), torch.ones(2, 1, 1))
    assert gm.weights.dtype == torch.float64 and gm.weights.tolist() == [0.25, 0.75]
    with pytest.raises(
        ValueError,
        match=r"^GaussianMixture: weights \(3,\), means \(2, 1\), covs \(2, 1, 1\) do not agree$",
    ):
        GaussianMixture(torch.ones(3), torch.zeros(2, 1), torch.ones(2, 1, 1))
    with pytest.raises(ValueError, match=r"covs \(2, 2, 2\) do not agree"):
        GaussianMixture(torch.ones(2), torch.zeros(2, 1), torch.ones(2, 2, 2))


def test_make_schedule_type_error_names_the_type():
    from diffusion_policy_dist.diffusion.schedules import make_schedule

    with pytest.raises(TypeError, match=r"got int$"):
        make_schedule(3)


def test_time_grids_by_hand():
    from diffusion_policy_dist.diffusion.grids import time_grid
    from diffusion_policy_dist.diffusion.schedules import CosineSchedule, log_snr

    f64 = torch.float64
    uni = time_grid("uniform", 3, t_start=0.9)
    assert uni.dtype == f64
    torch.testing.assert_close(
        uni, torch.tensor([0.9, 0.6, 0.3, 0.0], dtype=f64), rtol=1e-15, atol=0
    )
    assert time_grid("quadratic", 2).tolist() == [1.0, 0.25, 0.0]
    assert time_grid("quadratic", 2, rho=3.0).tolist() == [1.0, 0.125, 0.0]
    sched = CosineSchedule(t_min=1e-3)  # the grids end their levels at the schedule's t_min

    def noise(t):
        t = torch.tensor(t, dtype=f64)
        return float(sched.sigma(t) / sched.alpha(t))

    K, t0 = 4, 0.95
    frac = [i / K for i in range(K + 1)]
    for r in (7.0, 3.0):
        hi, lo = noise(t0) ** (1 / r), noise(1e-3) ** (1 / r)
        want = [(hi + f * (lo - hi)) ** r for f in frac]
        g = time_grid("edm", K, t_start=t0, schedule=sched, rho=None if r == 7.0 else r)
        assert g[0] == t0 and g[-1] == 0.0
        got = [noise(float(t)) for t in g[1:-1]]
        assert got == pytest.approx(want[1:-1], rel=1e-9)
    lam = [float(log_snr(sched, torch.tensor(t, dtype=f64))) for t in (t0, 1e-3)]
    g = time_grid("logsnr", K, t_start=t0, schedule=sched)
    got = [float(log_snr(sched, torch.tensor(float(t), dtype=f64))) for t in g[1:-1]]
    assert got == pytest.approx([lam[0] + f * (lam[1] - lam[0]) for f in frac[1:-1]], rel=1e-9)


@pytest.mark.parametrize("sched,t_lo", [(_Trig(), 1e-4), (_TrigFrom(), 1e-2)])
def test_grids_end_their_levels_at_the_schedules_smallest_time(sched, t_lo):
    from diffusion_policy_dist.diffusion.grids import time_grid

    def noise(t):
        return math.tan(0.5 * math.pi * t)

    hi, lo = noise(1.0 - 1e-3) ** (1 / 7), noise(t_lo) ** (1 / 7)
    g = time_grid("edm", 3, t_start=1.0 - 1e-3, schedule=sched)
    want = [(hi + f * (lo - hi)) ** 7 for f in (1 / 3, 2 / 3)]
    assert [noise(float(t)) for t in g[1:-1]] == pytest.approx(want, rel=1e-9)


def test_time_grid_refusals_say_why():
    from diffusion_policy_dist.diffusion.grids import time_grid

    class Flat:  # constant alpha: every log-SNR level is the same, so the grid cannot descend
        t_min = 1e-3

        def alpha(self, t):
            return torch.full_like(torch.as_tensor(t, dtype=torch.float64), 0.5)

        def sigma(self, t):
            return torch.full_like(torch.as_tensor(t, dtype=torch.float64), 0.75**0.5)

    for args, kw, msg in [
        (("uniform", 0), {}, r"^steps must be >= 1, got 0$"),
        (("uniform", 2), {"t_start": 0.0}, r"^t_start must be in \(0, 1\], got 0.0$"),
        (("uniform", 2), {"t_start": 1.5}, r"^t_start must be in \(0, 1\], got 1.5$"),
        (("edm", 2), {}, r"^grid 'edm' needs the schedule$"),
        (("cosine", 2), {}, r"^unknown time grid 'cosine'; choose one of \('uniform'"),
        (("logsnr", 3), {"schedule": Flat()}, r"^time grid 'logsnr' with 3 steps from "
         r"t_start=1.0 is not strictly decreasing: \[1.0, "),
    ]:  # fmt: skip
        with pytest.raises(ValueError, match=msg):
            time_grid(*args, **kw)


def test_mixture_posterior_per_row_times_match_one_row_at_a_time():
    """Rows with different (a, s) must not share the first row's factors; the reference is
    each row on its own (one row: nothing to share)."""
    from diffusion_policy_dist.diffusion.oracle import GaussianMixture

    covs = torch.stack([torch.eye(2) * 0.2, torch.tensor([[0.3, 0.1], [0.1, 0.2]])])
    gm = GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-1.0, 0.5], [1.0, -0.5]]), covs)
    x = torch.tensor([[0.2, -0.1], [0.9, 0.4], [-0.5, 0.3]], dtype=torch.float64)
    for a, s in [([0.9, 0.4, 0.7], [0.3, 0.8, 0.5]), ([0.6, 0.6, 0.6], [0.2, 0.5, 0.9])]:
        got = gm.posterior(x, a, s)  # python floats: must be read as float64
        for i in range(3):
            one = gm.posterior(x[i : i + 1], torch.tensor([a[i]], dtype=torch.float64),
                               torch.tensor([s[i]], dtype=torch.float64))  # fmt: skip
            for g_part, o_part in zip(got, one, strict=True):
                torch.testing.assert_close(g_part[i], o_part[0], rtol=1e-13, atol=1e-15)
