"""Samplers of VP diffusion (and the distributional bridge, which every process offers).

- ``ddpm``: ancestral sampling from q(x_s | x_t, x0 = x0_hat).
- ``ddim`` [eta]: DDIM(eta); eta = 0 is the deterministic bridge, eta = 1 is ``ddpm``.
- ``distributional`` [churn]: DDM's coarse-step update (De Bortoli et al. 2025, Algorithm 2);
  churn 0 is the deterministic bridge, churn 1 the exact posterior bridge. Any process.
- ``conjugate`` [lam, quad_points]: lambda-DDIM conjugate integrator (Pandey et al. 2024);
  lam = 0 is exactly DDIM.
- ``dpmpp_2m``: DPM-Solver++(2M) (Lu et al. 2022), second-order multistep in log-SNR on x0
  estimates; its first step is DDIM's.
- ``heun``: Heun's second-order method on the probability-flow ODE in (x / alpha, sigma /
  alpha), Karras et al.'s sampler; 2 model calls per step.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ..processes.vp import apply_bridge, rho_bridge, vp_coef
from ..schedules import Schedule, t_at_alpha
from .base import SamplerConfig, StepContext, register

_EPS = 1e-6


class _Bridge(SamplerConfig):
    """A VP step ``x_s = k_x x_t + k_0 x0_hat + std z`` with coefficients from :meth:`coefs`."""

    def coefs(self, schedule: Schedule, t: float, s: float) -> tuple[float, float, float]:
        """``(k_x, k_0, std)`` of the step from t to s > 0."""
        raise NotImplementedError

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        x0_hat = ctx.model(x, t)
        return apply_bridge(x, x0_hat, self.coefs(ctx.process, t, s), ctx.generator)


@register
@dataclass
class DDPMSampler(_Bridge):
    kind: str = "ddpm"
    steps: int = 100

    def coefs(self, schedule, t, s):
        a_t, s_t = vp_coef(schedule, t)
        a_s, s_s = vp_coef(schedule, s)
        return rho_bridge((a_t / a_s) * (s_s / s_t), a_t, s_t, a_s, s_s)


@register
@dataclass
class DDIMSampler(_Bridge):
    kind: str = "ddim"
    steps: int = 10
    eta: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta < 0:
            raise ValueError(f"sampler.eta must be >= 0, got {self.eta}")

    def coefs(self, schedule, t, s):
        a_t, s_t = vp_coef(schedule, t)
        a_s, s_s = vp_coef(schedule, s)
        r11 = (a_t / a_s) * (s_s / s_t)
        rho = math.sqrt(max(0.0, 1.0 - self.eta * self.eta * (1.0 - r11 * r11)))
        return rho_bridge(rho, a_t, s_t, a_s, s_s)


@register
@dataclass
class DistributionalSampler(SamplerConfig):
    """The process's own Gaussian bridge from t to s given a posterior *sample* x0_hat."""

    kind: str = "distributional"
    steps: int = 1
    churn: float = 0.0

    families = ("vp", "phase_space")

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.churn <= 1.0:
            raise ValueError(f"sampler.churn must be in [0, 1], got {self.churn}")

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        x0_hat = ctx.model(x, t)
        return ctx.process.churn_bridge(x, x0_hat, t, s, self.churn, ctx.generator)


