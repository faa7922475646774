"""Tests for the FetchPush community task: wrapper, seeding, expert, mode classifier."""

from __future__ import annotations

import json

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from diffusion_policy_dist.envs.community import fetch_push as fp

pytestmark = pytest.mark.fetch

SEEDS = (0, 1, 2, 3, 4)  # a few fixed seeds per mode (the expert succeeds on ~100% of seeds)


@pytest.fixture(scope="module")
def env() -> gym.Env:
    env = fp.make_env()
    yield env
    env.close()


def run_expert(env: gym.Env, seed: int, mode: int) -> tuple[dict, np.ndarray, bool, int]:
    """One forced-mode expert episode: (last info, actions [T, 4], terminated, T)."""
    env.reset(seed=seed)
    expert = fp.FetchPushExpert(seed=0)
    assert expert.reset(env, mode=mode) == mode
    actions = []
    for _ in range(fp.TASK.max_episode_steps):
        actions.append(expert.act(env))
        _, _, terminated, truncated, info = env.step(actions[-1])
        if terminated or truncated:
            break
    return info, np.array(actions), terminated, len(actions)


def test_constants_match_the_env(env: gym.Env) -> None:
    base = env.unwrapped
    assert fp.TASK.env_id == env.spec.id == "FetchPush-v4"
    assert fp.TASK.control_hz == pytest.approx(1.0 / (base.model.opt.timestep * base.n_substeps))
    assert fp.TASK.action_dim == env.action_space.shape[0] == 4
    assert env.spec.max_episode_steps == fp.TASK.max_episode_steps
    assert json.loads(json.dumps(fp.ENV_KWARGS)) == fp.ENV_KWARGS
    assert (
        len(fp.TASK.mode_names) == len(fp.TASK.mode_probs) == 2 and sum(fp.TASK.mode_probs) == 1.0
    )
    assert fp.TASK.name == "fetch_push" and fp.TASK.obs_types == ("state",)
    with pytest.raises(ValueError):
        fp.make_env(obs_mode="image")


def test_spaces_and_info_keys(env: gym.Env) -> None:
    space = env.observation_space
    assert isinstance(space, gym.spaces.Dict)
    shapes = {"observation": (25,), "achieved_goal": (3,), "desired_goal": (3,)}
    assert {k: v.shape for k, v in space.spaces.items()} == shapes
    assert all(b.dtype == np.float32 and np.all(np.isinf(b.low)) for b in space.spaces.values())
    obs, info = env.reset(seed=0)
    assert obs in space and info["is_success"] is False and info["mode"] == -1
    obs, reward, terminated, truncated, info = env.step(np.zeros(4, np.float32))
    assert obs in space and all(v.dtype == np.float32 for v in obs.values())
    assert type(info["is_success"]) is bool and info["mode"] == -1
    assert not terminated and not truncated and isinstance(reward, float)


def test_reset_seed_determines_the_initial_state(env: gym.Env) -> None:
    first = [env.reset(seed=s)[0] for s in (5, 6)]
    again = env.reset(seed=5)[0]
    assert all(np.array_equal(first[0][k], again[k]) for k in again)
    assert not np.array_equal(first[0]["achieved_goal"], first[1]["achieved_goal"])
    # Redrawn starts continue the seeded generator, so they are reproducible too.
    for seed in range(30):
        obs, info = env.reset(seed=seed)
        assert fp.start_is_valid(obs)
        if info["reset_tries"] > 1:
            assert np.array_equal(env.reset(seed=seed)[0]["desired_goal"], obs["desired_goal"])
            break
    else:
        pytest.fail("no seed in 0..29 needed a redraw")


@pytest.mark.parametrize("mode", [0, 1])
def test_expert_succeeds_in_each_mode_and_is_classified(env: gym.Env, mode: int) -> None:
    for seed in SEEDS:
        info, actions, terminated, steps = run_expert(env, seed, mode)
        assert info["is_success"] and terminated and steps < fp.TASK.max_episode_steps
        assert info["mode"] == mode, f"seed {seed}: classified {info['mode']}, forced {mode}"
        assert actions.dtype == np.float32 and actions.shape[1] == 4
        assert np.all(np.abs(actions) <= 1.0)
        # Smooth: bounded change of the displacement commands from one step to the next.
        assert np.abs(np.diff(actions[:, :3], axis=0)).max() <= fp.FetchPushExpert.max_change + 1e-5


def test_averaging_the_two_modes_fails(env: gym.Env) -> None:
    """The modes are real: the mean of the two experts' actions pushes the cube away."""
    for seed in SEEDS[:2]:
        env.reset(seed=seed)
        experts = [fp.FetchPushExpert(), fp.FetchPushExpert()]
        for mode, expert in enumerate(experts):
            expert.reset(env, mode=mode)
        for _ in range(fp.TASK.max_episode_steps):
            action = np.mean([e.act(env) for e in experts], axis=0).astype(np.float32)
            _, _, terminated, truncated, info = env.step(action)
            if terminated or truncated:
                break
        assert not info["is_success"] and info["mode"] == -1


def test_expert_samples_both_modes(env: gym.Env) -> None:
    env.reset(seed=0)
    expert = fp.FetchPushExpert(seed=3)
    modes = [expert.reset(env) for _ in range(40)]
    assert set(modes) == {0, 1} and 0.25 <= np.mean(modes) <= 0.75


def test_pass_side_classifier_on_synthetic_paths() -> None:
    cube, goal = np.array([1.3, 0.7]), np.array([1.3, 0.9])  # push towards +y: left is -x
    for side, mode in ((-1.0, 0), (1.0, 1)):
        clf = fp.PassSideClassifier()
        # From in front of the cube, round its side, to behind it.
        path = [(0.0, 0.15), (side * 0.08, 0.06), (side * 0.09, 0.005), (side * 0.08, -0.03)]
        modes = [clf.update(cube + np.array(p), cube, goal) for p in path]
        assert modes == [-1, -1, -1, mode]
    clf = fp.PassSideClassifier()
    offsets = np.array([[0.1, 0.05], [0.1, -0.01], [-0.1, -0.01]])
    assert clf.update(cube + offsets[0], cube, goal) == -1  # beside but still in front
    assert clf.update(cube + offsets[1], cube, goal) == 1
    assert clf.update(cube + offsets[2], cube, goal) == 1  # decided once
    assert clf.reset() == -1 and clf.mode == -1
