"""A wrapper that turns anything an env does wrong into a failed episode, never a failed run.

- An exception in ``reset`` or ``step``, a MuJoCo instability warning, or a NaN/inf observation or
  reward ends the episode as a failure: ``info["crashed"] = True`` with ``info["reason"]`` (one of
  :data:`FAILURE_REASONS`) and ``info["error"]``. The policy never sees the bad observation.
- The end of an episode is reported in ``info["done"]`` (with the env's own ``terminated`` and
  ``truncated``), never through the return flags, and later steps repeat the final observation:
  a runner can step every env in lockstep and reset each one when it chooses.
- With ``record`` set, rendered frames of the current episode are kept for a video.
"""

from __future__ import annotations

import traceback
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np

from .base import INSTABILITY_WARNINGS, SimulationUnstableError


def failure_info(reason: str, message: str, trace: str | None = None) -> dict[str, Any]:
    """The info of an episode that failed for ``reason`` (not a success, no mode, done): one
    shape for failures inside an env, lost workers and a policy's bad actions alike."""
    info = {"is_success": False, "mode": -1, "crashed": True, "done": True, "reason": reason}
    return {**info, "error": message, "traceback": trace}


# Why an episode failed without the policy failing it. The runner adds the worker-level ones.
FAILURE_REASONS = ("reset_error", "step_error", "unstable", "non_finite", "worker_died", "timeout")


def non_finite_keys(obs: Any) -> list[str]:
    """Keys of an observation (Dict, or one array) holding NaN or inf."""
    items = obs.items() if isinstance(obs, Mapping) else [("obs", obs)]
    bad = []
    for k, v in items:
        arr = np.asarray(v)
        if arr.dtype.kind in "fc" and not np.isfinite(arr).all():
            bad.append(str(k))
    return bad


def _mujoco_warning_count(env: gym.Env) -> int | None:
    warning = getattr(getattr(env.unwrapped, "data", None), "warning", None)
    if warning is None:
        return None
    try:
        return int(sum(warning[w].number for w in INSTABILITY_WARNINGS))
    except Exception:
        return None


class SafeEnv(gym.Wrapper):
    """See the module docstring."""

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.record = False
        self.frames: list[np.ndarray] = []
        self._last_obs: Any = None
        self._final: tuple[Any, dict] | None = None
        self._warnings = _mujoco_warning_count(env)

    def _placeholder_obs(self) -> Any:
        return self._last_obs if self._last_obs is not None else self.observation_space.sample()

    def _fail(self, reason: str, message: str, obs: Any = None) -> tuple[Any, dict]:
        trace = traceback.format_exc(limit=3) if reason != "non_finite" else None
        info = failure_info(reason, message, trace)
        self._final = (self._placeholder_obs() if obs is None else obs, info)
        return self._final

    def reset(self, **kwargs):
        self.frames, self._final, self._last_obs = [], None, None
        try:
            obs, info = self.env.reset(**kwargs)
        except Exception as e:  # a broken reset is a failed episode, not a failed run
            return self._fail("reset_error", f"reset: {type(e).__name__}: {e}")
        bad = non_finite_keys(obs)
        if bad:
            return self._fail("non_finite", f"reset: observation {bad} holds NaN or inf")
        self._last_obs = obs
        self._warnings = _mujoco_warning_count(self.env)
        if self.record:
            self._grab()
        return obs, {**info, "crashed": False, "done": False}

    def step(self, action):
        if self._final is not None:  # episode over: hold still until the runner resets
            obs, info = self._final
            return obs, 0.0, False, False, info
        try:
            obs, reward, terminated, truncated, info = self.env.step(action)
        except Exception as e:
            reason = "unstable" if isinstance(e, SimulationUnstableError) else "step_error"
            obs, info = self._fail(reason, f"step: {type(e).__name__}: {e}")
            return obs, 0.0, False, False, info
        problem = self._check(obs, reward)
        if problem is not None:
            obs, info = self._fail(*problem)
            return obs, 0.0, False, False, info
        self._last_obs = obs
        if self.record:
            self._grab()
        done = bool(terminated or truncated)
        info = {**info, "crashed": False, "done": done}
        info.update(terminated=bool(terminated), truncated=bool(truncated))
        if done:
            self._final = (obs, info)
        return obs, reward, False, False, info

    def _check(self, obs: Any, reward: Any) -> tuple[str, str] | None:
        """A (reason, message) when the step's results can't be trusted."""
        warn = _mujoco_warning_count(self.env)
        if warn is not None and self._warnings is not None and warn > self._warnings:
            self._warnings = warn
            return "unstable", "step: MuJoCo instability warning (bad qpos/qvel/qacc)"
        bad = non_finite_keys(obs)
        if bad:
            return "non_finite", f"step: observation {bad} holds NaN or inf"
        if not np.isfinite(np.asarray(reward, dtype=np.float64)).all():
            return "non_finite", f"step: reward {reward!r} is not finite"
        return None

    def _grab(self) -> None:
        try:
            frame = self.env.render()
        except Exception:
            frame = None
        if frame is not None:
            self.frames.append(np.asarray(frame))

    def pop_frames(self) -> list[np.ndarray]:
        """The frames recorded since the last reset (and forget them)."""
        frames, self.frames = self.frames, []
        return frames
