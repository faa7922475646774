"""Simulation speed of the built-in tasks on one CPU core: env steps per second with low-dim
observations, and with 96x96 (or --size) camera observations rendered every step.

    MUJOCO_GL=egl python benchmarks/env_speed.py            # writes results/env_speed.{json,md}

Actions come from each task's scripted expert, so the physics sees realistic contacts; the
expert's own planning time is excluded (actions are precomputed by a first rollout per seed).
"""

from __future__ import annotations

import argparse
import os
import shlex
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def _expert_actions(task: str, seed: int):
    from diffusion_policy_dist.envs import get_task, rollout_expert

    env = get_task(task).make_env("state")
    ep = rollout_expert(env, get_task(task).make_expert(), seed=seed)
    env.close()
    return ep["action"]


def measure(task: str, obs: str, size: int, seeds: list[int]) -> dict:
    from diffusion_policy_dist.envs import get_task

    env = get_task(task).make_env(obs, image_size=size)
    rates = []
    steps = 0
    for seed in seeds:
        actions = _expert_actions(task, seed)
        env.reset(seed=seed)
        t0 = time.perf_counter()
        steps_here = 0
        for a in actions:
            _, _, term, trunc, _ = env.step(a)
            steps_here += 1
            if term or trunc:
                break
        steps += steps_here
        rates.append(steps_here / (time.perf_counter() - t0))
    env.close()
    return {"task": task, "obs": obs, "size": size, "steps": steps, "hz": rates}


def _obs_label(row: dict) -> str:
    state = row["obs"] in ("state", "lowdim")
    return "low-dim" if state else f"image {row['size']}x{row['size']}"


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--episodes", type=int, default=5)
    ap.add_argument("--tasks", default="obstacle_avoid,block_push,pick_place")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    import torch

    from diffusion_policy_dist.files import write_json_atomic
    from diffusion_policy_dist.provenance import header as provenance

    torch.set_num_threads(1)
    seeds = list(range(args.episodes))
    rows = []
    for task in args.tasks.split(","):
        for obs in ("state", "image"):
            r = measure(task, obs, args.size, seeds)
            r["hz_median"] = statistics.median(r["hz"])
            rows.append(r)
            print(f"{task:15s} {obs:7s} {r['hz_median']:8.0f} steps/s", file=sys.stderr)
    command = shlex.join(["python", "benchmarks/env_speed.py", *argv])
    header = {
        **provenance(f"MUJOCO_GL={os.environ['MUJOCO_GL']} {command}"),
        "note": "one process, one core; image rows render one frame per step",
    }
    out = Path(args.out)
    write_json_atomic(out / "env_speed.json", {"header": header, "rows": rows})
    md = [
        "# Simulation speed (one CPU core)\n",
        f"Command: `{header['command']}`  ",
        f"Commit `{header['git_commit']}`, {header['date']}, {header['machine']}\n",
        f"| task | observations | env steps/s (median of {args.episodes} expert episodes) |",
        "|---|---|---|",
        *[f"| {r['task']} | {_obs_label(r)} | {r['hz_median']:.0f} |" for r in rows],
        "",
    ]
    (out / "env_speed.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:])
