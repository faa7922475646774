"""Tests for the PointMaze community task: route enumeration, wrapper, seeding, expert, modes."""

from __future__ import annotations

import json
from itertools import pairwise

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("gymnasium_robotics")

from diffusion_policy_dist.envs.community import point_maze as pm

pytestmark = pytest.mark.fetch

SEEDS = (0, 1, 2, 3, 4)  # a few fixed seeds per mode (the expert succeeds on ~100% of seeds)


@pytest.fixture(scope="module")
def env() -> gym.Env:
    env = pm.make_env()
    yield env
    env.close()


# --------------------------------------------------------------------------- grid planning


def test_shortest_routes_against_hand_counts() -> None:
    open_3x3 = [[1] * 5, [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1, 0, 0, 0, 1], [1] * 5]
    # Corner to opposite corner: 2 right and 2 down moves in any order, C(4, 2) = 6 routes.
    routes = pm.shortest_routes(open_3x3, (1, 1), (3, 3))
    assert len(routes) == 6 and len({tuple(r) for r in routes}) == 6
    assert all(len(r) == 5 and r[0] == (1, 1) and r[-1] == (3, 3) for r in routes)
    for route in routes:  # each step moves to a 4-neighbour
        assert all(abs(a[0] - b[0]) + abs(a[1] - b[1]) == 1 for a, b in pairwise(route))
    # Edge middle to edge middle: straight down only.
    assert pm.shortest_routes(open_3x3, (1, 2), (3, 2)) == [[(1, 2), (2, 2), (3, 2)]]
    # A block in the middle leaves one route round each side.
    ring = [row[:] for row in open_3x3]
    ring[2][2] = 1
    assert pm.shortest_routes(ring, (1, 2), (3, 2)) == [
        [(1, 2), (1, 1), (2, 1), (3, 1), (3, 2)],
        [(1, 2), (1, 3), (2, 3), (3, 3), (3, 2)],
    ]
    walled = [row[:] for row in open_3x3]
    walled[2] = [1, 1, 1, 1, 1]
    assert pm.shortest_routes(walled, (1, 1), (3, 3)) == []
    assert pm.shortest_routes(open_3x3, (2, 2), (2, 2)) == [[(2, 2)]]


def test_every_start_goal_pair_has_one_shortest_route_per_gap() -> None:
    pairs = {pm.sample_cells(np.random.default_rng(s)) for s in range(200)}
    assert len(pairs) == len(pm.START_COLUMNS) * len(pm.END_ROWS)
    for start, goal in pairs:
        routes = pm.shortest_routes(pm.MAZE_MAP, start, goal)
        assert sorted(pm.route_mode(r) for r in routes) == [0, 1]
        assert {len(r) for r in routes} == {7}  # 6 moves each way: equally short


def test_cell_conversions_match_the_env(env: gym.Env) -> None:
    maze = env.unwrapped.maze
    for cell in [(1, 1), (2, 5), (3, 4)]:
        xy = pm.cell_to_xy(cell)
        assert np.allclose(xy, maze.cell_rowcol_to_xy(np.array(cell)))
        for offset in (np.array([-0.45, 0.3]), np.array([0.3, -0.45])):
            env_cell = tuple(int(v) for v in maze.cell_xy_to_rowcol(xy + offset))
            assert pm.xy_to_cell(xy + offset) == cell == env_cell


# --------------------------------------------------------------------------- wrapper


def test_constants_match_the_env(env: gym.Env) -> None:
    base = env.unwrapped
    assert env.spec.id == pm.TASK.env_id and env.spec.max_episode_steps == pm.TASK.max_episode_steps
    frame_skip = base.point_env.frame_skip
    assert pm.TASK.control_hz == pytest.approx(1.0 / (base.model.opt.timestep * frame_skip))
    assert pm.TASK.action_dim == env.action_space.shape[0] == 2
    assert json.loads(json.dumps(pm.ENV_KWARGS)) == pm.ENV_KWARGS
    assert base.maze.maze_map == pm.MAZE_MAP and base.continuing_task is False
    assert pm.TASK.name == "point_maze" and sum(pm.TASK.mode_probs) == 1.0
    with pytest.raises(ValueError):
        pm.make_env(obs_mode="image")


