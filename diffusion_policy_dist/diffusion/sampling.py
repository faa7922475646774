"""Stateless reverse-process samplers with one signature, and their options.

``sample(model, x_T, *, schedule, method, steps, t_start=1.0, grid="uniform", cond=None,
generator=None, **opts) -> (x0, nfe)``

``model(x_t, t, cond)`` takes ``t`` as a float tensor ``[B]`` in [0, 1] and returns an x0
estimate: the posterior mean for a mean model, a fresh posterior sample for a distributional
one. Samplers never look inside the model, and the model never sees the schedule.

Each method is one options dataclass in :data:`SAMPLERS` (its ``kind`` is the method name). The
class carries the method's own options and its step rule: every method here is a Gaussian bridge
``x_s = k_x x_t + k_0 x0_hat + std z`` from t to s < t. The final step to s = 0 returns x0_hat.
NFE counts actual model calls. To add a sampler, add a class with a ``coefs`` method and list it
in :data:`SAMPLERS` (the config store registers every entry as a ``sampler=<kind>`` option).

- ``ddpm``: ancestral sampling from q(x_s | x_t, x0 = x0_hat).
- ``ddim`` [eta]: DDIM(eta); eta = 0 is the deterministic bridge, eta = 1 is ``ddpm``.
- ``distributional`` [churn]: DDM's coarse-step update (De Bortoli et al. 2025, Algorithm 2);
  churn 0 is the DDIM bridge, churn 1 the DDPM posterior.
- ``conjugate`` [lam, quad_points]: lambda-DDIM conjugate integrator (Pandey et al. 2024);
  lam = 0 is exactly DDIM.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

from .grids import GRIDS, explicit_grid, time_grid
from .phase_space import _OPTS as PHASE_SPACE_OPTS
from .phase_space import PhaseSpace, check_phase_space_opts, sample_phase_space
from .schedules import Schedule, make_schedule, t_at_alpha

ModelFn = Callable[[Tensor, Tensor, Any], Tensor]
_EPS = 1e-6


def _coef(schedule: Schedule, t: float) -> tuple[float, float]:
    """(alpha, sigma) at scalar time t in float64, clamped away from 0."""
    tt = torch.tensor(t, dtype=torch.float64)
    a = float(schedule.alpha(tt))
    s = float(schedule.sigma(tt))
    if not (math.isfinite(a) and math.isfinite(s)):
        raise ValueError(f"schedule returned alpha={a}, sigma={s} at t={t}")
    return max(a, _EPS), max(s, _EPS)


def _rho_bridge(rho: float, a_t: float, s_t: float, a_s: float, s_s: float):
    """``(k_x, k_0, std)`` of the bridge that keeps ``rho`` of the noise direction: DDM eq. 4
    with ``r11 = (a_t/a_s)(s_s/s_t)``."""
    r11 = (a_t / a_s) * (s_s / s_t)
    k_x = rho * s_s / s_t
    k_0 = a_s * (1.0 - rho * r11)
    std = s_s * math.sqrt(max(0.0, 1.0 - rho * rho))
    return k_x, k_0, std


@dataclass
class SamplerConfig:
    """Options every sampler takes. ``steps``: network calls per chunk; ``grid``: time grid
    (:data:`~.grids.GRIDS`); ``t_start``: first time; ``clip_x0``: clamp x0 estimates to
    ``[-c, c]`` (None: no clamp); ``use_prior``: a truncated policy starts at t' from its prior
    when ``t_start`` is 1."""

    kind: str = ""
    steps: int = 1
    grid: str = "uniform"
    t_start: float = 1.0
    clip_x0: float | None = 1.0
    use_prior: bool = True

    @classmethod
    def kind_name(cls) -> str:
        """The method this class configures (its ``kind`` default)."""
        return cls.__dataclass_fields__["kind"].default

    def __post_init__(self) -> None:
        if self.kind != self.kind_name():
            raise ValueError(
                f"sampler.kind is {self.kind!r}, but these options are for {self.kind_name()!r}; "
                f"pick another sampler with sampler={self.kind}"
            )
        if not isinstance(self.steps, int) or self.steps < 1:
            raise ValueError(f"sampler.steps must be an integer >= 1, got {self.steps!r}")
        if self.grid not in GRIDS:
            raise ValueError(f"sampler.grid must be one of {list(GRIDS)}, got {self.grid!r}")
        if not 0.0 < self.t_start <= 1.0:
            raise ValueError(f"sampler.t_start must be in (0, 1], got {self.t_start}")
        if self.clip_x0 is not None and self.clip_x0 <= 0:
            raise ValueError(f"sampler.clip_x0 must be > 0 or null, got {self.clip_x0}")

    def opts(self) -> dict[str, Any]:
        """This method's own options (the fields beyond :class:`SamplerConfig`'s)."""
        base = {f.name for f in dataclasses.fields(SamplerConfig)}
        return {
            f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in base
        }

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.opts().items() if k != "quad_points")
        return f"{self.kind}-{self.steps}" + (f" ({extra})" if extra else "")

    def coefs(self, schedule: Schedule, t: float, s: float) -> tuple[float, float, float]:
        """``(k_x, k_0, std)`` of the step from t to s > 0."""
        raise NotImplementedError

    def start_time(self, schedule: Schedule, t_start: float) -> float:
        """The time the first step starts from (a method may need a later start)."""
        return t_start


@dataclass
class DDPMSampler(SamplerConfig):
    kind: str = "ddpm"
    steps: int = 100

    def coefs(self, schedule, t, s):
        a_t, s_t = _coef(schedule, t)
        a_s, s_s = _coef(schedule, s)
        return _rho_bridge((a_t / a_s) * (s_s / s_t), a_t, s_t, a_s, s_s)


@dataclass
class DDIMSampler(SamplerConfig):
    kind: str = "ddim"
    steps: int = 10
    eta: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.eta < 0:
            raise ValueError(f"sampler.eta must be >= 0, got {self.eta}")

    def coefs(self, schedule, t, s):
        a_t, s_t = _coef(schedule, t)
        a_s, s_s = _coef(schedule, s)
        r11 = (a_t / a_s) * (s_s / s_t)
        rho = math.sqrt(max(0.0, 1.0 - self.eta * self.eta * (1.0 - r11 * r11)))
        return _rho_bridge(rho, a_t, s_t, a_s, s_s)


@dataclass
class DistributionalSampler(SamplerConfig):
    kind: str = "distributional"
    steps: int = 1
    churn: float = 0.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 <= self.churn <= 1.0:
            raise ValueError(f"sampler.churn must be in [0, 1], got {self.churn}")

    def coefs(self, schedule, t, s):
        a_t, s_t = _coef(schedule, t)
        a_s, s_s = _coef(schedule, s)
        r11 = (a_t / a_s) * (s_s / s_t)
        c2 = self.churn * self.churn
        return _rho_bridge(c2 * r11 + 1.0 - c2, a_t, s_t, a_s, s_s)


@dataclass
class ConjugateSampler(SamplerConfig):
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
        a_t, s_t = _coef(schedule, t)
        a_s, s_s = _coef(schedule, s)
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


@dataclass
class PhaseSpaceSamplerConfig(SamplerConfig):
    """A sampler of phase-space diffusion only (schedule ``psld``; see :mod:`.phase_space`)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        check_phase_space_opts(self.kind, {**self.opts(), "clip_x0": self.clip_x0})

    def coefs(self, schedule, t, s):
        raise ValueError(f"sampler {self.kind!r} needs the phase-space schedule (schedule=psld)")


