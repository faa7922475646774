"""``dpd demo``: collect, train both models with the same budget, evaluate, plot, film."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from ..data.collect import collect
from ..evaluation import EnvPool, evaluate
from ..evaluation.suite import (
    StageClock,
    budget_train_overrides,
    markdown_table,
    plot_results,
    result_row,
    train_run,
)
from ..json_files import write_json_atomic
from ..training.build import policy_from_checkpoint, resolve_device


def run(cfg: dict[str, Any]) -> dict[str, Any]:
    out = Path(cfg["output_dir"])
    task = cfg["task"]
    device = resolve_device(cfg.get("device"))
    budget = cfg["train_budget_s"]
    clock = StageClock(
        {
            "demos": 0.3,
            "train distributional": budget / 60,
            "train ddpm": budget / 60,
            "evaluate": 1.5,
        }
    )
    progress = bool(cfg.get("progress", True))
    clock.start("demos", f"({cfg['demos']} scripted-expert episodes of {task})")
    data = out / f"{task}.zarr"
    collect(task, int(cfg["demos"]), str(data), workers=int(cfg["workers"]), progress=progress)
    common = budget_train_overrides(
        data, cfg["network"], budget, device, progress, cfg.get("threads")
    )
    clock.start("train distributional", f"(energy score, {budget} s)")
    dist_args = ["policy=distributional", f"training.batch_size={cfg['batch_distributional']}"]
    train_run([*common, *dist_args], out / "distributional")
    clock.start("train ddpm", f"(MSE baseline, {budget} s)")
    train_run([*common, "policy=ddpm", f"training.batch_size={cfg['batch_mean']}"], out / "ddpm")
    clock.start("evaluate", f"({cfg['episodes']} test episodes per sampler)")
    dist, ck = policy_from_checkpoint(out / "distributional", device=device)
    ddpm, _ = policy_from_checkpoint(out / "ddpm", device=device)
    spec = dict(ck.meta["env"])
    n = int(cfg["episodes"])
    base = {
        "episodes": n,
        "n_envs": n,
        "vector": "sync",
        "progress": progress,
        "rollout_threads": cfg.get("threads"),
        "torch_threads": 1 if device.type == "cpu" else None,
    }
    rows = []
    with EnvPool(spec, n, render=True, vector="sync") as pool:
        for pol, model, sampler, video in (
            (dist, "distributional", {"method": "distributional", "steps": 1, "churn": 0.0}, True),
            (dist, "distributional", {"method": "distributional", "steps": 2, "churn": 0.0}, False),
            (ddpm, "mean", {"method": "ddpm", "steps": 100}, False),
            (ddpm, "mean", {"method": "ddim", "steps": 1, "eta": 0.0}, False),
        ):
            ev = {**base, "video": int(cfg["video_episodes"]) if video else 0}
            res = evaluate(
                pol,
                spec,
                ev,
                sampler=sampler,
                pool=pool,
                output_dir=out / "eval" / f"{sampler['method']}-{sampler['steps']}",
            )
            rows.append(result_row(task, model, res))
    table = markdown_table(rows, ck.meta.get("demo_mode_freq"))
    plot = plot_results(
        rows, out / "demo.png", f"{task}: {budget} s of CPU training per model, {n} episodes"
    )
    write_json_atomic(out / "demo.json", {"rows": rows, "config": cfg})
    (out / "demo.md").write_text(table + "\n")
    d1 = next(r for r in rows if r["nfe"] == 1 and r["model"] == "distributional")
    dd = next(r for r in rows if r["method"] == "ddpm")
    clock.start("done")
    print(f"\n{table}\n", file=sys.stderr)
    print(
        f"distributional-1 is {dd['latency_ms_p50'] / d1['latency_ms_p50']:.0f}x faster than "
        "DDPM-100 "
        f"per action chunk, at {d1['success_rate']:.0%} vs {dd['success_rate']:.0%} success.",
        file=sys.stderr,
    )
    print(
        f"plot: {plot}\nvideos: {out / 'eval' / 'distributional-1' / 'videos'}\n"
        f"checkpoints: {out / 'distributional'}, {out / 'ddpm'}",
        file=sys.stderr,
    )
    return {"rows": rows}
