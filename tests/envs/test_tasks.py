"""Tests for the MuJoCo tasks and their scripted multimodal experts (diffusion_policy_dist.envs)."""

from __future__ import annotations

import os

# Must be set before mujoco is imported anywhere: headless software rendering.
os.environ.setdefault("MUJOCO_GL", "egl")

from collections.abc import Iterator

import gymnasium as gym
import mujoco
import numpy as np
import pytest
from diffusion_policy_dist.envs import (
    BUILTIN_TASKS,
    ScriptedExpert,
    SimulationUnstableError,
    TaskSpec,
    get_task,
    register_envs,
    rollout_expert,
)
from diffusion_policy_dist.envs.obstacle_avoid import ObstacleAvoidEnv
from gymnasium.utils.env_checker import check_env

TASKS = {name: get_task(name).spec for name in BUILTIN_TASKS}
TASK_NAMES = sorted(TASKS)
N_EPISODES = 20
# pick_place's action box (z in [0.01, 0.25]) is not symmetric; gymnasium's checker only advises.
QUIET_CHECKER = pytest.mark.filterwarnings("ignore:.*symmetric and normalized space")
EXPECTED_DIMS = {  # task -> (state dim, agent_pos dim, action dim)
    "obstacle_avoid": (6, 2, 2),
    "block_push": (8, 2, 2),
    "pick_place": (7, 4, 4),
}


def _make(name: str, **kwargs: object) -> gym.Env:
    return gym.make(TASKS[name].env_id, **kwargs)


def make_expert(name: str, seed: int | None = None) -> ScriptedExpert:
    return get_task(name).make_expert(seed)


@pytest.fixture(scope="module", params=TASK_NAMES)
def expert_rollouts(request: pytest.FixtureRequest) -> Iterator[tuple[str, list[dict]]]:
    """N_EPISODES state-observation expert demos per task (shared by several tests)."""
    name = request.param
    env = _make(name)
    expert = make_expert(name, seed=0)
    rollouts = [rollout_expert(env, expert, seed=s) for s in range(N_EPISODES)]
    env.close()
    yield name, rollouts


class MeanOfModes:
    """Controller that averages the actions of one expert per mode: regression to the mean."""

    def __init__(self, name: str, env: gym.Env) -> None:
        self.experts = [make_expert(name) for _ in TASKS[name].mode_names]
        for mode, expert in enumerate(self.experts):
            expert.reset(env, mode=mode)

    def act(self, env: gym.Env) -> np.ndarray:
        return np.mean([e.act(env) for e in self.experts], axis=0).astype(np.float32)


# --------------------------------------------------------------------------- registry / specs


def test_registry_and_specs() -> None:
    register_envs()
    register_envs()  # idempotent
    assert set(TASKS) == {"obstacle_avoid", "block_push", "pick_place"}
    for name, spec in TASKS.items():
        assert isinstance(spec, TaskSpec) and spec.name == name
        assert spec.env_id in gym.registry
        assert gym.registry[spec.env_id].max_episode_steps == spec.max_episode_steps
        assert len(spec.mode_names) == len(spec.mode_probs) >= 2
        assert sum(spec.mode_probs) == pytest.approx(1.0)
        assert 40 <= spec.max_episode_steps <= 120
        with pytest.raises(AttributeError):
            spec.name = "x"  # type: ignore[misc]  # frozen


@pytest.mark.parametrize("name", TASK_NAMES)
def test_state_obs_spaces_and_attributes(name: str) -> None:
    env = _make(name)
    state_dim, _, action_dim = EXPECTED_DIMS[name]
    assert env.observation_space["state"].shape == (state_dim,)
    assert env.action_space.shape == (action_dim,) == (TASKS[name].action_dim,)
    assert env.action_space.dtype == np.float32
    obs, info = env.reset(seed=0)
    assert obs in env.observation_space
    assert info["is_success"] is False and info["mode"] == -1
    base = env.unwrapped
    assert base.mode_names == TASKS[name].mode_names
    assert base.task_name == name and base.control_hz == TASKS[name].control_hz
    assert env.render() is None  # render_mode=None
    env.close()