def _phase_space_configs() -> list[type[SamplerConfig]]:  # pragma: no mutate
    """One options class per phase-space method (``distributional`` serves both processes).
    Runs at import, so every test covers it: left out of mutation testing."""
    out, field = [], dataclasses.field  # pragma: no mutate
    for method, own in PHASE_SPACE_OPTS.items():  # pragma: no mutate
        if method == "distributional":  # pragma: no mutate
            continue  # pragma: no mutate
        extra = [(k, type(v), field(default=v)) for k, v in own.items()]  # pragma: no mutate
        kind = ("kind", str, field(default=method))  # pragma: no mutate
        steps = ("steps", int, field(default=10))  # pragma: no mutate
        head = [kind, steps]  # pragma: no mutate
        name = "".join(w.title() for w in method.split("_")) + "Sampler"  # pragma: no mutate
        base = (PhaseSpaceSamplerConfig,)  # pragma: no mutate
        out.append(dataclasses.make_dataclass(name, head + extra, bases=base))  # pragma: no mutate
    return out  # pragma: no mutate


VP_SAMPLERS = (DDPMSampler, DDIMSampler, DistributionalSampler, ConjugateSampler)
SAMPLERS: dict[str, type[SamplerConfig]] = {
    c.kind_name(): c for c in (*VP_SAMPLERS, *_phase_space_configs())
}
METHODS = tuple(SAMPLERS)


