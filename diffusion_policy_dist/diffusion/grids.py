"""Descending time grids ``t_start = t_0 > t_1 > ... > t_K = 0`` for K-step samplers.

- ``uniform``: equal steps in t.
- ``quadratic``: ``t_i = t_start (1 - i/K)^rho`` (rho=2 is DDIM's "quadratic" skip), denser near 0.
- ``edm``: Karras et al. spacing with ``rho=7`` in the noise level sigma/alpha, mapped back to t.
- ``logsnr``: uniform in log-SNR between ``t_start`` and the schedule's smallest time.

The last point is always exactly 0: a sampler's final step returns its x0 estimate there.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

from .schedules import Schedule, log_snr

GRIDS = ("uniform", "quadratic", "edm", "logsnr")


def explicit_grid(grid: Tensor | list[float], steps: int) -> Tensor:
    """A caller's own grid as float64 ``[steps + 1]``; it must be 1-D and descend strictly from at
    most 1 to exactly 0 (ValueError saying which rule it breaks)."""
    ts = torch.as_tensor(grid, dtype=torch.float64)
    if ts.dim() != 1 or len(ts) != steps + 1 or float(ts[-1]) != 0.0:
        raise ValueError(f"explicit grid must be 1-D with steps+1={steps + 1} points ending at 0")
    if not bool((ts[:-1] > ts[1:]).all()) or float(ts[0]) > 1.0:
        raise ValueError(f"explicit grid must descend from at most 1, got {ts.tolist()}")
    return ts


def _invert_decreasing(f: Callable[[Tensor], Tensor], targets: Tensor, iters: int = 64) -> Tensor:
    """Solve ``f(t) = target`` for t in [0, 1] with f decreasing, elementwise, by bisection."""
    lo = torch.zeros_like(targets)
    hi = torch.ones_like(targets)
    for _ in range(iters):
        mid = 0.5 * (lo + hi)
        above = f(mid) > targets
        lo = torch.where(above, mid, lo)
        hi = torch.where(above, hi, mid)
    return 0.5 * (lo + hi)


def time_grid(
    kind: str,
    steps: int,
    t_start: float = 1.0,
    schedule: Schedule | None = None,
    rho: float | None = None,
) -> Tensor:
    """Return a float64 tensor ``[steps + 1]`` descending from ``t_start`` to exactly 0.

    ``schedule`` is needed for ``edm`` and ``logsnr`` (their spacing depends on alpha, sigma).
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if not 0.0 < t_start <= 1.0:
        raise ValueError(f"t_start must be in (0, 1], got {t_start}")
    frac = torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64)
    if kind == "uniform":
        grid = t_start * (1.0 - frac)
    elif kind == "quadratic":
        grid = t_start * (1.0 - frac) ** (2.0 if rho is None else rho)
    elif kind in ("edm", "logsnr"):
        if schedule is None:
            raise ValueError(f"grid {kind!r} needs the schedule")
        t_lo = float(getattr(schedule, "t_min", 1e-4))
        if kind == "edm":
            r = 7.0 if rho is None else rho

            def noise(t: Tensor) -> Tensor:
                return schedule.sigma(t) / schedule.alpha(t).clamp_min(1e-12)

            # noise level grows with t, so invert -noise (decreasing)
            n_hi = float(noise(torch.tensor(t_start, dtype=torch.float64)))
            n_lo = float(noise(torch.tensor(t_lo, dtype=torch.float64)))
            levels = (n_hi ** (1 / r) + frac * (n_lo ** (1 / r) - n_hi ** (1 / r))) ** r
            grid = _invert_decreasing(lambda t: -noise(t), -levels)
        else:
            lam_hi = float(log_snr(schedule, torch.tensor(t_start, dtype=torch.float64)))
            lam_lo = float(log_snr(schedule, torch.tensor(t_lo, dtype=torch.float64)))
            # log-SNR decreases with t: start at lam_hi (noisy) and rise to lam_lo (clean)
            levels = lam_hi + frac * (lam_lo - lam_hi)
            grid = _invert_decreasing(lambda t: log_snr(schedule, t), levels)
        grid[0] = t_start
    else:
        raise ValueError(f"unknown time grid {kind!r}; choose one of {GRIDS}")
    grid[-1] = 0.0
    if not bool((grid[:-1] > grid[1:]).all()):
        raise ValueError(
            f"time grid {kind!r} with {steps} steps from t_start={t_start} is not strictly "
            f"decreasing: {grid.tolist()}"
        )
    return grid