@register
@dataclass
class ConjugateSampler(_Bridge):
    """lambda-DDIM: ``x_s = (a_s/a_t)(1 - lam h) e^{lam h} x_t - a_s I eps_hat`` with
    ``I = int_s^t e^{lam (u - s)} d rho_u``, ``rho = sigma/alpha``, ``h = t - s``, written on
    x0_hat via ``eps_hat = (x_t - a_t x0_hat) / s_t`` so that lam = 0 reproduces DDIM's
    coefficients to rounding (the large terms near alpha ~ 0 cancel in float64)."""

    kind: str = "conjugate"
    steps: int = 4
    lam: float = 0.0
    quad_points: int = 65
    alpha_min: float = 0.02

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.quad_points < 2:
            raise ValueError(f"sampler.quad_points must be >= 2, got {self.quad_points}")
        if not 0.0 < self.alpha_min < 1.0:
            raise ValueError(f"sampler.alpha_min must be in (0, 1), got {self.alpha_min}")

    def start_time(self, schedule: Schedule, t_start: float) -> float:
        """With lam != 0 the step is ill-conditioned where alpha_t is tiny (its x_t coefficient
        carries (a_s/a_t)(1 - lam h) e^{lam h}: about -23 for 1 -> 0.5 at lam = 0.1 on the
        cosine schedule), so sampling starts at the time where alpha = ``alpha_min`` (pure noise
        there is N(0, 1 - alpha_min^2) away from the true marginal). lam = 0 is DDIM and starts
        where asked."""
        if self.lam == 0.0:
            return t_start
        a = float(schedule.alpha(torch.tensor(t_start, dtype=torch.float64)))
        return (
            t_start if a >= self.alpha_min else min(t_start, t_at_alpha(schedule, self.alpha_min))
        )

    def coefs(self, schedule, t, s):
        a_t, s_t = vp_coef(schedule, t)
        a_s, s_s = vp_coef(schedule, s)
        lam, h = float(self.lam), t - s
        u = torch.linspace(s, t, int(self.quad_points), dtype=torch.float64)
        alpha_u = schedule.alpha(u).double().clamp_min(_EPS)
        rho_u = schedule.sigma(u).double().clamp_min(0.0) / alpha_u
        # endpoints use the same clamped values as the step itself
        rho_u[0], rho_u[-1] = s_s / a_s, s_t / a_t
        w = torch.exp(lam * (u - s))
        integral = float((0.5 * (w[1:] + w[:-1]) * (rho_u[1:] - rho_u[:-1])).sum())
        k_x = (a_s / a_t) * (1.0 - lam * h) * math.exp(lam * h) - a_s * integral / s_t
        k_0 = a_s * integral * a_t / s_t
        return k_x, k_0, 0.0


@register
@dataclass
class DPMSolverPP2MSampler(SamplerConfig):
    """DPM-Solver++(2M): with lambda = log(alpha / sigma) and h = lambda_s - lambda_t,
    ``x_s = (sigma_s / sigma_t) x_t + alpha_s (1 - e^-h) D``, where D is this step's x0
    estimate on the first step (DDIM) and after it the linear extrapolation
    ``(1 + 1/(2r)) x0_t - 1/(2r) x0_prev`` with r = h_prev / h (Lu et al. 2022, Algorithm 2)."""

    kind: str = "dpmpp_2m"
    steps: int = 10

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        x0_hat = ctx.model(x, t)
        a_t, s_t = vp_coef(ctx.process, t)
        a_s, s_s = vp_coef(ctx.process, s)
        h = math.log(a_s / s_s) - math.log(a_t / s_t)
        prev = ctx.state.get("prev")
        d = x0_hat
        if prev is not None:
            r = prev[1] / h
            d = (1.0 + 0.5 / r) * x0_hat - (0.5 / r) * prev[0]
        ctx.state["prev"] = (x0_hat, h)
        return (s_s / s_t) * x + (a_s * -math.expm1(-h)) * d


@register
@dataclass
class HeunSampler(SamplerConfig):
    """Heun's method on the probability-flow ODE dy/dn = eps_hat in y = x / alpha and
    n = sigma / alpha: an Euler step to s, the slope there from a second model call, and the
    step again with the average slope (Karras et al. 2022, Algorithm 1 without churn)."""

    kind: str = "heun"
    steps: int = 5

    nfe_per_step = 2

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        a_t, s_t = vp_coef(ctx.process, t)
        a_s, s_s = vp_coef(ctx.process, s)
        n_t, n_s = s_t / a_t, s_s / a_s
        y = x / a_t
        slope = (y - ctx.model(x, t)) / n_t
        y_euler = y + (n_s - n_t) * slope
        slope_s = (y_euler - ctx.model(a_s * y_euler, s)) / n_s
        return a_s * (y + (n_s - n_t) * 0.5 * (slope + slope_s))
