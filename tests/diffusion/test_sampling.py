"""Samplers checked against the exact posterior of a Gaussian mixture (DESIGN §5 oracle)."""

import math

import pytest
import torch

from diffusion_policy_dist.diffusion.grids import time_grid
from diffusion_policy_dist.diffusion.oracle import GaussianMixture
from diffusion_policy_dist.diffusion.sampling import sample
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
