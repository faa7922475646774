"""VP noise schedules in continuous time: ``x_t = alpha(t) x_0 + sigma(t) eps`` for t in [0, 1].

A schedule is a plain object with ``alpha(t)``, ``sigma(t)`` and ``log_snr(t)``; every
method takes and returns tensors of the same shape. Samplers and losses accept any object
with ``alpha`` and ``sigma``, so user schedules need not subclass anything here. A schedule
becomes a forward process in :mod:`.processes` (where phase-space diffusion lives too).

The time argument is clamped to ``[t_min, t_max]`` so that neither alpha nor sigma is ever
exactly zero where a formula divides by it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import torch
from torch import Tensor


@runtime_checkable
class Schedule(Protocol):
    """Anything with ``alpha(t)`` and ``sigma(t)`` (tensors in, tensors out)."""

    def alpha(self, t: Tensor) -> Tensor: ...

    def sigma(self, t: Tensor) -> Tensor: ...


@dataclass
class _Clamped:
    t_min: float
    t_max: float

    def _t(self, t: Tensor) -> Tensor:
        return torch.as_tensor(t).clamp(self.t_min, self.t_max)

    def log_snr(self, t: Tensor) -> Tensor:
        """log(alpha^2 / sigma^2), computed in float64 for accuracy near the ends."""
        t = torch.as_tensor(t)
        a = self.alpha(t.double())
        s = self.sigma(t.double())
        return (2.0 * (torch.log(a) - torch.log(s))).to(
            t.dtype if t.is_floating_point() else a.dtype
        )


@dataclass
class CosineSchedule(_Clamped):
    """Variance preserving cosine schedule (Nichol & Dhariwal; DP's ``squaredcos_cap_v2``).

    alpha = cos(pi/2 (t+s)/(1+s)) / cos(pi/2 s/(1+s)), sigma = sqrt(1 - alpha^2).
    """

    kind: str = "cosine"
    s: float = 0.008
    t_min: float = 1e-4
    t_max: float = 0.999

    def alpha(self, t: Tensor) -> Tensor:
        t = self._t(t)
        f = torch.cos(0.5 * math.pi * (t + self.s) / (1 + self.s))
        return f / math.cos(0.5 * math.pi * self.s / (1 + self.s))

    def sigma(self, t: Tensor) -> Tensor:
        a = self.alpha(t)
        return torch.sqrt((1.0 - a * a).clamp_min(0.0))


@dataclass
class LinearSchedule(_Clamped):
    """Variance preserving schedule with beta(t) linear from ``beta_min`` to ``beta_max`` (DDPM)."""

    kind: str = "linear"
    beta_min: float = 0.1
    beta_max: float = 20.0
    t_min: float = 1e-4
    t_max: float = 1.0

    def alpha(self, t: Tensor) -> Tensor:
        t = self._t(t)
        # integral of beta from 0 to t; alpha = exp(-0.5 * integral)
        integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t
        return torch.exp(-0.5 * integral)

    def sigma(self, t: Tensor) -> Tensor:
        t = self._t(t)
        integral = self.beta_min * t + 0.5 * (self.beta_max - self.beta_min) * t * t
        # -expm1 keeps precision for small t where 1 - exp(-x) would cancel.
        return torch.sqrt(-torch.expm1(-integral))


@dataclass
class FlowSchedule(_Clamped):
    """Rectified-flow / linear interpolation: alpha = 1 - t, sigma = t (used by the DDM paper)."""

    kind: str = "flow"
    t_min: float = 1e-4
    t_max: float = 0.999

    def alpha(self, t: Tensor) -> Tensor:
        return 1.0 - self._t(t)

    def sigma(self, t: Tensor) -> Tensor:
        return self._t(t)


SCHEDULES: dict[str, type] = {
    "cosine": CosineSchedule,
    "linear": LinearSchedule,
    "flow": FlowSchedule,
}


def make_schedule(schedule: str | Schedule | dict, **kwargs) -> Schedule:
    """Return a schedule object from a name (``cosine``/``linear``/``flow``), a config dict
    ``{"kind": ..., **params}``, or an existing schedule object (returned unchanged)."""
    if isinstance(schedule, str):
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; choose one of {sorted(SCHEDULES)}")
        return SCHEDULES[schedule](**kwargs)
    if isinstance(schedule, dict) or hasattr(schedule, "keys"):
        params = dict(schedule)
        name = params.pop("kind", None) or params.pop("name", None)  # "name": written by 0.1
        if name is None:
            raise ValueError(f"schedule config {dict(schedule)} has no 'kind'")
        params.update(kwargs)
        return make_schedule(name, **params)
    if not (hasattr(schedule, "alpha") and hasattr(schedule, "sigma")):
        raise TypeError(
            f"schedule must be a name, a dict or an object with alpha(t) and sigma(t); "
            f"got {type(schedule).__name__}"
        )
    return schedule


def log_snr(schedule: Schedule, t: Tensor) -> Tensor:
    """log-SNR of any schedule (uses its own ``log_snr`` when it has one)."""
    if hasattr(schedule, "log_snr"):
        return schedule.log_snr(t)
    a = schedule.alpha(t).double().clamp_min(1e-20)
    s = schedule.sigma(t).double().clamp_min(1e-20)
    return (2.0 * (torch.log(a) - torch.log(s))).to(torch.as_tensor(t).dtype)


def t_at_alpha(schedule: Schedule, alpha: float, tol: float = 1e-7) -> float:
    """The time t at which ``schedule.alpha(t) == alpha`` (bisection; alpha must be decreasing).

    Used to pick a truncation time matched by signal level rather than by step index.
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must be in (0, 1), got {alpha}")
    lo, hi = 0.0, 1.0
    while hi - lo > tol:
        mid = 0.5 * (lo + hi)
        a = float(schedule.alpha(torch.tensor(mid, dtype=torch.float64)))
        if a > alpha:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)
