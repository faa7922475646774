"""Variance-preserving diffusion ``x_t = alpha(t) x0 + sigma(t) eps`` as a :class:`~.Process`,
on any schedule of :mod:`..schedules`, and its Gaussian bridges.

Every VP step rule here is a bridge ``x_s = k_x x_t + k_0 x0_hat + std z`` from t to s < t that
keeps the fraction ``rho`` of the noise direction (DDM eq. 4): rho = 1 at r11 gives the DDPM
posterior, rho = 1 the deterministic DDIM bridge.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from ... import noise, shard
from ..grids import explicit_grid, time_grid
from ..parameterization import expand_like, prediction_target, to_x0
from ..schedules import Schedule, log_snr

_EPS = 1e-6


def vp_coef(schedule: Schedule, t: float) -> tuple[float, float]:
    """(alpha, sigma) at scalar time t in float64, clamped away from 0."""
    tt = torch.tensor(t, dtype=torch.float64)
    a = float(schedule.alpha(tt))
    s = float(schedule.sigma(tt))
    if not (math.isfinite(a) and math.isfinite(s)):
        raise ValueError(f"schedule returned alpha={a}, sigma={s} at t={t}")
    return max(a, _EPS), max(s, _EPS)


def rho_bridge(rho: float, a_t: float, s_t: float, a_s: float, s_s: float):
    """``(k_x, k_0, std)`` of the bridge that keeps ``rho`` of the noise direction: DDM eq. 4
    with ``r11 = (a_t/a_s)(s_s/s_t)``."""
    r11 = (a_t / a_s) * (s_s / s_t)
    k_x = rho * s_s / s_t
    k_0 = a_s * (1.0 - rho * r11)
    std = s_s * math.sqrt(max(0.0, 1.0 - rho * rho))
    return k_x, k_0, std


def churn_coefs(schedule: Schedule, t: float, s: float, churn: float):
    """DDM's coarse step (Algorithm 2): rho = churn^2 r11 + 1 - churn^2."""
    a_t, s_t = vp_coef(schedule, t)
    a_s, s_s = vp_coef(schedule, s)
    r11 = (a_t / a_s) * (s_s / s_t)
    c2 = churn * churn
    return rho_bridge(c2 * r11 + 1.0 - c2, a_t, s_t, a_s, s_s)


def apply_bridge(x: Tensor, x0_hat: Tensor, coefs, generator) -> Tensor:
    """``k_x x + k_0 x0_hat (+ std z)``."""
    k_x, k_0, std = coefs
    x = k_x * x + k_0 * x0_hat
    if std > 0.0:
        x = x + std * noise.normal(x.shape, generator, device=x.device, dtype=x.dtype)
    return x


class VPProcess:
    """VP diffusion on ``schedule`` (anything with ``alpha(t)`` and ``sigma(t)``)."""

    family = "vp"

    def __init__(self, schedule: Schedule) -> None:
        self.schedule = schedule
        self.kind = getattr(schedule, "kind", type(schedule).__name__)

    def __repr__(self) -> str:
        return f"VPProcess({self.schedule!r})"

    def alpha(self, t: Tensor) -> Tensor:
        return self.schedule.alpha(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self.schedule.sigma(t)

    def log_snr(self, t: Tensor) -> Tensor:
        return log_snr(self.schedule, t)

    @property
    def t_min(self) -> float:
        return float(getattr(self.schedule, "t_min", 1e-4))

    def channels(self, D: int) -> int:
        return D

    def x0_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(shape)

    def clamp_time(self, t: float) -> float:
        return t  # the schedule clamps inside alpha and sigma

    def training_draw(self, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(t [B], eps, x_t)``: one time in [0, 1) per example (drawn before eps)."""
        t = shard.rand(x0.shape[0], device=x0.device)
        eps = shard.randn_like(x0)
        return t, eps, self.perturb(x0, t, eps)

    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        a, s = self._a_s(t, x0)
        return a * x0 + s * eps

    def _a_s(self, t: Tensor, like: Tensor) -> tuple[Tensor, Tensor]:
        return expand_like(self.alpha(t), like), expand_like(self.sigma(t), like)

    def target(self, prediction: str, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """A mean model's regression target for ``prediction`` (eps, sample or v)."""
        if prediction == "sample":
            return x0
        return prediction_target(prediction, x0, eps, *self._a_s(t, x0))

    def to_x0(self, prediction: str, out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        if prediction == "sample":
            return out
        return to_x0(prediction, out, x_t, *self._a_s(t, x_t))

    def check_policy(self, kind: str, prediction: str, prior_alpha: float | None) -> None:
        """Every policy option works with VP diffusion."""

    def prior_sample(
        self, shape, generator: torch.Generator | None = None, *, dtype=None, device=None
    ) -> Tensor:
        return noise.normal(tuple(shape), generator, dtype=dtype, device=device)

    def grid(self, grid: str | Tensor, steps: int, t_start: float) -> Tensor:
        if isinstance(grid, str):
            return time_grid(grid, steps, t_start=t_start, schedule=self.schedule)
        return explicit_grid(grid, steps)

    def churn_bridge(
        self, x: Tensor, x0_hat: Tensor, t: float, s: float, churn: float, generator: Any
    ) -> Tensor:
        return apply_bridge(x, x0_hat, churn_coefs(self.schedule, t, s, churn), generator)

    def observation(self, x_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(y [B, D], a [B], s [B])``: x_t flattened, alpha and sigma (float64)."""
        flat = x_t.reshape(x_t.shape[0], -1)
        return flat, self.alpha(t.double()), self.sigma(t.double())
