"""Tests for the Push-T community task (gym-pusht): wrapper, seeding, score, classifier, expert."""

from __future__ import annotations

import math
from collections.abc import Iterator

import gymnasium as gym
import numpy as np
import pytest

pytest.importorskip("gym_pusht")
pytestmark = pytest.mark.pusht

import shapely.affinity as sa  # noqa: E402 (only with the pusht extra)
import shapely.geometry as sg  # noqa: E402
from diffusion_policy_dist.envs.community import pusht  # noqa: E402

INFO_KEYS = {"is_success", "coverage", "score", "mode"}
EXPERT_SEEDS = (0, 1, 2)  # per mode; the expert succeeds on 100% of 400 held-out episodes


@pytest.fixture(scope="module")
def env() -> Iterator[gym.Env]:
    env = pusht.make_env("state")
    yield env
    env.close()


def run_expert(env: gym.Env, seed: int, mode: int | None) -> tuple[list[dict], np.ndarray]:
    """One expert episode: the infos of reset and of every step, and the actions [T, 2]."""
    _, info = env.reset(seed=seed)
    expert = pusht.PushTExpert(seed=0)
    expert.reset(env, mode=mode)
    infos, actions = [info], []
    for _ in range(pusht.TASK.max_episode_steps):
        actions.append(expert.act(env))
        _, _, terminated, truncated, info = env.step(actions[-1])
        infos.append(info)
        if terminated or truncated:
            break
    return infos, np.array(actions)


def tee_polygon(x: float, y: float, angle: float) -> sg.Polygon:
    """The T at pose (x, y, angle), built independently from its published dimensions."""
    bar, stem = sg.box(-60, 0, 60, 30), sg.box(-15, 30, 15, 120)
    tee = bar.union(stem)
    return sa.translate(sa.rotate(tee, angle, origin=(0, 0), use_radians=True), x, y)


def test_keypoints_are_the_tees_corners_and_cog_in_the_world() -> None:
    """Keypoints against pymunk's own body-to-world map (the ninth is gym-pusht's centre of
    gravity, not the area centroid), and the first eight against the corners of the T built
    independently with shapely."""
    env = pusht.make_env("keypoints")
    state_env = pusht.make_env("state")
    for seed in range(3):
        obs, _ = env.reset(seed=seed)
        (state,) = state_env.reset(seed=seed)[0].values()
        block = env.unwrapped.block
        want = [tuple(block.local_to_world(tuple(p))) for p in pusht.KEYPOINTS]
        got = obs["keypoints"].reshape(-1, 2)
        np.testing.assert_allclose(got, np.array(want), atol=1e-3)
        np.testing.assert_allclose(obs["agent_pos"], state[:2])
        poly = tee_polygon(*(float(v) for v in state[2:]))
        corners = np.array(poly.exterior.coords)[:-1]
        dist = np.linalg.norm(got[:8, None] - corners[None], axis=-1).min(1)
        assert dist.max() < 1e-2, dist


def test_task_constants() -> None:
    spec = pusht.TASK
    assert spec.name == pusht.TASK.name == "pusht"
    assert spec.env_id == pusht.TASK.env_id and spec.env_id in gym.registry
    assert len(pusht.TASK.mode_names) == len(pusht.TASK.mode_probs) == 2
    assert math.isclose(sum(pusht.TASK.mode_probs), 1.0)
    assert spec.max_episode_steps == 300 and spec.control_hz == 10.0 and spec.action_dim == 2
    assert spec.obs_types == pusht.TASK.obs_types == ("state", "keypoints", "image")
    assert pusht.PushTExpert.task is spec


@pytest.mark.parametrize("obs_mode", ["state", "keypoints", "image"])
def test_spaces_and_info_keys(obs_mode: str) -> None:
    env = pusht.make_env(obs_mode, render_mode="rgb_array", image_size=64)
    obs, info = env.reset(seed=0)
    expected = {"state": ["state"], "keypoints": ["agent_pos", "keypoints"]}
    expected = expected.get(obs_mode, ["agent_pos", "image"])
    assert isinstance(env.observation_space, gym.spaces.Dict)
    assert sorted(env.observation_space.spaces) == expected == sorted(obs)
    assert env.action_space.shape == (pusht.TASK.action_dim,)
    assert INFO_KEYS <= set(info) and info["mode"] == -1 and info["score"] == 0.0
    env.action_space.seed(0)
    for _ in range(5):
        obs, reward, _, truncated, info = env.step(env.action_space.sample())
        assert env.observation_space.contains(obs), obs
        assert INFO_KEYS <= set(info)
        assert reward == pytest.approx(pusht.coverage_score(info["coverage"]))
        assert isinstance(info["is_success"], bool) and not truncated
    if obs_mode == "state":
        assert obs["state"].shape == (5,) and obs["state"].dtype == np.float32
    elif obs_mode == "keypoints":
        assert obs["keypoints"].shape == (18,) and obs["keypoints"].dtype == np.float32
    else:
        assert obs["image"].shape == (64, 64, 3) and obs["image"].dtype == np.uint8
        assert obs["agent_pos"].shape == (2,) and obs["agent_pos"].dtype == np.float32
        # The table is white and the T grey: the image shows the scene, not a blank frame.
        assert obs["image"].min() < 200 < obs["image"].max()
    assert env.render().shape == (64, 64, 3)
    env.close()


def test_render_none_and_bad_arguments() -> None:
    env = pusht.make_env("state")
    env.reset(seed=0)
    assert env.render_mode is None and env.render() is None
    with pytest.raises(ValueError):
        pusht.make_env("pixels")
    with pytest.raises(ValueError):
        pusht.make_env("state", render_mode="human")


