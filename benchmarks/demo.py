"""``dpd demo``: a small bench on one task, with videos and a verdict it can stand behind.

Collects demonstrations, trains the distributional policy and the DDPM baseline on the same data
(``steps`` of ``batch_size`` examples), evaluates distributional-1/2 against DDPM-100
and DDIM-1, writes a table, a plot and videos, and states the speed-up with its caveat: whether
each model's validation success had stopped moving over its last checkpoints (what the
comparison is about; a diffusion model's validation loss keeps falling long after that).
"""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
from typing import Any

from diffusion_policy_dist.benchmarks.bench import _curves, _train
from diffusion_policy_dist.benchmarks.config import BenchPreset, BenchRun, DemoRun
from diffusion_policy_dist.benchmarks.suite import (
    StageClock,
    flatten_step,
    markdown_table,
    plot_results,
    result_row,
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
    ("ddpm", {"kind": "ddpm", "steps": 100}, False),
    ("ddpm", {"kind": "ddim", "steps": 1, "eta": 0.0}, False),
)


def _evaluate(cfg: DemoRun, work: Path, out: Path) -> tuple[list[dict], dict | None]:
    device = resolve_device(cfg.device)
    loaded = {
        m: policy_from_checkpoint(work / m, device=device) for m in ("distributional", "ddpm")
    }
    meta = loaded["distributional"][1].meta
    source = EnvSource.from_spec(meta["env"])
    ev = {
        "episodes": cfg.episodes,
        "n_envs": cfg.episodes,
        "vector": "sync",
        "progress": cfg.progress,
    }
    ev.update(rollout_threads=cfg.threads, torch_threads=1 if device.type == "cpu" else None)
    rows = []
    with EnvPool(source, cfg.episodes, render=True, processes=False) as pool:
        for model, sampler, video in SAMPLERS:
            where = out / "eval" / f"{sampler['kind']}-{sampler['steps']}"
            ev_k = {**ev, "video": cfg.video_episodes if video else 0}
            res = evaluate(loaded[model][0], source, ev_k, sampler, where, pool=pool)
            rows.append(result_row(cfg.task, model, res))
    return rows, meta.get("demo_mode_freq")


def verdict(rows: list[dict], train: dict, curves: list[dict], episodes: int) -> str:
    """The speed-up and success the numbers show, with the caveat they need: a model whose
    validation success still moved over its last checkpoints (outside the final one's 95%
    interval) was not yet converged."""
    d1 = next(r for r in rows if r["nfe"] == 1 and r["model"] == "distributional")
    dd = next(r for r in rows if r["method"] == "ddpm")
    speed = dd["latency_ms_p50"] / d1["latency_ms_p50"]
    said = (
        f"distributional-1 is {speed:.0f}x faster than DDPM-100 per action chunk, at "
        f"{d1['success_rate']:.0%} vs {dd['success_rate']:.0%} success (same training work)."
    )
    moving = []
    for model in ("distributional", "ddpm"):
        pts = sorted((c["step"], c["success"]) for c in curves if c["model"] == model)
        flat = flatten_step(pts, episodes)
        if flat is None or flat == pts[-1][0]:
            seen = ", ".join(f"{v:.0%}" for _, v in pts)
            moving.append(f"{model}'s validation success still moved ({seen} at its last "
                          "checkpoints)")  # fmt: skip
        else:
            loss = train.get(model, {}).get("val_loss_still_falling")
            also = "" if loss is None else f"; its validation loss still fell {loss:.0%}"
            said += f" {model}: validation success flat from step {flat}{also}."
    if moving:
        said += (" Caveat, not yet converged: " + "; ".join(moving) +
                 ". Train longer (dpd demo steps=...) for a settled comparison.")  # fmt: skip
    return said


def run(cfg: DemoRun, command: str | None = None) -> dict[str, Any]:
    out = Path(cfg.output_dir)
    preset = BenchPreset(tasks=[cfg.task], demos=cfg.demos, network=cfg.network, steps=cfg.steps,
                         batch_size=cfg.batch_size, m=cfg.m, threads=cfg.threads,
                         curve_points=cfg.curve_points,
                         curve_episodes=cfg.curve_episodes)  # fmt: skip
    bench = BenchRun(device=cfg.device, workers=cfg.workers, progress=cfg.progress)
    minutes = preset.steps * preset.batch_size / 256 * 0.45 / 60
    stages = {"demos": 0.5, "evaluate": 2.0}
    stages |= {f"{cfg.task}: seed 0: train {m}": minutes for m in ("ddpm", "distributional")}
    clock = StageClock(stages)
    clock.start("demos", f"({cfg.demos} scripted-expert episodes of {cfg.task})")
    data = out / f"{cfg.task}.zarr"
    collect(cfg.task, cfg.demos, str(data), workers=cfg.workers, progress=cfg.progress)
    train = _train(cfg.task, bench, dataclasses.replace(preset, models=["distributional", "ddpm"]),
                   0, data, out, clock)  # fmt: skip
    clock.start("evaluate", f"({cfg.episodes} test episodes per sampler)")
    source = EnvSource.from_spec(policy_from_checkpoint(out / "ddpm")[1].meta["env"])
    curves = _curves(cfg.task, bench, preset, out, 0, source)
    rows, demo_modes = _evaluate(cfg, out, out)
    table = markdown_table(rows, demo_modes)
    title = (
        f"{cfg.task}: {cfg.steps} steps x {cfg.batch_size} examples per model, "
        f"{cfg.episodes} episodes"
    )
    plot = plot_results(rows, out / "demo.png", title)
    said = verdict(rows, train, curves, cfg.curve_episodes)
    record = {"rows": rows, "train": train, "curves": curves, "verdict": said,
              "config": dataclasses.asdict(cfg)}  # fmt: skip
    write_json_atomic(out / "demo.json", {**record, "command": command})
    (out / "demo.md").write_text(f"{table}\n\n{said}\n")
    clock.start("done")
    print(f"\n{table}\n\n{said}", file=sys.stderr)
    videos = out / "eval" / "distributional-1" / "videos"
    print(
        f"plot: {plot}\nvideos: {videos}\ncheckpoints: {out / 'distributional'}, {out / 'ddpm'}",
        file=sys.stderr,
    )
    return record
