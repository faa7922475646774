"""dpd collect: determinism, resume, and a killed collection."""

import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from diffusion_policy_dist.data import ReplayBuffer
from diffusion_policy_dist.data.collect import collect


def test_resume_adds_only_missing_and_matches_a_fresh_run(tmp_path):
    a = str(tmp_path / "a.zarr")
    collect("obstacle_avoid", 2, a, seed=5, progress=False)
    s = collect("obstacle_avoid", 4, a, seed=5, workers=2, progress=False)
    assert s["added"] == 2 and s["episodes"] == 4
    b = str(tmp_path / "b.zarr")
    collect("obstacle_avoid", 4, b, seed=5, workers=1, progress=False)
    ra, rb = ReplayBuffer.open(a), ReplayBuffer.open(b)
    assert [r["seed"] for r in ra.episode_info] == [5, 6, 7, 8]
    assert ra.episode_ends.tolist() == rb.episode_ends.tolist()
    for k in ra.keys():
        assert np.array_equal(ra.load([k])[k], rb.load([k])[k])
    env = ra.attrs["env"]
    assert env["task"] == "obstacle_avoid" and env["mode_names"] == ["left", "right"]
    assert ra.attrs["shape_meta"]["obs"]["state"]["shape"] == [6]
    assert {"seed", "mode", "mode_name", "success", "length"} <= set(ra.episode_info[0])
    assert collect("obstacle_avoid", 4, a, seed=5, progress=False)["added"] == 0


def test_mismatched_rerun_is_refused(tmp_path):
    a = str(tmp_path / "a.zarr")
    collect("obstacle_avoid", 1, a, progress=False)
    with pytest.raises(ValueError, match=r"obs='state'.*obs='image'"):
        collect("obstacle_avoid", 2, a, obs="image", progress=False)
    with pytest.raises(ValueError, match="below"):
        collect("obstacle_avoid", 1, str(tmp_path / "x.zarr"), seed=10**9, progress=False)


def test_killed_collection_leaves_a_readable_dataset_and_resumes(tmp_path):
    out = str(tmp_path / "k.zarr")
    cmd = [
        sys.executable,
        "-m",
        "diffusion_policy_dist.cli.main",
        "collect",
        "task=block_push",
        "episodes=200",
        f"output={out}",
        "workers=1",
        "progress=false",
    ]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        try:
            if ReplayBuffer.open(out).n_episodes >= 3:
                break
        except Exception:
            continue
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    rb = ReplayBuffer.open(out)
    n = rb.n_episodes
    assert 3 <= n < 200
    for i in range(n):  # every committed episode is complete and readable
        ep = rb.get_episode(i)
        assert len(ep["action"]) == rb.episode_lengths[i]
    s = collect("block_push", n + 2, out, progress=False)
    assert s["episodes"] == n + 2
    seeds = [r["seed"] for r in ReplayBuffer.open(out).episode_info]
    assert seeds == list(range(n + 2))
