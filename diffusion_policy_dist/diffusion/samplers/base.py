"""What every sampler is: one options dataclass with a step rule, in one registry.

A sampler class subclasses :class:`SamplerConfig`, sets ``kind`` (its name: ``sampler=<kind>``
in configs) and ``families`` (the processes it integrates, :mod:`..processes`), and implements
``step(ctx, x, t, s) -> x_s``. The step calls ``ctx.model(x, u)`` for x0 estimates (as often as
it needs: ``nfe_per_step``; the loop counts calls) and may keep state across the steps of one
run in ``ctx.state`` (multistep methods). :func:`register` puts the class in :data:`SAMPLERS`;
the loop in :mod:`.loop` drives every sampler of every process.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..grids import GRIDS

ModelFn = Callable[[Tensor, Tensor, Any], Tensor]
Callback = Callable[[int, float, Tensor, Tensor], None]


@dataclass
class SamplerConfig:
    """Options every sampler takes. ``steps``: reverse steps per chunk (network calls, for a
    one-call-per-step method); ``grid``: time grid (:data:`~..grids.GRIDS`); ``t_start``: first
    time; ``clip_x0``: clamp x0 estimates to ``[-c, c]`` (None: no clamp; 1.0 by default, the
    range of normalized actions); ``use_prior``: a truncated policy starts at t' from its prior
    when ``t_start`` is 1."""

    kind: str = ""
    steps: int = 1
    grid: str = "uniform"
    t_start: float = 1.0
    clip_x0: float | None = 1.0
    use_prior: bool = True

    families: ClassVar[tuple[str, ...]] = ("vp",)
    nfe_per_step: ClassVar[int] = 1  # model calls per step (the final step to t = 0 costs 1)

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

    def start_time(self, process: Any, t_start: float) -> float:
        """The time the first step starts from (a method may need a later start)."""
        return t_start

    def grid_warning(self, process: Any, ts: Tensor) -> str | None:
        """Why this method is likely to fail on the grid ``ts`` (None: no reason known)."""
        return None

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        """The state at time s < t from the state ``x`` at t (s > 0: the loop takes the final
        step to 0 itself, returning the model's x0 estimate)."""
        raise NotImplementedError


#: kind -> sampler class; :func:`register` adds to it
SAMPLERS: dict[str, type[SamplerConfig]] = {}


def register(cls: type[SamplerConfig]) -> type[SamplerConfig]:
    """Class decorator: list a sampler under its ``kind`` (the config store then offers it as
    ``sampler=<kind>``)."""
    kind = cls.kind_name()
    if kind in SAMPLERS:
        raise ValueError(f"a sampler called {kind!r} is already registered")
    SAMPLERS[kind] = cls
    return cls


class Denoise:
    """The model as a step sees it: ``model(x, u) -> x0_hat`` at one scalar time, counted,
    shape-checked against the process, clipped, reported to the callback."""

    def __init__(self, model: ModelFn, cond: Any, process: Any, clip, callback) -> None:
        self.model, self.cond, self.process = model, cond, process
        self.clip, self.callback = clip, callback
        self.nfe, self.step = 0, 0

    def __call__(self, x: Tensor, u: float) -> Tensor:
        t_vec = torch.full((x.shape[0],), u, dtype=x.dtype, device=x.device)
        x0 = self.model(x, t_vec, self.cond)
        self.nfe += 1
        want = self.process.x0_shape(tuple(x.shape))
        if tuple(x0.shape) != want:
            raise ValueError(
                f"model returned {tuple(x0.shape)} for x_t {tuple(x.shape)}; want {want}"
            )
        if self.clip is not None:
            x0 = x0.clamp(-float(self.clip), float(self.clip))
        if self.callback is not None:
            self.callback(self.step, u, x, x0)
        return x0


@dataclass
class StepContext:
    """What one sampling run shares across its steps: the process, the model, the random
    stream and the sampler's own state (e.g. a multistep method's previous estimates)."""

    process: Any
    model: Denoise
    generator: torch.Generator | None
    state: dict[str, Any] = field(default_factory=dict)
