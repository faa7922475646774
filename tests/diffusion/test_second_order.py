"""The samplers added through the one sampler interface: DPM-Solver++(2M) (multistep: state
across steps) and Heun (two model calls per step), against known answers.

For Gaussian data N(mu, v) the probability-flow ODE has a closed-form solution: it maps x_T to
x0 = mu + sqrt(v) (x_T - a_T mu) / sqrt(a_T^2 v + s_T^2) (the monotone transport between the two
Gaussians). Both methods are second order: their error at x0 falls about four times per
doubling of the steps, where DDIM's (first order) falls about twice.
"""

import itertools
import math

import pytest
import torch

from diffusion_policy_dist.diffusion.oracle import GaussianMixture
from diffusion_policy_dist.diffusion.processes.vp import vp_coef
from diffusion_policy_dist.diffusion.samplers import SAMPLERS, sample, sampler_config
from diffusion_policy_dist.diffusion.schedules import make_schedule

F64 = torch.float64
MU, VAR = 0.7, 0.09
T_START = 0.9  # away from alpha ~ 0, where every method's first step dominates the error


def gaussian() -> GaussianMixture:
    return GaussianMixture(torch.tensor([1.0]), torch.tensor([[MU]]), torch.tensor([[[VAR]]]))


def pf_solution(x_T: torch.Tensor, schedule) -> torch.Tensor:
    a, s = vp_coef(schedule, T_START)
    return MU + math.sqrt(VAR) * (x_T - a * MU) / math.sqrt(a * a * VAR + s * s)


def error(method: str, steps: int, schedule: str) -> float:
    sched = make_schedule(schedule)
    x_T = torch.linspace(-2.0, 2.0, 9, dtype=F64)[:, None]
    model = gaussian().as_model(schedule, "mean")
    # the final step returns x0_hat at the last time > 0: exact for the exact mean, so the error
    # is the integration error up to that time
    x0, nfe = sample(model, x_T, process=schedule, method=method, steps=steps, t_start=T_START,
                     grid="logsnr")  # fmt: skip
    assert nfe == (steps - 1) * SAMPLERS[method].nfe_per_step + 1
    return float((x0 - pf_solution(x_T, sched)).abs().max())


@pytest.mark.parametrize("schedule", ["cosine", "linear", "flow"])
@pytest.mark.parametrize("method", ["dpmpp_2m", "heun"])
def test_second_order_convergence_to_the_exact_flow(method, schedule):
    """Solver steps 16, 32, 64 (uniform in log-SNR) from t = 0.9: measured ratios 3.2-4.1 for
    both methods, 1.9 for DDIM."""
    errs = [error(method, k + 1, schedule) for k in (16, 32, 64)]
    ddim = [error("ddim", k + 1, schedule) for k in (16, 32, 64)]
    ratios = [a / b for a, b in itertools.pairwise(errs)]
    assert all(r > 3.0 for r in ratios), (errs, ratios)
    assert all(1.6 < a / b < 2.3 for a, b in itertools.pairwise(ddim)), ddim
    assert errs[-1] < 0.1 * ddim[-1]


def test_dpmpp_2m_first_step_is_ddim_and_later_steps_extrapolate():
    gm = gaussian()
    x_T = torch.linspace(-2.0, 2.0, 5, dtype=F64)[:, None]
    model = gm.as_model("cosine", "mean")
    two = [sample(model, x_T, process="cosine", method=m, steps=2)[0] for m in ("dpmpp_2m", "ddim")]
    torch.testing.assert_close(two[0], two[1], rtol=1e-12, atol=1e-12)
    three = [
        sample(model, x_T, process="cosine", method=m, steps=3)[0] for m in ("dpmpp_2m", "ddim")
    ]
    assert (three[0] - three[1]).abs().max() > 1e-4


def test_dpmpp_2m_step_by_hand():
    """Two solver steps on a linear 'model' x0_hat = c x, by the paper's formulas."""
    sched, c = make_schedule("cosine"), 0.3
    x = torch.tensor([[1.0]], dtype=F64)
    ts = [0.9, 0.6, 0.3]
    seen = []
    sample(lambda xt, t, cond: c * xt, x, process=sched, method="dpmpp_2m", steps=3,
           grid=torch.tensor([*ts, 0.0], dtype=F64),
           callback=lambda i, t, xt, x0: seen.append(float(xt)))  # fmt: skip
    lam = [math.log(a / s) for a, s in (vp_coef(sched, t) for t in ts)]
    (_, s0), (a1, s1), (a2, s2) = (vp_coef(sched, t) for t in ts)
    h1, h2 = lam[1] - lam[0], lam[2] - lam[1]
    x1 = (s1 / s0) * 1.0 - a1 * math.expm1(-h1) * (c * 1.0)
    r = h1 / h2
    d = (1 + 1 / (2 * r)) * c * x1 - 1 / (2 * r) * c * 1.0
    x2 = (s2 / s1) * x1 - a2 * math.expm1(-h2) * d
    assert seen == pytest.approx([1.0, x1, x2], rel=1e-12)


def test_heun_step_by_hand_and_its_two_calls():
    sched, c = make_schedule("linear"), 0.4
    calls = []

    def model(xt, t, cond):
        calls.append(float(t[0]))
        return c * xt

    x = torch.tensor([[1.5]], dtype=F64)
    out, nfe = sample(model, x, process=sched, method="heun", steps=2,
                      grid=torch.tensor([0.8, 0.5, 0.0], dtype=F64))  # fmt: skip
    assert nfe == 3 and calls == pytest.approx([0.8, 0.5, 0.5])
    (a_t, s_t), (a_s, s_s) = vp_coef(sched, 0.8), vp_coef(sched, 0.5)
    n_t, n_s = s_t / a_t, s_s / a_s
    y = 1.5 / a_t
    d1 = (y - c * 1.5) / n_t
    y_e = y + (n_s - n_t) * d1
    d2 = (y_e - c * a_s * y_e) / n_s
    x_s = a_s * (y + (n_s - n_t) * 0.5 * (d1 + d2))
    assert float(out) == pytest.approx(c * x_s, rel=1e-12)


def test_new_samplers_are_config_options_with_their_nfe():
    assert sampler_config("dpmpp_2m").steps == 10 and SAMPLERS["dpmpp_2m"].nfe_per_step == 1
    assert sampler_config("heun", steps=3).steps == 3 and SAMPLERS["heun"].nfe_per_step == 2
    for kind in ("dpmpp_2m", "heun"):
        assert SAMPLERS[kind].families == ("vp",)
