"""The evaluation runner: crash tolerance, reproducibility, latency, videos and results."""

import functools
import json
import math

import gymnasium as gym
import numpy as np
import pytest
from diffusion_policy_dist.envs import gym_env_spec, make_env, task_env_spec
from diffusion_policy_dist.envs.workers import EnvSource
from envs_for_tests import countdown
from helpers import tiny_policy

from diffusion_policy_dist.evaluation import evaluate


def countdown_spec(**kw):
    """The test env, given to evaluation as a source built in code (never from a file)."""
    spec = {"kind": "python", "factory": "envs_for_tests:countdown", "kwargs": kw}
    return EnvSource(functools.partial(countdown, **kw), spec, ("even", "odd"), 10.0)


@pytest.mark.parametrize("vector", ["sync", "async"])
def test_broken_env_counts_as_failure_and_the_run_goes_on(tmp_path, vector):
    base = 100
    spec = countdown_spec(
        raise_seeds=[base + 1],
        reset_seeds=[base + 4],
        die_seeds=[base + 6] if vector == "async" else [],
    )
    cfg = {
        "episodes": 8,
        "n_envs": 3,
        "seed": base,
        "vector": vector,
        "latency_trials": 2,
        "progress": False,
    }
    res = evaluate(tiny_policy(), spec, cfg, output_dir=tmp_path)
    eps = {r["seed"] - base: r for r in res["per_episode"]}
    assert res["episodes"] == 8 and sorted(eps) == list(range(8))
    bad = {1, 4} | ({6} if vector == "async" else set())
    for i, r in eps.items():
        assert r["crashed"] == (i in bad), (i, r)
        assert r["success"] == (i not in bad), (i, r)
    assert "step exploded" in eps[1]["error"] and "reset exploded" in eps[4]["error"]
    assert eps[1]["reason"] == "step_error" and eps[4]["reason"] == "reset_error"
    if vector == "async":
        assert eps[6]["reason"] == "worker_died"
    assert res["success_rate"] == pytest.approx((8 - len(bad)) / 8)
    assert res["crashed"] == len(bad)
    saved = json.loads((tmp_path / "eval.json").read_text())
    for key in (
        "success_rate",
        "success_ci95",
        "episodes",
        "nfe",
        "latency_ms_p50",
        "latency_ms_p95",
        "mode_freq",
        "sampler",
        "checkpoint",
    ):
        assert key in saved
    # the mode is the seed's parity; successes are the non-crashed episodes
    ok = [i for i in range(8) if i not in bad]
    assert saved["mode_freq"]["even"] == pytest.approx(np.mean([(base + i) % 2 == 0 for i in ok]))


def test_evaluation_with_a_fixed_seed_is_reproducible(tmp_path):
    spec = task_env_spec("obstacle_avoid")
    pol = tiny_policy(state_dim=6)
    cfg = {"episodes": 3, "n_envs": 2, "vector": "sync", "latency_trials": 2, "progress": False}
    a = evaluate(pol, spec, cfg)
    b = evaluate(pol, spec, cfg)
    assert a["per_episode"] == b["per_episode"]
    c = evaluate(pol, spec, {**cfg, "seed": cfg.get("seed", 10**9) + 50})
    assert [r["seed"] for r in c["per_episode"]] != [r["seed"] for r in a["per_episode"]]


def test_latency_and_nfe_are_reported(tmp_path):
    res = evaluate(
        tiny_policy(),
        countdown_spec(),
        {"episodes": 2, "n_envs": 2, "vector": "sync", "latency_trials": 5, "progress": False},
        sampler={"kind": "ddim", "steps": 3, "eta": 0.0},
    )
    assert res["nfe"] == 3
    assert 0 < res["latency_ms_p50"] <= res["latency_ms_p95"]
    assert res["latency_over_forward"] > 1.0  # three forwards cost more than one
    assert math.isfinite(res["control_rate_hz"])


