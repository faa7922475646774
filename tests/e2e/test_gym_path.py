"""A user's own gymnasium env, start to end by the documented commands: record it with your own
expert, train on its Dict keys (one of them sliced), and evaluate from the checkpoint alone."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.fetch]
TESTS = Path(__file__).resolve().parents[1]


def dpd(*args):
    env = dict(os.environ, PYTHONPATH=str(TESTS))  # where the user's expert module lives
    r = subprocess.run(
        [sys.executable, "-m", "diffusion_policy_dist.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
    )
    assert r.returncode == 0, f"dpd {' '.join(args)} failed:\n{r.stderr[-3000:]}"
    return r


def test_collect_train_eval_a_gym_env_with_named_keys_and_a_slice(tmp_path):
    pytest.importorskip("gymnasium_robotics")
    gym = [
        "task=gym",
        "env.id=FetchReach-v4",
        "env.module=gymnasium_robotics",
        "env.obs_keys=[observation,desired_goal]",
        "env.max_episode_steps=12",
    ]
    data, run, ev = tmp_path / "reach.zarr", tmp_path / "run", tmp_path / "eval"
    dpd("collect", *gym, "expert=envs_for_tests:fetch_reach_expert", "episodes=6",
        f"output={data}", "workers=1", "progress=false")  # fmt: skip
    info = json.loads(dpd("info", f"path={data}").stdout.split("\n", 1)[1])
    assert sorted(info["shape_meta"]["obs"]) == ["desired_goal", "observation"]
    dpd("train", f"dataset.path={data}", "dataset.obs_keys=['grip=observation[0:3]',desired_goal]",
        *gym, "network=tiny", "training.steps=20", "training.batch_size=16", "loss.m=2",
        "training.val_every=0", f"output_dir={run}", "training.progress=false")  # fmt: skip
    meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
    grip = meta["shape_meta"]["obs"]["grip"]
    assert grip == {"shape": [3], "type": "low_dim", "source": "observation", "slice": [0, 3]}
    assert meta["env"]["env_id"] == "FetchReach-v4" and meta["env"]["flatten"] is False
    dpd("eval", f"checkpoint={run}", "eval.episodes=2", "eval.n_envs=2", f"output_dir={ev}",
        "eval.progress=false")  # fmt: skip
    res = json.loads((ev / "eval.json").read_text())
    assert res["episodes"] == 2 and res["crashed"] == 0
    assert all(1 <= e["length"] <= 12 for e in res["per_episode"])
