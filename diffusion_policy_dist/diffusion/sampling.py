"""Stateless reverse-process samplers with one signature.

``sample(model, x_T, *, schedule, method, steps, t_start=1.0, grid="uniform", cond=None,
generator=None, **opts) -> (x0, nfe)``

``model(x_t, t, cond)`` takes ``t`` as a float tensor ``[B]`` in [0, 1] and returns an x0
estimate: the posterior mean for a mean model, a fresh posterior sample for a distributional
one. Samplers never look inside the model, and the model never sees the schedule.

Methods (``opts`` in brackets):

- ``ddpm`` [clip_x0]: ancestral sampling from q(x_s | x_t, x0 = x0_hat).
- ``ddim`` [eta, clip_x0]: DDIM(eta); eta = 0 is the deterministic bridge, eta = 1 is ``ddpm``.
- ``distributional`` [churn, clip_x0]: DDM's coarse-step update (De Bortoli et al. 2025,
  Algorithm 2). churn 0 is the DDIM bridge, churn 1 the DDPM posterior.
- ``conjugate`` [lam, quad_points, clip_x0]: lambda-DDIM conjugate integrator (Pandey et al.
  2024); lam = 0 is exactly DDIM.

All four bridges share one step, ``x_s = k_x x_t + k_0 x0_hat + std z``. The final step to s = 0
returns x0_hat itself. NFE counts actual model calls.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .grids import time_grid
from .schedules import Schedule, make_schedule

ModelFn = Callable[[Tensor, Tensor, Any], Tensor]
METHODS = ("ddpm", "ddim", "distributional", "conjugate")
_OPTS = {
    "ddpm": {"clip_x0"},
    "ddim": {"eta", "clip_x0"},
    "distributional": {"churn", "clip_x0"},
    "conjugate": {"lam", "quad_points", "clip_x0"},
}
_EPS = 1e-6


def _coef(schedule: Schedule, t: float) -> tuple[float, float]:
    """(alpha, sigma) at scalar time t in float64, clamped away from 0."""
    tt = torch.tensor(t, dtype=torch.float64)
    a = float(schedule.alpha(tt))
    s = float(schedule.sigma(tt))
    if not (math.isfinite(a) and math.isfinite(s)):
        raise ValueError(f"schedule returned alpha={a}, sigma={s} at t={t}")
    return max(a, _EPS), max(s, _EPS)


def _bridge_coefs(
    method: str, schedule: Schedule, t: float, s: float, opts: dict
) -> tuple[float, float, float]:
    """Coefficients (k_x, k_0, std) of ``x_s = k_x x_t + k_0 x0_hat + std z`` for a t -> s step."""
    a_t, s_t = _coef(schedule, t)
    a_s, s_s = _coef(schedule, s)
    if method == "conjugate":
        return (*_conjugate_coefs(schedule, t, s, a_t, s_t, a_s, s_s, opts), 0.0)
    r11 = (a_t / a_s) * (s_s / s_t)
    if method == "ddpm":
        rho = r11
    elif method == "ddim":
        eta = float(opts.get("eta", 0.0))
        if eta < 0:
            raise ValueError(f"ddim: eta must be >= 0, got {eta}")
        rho = math.sqrt(max(0.0, 1.0 - eta * eta * (1.0 - r11 * r11)))
    elif method == "distributional":
        churn = float(opts.get("churn", 0.0))
        if not 0.0 <= churn <= 1.0:
            raise ValueError(f"distributional: churn must be in [0, 1], got {churn}")
        rho = churn * churn * r11 + 1.0 - churn * churn
    else:
        raise ValueError(f"unknown sampler {method!r}; choose one of {METHODS}")
    k_x = rho * s_s / s_t
    k_0 = a_s * (1.0 - rho * r11)
    std = s_s * math.sqrt(max(0.0, 1.0 - rho * rho))
    return k_x, k_0, std


def _conjugate_coefs(
    schedule: Schedule,
    t: float,
    s: float,
    a_t: float,
    s_t: float,
    a_s: float,
    s_s: float,
    opts: dict,
) -> tuple[float, float]:
    """lambda-DDIM: ``x_s = (a_s/a_t)(1 - lam h) e^{lam h} x_t - a_s I eps_hat`` with
    ``I = int_s^t e^{lam (u - s)} d rho_u``, ``rho = sigma/alpha``, ``h = t - s``.

    Written on x0_hat via ``eps_hat = (x_t - a_t x0_hat) / s_t`` so that lam = 0 reproduces
    DDIM's coefficients to rounding (the large terms near alpha ~ 0 cancel in float64).
    """
    lam = float(opts.get("lam", 0.0))
    n = int(opts.get("quad_points", 65))
    h = t - s
    u = torch.linspace(s, t, n, dtype=torch.float64)
    alpha_u = schedule.alpha(u).double().clamp_min(_EPS)
    rho_u = schedule.sigma(u).double().clamp_min(0.0) / alpha_u
    # endpoints use the same clamped values as the step itself
    rho_u[0], rho_u[-1] = s_s / a_s, s_t / a_t
    w = torch.exp(lam * (u - s))
    integral = float((0.5 * (w[1:] + w[:-1]) * (rho_u[1:] - rho_u[:-1])).sum())
    k_x = (a_s / a_t) * (1.0 - lam * h) * math.exp(lam * h) - a_s * integral / s_t
    k_0 = a_s * integral * a_t / s_t
    return k_x, k_0


def check_opts(method: str, opts: dict) -> None:
    """Raise a clear error for an unknown method or an option the method does not take."""
    if method not in _OPTS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {METHODS}")
    unknown = set(opts) - _OPTS[method]
    if unknown:
        raise ValueError(
            f"sampler {method!r} does not take option(s) {sorted(unknown)}; "
            f"it takes {sorted(_OPTS[method])}"
        )


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
    ``callback(i, t, x_t, x0_hat)`` is called after each model evaluation.
    Returns ``(x0, nfe)``.
    """
    check_opts(method, opts)
    sched = make_schedule(schedule)
    if isinstance(grid, str):
        ts = time_grid(grid, steps, t_start=t_start, schedule=sched)
    else:
        ts = torch.as_tensor(grid, dtype=torch.float64)
        if ts.dim() != 1 or len(ts) != steps + 1 or float(ts[-1]) != 0.0:
            raise ValueError(
                f"explicit grid must be 1-D with steps+1={steps + 1} points ending at 0"
            )
    clip = opts.get("clip_x0")
    B = x_T.shape[0]
    x = x_T
    nfe = 0
    for i in range(steps):
        t, s = float(ts[i]), float(ts[i + 1])
        t_vec = torch.full((B,), t, dtype=x.dtype, device=x.device)
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
        k_x, k_0, std = _bridge_coefs(method, sched, t, s, opts)
        x = k_x * x + k_0 * x0_hat
        if std > 0.0:
            x = x + std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return x, nfe
