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

    def __init__(
        self, length=5, raise_seeds=(), die_seeds=(), reset_seeds=(), render_mode=None, score=False
    ):
        self.score = score
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
        info = {"is_success": done, "mode": int(self.seed_ % 2)}
        if self.score:  # rises to 0.5 at step 2, then falls: a score is the episode's best
            info["score"] = 0.5 - 0.1 * abs(self.t - 2)
        return self._obs(), float(done), done, False, info

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


def countdown(render=False, **kwargs):
    """An env factory (``factory(render) -> env``) for :class:`CountdownEnv`."""
    return CountdownEnv(render_mode="rgb_array" if render else None, **kwargs)


class ReachEnv(gym.Env):
    """A deterministic 2-D reacher whose outcome depends on every action: the state is
    ``[x, y, t / length]``; the action moves the point a tenth of the way to its target; success
    when the point gets within 0.1 of the goal (1, 0). The mode is the side (y < 0 or > 0) on
    which it first passes x = 0.5."""

    metadata = {"render_modes": ["rgb_array"]}  # noqa: RUF012 (gymnasium convention)

    def __init__(self, length=24, render_mode=None):
        self.observation_space = spaces.Dict({"state": spaces.Box(-5, 5, (3,), np.float32)})
        self.action_space = spaces.Box(-1, 1, (2,), np.float32)
        self.length, self.render_mode = length, render_mode

    def _obs(self):
        return {"state": np.array([*self.p, self.t / self.length], np.float32)}

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.p = self.np_random.uniform(-0.5, 0.0, size=2)
        self.t, self.mode = 0, -1
        return self._obs(), {"is_success": False, "mode": -1}

    def step(self, action):
        self.p = self.p + 0.1 * (np.clip(action, -1, 1) * 2.0 - self.p)
        self.t += 1
        if self.mode < 0 and self.p[0] > 0.5:
            self.mode = int(self.p[1] > 0)
        success = bool(np.hypot(self.p[0] - 1.0, self.p[1]) < 0.1)
        info = {"is_success": success, "mode": self.mode}
        return self._obs(), -float(np.hypot(*self.p)), success, self.t >= self.length, info


def reach(render=False, **kwargs):
    """An env factory for :class:`ReachEnv`."""
    return ReachEnv(render_mode="rgb_array" if render else None, **kwargs)


class FaultEnv(CountdownEnv):
    """A :class:`CountdownEnv` whose episode with seed ``s`` misbehaves as ``faults[s] = (where,
    what)``: ``where`` is ``reset`` or ``step`` (at its second step); ``what`` is ``raise``,
    ``exit`` (the process exits), ``segv`` (the process crashes), ``hang``, ``nan`` (NaN
    observation) or ``nan_reward``."""

    def __init__(self, faults=None, **kwargs):
        super().__init__(**kwargs)
        self.faults = {int(k): tuple(v) for k, v in (faults or {}).items()}

    def _misbehave(self, what):
        import signal
        import time

        if what == "raise":
            raise RuntimeError(f"fault injected for seed {self.seed_}")
        if what == "exit":
            os._exit(3)
        if what == "segv":
            os.kill(os.getpid(), signal.SIGSEGV)
        if what == "hang":
            time.sleep(3600)

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        where, what = self.faults.get(seed, (None, None))
        if where == "reset":
            self._misbehave(what)
            if what == "nan":
                obs = {"state": np.full(3, np.nan, np.float32)}
        return obs, info

    def step(self, action):
        obs, reward, term, trunc, info = super().step(action)
        where, what = self.faults.get(self.seed_, (None, None))
        if where == "step" and self.t == 2:
            self._misbehave(what)
            if what == "nan":
                obs = {"state": np.array([np.nan, 0.0, np.inf], np.float32)}
            if what == "nan_reward":
                reward = float("nan")
        return obs, reward, term, trunc, info


def faulty(render=False, **kwargs):
    """An env factory for :class:`FaultEnv`."""
    return FaultEnv(render_mode="rgb_array" if render else None, **kwargs)


class FetchReachExpert:
    """A user's expert for FetchReach (what ``dpd collect expert=module:function`` calls):
    moves the gripper straight to the goal."""

    def __init__(self, seed=None):
        self.rng = np.random.default_rng(seed)

    def reset(self, env):
        return -1  # one strategy: no behaviour modes

    def act(self, env):
        obs = env.unwrapped._get_obs()
        delta = np.clip(10 * (obs["desired_goal"] - obs["observation"][:3]), -1, 1)
        return np.append(delta, 0.0).astype(np.float32)


def fetch_reach_expert(seed=None):
    return FetchReachExpert(seed)


class ClockEnv(gym.Env):
    """Observes its step count t; succeeds after ``length`` steps if every action's first
    coordinate was the step it ran at (``slack``: held actions may lag by this much). Paired
    with :class:`ClockPolicy`, whose chunks name the step each action is for, it checks that a
    real-time rollout executes each chunk in step with the world."""

    def __init__(self, length=40, slack=0):
        self.observation_space = spaces.Dict({"state": spaces.Box(-1e4, 1e4, (3,), np.float32)})
        self.action_space = spaces.Box(-1e4, 1e4, (2,), np.float32)
        self.length, self.slack = length, slack
        self.t, self.ok, self.log = 0, True, []

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.ok, self.log = 0, True, []
        return {"state": np.array([0.0, 0.0, 1.0], np.float32)}, {"is_success": False}

    def step(self, action):
        self.log.append(float(action[0]))
        self.ok &= 0 <= self.t - float(action[0]) <= self.slack
        self.t += 1
        done = self.t >= self.length
        info = {"is_success": done and self.ok, "mode": -1}
        return {"state": np.array([self.t, 0.0, 1.0], np.float32)}, 0.0, done, False, info


class ClockPolicy:
    """A stand-in policy: every chunk's action j (from the current step on) is ``[t + j, 0]``,
    t read from the observation; ``sleep_s`` simulates inference time. Records the committed
    prefixes it was given."""

    def __init__(self, sleep_s=0.0, horizon=16, n_obs_steps=2, n_action_steps=8):
        import torch

        from diffusion_policy_dist.window import Window

        self.window = Window(horizon, n_obs_steps, n_action_steps)
        self.shape_meta = {
            "obs": {"state": {"shape": [3], "type": "low_dim"}},
            "action": {"shape": [2]},
        }
        self.device, self.action_dim, self.sleep_s = torch.device("cpu"), 2, sleep_s
        self.prefixes = []

    def predict_action(self, obs, sampler=None, generator=None, return_info=False, **kw):
        import time

        import torch

        if kw.get("prefix") is not None:
            self.prefixes.append(kw["prefix"].clone())
        time.sleep(self.sleep_s)
        t = torch.as_tensor(obs["state"])[:, -1, 0].float()
        j = torch.arange(self.window.horizon) - self.window.action_start
        pred = torch.stack([t[:, None] + j, torch.zeros(len(t), len(j))], dim=-1)
        return {"action": self.window.executed(pred), "action_pred": pred, "nfe": 1,
                "prior_ms": 0.0}  # fmt: skip