@QUIET_CHECKER
@pytest.mark.parametrize("name", TASK_NAMES)
def test_state_obs_env_checker_and_determinism(name: str) -> None:
    env = _make(name)
    check_env(env.unwrapped, skip_render_check=True)
    a, _ = env.reset(seed=123)
    b, _ = env.reset(seed=123)
    c, _ = env.reset(seed=124)
    np.testing.assert_array_equal(a["state"], b["state"])
    assert not np.allclose(a["state"], c["state"])
    env.close()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_time_limit_truncates(name: str) -> None:
    env = _make(name)
    env.reset(seed=0)
    hold = env.unwrapped.action_space.low.copy()  # a far corner: never a success
    steps, terminated, truncated = 0, False, False
    while not (terminated or truncated):
        _, _, terminated, truncated, info = env.step(hold)
        steps += 1
        assert not info["is_success"]
    # Only the TimeLimit wrapper ends this episode, exactly at max_episode_steps.
    assert truncated and not terminated and steps == TASKS[name].max_episode_steps
    env.close()


# --------------------------------------------------------------------------- rendering


@pytest.mark.sim
@pytest.mark.parametrize("name", TASK_NAMES)
def test_image_obs_and_render(name: str) -> None:
    _, pos_dim, _ = EXPECTED_DIMS[name]
    env = _make(name, obs="image", render_mode="rgb_array", image_size=64)
    obs, _ = env.reset(seed=0)
    assert set(obs) == {"image", "agent_pos"}
    assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
    assert obs["agent_pos"].shape == (pos_dim,) and obs["agent_pos"].dtype == np.float32
    assert obs in env.observation_space
    assert obs["image"].std() > 5  # not a blank frame
    frame = env.render()
    np.testing.assert_array_equal(frame, obs["image"])  # same camera, same state
    expert = make_expert(name, seed=0)
    expert.reset(env)
    for _ in range(5):
        obs, *_ = env.step(expert.act(env))
        assert obs in env.observation_space
    moved = env.render()
    assert moved.shape == (64, 64, 3) and not np.array_equal(moved, frame)
    # Randomized initial states must be visible to an image policy.
    other, _ = env.reset(seed=1)
    assert not np.array_equal(other["image"], frame)
    env.close()
    env.close()  # closing twice is harmless


@pytest.mark.sim
@QUIET_CHECKER
@pytest.mark.parametrize("name", TASK_NAMES)
def test_image_env_checker(name: str) -> None:
    env = _make(name, obs="image", render_mode="rgb_array")
    check_env(env.unwrapped)
    assert env.unwrapped.observation_space["image"].shape == (96, 96, 3)
    env.close()


@pytest.mark.sim
def test_state_obs_env_renders_too() -> None:
    env = _make("obstacle_avoid", render_mode="rgb_array")
    env.reset(seed=0)
    frame = env.render()
    assert frame.shape == (96, 96, 3) and frame.dtype == np.uint8
    env.close()


# --------------------------------------------------------------------------- experts


def test_expert_success_and_modes(expert_rollouts: tuple[str, list[dict]]) -> None:
    name, rollouts = expert_rollouts
    spec = TASKS[name]
    success = np.mean([r["success"] for r in rollouts])
    assert success >= 0.95, f"{name}: expert success {success:.2f}"
    agree = np.mean([r["mode"] == r["expert_mode"] for r in rollouts])
    assert agree >= 0.95, f"{name}: env/expert mode agreement {agree:.2f}"
    modes = np.array([r["mode"] for r in rollouts])
    for k, p in enumerate(spec.mode_probs):
        freq = np.mean(modes == k)
        assert abs(freq - p) <= 0.15, f"{name}: mode {spec.mode_names[k]} freq {freq:.2f}"


def test_rollout_format(expert_rollouts: tuple[str, list[dict]]) -> None:
    name, rollouts = expert_rollouts
    space = _make(name).action_space
    for r in rollouts:
        T = r["length"]
        assert 1 <= T <= TASKS[name].max_episode_steps
        assert r["action"].shape == (T, TASKS[name].action_dim)
        assert r["action"].dtype == np.float32
        assert r["obs"]["state"].shape == (T, EXPECTED_DIMS[name][0])
        assert np.all(r["action"] >= space.low) and np.all(r["action"] <= space.high)
    # Expert actions are smooth: bounded per-step change of the position targets.
    first = rollouts[0]["action"][:, :2]
    assert np.abs(np.diff(first, axis=0)).max() < 0.05


