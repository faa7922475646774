"""Tiny gymnasium envs for evaluation tests (imported by name in env-runner subprocesses)."""

import os

import gymnasium as gym
import numpy as np
from gymnasium import spaces


class CountdownEnv(gym.Env):
    """Succeeds after ``length`` steps whatever the actions; some seeds misbehave on purpose:
    ``raise_seeds`` raise inside step, ``die_seeds`` kill the worker process, ``reset_seeds``
    raise inside reset. The mode is the parity of the seed, so mode statistics are checkable."""

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012 (gymnasium convention)

    def __init__(self, length=5, raise_seeds=(), die_seeds=(), reset_seeds=(), render_mode=None):
        self.observation_space = spaces.Dict({"state": spaces.Box(-10, 10, (3,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self.length, self.render_mode = length, render_mode
        self.raise_seeds, self.die_seeds, self.reset_seeds = (
            set(raise_seeds),
            set(die_seeds),
            set(reset_seeds),
        )
        self.seed_, self.t = None, 0

    def _obs(self):
        return {"state": np.array([self.t, 0.0, 1.0], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.seed_, self.t = seed, 0
        if seed in self.reset_seeds:
            raise RuntimeError(f"reset exploded for seed {seed}")
        return self._obs(), {"is_success": False, "mode": -1}

    def step(self, action):
        self.t += 1
        if self.seed_ in self.raise_seeds and self.t == 2:
            raise RuntimeError(f"step exploded for seed {self.seed_}")
        if self.seed_ in self.die_seeds and self.t == 2:
            os._exit(13)
        done = self.t >= self.length
        return (
            self._obs(),
            float(done),
            done,
            False,
            {"is_success": done, "mode": int(self.seed_ % 2)},
        )

    def render(self):
        return np.full((8, 8, 3), 10 * self.t, np.uint8)


class BoxObsEnv(gym.Env):
    """A Box-observation env reporting success under info["success"]."""

    def __init__(self):
        self.observation_space = spaces.Box(-1, 1, (4,), np.float32)
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(4, np.float32), {}

    def step(self, action):
        return np.ones(4, np.float32), 0.0, True, False, {"success": 1.0}
