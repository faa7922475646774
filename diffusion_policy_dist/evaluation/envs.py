"""Environment specs, the generic gymnasium adapter and the crash-safe wrapper.

An *env spec* is a small JSON-able dict stored in datasets and checkpoints, so evaluation can
rebuild the environment from a checkpoint alone::

    {"type": "dpd", "task": "obstacle_avoid", "obs_mode": "lowdim", "image_size": 96, ...}
    {"type": "gym", "env_id": "FetchReach-v4", "obs_keys": ["observation", "desired_goal"],
     "success_key": null, "module": "gymnasium_robotics", "kwargs": {}}

``type: gym`` envs go through :class:`GymAdapter`: Dict or Box observations become
``{"state": float32[D]}`` (chosen keys flattened in the given order) and success is read from
``info["is_success"]`` or ``info["success"]`` (or a configured key) into ``info["is_success"]``.
"""

from __future__ import annotations

import importlib
import traceback
from collections.abc import Mapping
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

# Evaluation seeds live far above collection seeds (collect refuses seeds >= EVAL_SEED_BASE).
EVAL_SEED_BASE = 1_000_000_000
VALIDATION_SEED_BASE = 2_000_000_000


def dpd_env_spec(task: str, obs_mode: str = "lowdim", image_size: int = 96) -> dict[str, Any]:
    """The env spec of a built-in task."""
    from ..envs import TASKS

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; built-in tasks are {sorted(TASKS)}")
    t = TASKS[task]
    return {
        "type": "dpd",
        "task": task,
        "env_id": t.env_id,
        "obs_mode": obs_mode,
        "image_size": int(image_size),
        "max_episode_steps": t.max_episode_steps,
        "control_hz": t.control_hz,
        "mode_names": list(t.mode_names),
        "mode_probs": list(t.mode_probs),
    }


def gym_env_spec(
    env_id: str,
    obs_keys: list[str] | None = None,
    success_key: str | None = None,
    module: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    max_episode_steps: int | None = None,
) -> dict[str, Any]:
    """The env spec of any registered gymnasium env."""
    return {
        "type": "gym",
        "env_id": env_id,
        "obs_keys": list(obs_keys) if obs_keys else None,
        "success_key": success_key,
        "module": module,
        "kwargs": dict(kwargs or {}),
        "max_episode_steps": max_episode_steps,
        "mode_names": None,
    }