def test_seed_determines_initial_state(env: gym.Env) -> None:
    actions = np.random.default_rng(1).uniform(0, 512, size=(10, 2)).astype(np.float32)

    def trajectory(seed: int) -> np.ndarray:
        obs, _ = env.reset(seed=seed)
        states = [obs["state"]]
        for a in actions:
            states.append(env.step(a)[0]["state"])
        return np.stack(states)

    first = trajectory(7)
    env.reset(seed=123)  # a different episode in between must not matter
    np.testing.assert_array_equal(first, trajectory(7))
    assert not np.allclose(first[0], trajectory(8)[0])


def test_image_observations_are_seeded_too() -> None:
    env = pusht.make_env("image")
    a, _ = env.reset(seed=3)
    env.reset(seed=4)
    b, _ = env.reset(seed=3)
    np.testing.assert_array_equal(a["image"], b["image"])
    np.testing.assert_array_equal(a["agent_pos"], b["agent_pos"])
    assert a["image"].shape == (96, 96, 3)


def test_truncates_at_step_limit(env: gym.Env) -> None:
    obs, _ = env.reset(seed=0)
    hold = obs["state"][:2].copy()  # the agent stays put; the block never moves
    for t in range(1, pusht.TASK.max_episode_steps + 1):
        _, _, terminated, truncated, info = env.step(hold)
        assert not terminated
        assert truncated == (t == pusht.TASK.max_episode_steps)
    assert info["mode"] == -1  # the block never turned


def test_score_and_coverage_bookkeeping(env: gym.Env) -> None:
    """score = running max of clip(coverage / 0.95, 0, 1) over steps; coverage matches an
    independent computation from the block pose; success and termination at 0.95."""
    infos, _ = run_expert(env, seed=5, mode=0)
    coverages = np.array([i["coverage"] for i in infos[1:]])
    assert coverages.max() > coverages.min() + 0.5  # the episode moves the T a lot
    expected = np.maximum.accumulate(np.clip(coverages / 0.95, 0.0, 1.0))
    np.testing.assert_allclose([i["score"] for i in infos[1:]], expected, rtol=0, atol=1e-12)
    assert infos[0]["score"] == 0.0
    goal = tee_polygon(256, 256, math.pi / 4)
    for info in infos[:: max(1, len(infos) // 10)] + infos[-1:]:
        block = tee_polygon(*info["block_pose"])
        covered = goal.intersection(block).area / goal.area
        assert info["coverage"] == pytest.approx(covered, abs=1e-9)
        assert info["is_success"] == (info["coverage"] >= 0.95)
    assert infos[-1]["is_success"] and infos[-1]["score"] == 1.0
    assert not any(i["is_success"] for i in infos[:-1])  # terminated at the first success


@pytest.mark.parametrize("mode", [0, 1])
def test_expert_succeeds_and_classifier_recovers_mode(env: gym.Env, mode: int) -> None:
    for seed in EXPERT_SEEDS:
        infos, actions = run_expert(env, seed, mode)
        last = infos[-1]
        assert last["is_success"], (seed, mode, last["coverage"])
        assert last["mode"] == mode, (seed, mode, env.classifier.turn)
        assert actions.dtype == np.float32 and env.action_space.contains(actions[0])
        assert np.all((actions >= 0) & (actions <= 512))
        steps = np.linalg.norm(np.diff(actions, axis=0), axis=1)
        assert steps.max() <= pusht.PushTExpert.max_step + 1e-3  # smooth, bounded steps
        # The turn goes the mode's way: pymunk's angle increases for mode 0 ("cw").
        assert (env.classifier.turn > 0) == (mode == 0)


def test_expert_picks_modes_from_its_own_rng(env: gym.Env) -> None:
    env.reset(seed=0)
    modes = [pusht.PushTExpert(seed=s).reset(env) for s in range(400)]
    assert set(modes) == {0, 1}
    assert abs(np.mean(modes) - pusht.TASK.mode_probs[1]) < 0.1
    again = [pusht.PushTExpert(seed=s).reset(env) for s in range(20)]
    assert again == modes[:20]
    with pytest.raises(ValueError):
        pusht.PushTExpert(seed=0).reset(env, mode=2)


def test_classifier_from_angles_alone() -> None:
    clf = pusht.TurnDirectionClassifier()
    start = 6.0  # near 2 pi, so the (wrapped) angles of the state observation cross 0
    clf.reset(start)
    modes = [clf.update((start + math.radians(10 * k)) % (2 * math.pi)) for k in range(1, 12)]
    assert modes[:8] == [-1] * 8 and modes[8:] == [0, 0, 0]  # decided at 90 degrees
    clf.reset(1.0)
    assert clf.update(1.0 - math.radians(30)) == -1
    assert clf.update(1.0 - math.radians(31), done=True) == 1  # decided at the episode's end
    clf.reset(1.0)
    assert clf.update(1.0 + math.radians(1), done=True) == -1  # too small a turn to tell
    clf.reset(0.0)
    for k in range(1, 10):  # turning back and forth never reaches 90 degrees either way
        clf.update(math.radians(60) * (k % 2))
    assert clf.mode == -1


def test_registry_builds_the_task() -> None:
    from diffusion_policy_dist.envs import get_task

    task = get_task("pusht")
    assert task.spec is pusht.TASK
    assert isinstance(task.make_expert(seed=0), pusht.PushTExpert)
    env = task.make_env("state")
    obs, info = env.reset(seed=0)
    assert obs["state"].shape == (5,) and INFO_KEYS <= set(info)
