"""Any gymnasium env as a source of named observations and a success flag.

- A ``Dict`` observation keeps its keys under their own names (``obs_keys`` picks some of them),
  so a dataset recorded with keys ``observation`` and ``desired_goal`` trains a policy that the
  same env feeds at evaluation time. ``flatten=True`` concatenates the chosen keys, in order, into
  one ``state`` vector instead.
- A ``Box`` observation becomes ``{"state": obs}``.
- Success is read from ``info[success_key]``, else ``info["is_success"]`` or ``info["success"]``,
  into ``info["is_success"]`` (a bool); ``info["mode"]`` defaults to -1 (undetermined).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces


def _as_float32_box(space: spaces.Box) -> spaces.Box:
    if space.dtype == np.uint8:  # camera frames stay uint8
        return space
    return spaces.Box(
        space.low.astype(np.float32), space.high.astype(np.float32), space.shape, np.float32
    )


class GymAdapter(gym.Wrapper):
    """See the module docstring. ``obs_keys``: Dict keys to keep (default all, in the env's
    order); ``success_key``: the info key holding success; ``flatten``: one ``state`` vector."""

    def __init__(
        self,
        env: gym.Env,
        obs_keys: Sequence[str] | None = None,
        success_key: str | None = None,
        flatten: bool = False,
    ) -> None:
        super().__init__(env)
        name = env.spec.id if env.spec else type(env.unwrapped).__name__
        space = env.observation_space
        if isinstance(space, spaces.Dict):
            keys = list(obs_keys) if obs_keys else list(space.spaces)
            missing = [k for k in keys if k not in space.spaces]
            if missing:
                raise ValueError(
                    f"{name}: observation keys {missing} are not in its Dict observation space "
                    f"(keys: {list(space.spaces)})"
                )
            parts = {k: space.spaces[k] for k in keys}
        elif isinstance(space, spaces.Box):
            if obs_keys:
                raise ValueError(
                    f"{name}: obs_keys={list(obs_keys)} given, but its observation is a Box"
                )
            keys, parts = None, {"state": space}
        else:
            raise ValueError(
                f"{name}: unsupported observation space {space}; use a Dict or Box env"
            )
        self.obs_keys, self.success_key, self.flatten = keys, success_key, flatten
        if flatten:
            dim = sum(int(np.prod(p.shape)) for p in parts.values())
            self.observation_space = spaces.Dict(
                {"state": spaces.Box(-np.inf, np.inf, (dim,), np.float32)}
            )
        else:
            self.observation_space = spaces.Dict({k: _as_float32_box(p) for k, p in parts.items()})

    def _obs(self, obs: Any) -> dict[str, np.ndarray]:
        if self.obs_keys is None:
            return {"state": np.asarray(obs, dtype=np.float32).reshape(-1)}
        if self.flatten:
            parts = [np.asarray(obs[k], dtype=np.float32).reshape(-1) for k in self.obs_keys]
            return {"state": np.concatenate(parts)}
        out = {}
        for k in self.obs_keys:
            v = np.asarray(obs[k])
            out[k] = v if v.dtype == np.uint8 else v.astype(np.float32)
        return out

    def _info(self, info: dict) -> dict:
        info = dict(info)
        key = self.success_key
        if key is None:
            key = "is_success" if "is_success" in info else "success" if "success" in info else None
        info["is_success"] = bool(info.get(key, False)) if key else False
        info.setdefault("mode", -1)
        return info

    def reset(self, **kwargs):
        obs, info = self.env.reset(**kwargs)
        return self._obs(obs), self._info(info)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        return self._obs(obs), reward, terminated, truncated, self._info(info)