def sampler_config(method: str, **options: Any) -> SamplerConfig:
    """The options object of ``method``; an option the method does not take is an error."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {list(METHODS)}")
    cls = SAMPLERS[method]
    known = {f.name for f in dataclasses.fields(cls)} - {"kind"}
    unknown = set(options) - known
    if unknown:
        own = sorted(cls(kind=method).opts())
        raise ValueError(
            f"sampler {method!r} does not take option(s) {sorted(unknown)}; "
            f"its own options are {own}"
        )
    return cls(kind=method, **options)


def _grid(sched: Schedule, grid: str | Tensor, steps: int, t_start: float) -> Tensor:
    if isinstance(grid, str):
        return time_grid(grid, steps, t_start=t_start, schedule=sched)
    return explicit_grid(grid, steps)


@torch.no_grad()
def sample(
    model: ModelFn,
    x_T: Tensor,
    *,
    schedule: str | Schedule,
    method: str,
    steps: int,
    t_start: float = 1.0,
    grid: str | Tensor = "uniform",
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, float, Tensor, Tensor], None] | None = None,
    **opts: Any,
) -> tuple[Tensor, int]:
    """Run ``steps`` reverse steps from ``x_T`` (at time ``t_start``) to t = 0.

    x_T: ``[B, ...]`` (any trailing shape); cond is passed through to the model untouched.
    ``grid`` is a grid name (see :mod:`.grids`) or an explicit descending tensor ending at 0.
    ``opts``: the method's own options and ``clip_x0`` (clamp x0 estimates to ``[-c, c]``; none
    by default). ``callback(i, t, x_t, x0_hat)`` is called after each model evaluation.
    Returns ``(x0, nfe)``.
    """
    sched = make_schedule(schedule)
    if isinstance(sched, PhaseSpace):
        return sample_phase_space(
            model, x_T, schedule=sched, method=method, steps=steps, t_start=t_start, grid=grid,
            cond=cond, generator=generator, callback=callback, **opts,
        )  # fmt: skip
    grid_name = grid if isinstance(grid, str) else "uniform"
    opts.setdefault("clip_x0", None)
    cfg = sampler_config(method, steps=steps, t_start=t_start, grid=grid_name, **opts)
    ts = _grid(sched, grid, steps, cfg.start_time(sched, t_start))
    clip = cfg.clip_x0
    x, nfe = x_T, 0
    for i in range(steps):
        t, s = float(ts[i]), float(ts[i + 1])
        t_vec = torch.full((x.shape[0],), t, dtype=x.dtype, device=x.device)
        x0_hat = model(x, t_vec, cond)
        nfe += 1
        if x0_hat.shape != x.shape:
            raise ValueError(
                f"model returned shape {tuple(x0_hat.shape)} for input {tuple(x.shape)}"
            )
        if clip is not None:
            x0_hat = x0_hat.clamp(-float(clip), float(clip))
        if callback is not None:
            callback(i, t, x, x0_hat)
        if s == 0.0:
            x = x0_hat
            break
        k_x, k_0, std = cfg.coefs(sched, t, s)
        x = k_x * x + k_0 * x0_hat
        if std > 0.0:
            x = x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x, nfe
