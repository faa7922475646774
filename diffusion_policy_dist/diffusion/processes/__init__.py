"""Forward processes: what a diffusion does to actions, and everything a sampler, a loss or a
policy needs to know about it, behind one interface.

A :class:`Process` owns its forward maths and its prior. Two families implement it:

- :class:`~.vp.VPProcess`: ``x_t = alpha(t) x0 + sigma(t) eps`` on a schedule of
  :mod:`..schedules` (``cosine``, ``linear``, ``flow``);
- :class:`~.phase_space.PhaseSpace`: phase-space Langevin diffusion (PSLD), positions with
  momenta, so the state has twice the action's channels.

The config group ``schedule`` chooses one (:data:`PROCESS_CONFIGS`; ``schedule=psld`` is phase
space) and :func:`make_process` builds it. Samplers name the families they integrate
(:mod:`..samplers`); nothing outside ``diffusion/`` asks which process it has.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from torch import Tensor

from ..schedules import SCHEDULES, make_schedule
from .phase_space import PhaseSpace
from .vp import VPProcess

#: config kind -> its options class (VP schedules, and phase space)
PROCESS_CONFIGS: dict[str, type] = {**SCHEDULES, "psld": PhaseSpace}
FAMILIES = ("vp", "phase_space")


@runtime_checkable
class Process(Protocol):
    """A forward process.

    - ``family``: ``"vp"`` or ``"phase_space"`` (which samplers can integrate it);
    - ``channels(D)``: state channels for a D-dimensional action; ``x0_shape(state_shape)``;
    - ``training_draw(x0) -> (t [B], eps, x_t)``: a random time per example and the perturbed
      state (``perturb(x0, t, eps)``); ``target``/``to_x0``: what a mean model's output means;
    - ``prior_sample(x0_shape, generator, dtype=, device=)``: the state at t = 1;
    - ``grid(name_or_tensor, steps, t_start)``: descending times ending at exactly 0;
      ``clamp_time(t)``: the time a coefficient or model call uses;
    - ``churn_bridge(x, x0_hat, t, s, churn, generator)``: DDM's coarse step from t to s;
    - ``observation(x_t, t) -> (y, a, s)``: x_t as a Gaussian observation of x0 (the exact
      posteriors of :mod:`..oracle` use it);
    - ``log_snr(t)`` (time weightings) and ``check_policy(kind, prediction, prior_alpha)``.
    """

    family: str

    def channels(self, D: int) -> int: ...

    def x0_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]: ...

    def training_draw(self, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]: ...

    def prior_sample(self, shape, generator=None, *, dtype=None, device=None) -> Tensor: ...

    def grid(self, grid: Any, steps: int, t_start: float) -> Tensor: ...

    def clamp_time(self, t: float) -> float: ...

    def churn_bridge(self, x, x0_hat, t: float, s: float, churn: float, generator) -> Tensor: ...


def make_process(spec: Any, **kwargs: Any) -> Any:
    """A process from a config kind (``cosine``, ``linear``, ``flow``, ``psld``), a config dict
    ``{"kind": ..., **params}``, a schedule or phase-space options object, or a process
    (returned unchanged)."""
    if isinstance(spec, (VPProcess, PhaseSpace)):
        return spec
    if spec == "psld":
        return PhaseSpace(**kwargs)
    if hasattr(spec, "keys") and dict(spec).get("kind") == "psld":
        return PhaseSpace(**{**dict(spec), **kwargs})
    return VPProcess(make_schedule(spec, **kwargs))