@pytest.mark.parametrize("name", TASK_NAMES)
def test_expert_forced_modes_are_classified(name: str) -> None:
    env = _make(name)
    expert = make_expert(name)
    for mode in range(len(TASKS[name].mode_names)):
        env.reset(seed=7)
        assert expert.reset(env, mode=mode) == mode == expert.mode
        for _ in range(TASKS[name].max_episode_steps):
            _, _, terminated, truncated, info = env.step(expert.act(env))
            if terminated or truncated:
                break
        assert info["is_success"] and info["mode"] == mode
    env.close()


def test_expert_mode_sampling_is_seeded() -> None:
    env = _make("obstacle_avoid")
    env.reset(seed=0)
    draws = []
    for _ in range(2):
        expert = make_expert("obstacle_avoid", seed=42)
        assert isinstance(expert, ScriptedExpert)
        draws.append([expert.reset(env) for _ in range(30)])
    assert draws[0] == draws[1]
    assert 0 < sum(draws[0]) < 30  # both modes get drawn
    with pytest.raises(ValueError, match="unknown task 'nope'"):
        make_expert("nope")
    env.close()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_mean_of_modes_fails(name: str) -> None:
    """Averaging the experts' modes (what an L2-regressed policy learns) fails the task."""
    env = _make(name)
    successes = 0
    for seed in range(10):
        env.reset(seed=seed)
        controller = MeanOfModes(name, env)
        for _ in range(TASKS[name].max_episode_steps):
            _, _, terminated, truncated, info = env.step(controller.act(env))
            if terminated or truncated:
                break
        successes += info["is_success"]
    assert successes <= 2, f"{name}: mean-of-modes controller succeeded {successes}/10"
    env.close()


def test_straight_to_goal_hits_obstacle() -> None:
    env = _make("obstacle_avoid")
    collisions = 0
    for seed in range(10):
        env.reset(seed=seed)
        base = env.unwrapped
        for _ in range(TASKS["obstacle_avoid"].max_episode_steps):
            step = np.clip(base.goal_xy - base.agent_xy, -0.015, 0.015)
            _, _, terminated, truncated, info = env.step(base.agent_xy + step)
            if terminated or truncated:
                break
        collisions += info["collision"] and not info["is_success"]
    assert collisions == 10
    env.close()


# --------------------------------------------------------------------------- instability


@pytest.fixture
def mujoco_warnings() -> Iterator[list[str]]:
    """Collect MuJoCo's warnings instead of letting it print them and write MUJOCO_LOG.TXT."""
    messages: list[str] = []
    previous = mujoco.get_mju_user_warning()
    mujoco.set_mju_user_warning(messages.append)
    yield messages
    mujoco.set_mju_user_warning(previous)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_nan_state_raises(name: str, mujoco_warnings: list[str]) -> None:
    env = _make(name)
    env.reset(seed=0)
    env.unwrapped.data.qvel[0] = np.nan
    with pytest.raises(SimulationUnstableError, match=name):
        env.step(env.action_space.sample())
    assert any("QVEL" in m for m in mujoco_warnings)
    # A fresh reset recovers.
    obs, _ = env.reset(seed=0)
    env.step(env.unwrapped.action_space.low)
    assert np.all(np.isfinite(obs["state"]))
    env.close()


def test_nan_action_raises() -> None:
    env = _make("block_push")
    env.reset(seed=0)
    assert issubclass(SimulationUnstableError, RuntimeError)
    with pytest.raises(SimulationUnstableError):
        env.step(np.array([np.nan, 0.0], dtype=np.float32))
    env.close()


def test_invalid_kwargs() -> None:
    with pytest.raises(ValueError):
        _make("obstacle_avoid", obs="pixels")
    with pytest.raises(ValueError):
        # Direct construction: gym.make would wrap an rgb_array env in HumanRendering instead.
        ObstacleAvoidEnv(render_mode="human")
    with pytest.raises(ValueError):
        ObstacleAvoidEnv(image_size=8)
