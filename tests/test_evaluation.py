"""The evaluation runner: crash tolerance, reproducibility, metrics and the gym adapter."""

import json
import math

import gymnasium as gym
import numpy as np
import pytest
import torch

from diffusion_policy_dist.evaluation import (
    GymAdapter,
    SafeEnv,
    dpd_env_spec,
    evaluate,
    make_env,
    mode_frequencies,
    wilson_interval,
)
from diffusion_policy_dist.policy import DiffusionPolicy, Window

TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}


def tiny_policy(state_dim=3, action_dim=2, seed=0):
    torch.manual_seed(seed)
    sm = {
        "obs": {"state": {"shape": [state_dim], "type": "low_dim"}},
        "action": {"shape": [action_dim]},
    }
    pol = DiffusionPolicy({"network": TINY, "loss": {"m": 2}}, sm, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit(
        {
            "state": rng.normal(size=(20, state_dim)),
            "action": rng.uniform(-0.3, 0.3, size=(20, action_dim)),
        }
    )
    return pol


def countdown_spec(**kw):
    return {
        "type": "python",
        "factory": "envs_for_tests:CountdownEnv",
        "kwargs": kw,
        "mode_names": ["even", "odd"],
    }


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    for n in (7, 50, 200):  # the ends are exact, so "rate - lo" and "hi - rate" are never < 0
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi


def test_mode_frequencies():
    f = mode_frequencies([0, 1, 1, -1], ["a", "b"])
    assert f == {"a": pytest.approx(1 / 3), "b": pytest.approx(2 / 3), "undetermined": 0.25}
    assert mode_frequencies([0], None) is None


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
    spec = dpd_env_spec("obstacle_avoid")
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
        sampler={"method": "ddim", "steps": 3, "eta": 0.0},
    )
    assert res["nfe"] == 3
    assert 0 < res["latency_ms_p50"] <= res["latency_ms_p95"]
    assert res["latency_over_forward"] > 1.0  # three forwards cost more than one
    assert math.isfinite(res["control_rate_hz"])


def test_videos_of_the_first_episodes(tmp_path):
    evaluate(
        tiny_policy(),
        countdown_spec(),
        {
            "episodes": 3,
            "n_envs": 2,
            "vector": "sync",
            "video": 2,
            "latency_trials": 1,
            "progress": False,
        },
        output_dir=tmp_path,
    )
    assert sorted(p.name for p in (tmp_path / "videos").iterdir()) == [
        "episode_000.gif",
        "episode_001.gif",
    ]


def test_gym_adapter_box_and_dict():
    box = GymAdapter(
        make_env({"type": "python", "factory": "envs_for_tests:BoxObsEnv"}, safe=False)
    )
    obs, info = box.reset(seed=0)
    assert obs["state"].shape == (4,) and info["is_success"] is False
    _, _, _, _, info = box.step(box.action_space.sample())
    assert info["is_success"] is True  # read from info["success"]
    from envs_for_tests import CountdownEnv

    env = GymAdapter(CountdownEnv(), obs_keys=["state"])
    assert env.observation_space["state"].shape == (3,)
    with pytest.raises(ValueError, match=r"keys \['nope'\] not in"):
        GymAdapter(CountdownEnv(), obs_keys=["nope"])


def test_gym_env_by_id_and_action_space_check():
    spec = {
        "type": "gym",
        "env_id": "CartPole-v1",
        "obs_keys": None,
        "success_key": None,
        "module": None,
        "kwargs": {},
        "max_episode_steps": 20,
        "mode_names": None,
    }
    env = make_env(spec)
    assert isinstance(env, SafeEnv) and env.observation_space["state"].shape == (4,)
    assert isinstance(env.action_space, gym.spaces.Discrete)
    with pytest.raises(ValueError, match=r"CartPole-v1: action space Discrete\(2\) does not fit"):
        evaluate(
            tiny_policy(state_dim=4), spec, {"episodes": 1, "vector": "sync", "progress": False}
        )


@pytest.mark.fetch
def test_fetch_env_through_the_generic_adapter():
    pytest.importorskip("gymnasium_robotics")
    spec = {
        "type": "gym",
        "env_id": "FetchReach-v4",
        "obs_keys": ["observation", "desired_goal"],
        "success_key": None,
        "module": "gymnasium_robotics",
        "kwargs": {},
        "max_episode_steps": 10,
        "mode_names": None,
    }
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