@pytest.mark.parametrize("vector", ["sync", "async"])
def test_videos_hold_the_first_episodes_whole_however_many_envs_run(tmp_path, vector):
    from PIL import Image, ImageSequence

    cfg = {"episodes": 5, "n_envs": 2, "vector": vector, "video": 3, "latency_trials": 0}
    evaluate(tiny_policy(), countdown_spec(), {**cfg, "progress": False}, output_dir=tmp_path)
    names = sorted(p.name for p in (tmp_path / "videos").iterdir())
    assert names == ["episode_000.gif", "episode_001.gif", "episode_002.gif"]
    for name in names:  # the reset frame and one per step (CountdownEnv: 5 steps), in order
        frames = [np.asarray(f.convert("RGB")) for f in ImageSequence.Iterator(Image.open(
            tmp_path / "videos" / name))]  # fmt: skip
        assert len(frames) == 6, name
        assert [int(f[0, 0, 0]) for f in frames] == [0, 10, 20, 30, 40, 50], name


def test_an_env_score_is_reported(tmp_path):
    """Envs that report info["score"] (Push-T's clip(coverage / 0.95, 0, 1)) get each episode's
    best score and its mean over episodes."""
    res = evaluate(
        tiny_policy(),
        countdown_spec(score=True),
        {"episodes": 3, "n_envs": 2, "vector": "sync", "latency_trials": 0, "progress": False},
    )
    assert [r["score"] for r in res["per_episode"]] == [0.5, 0.5, 0.5]  # the max, not the last
    assert res["mean_score"] == pytest.approx(0.5)


def test_gym_env_by_id_and_action_space_check():
    spec = gym_env_spec("CartPole-v1", max_episode_steps=20)
    env = make_env(spec)
    assert env.observation_space["state"].shape == (4,)
    assert isinstance(env.action_space, gym.spaces.Discrete)
    with pytest.raises(ValueError, match=r"CartPole-v1: action space Discrete\(2\) does not fit"):
        evaluate(
            tiny_policy(state_dim=4), spec, {"episodes": 1, "vector": "sync", "progress": False}
        )


@pytest.mark.fetch
def test_fetch_env_through_the_generic_adapter():
    pytest.importorskip("gymnasium_robotics")
    keys = ["observation", "desired_goal"]
    spec = gym_env_spec("FetchReach-v4", keys, None, "gymnasium_robotics", None, 10, flatten=True)
    env = make_env(spec)
    obs, _ = env.reset(seed=5)
    raw = gym.make("FetchReach-v4")
    raw_obs, _ = raw.reset(seed=5)
    # the chosen Dict keys, flattened in the given order into the policy's state
    assert env.observation_space["state"].shape == (13,)
    np.testing.assert_allclose(
        obs["state"], np.concatenate([raw_obs["observation"], raw_obs["desired_goal"]]), rtol=1e-6
    )
    env.close()
    raw.close()
    pol = tiny_policy(state_dim=13, action_dim=4)
    res = evaluate(
        pol,
        spec,
        {"episodes": 2, "n_envs": 2, "vector": "sync", "latency_trials": 2, "progress": False},
    )
    assert res["episodes"] == 2 and res["crashed"] == 0
    assert all(1 <= r["length"] <= 10 for r in res["per_episode"])
    assert res["mode_freq"] is None  # a gym env without modes


def test_eval_json_is_strict_json_when_timing_is_skipped(tmp_path):
    cfg = {"episodes": 2, "n_envs": 2, "vector": "sync", "latency_trials": 0, "progress": False}
    res = evaluate(tiny_policy(), countdown_spec(), cfg, output_dir=tmp_path)
    assert math.isnan(res["latency_ms_p50"])  # in memory: not measured

    def refuse(constant):
        raise AssertionError(f"eval.json holds {constant}, which is not JSON")

    on_disk = json.loads((tmp_path / "eval.json").read_text(), parse_constant=refuse)
    assert on_disk["latency_ms_p50"] is None and on_disk["control_rate_hz"] is None
    assert on_disk["episodes"] == 2 and on_disk["success_rate"] == 1.0


def test_env_whose_observations_do_not_fit_the_checkpoint_is_refused_up_front():
    cfg = {"episodes": 1, "vector": "sync", "progress": False}
    with pytest.raises(
        ValueError, match=r"observation 'state' has shape \(3,\), the policy expects \(4,\)"
    ):
        evaluate(tiny_policy(state_dim=4), countdown_spec(), cfg)
    pol = tiny_policy()
    pol.shape_meta["obs"] = {"image": {"shape": [3, 8, 8], "type": "rgb"}}
    with pytest.raises(ValueError, match=r"needs observation 'image' of shape \(3, 8, 8\)"):
        evaluate(pol, countdown_spec(), cfg)
