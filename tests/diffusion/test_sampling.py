"""Samplers checked against the exact posterior of a Gaussian mixture (DESIGN §5 oracle)."""

import math

import pytest
import torch

from diffusion_policy_dist.diffusion.grids import time_grid
from diffusion_policy_dist.diffusion.oracle import GaussianMixture
from diffusion_policy_dist.diffusion.processes.vp import churn_coefs
from diffusion_policy_dist.diffusion.samplers import SAMPLERS, sample
from diffusion_policy_dist.diffusion.schedules import make_schedule, t_at_alpha

N = 20000


def two_modes() -> GaussianMixture:
    """Unequal weights and variances so that each statistic is checked, not just symmetry."""
    means = torch.tensor([[-1.0, 0.3], [1.2, -0.2]])
    covs = torch.stack(
        [torch.diag(torch.tensor([0.02, 0.05])), torch.diag(torch.tensor([0.04, 0.01]))]
    )
    return GaussianMixture(torch.tensor([0.3, 0.7]), means, covs)


def mixture_stats(x: torch.Tensor) -> dict:
    """Weights, means and variances of the two clusters split at x[:, 0] = 0.1."""
    right = x[:, 0] > 0.1
    out = {"w_right": right.double().mean().item()}
    for name, sel in (("left", ~right), ("right", right)):
        out[f"mean_{name}"] = x[sel].mean(0)
        out[f"var_{name}"] = x[sel].var(0)
    return out


def assert_matches_mixture(
    x: torch.Tensor, gm: GaussianMixture, w_tol=0.02, m_tol=0.03, v_rel=0.15
):
    st = mixture_stats(x.double())
    assert abs(st["w_right"] - gm.weights[1].item()) < w_tol, st["w_right"]
    for k, name in enumerate(("left", "right")):
        assert torch.allclose(st[f"mean_{name}"], gm.means[k], atol=m_tol), (
            name,
            st[f"mean_{name}"],
        )
        true_var = torch.diagonal(gm.covs[k])
        rel = (st[f"var_{name}"] - true_var).abs() / true_var
        assert (rel < v_rel).all(), (name, st[f"var_{name}"], true_var)


@pytest.mark.parametrize("steps", [1, 2, 8])
@pytest.mark.parametrize("churn", [0.0, 1.0])
@pytest.mark.parametrize("schedule", ["cosine", "flow"])
def test_distributional_with_exact_posterior_sampler_reproduces_mixture(steps, churn, schedule):
    gm = two_modes()
    g = torch.Generator().manual_seed(steps * 10 + int(churn))
    model = gm.as_model(schedule, kind="sample", generator=g)
    x_T = torch.randn(N, 2, generator=g, dtype=torch.float64)
    x0, nfe = sample(
        model,
        x_T,
        schedule=schedule,
        method="distributional",
        steps=steps,
        churn=churn,
        generator=g,
    )
    assert nfe == steps
    assert_matches_mixture(x0, gm)


def test_ddim_one_step_with_exact_mean_collapses_between_modes():
    gm = two_modes()
    model = gm.as_model("cosine", kind="mean")
    g = torch.Generator().manual_seed(0)
    x0, nfe = sample(
        model,
        torch.randn(N, 2, generator=g, dtype=torch.float64),
        schedule="cosine",
        method="ddim",
        steps=1,
        eta=0.0,
    )
    assert nfe == 1
    data_mean = (gm.weights[:, None] * gm.means).sum(0)
    # every output sits near the data mean, far from both modes
    assert (x0 - data_mean).norm(dim=1).max() < 0.05
    dist_to_modes = torch.cdist(x0.double(), gm.means).min(dim=1).values
    assert dist_to_modes.min() > 0.5


def test_ddpm_100_steps_with_exact_mean_reproduces_mixture():
    gm = two_modes()
    g = torch.Generator().manual_seed(1)
    model = gm.as_model("cosine", kind="mean")
    x0, nfe = sample(
        model,
        torch.randn(N, 2, generator=g, dtype=torch.float64),
        schedule="cosine",
        method="ddpm",
        steps=100,
        generator=g,
    )
    assert nfe == 100
    assert_matches_mixture(x0, gm, w_tol=0.03, m_tol=0.04, v_rel=0.25)


