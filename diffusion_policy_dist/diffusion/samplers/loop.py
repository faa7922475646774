"""The one sampling loop, for every sampler of every process."""

from __future__ import annotations

import dataclasses
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from ..processes import make_process
from .base import SAMPLERS, Denoise, ModelFn, SamplerConfig, StepContext


def sampler_config(method: str, **options: Any) -> SamplerConfig:
    """The options object of ``method``; an option the method does not take is an error."""
    if method not in SAMPLERS:
        raise ValueError(f"unknown sampler {method!r}; choose one of {list(SAMPLERS)}")
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


def samplers_for(family: str) -> list[str]:
    """The kinds of the samplers that integrate a process ``family``."""
    return [k for k, cls in SAMPLERS.items() if family in cls.families]


def check_sampler_runs(sampler: SamplerConfig, process: Any) -> None:
    """A clear error when ``sampler`` cannot integrate ``process``."""
    if process.family not in type(sampler).families:
        family = process.family.replace("_", "-")
        raise ValueError(
            f"sampler={sampler.kind} does not run {family} diffusion (schedule={process.kind}); "
            f"its samplers are {samplers_for(process.family)}"
        )


@torch.no_grad()
def sample(
    model: ModelFn,
    x_T: Tensor,
    *,
    process: Any = None,
    method: str,
    steps: int,
    t_start: float = 1.0,
    grid: str | Tensor = "uniform",
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callable[[int, float, Tensor, Tensor], None] | None = None,
    clip_x0: float | None = None,
    schedule: Any = None,
    **opts: Any,
) -> tuple[Tensor, int]:
    """Run ``steps`` reverse steps of ``method`` from ``x_T`` (the state at ``t_start``) to 0.

    ``process``: a process, a schedule, a config kind or dict (:func:`~..processes.make_process`;
    ``schedule=`` is the same argument under its name of version 0.2). ``model(x_t, t [B], cond)``
    returns an x0 estimate (the process's ``x0_shape``). ``grid``: a grid name or an explicit
    descending tensor ending at 0. ``clip_x0`` clamps every x0 estimate to ``[-c, c]``: none by
    default here, where tests feed exact models of any data; a policy's sampler options clip at
    1.0, the range of normalized actions. ``opts``: the method's own options.
    ``callback(i, t, x_t, x0_hat)`` is called after every model evaluation. The final step
    returns the model's x0 estimate at the last time > 0. Returns ``(x0, nfe)``.
    """
    proc = make_process(process if process is not None else schedule)
    cfg = sampler_config(method, steps=steps, t_start=t_start, clip_x0=clip_x0,
                         grid=grid if isinstance(grid, str) else "uniform", **opts)  # fmt: skip
    check_sampler_runs(cfg, proc)
    proc.x0_shape(tuple(x_T.shape))  # the state's layout is the process's
    ts = proc.grid(grid, steps, cfg.start_time(proc, t_start))
    why = cfg.grid_warning(proc, ts)
    if why is not None:
        warnings.warn(why, RuntimeWarning, stacklevel=2)
    ctx = StepContext(proc, Denoise(model, cond, proc, cfg.clip_x0, callback), generator)
    x = x_T
    for i in range(steps):
        ctx.model.step = i
        t = proc.clamp_time(float(ts[i]))
        if float(ts[i + 1]) == 0.0:
            return ctx.model(x, t), ctx.model.nfe
        s = proc.clamp_time(float(ts[i + 1]))
        if s < t:
            x = cfg.step(ctx, x, t, s)
    raise AssertionError("unreachable: the grid ends at 0")