def test_spaces_and_info_keys(env: gym.Env) -> None:
    space = env.observation_space
    shapes = {"observation": (4,), "achieved_goal": (2,), "desired_goal": (2,)}
    assert isinstance(space, gym.spaces.Dict)
    assert {k: v.shape for k, v in space.spaces.items()} == shapes
    assert all(b.dtype == np.float32 and np.all(np.isinf(b.high)) for b in space.spaces.values())
    obs, info = env.reset(seed=0)
    assert obs in space and info["is_success"] is False and info["mode"] == -1
    assert pm.xy_to_cell(obs["achieved_goal"]) == info["start_cell"]
    assert pm.xy_to_cell(obs["desired_goal"]) == info["goal_cell"]
    obs, reward, terminated, truncated, info = env.step(np.zeros(2, np.float32))
    assert obs in space and all(v.dtype == np.float32 for v in obs.values())
    assert type(info["is_success"]) is bool and info["mode"] == -1
    assert not terminated and not truncated and isinstance(reward, float)


def test_reset_seed_determines_the_initial_state(env: gym.Env) -> None:
    a, info_a = env.reset(seed=11)
    env.step(np.ones(2, np.float32))
    b, info_b = env.reset(seed=11)
    assert all(np.array_equal(a[k], b[k]) for k in a) and info_a == info_b
    assert not np.array_equal(env.reset(seed=12)[0]["desired_goal"], a["desired_goal"])
    # Cells given through options win over the seeded draw.
    _, info = env.reset(seed=11, options={"reset_cell": (1, 5), "goal_cell": (3, 1)})
    assert info["start_cell"] == (1, 5) and info["goal_cell"] == (3, 1)


# --------------------------------------------------------------------------- expert


def run(env: gym.Env, controller: object, steps: int = pm.TASK.max_episode_steps) -> tuple:
    """Step ``controller.act(env)`` until the episode ends.

    Returns (last info, actions [T, 2], terminated).
    """
    actions = []
    for _ in range(steps):
        actions.append(controller.act(env))
        _, _, terminated, truncated, info = env.step(actions[-1])
        if terminated or truncated:
            break
    return info, np.array(actions), terminated


@pytest.mark.parametrize("mode", [0, 1])
def test_expert_succeeds_in_each_mode_and_is_classified(env: gym.Env, mode: int) -> None:
    for seed in SEEDS:
        env.reset(seed=seed)
        expert = pm.PointMazeExpert(seed=seed)
        assert expert.reset(env, mode=mode) == mode
        assert pm.route_mode(expert.route) == mode
        info, actions, terminated = run(env, expert)
        assert info["is_success"] and terminated
        assert info["mode"] == mode, f"seed {seed}: classified {info['mode']}, forced {mode}"
        assert actions.dtype == np.float32 and np.all(np.abs(actions) <= 1.0)
        assert np.abs(np.diff(actions, axis=0)).max() < 0.3  # smooth forces


def test_averaging_the_two_modes_fails(env: gym.Env) -> None:
    """The modes are real: the mean of the two experts' forces drives the ball into the wall."""

    class MeanOfModes:
        def __init__(self) -> None:
            self.experts = [pm.PointMazeExpert() for _ in pm.TASK.mode_names]
            for mode, expert in enumerate(self.experts):
                expert.reset(env, mode=mode)

        def act(self, env: gym.Env) -> np.ndarray:
            return np.mean([e.act(env) for e in self.experts], axis=0).astype(np.float32)

    for seed in SEEDS[:2]:
        env.reset(seed=seed)
        info, _, _ = run(env, MeanOfModes())
        assert not info["is_success"] and info["mode"] == -1


def test_expert_samples_both_modes(env: gym.Env) -> None:
    env.reset(seed=0)
    expert = pm.PointMazeExpert(seed=3)
    modes = [expert.reset(env) for _ in range(40)]
    assert set(modes) == {0, 1} and 0.25 <= np.mean(modes) <= 0.75


def test_gap_classifier_on_synthetic_paths() -> None:
    for mode, gap in enumerate(pm.GAP_CELLS):
        clf = pm.GapClassifier()
        path = [(1, 3), (1, gap[1]), gap, (3, gap[1]), (3, 3)]
        assert [clf.update(pm.cell_to_xy(c)) for c in path] == [-1, -1, mode, mode, mode]
    clf = pm.GapClassifier()
    assert clf.update(pm.cell_to_xy((2, 3)) + 0.4) == -1  # inside the wall is no gap
    assert clf.reset() == -1
