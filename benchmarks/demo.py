"""``dpd demo``: collect, train both models with the same budget, evaluate, plot, film."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from diffusion_policy_dist.benchmarks.config import DemoRun
from diffusion_policy_dist.benchmarks.suite import (
    StageClock,
    budget_train_overrides,
    markdown_table,
    plot_results,
    result_row,
    train_run,
)
from diffusion_policy_dist.envs.workers import EnvSource

from diffusion_policy_dist.data.collect import collect
from diffusion_policy_dist.evaluation import EnvPool, evaluate
from diffusion_policy_dist.files import write_json_atomic
from diffusion_policy_dist.training.build import policy_from_checkpoint, resolve_device

# (model, sampler, record videos)
SAMPLERS = (
    ("distributional", {"kind": "distributional", "steps": 1, "churn": 0.0}, True),
    ("distributional", {"kind": "distributional", "steps": 2, "churn": 0.0}, False),
    ("mean", {"kind": "ddpm", "steps": 100}, False),
    ("mean", {"kind": "ddim", "steps": 1, "eta": 0.0}, False),
)


def _train(cfg: DemoRun, out: Path, clock: StageClock) -> None:
    device, budget = resolve_device(cfg.device), cfg.train_budget_s
    clock.start("demos", f"({cfg.demos} scripted-expert episodes of {cfg.task})")
    data = out / f"{cfg.task}.zarr"
    collect(cfg.task, cfg.demos, str(data), workers=cfg.workers, progress=cfg.progress)
    common = budget_train_overrides(data, cfg.network, budget, device, cfg.progress, cfg.threads)
    clock.start("train distributional", f"(energy score, {budget:g} s)")
    dist_args = ["policy=distributional", f"training.batch_size={cfg.batch_distributional}"]
    train_run([*common, *dist_args], out / "distributional")
    clock.start("train ddpm", f"(MSE baseline, {budget:g} s)")
    train_run([*common, "policy=ddpm", f"training.batch_size={cfg.batch_mean}"], out / "ddpm")


def _evaluate(cfg: DemoRun, out: Path) -> tuple[list[dict], dict | None]:
    device = resolve_device(cfg.device)
    dist, ck = policy_from_checkpoint(out / "distributional", device=device)
    models = {
        "distributional": dist,
        "mean": policy_from_checkpoint(out / "ddpm", device=device)[0],
    }
    meta = ck.meta
    source = EnvSource.from_spec(meta["env"])
    n = cfg.episodes
    base = {
        "episodes": n,
        "n_envs": n,
        "vector": "sync",
        "progress": cfg.progress,
        "rollout_threads": cfg.threads,
        "torch_threads": 1 if device.type == "cpu" else None,
    }
    rows = []
    with EnvPool(source, n, render=True, processes=False) as pool:
        for model, sampler, video in SAMPLERS:
            ev = {**base, "video": cfg.video_episodes if video else 0}
            res = evaluate(
                models[model],
                source,
                ev,
                sampler=sampler,
                pool=pool,
                output_dir=out / "eval" / f"{sampler['kind']}-{sampler['steps']}",
            )
            rows.append(result_row(cfg.task, model, res))
    return rows, meta.get("demo_mode_freq")


def run(cfg: DemoRun, command: str | None = None) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    weights = {"demos": 0.3, "evaluate": 1.5}
    weights.update(
        {"train distributional": cfg.train_budget_s / 60, "train ddpm": cfg.train_budget_s / 60}
    )
    clock = StageClock(weights)
    _train(cfg, out, clock)
    clock.start("evaluate", f"({cfg.episodes} test episodes per sampler)")
    rows, demo_modes = _evaluate(cfg, out)
    table = markdown_table(rows, demo_modes)
    title = (
        f"{cfg.task}: {cfg.train_budget_s:g} s of CPU training per model, {cfg.episodes} episodes"
    )
    plot = plot_results(rows, out / "demo.png", title)
    write_json_atomic(
        out / "demo.json", {"rows": rows, "config": dataclasses.asdict(cfg), "command": command}
    )
    (out / "demo.md").write_text(table + "\n")
    d1 = next(r for r in rows if r["nfe"] == 1 and r["model"] == "distributional")
    dd = next(r for r in rows if r["method"] == "ddpm")
    clock.start("done")
    print(f"\n{table}\n", file=sys.stderr)
    speed = dd["latency_ms_p50"] / d1["latency_ms_p50"]
    print(
        f"distributional-1 is {speed:.0f}x faster than DDPM-100 per action chunk, at "
        f"{d1['success_rate']:.0%} vs {dd['success_rate']:.0%} success.",
        file=sys.stderr,
    )
    videos = out / "eval" / "distributional-1" / "videos"
    print(
        f"plot: {plot}\nvideos: {videos}\ncheckpoints: {out / 'distributional'}, {out / 'ddpm'}",
        file=sys.stderr,
    )
    return {"rows": rows}