@pytest.mark.parametrize("schedule", ["cosine", "linear", "flow"])
@pytest.mark.parametrize("steps", [1, 3, 10])
def test_conjugate_lambda_zero_equals_ddim(schedule, steps):
    gm = two_modes()
    model = gm.as_model(schedule, kind="mean")
    x_T = torch.randn(256, 2, generator=torch.Generator().manual_seed(2))
    a, _ = sample(model, x_T, schedule=schedule, method="ddim", steps=steps, eta=0.0)
    b, _ = sample(model, x_T, schedule=schedule, method="conjugate", steps=steps, lam=0.0)
    assert torch.allclose(a, b, atol=1e-5, rtol=0)


def test_conjugate_nonzero_lambda_changes_the_result_and_converges():
    """lam != 0 is a different integrator at coarse steps but the same ODE in the limit."""
    gm = two_modes()
    model = gm.as_model("linear", kind="mean")
    x_T = torch.randn(512, 2, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    coarse0, _ = sample(model, x_T, schedule="linear", method="conjugate", steps=4, lam=0.0)
    coarse1, _ = sample(model, x_T, schedule="linear", method="conjugate", steps=4, lam=0.5)
    assert (coarse0 - coarse1).abs().max() > 1e-3
    fine0, _ = sample(model, x_T, schedule="linear", method="conjugate", steps=400, lam=0.0)
    fine1, _ = sample(model, x_T, schedule="linear", method="conjugate", steps=400, lam=0.5)
    assert (fine0 - fine1).abs().mean() < 0.2 * (coarse0 - coarse1).abs().mean()


@pytest.mark.parametrize(
    "method,opts",
    [
        ("ddpm", {}),
        ("ddim", {"eta": 0.5}),
        ("distributional", {"churn": 0.5}),
        ("conjugate", {"lam": 0.2}),
    ],
)
@pytest.mark.parametrize("schedule", ["cosine", "linear", "flow"])
def test_any_shape_and_no_nan_at_the_ends(method, opts, schedule):
    gm = GaussianMixture(torch.ones(2), torch.randn(2, 12), torch.eye(12).expand(2, 12, 12) * 0.1)
    model = gm.as_model(schedule, kind="sample", generator=torch.Generator().manual_seed(0))
    x_T = torch.randn(5, 4, 3)
    for grid in ("uniform", "quadratic", "logsnr", "edm"):
        x0, nfe = sample(model, x_T, schedule=schedule, method=method, steps=3, grid=grid, **opts)
        assert x0.shape == x_T.shape and nfe == 3
        assert torch.isfinite(x0).all()


class BareSchedule:
    """A user schedule with alpha exactly 0 at t=1 and sigma exactly 0 at t=0 (no clamping)."""

    def alpha(self, t):
        return torch.cos(0.5 * math.pi * t)

    def sigma(self, t):
        return torch.sin(0.5 * math.pi * t)


@pytest.mark.parametrize("method", ["ddpm", "ddim", "distributional", "conjugate"])
def test_unclamped_user_schedule_gives_no_nan(method):
    sched = BareSchedule()
    gm = two_modes()
    model = gm.as_model(sched, kind="mean")
    x0, _ = sample(model, torch.randn(64, 2), schedule=sched, method=method, steps=4)
    assert torch.isfinite(x0).all()


def test_truncated_start_with_exact_marginal_is_exact():
    """Starting at t' from the exact marginal p_t' (what the learned prior approximates)."""
    gm = two_modes()
    sched = make_schedule("cosine")
    t_prime = t_at_alpha(sched, 0.7)
    assert abs(float(sched.alpha(torch.tensor(t_prime))) - 0.7) < 1e-5
    g = torch.Generator().manual_seed(5)
    x0_true = gm.sample(N, generator=g)
    a, s = sched.alpha(torch.tensor(t_prime)), sched.sigma(torch.tensor(t_prime))
    x_tp = a * x0_true + s * torch.randn(N, 2, generator=g, dtype=torch.float64)
    model = gm.as_model(sched, kind="sample", generator=g)
    x0, nfe = sample(model, x_tp, schedule=sched, method="distributional", steps=1, t_start=t_prime)
    assert nfe == 1
    assert_matches_mixture(x0, gm)


def test_bad_options_are_refused():
    gm = two_modes()
    model = gm.as_model("cosine")
    with pytest.raises(ValueError, match="does not take"):
        sample(model, torch.randn(2, 2), schedule="cosine", method="ddim", steps=2, churn=1.0)
    with pytest.raises(ValueError, match="unknown sampler"):
        sample(model, torch.randn(2, 2), schedule="cosine", method="rk45", steps=2)
    msg = r"sampler=euler does not run vp diffusion \(schedule=cosine\); its samplers"
    with pytest.raises(ValueError, match=msg):
        sample(model, torch.randn(2, 2), schedule="cosine", method="euler", steps=2)
    with pytest.raises(ValueError, match="unknown schedule"):
        sample(model, torch.randn(2, 2), schedule="cosinus", method="ddim", steps=2)


@pytest.mark.parametrize("kind", ["uniform", "quadratic", "edm", "logsnr"])
@pytest.mark.parametrize("steps", [1, 2, 7])
def test_time_grids_descend_to_zero(kind, steps):
    g = time_grid(kind, steps, t_start=0.8, schedule=make_schedule("cosine"))
    assert len(g) == steps + 1 and g[0] == pytest.approx(0.8) and g[-1] == 0.0
    assert (g[:-1] > g[1:]).all()


def test_logsnr_grid_is_uniform_in_logsnr():
    sched = make_schedule("cosine")
    g = time_grid("logsnr", 6, schedule=sched)
    lam = sched.log_snr(g[:-1])
    d = lam[1:] - lam[:-1]
    assert torch.allclose(d, d.mean().expand_as(d), rtol=1e-4)


# ------------------------------------------------------------------ coefficients, one by one
# Each bridge is x_s = k_x x_t + k_0 x0_hat + std z. The mixture oracle keeps the marginals for
# any valid bridge, so it cannot see a wrong coefficient: these tests compute the papers'
# formulas independently and compare them with the samplers' numbers.
T, S = 0.7, 0.35  # one step between two interior times


def alpha_sigma(sched, *ts):
    return [
        (float(sched.alpha(torch.tensor(u, dtype=torch.float64))),
         float(sched.sigma(torch.tensor(u, dtype=torch.float64))))
        for u in ts
    ]  # fmt: skip


@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_ddpm_step_is_the_posterior_q_of_x_s_given_x_t_and_x0(schedule):
    sched = make_schedule(schedule)
    (a_t, s_t), (a_s, s_s) = alpha_sigma(sched, T, S)
    a_ts = a_t / a_s  # the VP transition x_t | x_s ~ N(a_ts x_s, s_ts^2)
    s_ts2 = s_t**2 - a_ts**2 * s_s**2
    want = (a_ts * s_s**2 / s_t**2, a_s * s_ts2 / s_t**2, math.sqrt(s_ts2 * s_s**2 / s_t**2))
    got = SAMPLERS["ddpm"]().coefs(sched, T, S)
    assert got == pytest.approx(want, rel=1e-9)


@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_eta_step_is_song_et_als(eta):
    sched = make_schedule("cosine")
    (a_t, s_t), (a_s, s_s) = alpha_sigma(sched, T, S)
    c = eta * (s_s / s_t) * math.sqrt(1 - a_t**2 / a_s**2)  # DDIM's sigma_t(eta)
    dir_ = math.sqrt(s_s**2 - c**2)  # weight of eps_hat = (x_t - a_t x0_hat) / s_t
    want = (dir_ / s_t, a_s - dir_ * a_t / s_t, c)
    got = SAMPLERS["ddim"](eta=eta).coefs(sched, T, S)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("churn", [0.0, 0.3, 0.5, 0.8, 1.0])
@pytest.mark.parametrize("schedule", ["cosine", "flow"])
def test_distributional_step_is_ddm_equation_4(churn, schedule):
    """mu = rho (s_s/s_t) x_t + a_s (1 - rho r11) x0_hat, var = s_s^2 (1 - rho^2),
    rho = eps^2 r11 + 1 - eps^2, r_ij = (a_t/a_s)^i (s_s/s_t)^j (De Bortoli et al. 2025)."""
    sched = make_schedule(schedule)
    (a_t, s_t), (a_s, s_s) = alpha_sigma(sched, T, S)
    r11 = (a_t / a_s) * (s_s / s_t)
    rho = churn**2 * r11 + 1 - churn**2
    want = (rho * s_s / s_t, a_s * (1 - rho * r11), s_s * math.sqrt(1 - rho**2))
    got = churn_coefs(sched, T, S, churn)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-12)
    if churn == 1.0:  # the DDPM posterior
        assert got == pytest.approx(SAMPLERS["ddpm"]().coefs(sched, T, S), rel=1e-9)