class GymAdapter(gym.Wrapper):
    """Flattens a Dict/Box observation to ``{"state": float32[D]}`` and normalizes success."""

    def __init__(
        self, env: gym.Env, obs_keys: list[str] | None = None, success_key: str | None = None
    ):
        super().__init__(env)
        space = env.observation_space
        if isinstance(space, spaces.Dict):
            keys = list(obs_keys) if obs_keys else list(space.spaces)
            missing = [k for k in keys if k not in space.spaces]
            if missing:
                raise ValueError(
                    f"{env.spec.id if env.spec else env}: observation keys {missing} not in its "
                    f"Dict observation space (keys: {list(space.spaces)})"
                )
            dims = [int(np.prod(space.spaces[k].shape)) for k in keys]
        elif isinstance(space, spaces.Box):
            if obs_keys:
                raise ValueError(f"obs_keys={obs_keys} given, but the env's observation is a Box")
            keys, dims = None, [int(np.prod(space.shape))]
        else:
            raise ValueError(f"unsupported observation space {space}; use a Dict or Box env")
        self.obs_keys = keys
        self.success_key = success_key
        self.observation_space = spaces.Dict(
            {"state": spaces.Box(-np.inf, np.inf, (sum(dims),), np.float32)}
        )

    def _flat(self, obs: Any) -> dict[str, np.ndarray]:
        if self.obs_keys is None:
            return {"state": np.asarray(obs, dtype=np.float32).reshape(-1)}
        parts = [np.asarray(obs[k], dtype=np.float32).reshape(-1) for k in self.obs_keys]
        return {"state": np.concatenate(parts)}

    def _success(self, info: dict) -> dict:
        info = dict(info)
        key = self.success_key
        if key is None:
            key = "is_success" if "is_success" in info else "success" if "success" in info else None
        info["is_success"] = bool(info.get(key, False)) if key else False
        info.setdefault("mode", -1)
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._flat(obs), self._success(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._flat(obs), reward, terminated, truncated, self._success(info)


class SafeEnv(gym.Wrapper):
    """Makes any env safe to run inside a vector env that only resets at chunk boundaries.

    - An exception in step/reset (or a MuJoCo instability warning) ends the episode as a failure
      with ``info["crashed"] = True`` and the error text; it never reaches the runner.
    - The end of an episode is reported in ``info["done"]`` (with the env's own
      ``terminated``/``truncated`` flags), never to the vector env, and later steps are no-ops
      that repeat the terminal observation. So every env can be stepped until the runner resets
      it, whatever the vector env's autoreset rules.
    - With ``record`` set, rendered frames are kept for a video (``pop_frames``).
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.record = False
        self.frames: list[np.ndarray] = []
        self._last_obs: Any = None
        self._final: tuple | None = None
        self._warn_counts = self._mujoco_warnings()

    def _mujoco_warnings(self) -> int | None:
        data = getattr(self.env.unwrapped, "data", None)
        warning = getattr(data, "warning", None)
        if warning is None:
            return None
        try:
            import mujoco

            bad = (
                mujoco.mjtWarning.mjWARN_BADQACC,
                mujoco.mjtWarning.mjWARN_BADQVEL,
                mujoco.mjtWarning.mjWARN_BADQPOS,
            )
            return int(sum(warning[w].number for w in bad))
        except Exception:
            return None

    def _placeholder_obs(self) -> Any:
        if self._last_obs is not None:
            return self._last_obs
        return self.observation_space.sample()

    def _crash_info(self, where: str, err: BaseException) -> dict:
        return {
            "is_success": False,
            "mode": -1,
            "crashed": True,
            "done": True,
            "error": f"{where}: {type(err).__name__}: {err}",
            "traceback": traceback.format_exc(limit=3),
        }

    def reset(self, **kwargs):
        self.frames = []
        self._final = None
        try:
            obs, info = self.env.reset(**kwargs)
        except Exception as e:  # a broken reset is a failed episode, not a crashed run
            info = self._crash_info("reset", e)
            self._final = (self._placeholder_obs(), info)
            return self._placeholder_obs(), info
        self._last_obs = obs
        self._warn_counts = self._mujoco_warnings()
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
            info = self._crash_info("step", e)
            self._final = (self._placeholder_obs(), info)
            return self._placeholder_obs(), 0.0, False, False, info
        warn = self._mujoco_warnings()
        if warn is not None and self._warn_counts is not None and warn > self._warn_counts:
            self._warn_counts = warn
            info = self._crash_info(
                "step", RuntimeError("MuJoCo instability warning (bad qpos/qvel/qacc)")
            )
            self._final = (obs, info)
            return obs, 0.0, False, False, info
        self._last_obs = obs
        if self.record:
            self._grab()
        done = bool(terminated or truncated)
        info = {
            **info,
            "crashed": False,
            "done": done,
            "terminated": bool(terminated),
            "truncated": bool(truncated),
        }
        if done:
            self._final = (obs, info)
        return obs, reward, False, False, info

    def _grab(self) -> None:
        try:
            frame = self.env.render()
        except Exception:
            frame = None
        if frame is not None:
            self.frames.append(np.asarray(frame))

    def pop_frames(self) -> list[np.ndarray]:
        frames, self.frames = self.frames, []
        return frames


def make_env(spec: Mapping[str, Any], render: bool = False, safe: bool = True) -> gym.Env:
    """Build the env an env spec describes (picklable via functools.partial for subprocesses)."""
    kind = spec.get("type")
    render_mode = "rgb_array" if render else None
    if kind == "dpd":
        from ..envs import TASKS, register_envs

        register_envs()
        env = gym.make(
            TASKS[spec["task"]].env_id,
            obs_mode=spec.get("obs_mode", "lowdim"),
            image_size=int(spec.get("image_size", 96)),
            render_mode=render_mode,
        )
    elif kind == "gym":
        if spec.get("module"):
            importlib.import_module(spec["module"])
            try:
                gym.register_envs(importlib.import_module(spec["module"]))
            except Exception:
                pass
        kwargs = dict(spec.get("kwargs") or {})
        if spec.get("max_episode_steps"):
            kwargs["max_episode_steps"] = int(spec["max_episode_steps"])
        if render:
            kwargs["render_mode"] = render_mode
        env = GymAdapter(
            gym.make(spec["env_id"], **kwargs), spec.get("obs_keys"), spec.get("success_key")
        )
    elif kind == "python":  # an arbitrary factory "module:function" (used by tests, advanced users)
        module, fn = spec["factory"].split(":")
        env = getattr(importlib.import_module(module), fn)(**dict(spec.get("kwargs") or {}))
    else:
        raise ValueError(f"unknown env spec type {kind!r} in {dict(spec)}")
    return SafeEnv(env) if safe else env
