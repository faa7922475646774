"""End-to-end smoke test of the real command line: collect -> train -> closed-loop eval."""

import json
import subprocess
import sys

import pytest

pytestmark = pytest.mark.e2e


def dpd(*args, timeout=600):
    r = subprocess.run(
        [sys.executable, "-m", "diffusion_policy_dist.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert r.returncode == 0, f"dpd {' '.join(args)} failed:\n{r.stderr[-3000:]}"
    return r


def test_collect_train_eval_smoke(tmp_path):
    data, run, ev = tmp_path / "oa.zarr", tmp_path / "run", tmp_path / "eval"
    dpd(
        "collect",
        "task=obstacle_avoid",
        "episodes=12",
        f"output={data}",
        "workers=2",
        "progress=false",
    )
    dpd(
        "train",
        f"dataset.path={data}",
        "network=tiny",
        "training.steps=300",
        "training.batch_size=64",
        "loss.m=4",
        "training.val_every=100",
        f"output_dir={run}",
        "training.progress=false",
    )
    metrics = [json.loads(line) for line in open(run / "metrics.jsonl")]
    assert metrics[-1]["step"] == 300
    dpd(
        "eval",
        f"checkpoint={run}",
        "sampler.steps=2",
        "eval.episodes=2",
        "eval.n_envs=2",
        "eval.video=1",
        f"output_dir={ev}",
        "eval.progress=false",
    )
    res = json.loads((ev / "eval.json").read_text())
    assert res["episodes"] == 2 and res["nfe"] == 2 and 0.0 <= res["success_rate"] <= 1.0
    lo, hi = res["success_ci95"]
    assert 0.0 <= lo <= res["success_rate"] <= hi <= 1.0
    assert res["latency_ms_p50"] > 0 and res["latency_ms_p95"] >= res["latency_ms_p50"]
    assert set(res["mode_freq"]) >= {"left", "right"}
    assert res["sampler"]["method"] == "distributional" and res["sampler"]["steps"] == 2
    assert res["checkpoint"].endswith("latest")
    assert (ev / "videos" / "episode_000.gif").stat().st_size > 1000