def lambda_ddim_reference(sched, lam, t, s, n=200001):
    """Pandey et al.'s lambda-DDIM step, x_s = (a_s/a_t)(1 - lam h) e^{lam h} x_t
    - a_s (int_s^t e^{lam (u - s)} d rho_u) eps_hat, by a fine midpoint rule in u."""
    u = torch.linspace(s, t, n, dtype=torch.float64)
    rho = sched.sigma(u).double() / sched.alpha(u).double()
    mid = 0.5 * (u[1:] + u[:-1])
    integral = float((torch.exp(lam * (mid - s)) * (rho[1:] - rho[:-1])).sum())
    (a_t, s_t), (a_s, _) = alpha_sigma(sched, t, s)
    h = t - s
    c_x = (a_s / a_t) * (1 - lam * h) * math.exp(lam * h)
    # eps_hat = (x_t - a_t x0_hat) / s_t
    return c_x - a_s * integral / s_t, a_s * integral * a_t / s_t


@pytest.mark.parametrize("lam", [-0.5, -0.1, 0.2, 1.0])
@pytest.mark.parametrize("schedule", ["cosine", "linear"])
def test_lambda_ddim_step_has_the_papers_coefficients(lam, schedule):
    sched = make_schedule(schedule)
    want = lambda_ddim_reference(sched, lam, T, S)
    got = SAMPLERS["conjugate"](lam=lam, quad_points=2001).coefs(sched, T, S)
    assert got[:2] == pytest.approx(want, rel=1e-6) and got[2] == 0.0
    other = lambda_ddim_reference(sched, -lam, T, S)  # lambda's sign matters
    assert abs(got[0] - other[0]) > 1e-3


