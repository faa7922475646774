"""End-to-end smoke test of the real command line: collect -> train -> closed-loop eval."""

import json
import subprocess
import sys
from pathlib import Path

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
    eps = res["per_episode"]
    assert res["episodes"] == 2 and res["nfe"] == 2 and res["crashed"] == 0
    assert [e["seed"] for e in eps] == [10**9, 10**9 + 1]  # the evaluation seeds, in order
    assert all(1 <= e["length"] <= 80 for e in eps)  # obstacle_avoid's step limit
    assert res["successes"] == sum(e["success"] for e in eps)
    assert res["success_rate"] == res["successes"] / 2
    lo, hi = res["success_ci95"]
    assert lo <= res["success_rate"] <= hi and hi - lo > 0.5  # 2 episodes: a wide interval
    assert res["latency_ms_p50"] > 0 and res["latency_ms_p95"] >= res["latency_ms_p50"]
    assert set(res["mode_freq"]) >= {"left", "right"}
    assert res["sampler"]["kind"] == "distributional" and res["sampler"]["steps"] == 2
    assert res["checkpoint"].endswith("latest")
    assert (ev / "videos" / "episode_000.gif").stat().st_size > 1000
    _real_time(run, tmp_path)


def _real_time(run, tmp_path):
    """The real-time contract on the same checkpoint: latency-aware eval, dpd tune, and the
    README's control-loop example."""
    ev = tmp_path / "eval_50hz"
    dpd("eval", f"checkpoint={run}", "eval.control_hz=50", "eval.latency=measured",
        "eval.transition=prefix", "eval.episodes=2", "eval.n_envs=2", f"output_dir={ev}",
        "eval.progress=false")  # fmt: skip
    res = json.loads((ev / "eval.json").read_text())
    assert res["control_hz"] == 50 and res["transition"] == "prefix"
    assert res["delay_steps"]["p50"] >= 1 and res["delay_steps"]["max"] >= res["delay_steps"]["p50"]
    assert res["boundary_jerk"] >= 0 and 0 <= res["deadline_miss_rate"] <= 1
    out = dpd("tune", f"checkpoint={run}", "control_hz=50", "episodes=2", "progress=false",
              "candidates=[distributional-1,distributional-2]")  # fmt: skip
    assert "chosen sampler: distributional-" in out.stdout
    meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
    chosen = out.stdout.split("chosen sampler: distributional-")[1].split()[0]
    assert meta["policy"]["sampler"]["steps"] == int(chosen)
    assert meta["sampler_history"][-1]["by"] == "dpd tune control_hz=50 transition=prefix"
    example = Path(__file__).parents[2] / "examples" / "control_loop.py"
    r = subprocess.run([sys.executable, str(example), "--checkpoint", str(run), "--seconds", "3"],
                       capture_output=True, text=True, timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    stats = json.loads(r.stdout)
    assert stats["steps"] > 50 and stats["chunks"] > 5
    dpd("export", f"checkpoint={run}", f"output={tmp_path / 'oa.onnx'}")
    deploy = Path(__file__).parents[2] / "examples" / "deploy_onnx.py"
    no_torch = (  # the robot side: onnxruntime and numpy, torch not importable
        "import sys, runpy; sys.modules['torch'] = None; "
        f"sys.argv = ['deploy', '--model', {str(tmp_path / 'oa.onnx')!r}, '--episodes', '2']; "
        f"runpy.run_path({str(deploy)!r}, run_name='__main__')"
    )
    r = subprocess.run([sys.executable, "-c", no_torch], capture_output=True, text=True,
                       timeout=120)  # fmt: skip
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout)["episodes"] == 2


@pytest.mark.sim
def test_image_collect_train_eval_smoke(tmp_path):
    data, run, ev = tmp_path / "oa_img.zarr", tmp_path / "run", tmp_path / "eval"
    dpd(
        "collect",
        "task=obstacle_avoid",
        "obs=image",
        "image_size=64",
        "episodes=4",
        f"output={data}",
        "workers=2",
        "progress=false",
    )
    info = json.loads(dpd("info", f"path={data}").stdout.split("\n", 1)[1])
    rgb = [k for k, v in info["shape_meta"]["obs"].items() if v["type"] == "rgb"]
    assert rgb and all(info["shape_meta"]["obs"][k]["shape"] == [3, 64, 64] for k in rgb)
    dpd(
        "train",
        f"dataset.path={data}",
        "network=tiny",
        "training.steps=50",
        "training.batch_size=8",
        "loss.m=4",
        "training.val_every=25",
        "training.warmup_steps=5",
        f"output_dir={run}",
        "training.progress=false",
    )
    meta = json.loads((run / "checkpoints" / "latest" / "meta.json").read_text())
    assert meta["step"] == 50 and meta["policy"]["obs_encoder"]["crop_shape"] == "auto"
    dpd(
        "eval",
        f"checkpoint={run}",
        "sampler.steps=1",
        "eval.episodes=2",
        "eval.n_envs=2",
        f"output_dir={ev}",
        "eval.progress=false",
    )
    res = json.loads((ev / "eval.json").read_text())
    assert res["episodes"] == 2 and res["nfe"] == 1 and res["crashed"] == 0
    assert res["latency_ms_p50"] > 0 and set(res["mode_freq"]) >= {"left", "right"}


@pytest.mark.fetch
def test_train_on_a_gym_env_dataset_and_evaluate_from_the_checkpoint_alone(tmp_path):
    """Any gymnasium env: record its Dict observations under their own names into zarr with its
    env spec, train, and `dpd eval` rebuilds that env from the checkpoint alone."""
    pytest.importorskip("gymnasium_robotics")
    import numpy as np
    from diffusion_policy_dist.envs import gym_env_spec, make_env

    from diffusion_policy_dist.data import ReplayBuffer

    keys = ["observation", "desired_goal"]
    spec = gym_env_spec("FetchReach-v4", keys, module="gymnasium_robotics", max_episode_steps=12)
    env = make_env(spec)
    buf = ReplayBuffer.create(tmp_path / "fetch.zarr", attrs={"env": spec})
    rng = np.random.default_rng(0)
    for ep in range(4):
        obs, _ = env.reset(seed=ep)
        frames, actions = {k: [] for k in keys}, []
        for _ in range(12):  # a crude "expert": move the gripper towards the goal
            grip = obs["observation"][:3]
            toward_goal = np.clip(10 * (obs["desired_goal"] - grip), -1, 1)
            a = np.append(toward_goal, rng.uniform(-1, 1)).astype(np.float32)
            for k in keys:
                frames[k].append(obs[k])
            actions.append(a)
            obs, _, term, trunc, _ = env.step(a)
            if term or trunc:
                break
        buf.add_episode(
            {**{k: np.stack(v) for k, v in frames.items()}, "action": np.stack(actions)}
        )
    buf.close()
    env.close()
    run, ev = tmp_path / "run", tmp_path / "eval"
    dpd(
        "train",
        f"dataset.path={tmp_path / 'fetch.zarr'}",
        "network=tiny",
        "training.steps=20",
        "training.batch_size=16",
        "loss.m=2",
        "training.val_every=0",
        f"output_dir={run}",
        "training.progress=false",
    )
    dpd(
        "eval",
        f"checkpoint={run}",
        "eval.episodes=2",
        "eval.n_envs=2",
        "eval.vector=sync",
        f"output_dir={ev}",
        "eval.progress=false",
    )
    res = json.loads((ev / "eval.json").read_text())
    assert res["episodes"] == 2 and res["crashed"] == 0 and res["mode_freq"] is None
    assert res["env"]["env_id"] == "FetchReach-v4"
