"""Image-data loading throughput: training windows per second from a camera dataset, through the
trainer's own loader, with 0, 1 and 2 worker processes.

    MUJOCO_GL=egl python benchmarks/loader.py                  # writes results/loader.{json,md}

It collects (or reuses) a small image dataset of a built-in task, then times ``--batches``
batches of ``--batch`` windows (To camera frames, uint8, plus low-dim state and the action
chunk) after a warm-up. Each window gathers To frames, so this measures the whole batch
assembly a training step waits for, not a bare array read.
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from pathlib import Path

os.environ.setdefault("MUJOCO_GL", "egl")


def time_loader(dataset, batch: int, workers: int, batches: int, warmup: int = 5) -> dict:
    from diffusion_policy_dist.training.batches import EpochBatches, batch_loader

    loader = batch_loader(dataset, EpochBatches(len(dataset), batch, seed=0), workers, seed=0)
    it = iter(loader)
    for _ in range(warmup):  # worker start-up and first prefetches are not throughput
        next(it)
    t0 = time.perf_counter()
    n = 0
    for _ in range(batches):
        b = next(it)
        n += b["action"].shape[0]
    dt = time.perf_counter() - t0
    del it
    return {
        "workers": workers,
        "batch": batch,
        "samples": n,
        "seconds": dt,
        "samples_per_s": n / dt,
    }


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="obstacle_avoid")
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--batches", type=int, default=60)
    ap.add_argument("--workers", default="0,1,2")
    ap.add_argument("--data", default="outputs/loader_bench/{task}_image{size}.zarr")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    args = ap.parse_args(argv)
    import torch

    from diffusion_policy_dist.data import ReplayBuffer, SequenceDataset, infer_shape_meta
    from diffusion_policy_dist.data.collect import collect
    from diffusion_policy_dist.files import write_json_atomic
    from diffusion_policy_dist.policy import Window
    from diffusion_policy_dist.provenance import header as provenance

    torch.set_num_threads(1)
    path = args.data.format(task=args.task, size=args.size)
    collect(args.task, args.episodes, path, obs="image", image_size=args.size, workers=2)
    buf = ReplayBuffer.open(path)
    window = Window(horizon=16, n_obs_steps=2, n_action_steps=8)
    t0 = time.perf_counter()
    dataset = SequenceDataset(buf, infer_shape_meta(buf), window)
    load_s = time.perf_counter() - t0
    rows = []
    for w in (int(x) for x in args.workers.split(",")):
        r = time_loader(dataset, args.batch, w, args.batches)
        rows.append(r)
        print(f"workers={w}: {r['samples_per_s']:.0f} samples/s", file=sys.stderr)
    command = shlex.join(["python", "benchmarks/loader.py", *argv])
    header = {
        **provenance(f"MUJOCO_GL={os.environ['MUJOCO_GL']} {command}"),
        "dataset": {
            "path": path,
            "episodes": buf.n_episodes,
            "steps": buf.n_steps,
            "windows": len(dataset),
            "image": [3, args.size, args.size],
            "load_into_memory_s": round(load_s, 2),
        },
        "window": {"horizon": 16, "n_obs_steps": 2},
    }
    out = Path(args.out)
    write_json_atomic(out / "loader.json", {"header": header, "rows": rows})
    write_markdown(out, header, rows, args, buf, len(dataset), load_s)


def write_markdown(out: Path, header, rows, args, buf, windows: int, load_s: float) -> None:
    base = rows[0]["samples_per_s"]
    md = [
        "# Image data loading\n",
        f"Command: `{header['command']}`  ",
        f"Commit `{header['git_commit']}`, {header['date']}, {header['machine']}\n",
        f"Dataset: {buf.n_episodes} episodes of {args.task}, {buf.n_steps} steps, "
        f"{args.size}x{args.size} uint8 camera + state, {windows} windows of 16 steps with "
        f"2 observation frames; decompressed into memory once in {load_s:.1f} s.\n",
        "| loader workers | batch | windows/s | vs 0 workers |",
        "|---|---|---|---|",
        *[
            f"| {r['workers']} | {r['batch']} | {r['samples_per_s']:.0f} | "
            f"{r['samples_per_s'] / base:.2f}x |"
            for r in rows
        ],
        "",
    ]
    (out / "loader.md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:])