def test_lambda_ddim_fixed_reference_values():
    """Numbers pinned from the formula (cosine schedule, 0.7 -> 0.35, 65-point default)."""
    sched = make_schedule("cosine")
    got = {lam: SAMPLERS["conjugate"](lam=lam).coefs(sched, T, S)[:2] for lam in (-0.5, 0.5)}
    for lam, (k_x, k_0) in got.items():
        want = lambda_ddim_reference(sched, lam, T, S)
        assert (k_x, k_0) == pytest.approx(want, rel=2e-4), lam


def test_lambda_ddim_starts_where_alpha_is_not_tiny():
    """lam != 0 from t = 1 would multiply x_t by ~(a_s/a_t): it starts at alpha = alpha_min
    instead; lam = 0 (DDIM) starts where asked. A user schedule with alpha(1) = 0 gives finite,
    accurate samples at every NFE."""
    sched = BareSchedule()
    cfg = SAMPLERS["conjugate"](lam=0.1)
    t0 = cfg.start_time(sched, 1.0)
    assert float(sched.alpha(torch.tensor(t0))) == pytest.approx(0.02, rel=1e-4)
    assert SAMPLERS["conjugate"](lam=0.0).start_time(sched, 1.0) == 1.0
    gm = two_modes()
    model = gm.as_model(sched, kind="mean")
    x_T = torch.randn(4000, 2, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    for steps in (2, 4, 16):
        x0, _ = sample(model, x_T, schedule=sched, method="conjugate", steps=steps, lam=0.1)
        assert torch.isfinite(x0).all() and x0.abs().max() < 3.0, steps
