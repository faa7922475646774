"""Reverse-process samplers: one class per sampler, one registry, one loop.

``sample(model, x_T, *, process, method, steps, t_start=1.0, grid="uniform", cond=None,
generator=None, clip_x0=None, **opts) -> (x0, nfe)`` runs any sampler on any process it
integrates. ``model(x_t, t, cond)`` takes ``t`` as a float tensor ``[B]`` in [0, 1] and returns
an x0 estimate: the posterior mean for a mean model, a fresh posterior sample for a
distributional one. Samplers never look inside the model, and the model never sees the process.

To add a sampler: one dataclass subclassing :class:`SamplerConfig` with its ``kind``, its own
options as fields, the ``families`` of processes it integrates and a ``step(ctx, x, t, s)``;
decorate it with :func:`register`. It is then ``sampler=<kind>`` in every config, checkpoint
and benchmark spec (see :mod:`.vp` for VP samplers, :mod:`.phase_space` for PSLD ones).
"""

from . import phase_space, vp  # noqa: F401  (registers the samplers)
from .base import SAMPLERS, SamplerConfig, StepContext, register
from .loop import check_sampler_runs, sample, sampler_config, samplers_for
from .vp import DistributionalSampler

__all__ = [
    "SAMPLERS",
    "DistributionalSampler",
    "SamplerConfig",
    "StepContext",
    "check_sampler_runs",
    "register",
    "sample",
    "sampler_config",
    "samplers_for",
]
