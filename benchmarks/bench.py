"""``dpd bench``: coarse-step distributional sampling against DDPM, DDIM, conjugate and
phase-space integrators, at equal work.

For each task (state or image observations) and each training seed:

1. collect expert demonstrations (reused when present);
2. train every model of the preset with the same UNet and the same work (optimizer steps of
   equal network rows), each in its own process, keeping checkpoints for the convergence curve;
3. tune the conjugate integrator's lambda per NFE on *validation* seeds (in the sweep);
4. evaluate every sampler on the *test* seeds (and truncated-diffusion priors fitted to the
   trained models);

then pool the seeds (mean and 95% interval across seeds; pooled episodes with a Wilson interval)
and write ``<task>.json`` (every row, with a provenance header), ``<task>.md``, ``<task>.png`` and
``<task>_convergence.png``, and check the package's targets on the measured numbers.
"""

from __future__ import annotations

import copy
import dataclasses
import os
import sys
from pathlib import Path
from typing import Any

from diffusion_policy_dist.benchmarks.config import BenchPreset, BenchRun
from diffusion_policy_dist.benchmarks.report import rewrite_reports, write_report
from diffusion_policy_dist.benchmarks.runs import model_for, parse_sampler, pool_seeds, sweep
from diffusion_policy_dist.benchmarks.suite import (
    StageClock,
    result_row,
    results_header,
    still_falling,
    train_many,
    train_run,
    work_train_overrides,
)
from diffusion_policy_dist.benchmarks.summary import summarize
from diffusion_policy_dist.envs import EVAL_SEED_BASE, VALIDATION_SEED_BASE
from diffusion_policy_dist.envs.workers import EnvSource

from diffusion_policy_dist.data.collect import collect
from diffusion_policy_dist.evaluation import EnvPool, evaluate
from diffusion_policy_dist.training.build import policy_from_checkpoint, resolve_device


def resolve_preset(cfg: BenchRun, task: str | None = None) -> BenchPreset:
    """The chosen preset, with its ``image`` settings for ``obs=image`` and ``task``'s own."""
    if cfg.preset not in cfg.presets:
        raise ValueError(f"unknown preset {cfg.preset!r}; choose one of {sorted(cfg.presets)}")
    preset = cfg.presets[cfg.preset]
    if cfg.obs == "image" and preset.image:
        preset = dataclasses.replace(preset, **preset.image)
    if task is not None and task in preset.task_settings:
        preset = dataclasses.replace(preset, **preset.task_settings[task])
    return preset


def _tasks(cfg: BenchRun) -> list[str]:
    if cfg.task in (None, "all"):
        return list(resolve_preset(cfg).tasks)
    return [t.strip() for t in str(cfg.task).split(",") if t.strip()]


def _obs(cfg: BenchRun, task: str) -> str:
    """The observation mode ``task`` runs with: the run's, or the task's low-dim mode."""
    return resolve_preset(cfg, task).state_obs if cfg.obs == "state" else cfg.obs


def _name(cfg: BenchRun, task: str) -> str:
    """``task``, suffixed with its observation mode unless that is ``state``."""
    obs = _obs(cfg, task)
    return f"{task}{'' if obs == 'state' else '_' + obs}"


def _stem(cfg: BenchRun, task: str) -> Path:
    out = Path(cfg.output_dir) if cfg.preset == "quick" else Path(cfg.output_dir) / cfg.preset
    return out / _name(cfg, task)


def _train(task: str, cfg: BenchRun, p: BenchPreset, seed: int, data: Path, work: Path, clock):
    """Train (or reuse) every model for one seed; returns per-model training facts."""
    device, out = resolve_device(cfg.device), {}
    for model in p.models:
        clock.start(
            f"{task}: seed {seed}: train {model}",
            f"({p.steps} steps of {p.batch_size} examples)"
            if p.batch_size
            else f"({p.steps} steps of {p.batch_rows} rows)",
        )
        meta = train_run(_train_args(cfg, p, seed, data, model, device), work / model)
        keys = ("step", "train_wallclock_s", "peak_memory_mb", "network_params", "rows_per_step",
                "batch_size", "train_flops_per_step", "precision")  # fmt: skip
        out[model] = {k: meta.get(k) for k in keys}
        out[model]["step_ms"] = 1000 * meta["train_wallclock_s"] / max(1, meta["step"])
        out[model]["val_loss_still_falling"] = still_falling(work / model / "metrics.jsonl")
    return out


def _train_args(cfg: BenchRun, p: BenchPreset, seed: int, data: Path, model: str, device):
    args = work_train_overrides(data, model, p.network, p.steps, p.batch_rows, p.m, seed,
                                p.curve_points, device, cfg.progress, p.threads,
                                p.batch_size)  # fmt: skip
    if cfg.obs == "image" and p.crop_shape:
        args.append("policy.obs_encoder.crop_shape=" + str(list(p.crop_shape)))
    if p.num_workers:
        args.append(f"training.num_workers={p.num_workers}")
    if p.precision != "fp32":
        args.append(f"training.precision={p.precision}")
    return args


def _train_all(task: str, cfg: BenchRun, p: BenchPreset, base: Path, data: Path, clock) -> None:
    """Every (seed, model) training, ``cfg.jobs`` at a time (then each is reused)."""
    runs = [(s, m) for s in p.seeds for m in p.models]
    clock.start(f"{task}: train {len(runs)} runs, {cfg.jobs} at a time")
    device = resolve_device(cfg.device)
    train_many(cfg.jobs, [(_train_args(cfg, p, s, data, m, device), base / f"seed{s}" / m)
                          for s, m in runs], quiet=True)  # fmt: skip


def _eval_cfg(p: BenchPreset, episodes: int, seed: int, progress: bool, latency: bool, dev):
    return {
        "episodes": episodes,
        "n_envs": episodes,
        "vector": "sync",
        "seed": seed,
        "progress": progress,
        "rollout_threads": p.threads,
        "torch_threads": 1 if dev.type == "cpu" else None,
        "latency_trials": 30 if latency else 0,
    }


def _tune(pol, source, p: BenchPreset, progress: bool, dev) -> dict[int, dict]:
    """Conjugate's lambda per NFE on validation seeds: best success, ties toward DDIM."""
    out = {}
    ev = _eval_cfg(p, p.val_episodes, VALIDATION_SEED_BASE, progress, False, dev)
    with EnvPool(source, p.val_episodes, processes=False) as pool:
        for k in p.nfe:
            grid = list(p.lambdas_at_100 if k >= 100 else p.lambdas)
            scores = {lam: evaluate(pol, source, ev, {"kind": "conjugate", "steps": k, "lam": lam},
                                    pool=pool)["success_rate"] for lam in grid}  # fmt: skip
            best = max(grid, key=lambda lam: (scores[lam], -abs(lam)))
            out[k] = {"best": best, "scores": {str(a): v for a, v in scores.items()}}
    return out


def _prior_runs(policies: dict, p: BenchPreset, train_set) -> list[tuple]:
    """Truncated-diffusion variants: priors fitted to copies of the trained models."""
    from diffusion_policy_dist.training.prior import fit_prior

    runs = []
    for alpha in p.priors:
        for model, kind in (("distributional", "distributional"), ("ddpm", "ddim")):
            if model not in policies:
                continue
            pol = copy.deepcopy(policies[model])
            fit_prior(pol, train_set, alpha, steps=p.prior_steps, seed=0)
            for k in p.prior_nfe:
                runs.append((pol, model, {"kind": kind, "steps": k}, f"prior {alpha:g}"))
    return runs


def _runs_for_seed(policies, p: BenchPreset, source, cfg: BenchRun, data: Path) -> tuple:
    dev = resolve_device(cfg.device)
    tuning = {}
    if p.samplers is None:
        if "ddpm" in policies:
            tuning = _tune(policies["ddpm"], source, p, cfg.progress, dev)
        pairs = sweep(p.models, p.nfe, p.churns, {k: v["best"] for k, v in tuning.items()})
    else:
        pairs = [(model_for(s, p.models), s) for s in map(parse_sampler, p.samplers)]
    runs = [(policies[m], m, s, None) for m, s in pairs]
    if p.priors:
        from diffusion_policy_dist.data import ReplayBuffer, make_datasets

        pol = next(iter(policies.values()))
        train_set, _ = make_datasets(ReplayBuffer.open(data), pol.shape_meta, pol.window)
        runs += _prior_runs(policies, p, train_set)
    return runs, tuning


def _evaluate_seed(task, cfg, p, clock, work, seed, source, data) -> tuple[list[dict], dict]:
    dev = resolve_device(cfg.device)
    policies = {m: policy_from_checkpoint(work / m, device=dev)[0] for m in p.models}
    runs, tuning = _runs_for_seed(policies, p, source, cfg, data)
    first = p.eval_seed if p.eval_seed is not None else EVAL_SEED_BASE
    ev = _eval_cfg(p, p.test_episodes, first, cfg.progress, True, dev)
    rows = []
    with EnvPool(source, p.test_episodes, processes=False) as pool:
        for i, (pol, model, sampler, variant) in enumerate(runs):
            clock.start(f"{task}: seed {seed}: test {i + 1}", f"of {len(runs)}: {model}, {sampler}")
            res = evaluate(pol, source, ev, sampler=sampler, pool=pool)
            row = result_row(task, model, res)
            label = f"{model}: {row['method']}" + (f" [{variant}]" if variant else "")
            extra = {"seed": seed, "variant": variant, "label": label}
            rows.append(result_row(task, model, res, **extra))
    return rows, {str(k): v for k, v in tuning.items()}


def _curves(task, cfg, p: BenchPreset, work: Path, seed: int, source) -> list[dict]:
    """Validation success of the kept and final checkpoints (distributional-1, DDPM-100)."""
    if not p.curve_points:
        return []
    dev, out = resolve_device(cfg.device), []
    ev = _eval_cfg(p, p.curve_episodes, VALIDATION_SEED_BASE, cfg.progress, False, dev)
    spec = {
        "distributional": {"kind": "distributional", "steps": 1},
        "ddpm": {"kind": "ddpm", "steps": 100},
    }
    with EnvPool(source, p.curve_episodes, processes=False) as pool:
        for model, sampler in spec.items():
            kept = sorted((work / model / "checkpoints").glob("step_*"))
            for ck in [*kept, work / model / "checkpoints" / "latest"]:  # the last is the final
                pol, ckpt = policy_from_checkpoint(ck, device=dev)
                res = evaluate(pol, source, ev, sampler=sampler, pool=pool)
                point = {"model": model, "seed": seed, "step": ckpt.meta["step"]}
                out.append({**point, "success": res["success_rate"],
                            "score": res.get("mean_score")})  # fmt: skip
    return out


def _realtime_task(task, cfg: BenchRun, p: BenchPreset, clock, head, base, data) -> dict:
    """The real-time preset: train as usual, then the delay sweep and the control rates."""
    from diffusion_policy_dist.benchmarks.realtime import (
        delay_sweep,
        rate_runs,
        write_realtime_report,
    )  # fmt: skip

    dev, delay_rows, rate_rows, train = resolve_device(cfg.device), [], [], {}
    first = p.eval_seed if p.eval_seed is not None else EVAL_SEED_BASE
    ev = {**_eval_cfg(p, p.test_episodes, first, cfg.progress, True, dev), "latency_trials": 10}
    for seed in p.seeds:
        work = base / f"seed{seed}"
        train[str(seed)] = _train(task, cfg, p, seed, data, work, clock)
        pols = {m: policy_from_checkpoint(work / m, device=dev)[0] for m in p.models}
        source = EnvSource.from_spec(policy_from_checkpoint(work / p.models[0])[1].meta["env"])
        clock.start(f"{task}: seed {seed}: real time")

        def note(text: str, seed: int = seed) -> None:
            print(f"[realtime] seed {seed}: {text}", file=sys.stderr, flush=True)

        rows = delay_sweep(pols, source, p.realtime, ev, seed, note)
        delay_rows += rows
        rate_rows += rate_runs(pols, source, p.realtime, ev, seed, rows, note)
    result = {
        "header": {**head, "task": task, "seeds": p.seeds, "train": train,
                   "preset_settings": dataclasses.asdict(p)},
        "delay_rows": delay_rows,
        "rate_rows": rate_rows,
    }  # fmt: skip
    write_realtime_report(result, _stem(cfg, task))
    return result


def bench_task(task: str, cfg: BenchRun, p: BenchPreset, clock: StageClock, head: dict) -> dict:
    base = Path(cfg.work_dir) / _name(cfg, task)
    clock.start(f"{task}: demonstrations")
    data = base / "demos.zarr"
    demos = collect(task, p.demos, str(data), obs=_obs(cfg, task), workers=cfg.workers,
                    image_size=p.image_size, progress=cfg.progress)  # fmt: skip
    if p.realtime is not None:
        return _realtime_task(task, cfg, p, clock, head, base, data)
    rows, train, curves, tuning, source = [], {}, [], {}, None
    if cfg.jobs > 1 or cfg.train_only:
        _train_all(task, cfg, p, base, data, clock)
    if cfg.train_only:
        return {"trained": [str(base / f"seed{s}" / m) for s in p.seeds for m in p.models]}
    for seed in p.seeds:
        work = base / f"seed{seed}"
        train[str(seed)] = _train(task, cfg, p, seed, data, work, clock)
        if source is None:
            source = EnvSource.from_spec(policy_from_checkpoint(work / p.models[0])[1].meta["env"])
        curves += _curves(task, cfg, p, work, seed, source)
        seed_rows, tuning[str(seed)] = _evaluate_seed(task, cfg, p, clock, work, seed, source, data)
        rows += seed_rows
    first = p.eval_seed if p.eval_seed is not None else EVAL_SEED_BASE
    meta = policy_from_checkpoint(base / f"seed{p.seeds[0]}" / p.models[0])[1].meta
    result = {
        "header": {
            **head,
            "task": task,
            "obs": _obs(cfg, task),
            "preset_settings": dataclasses.asdict(p),
            "demos": demos,
            "train": train,
            "lambda_tuning": tuning,
            "seeds": p.seeds,
            "demo_mode_freq": meta.get("demo_mode_freq"),
            "test_seeds": [first, first + p.test_episodes - 1],
            "validation_seeds": [VALIDATION_SEED_BASE, VALIDATION_SEED_BASE + p.val_episodes - 1],
            "load_average": list(os.getloadavg()),
        },
        "rows": rows,
        "summary": pool_seeds(rows),
        "curves": curves,
    }
    write_report(result, _stem(cfg, task), cfg.work_dir)
    return result


def _stages(tasks: list[str], cfg: BenchRun) -> dict[str, float]:
    """Expected minutes per stage (from the work, at ~0.3 s per step of 256 rows)."""
    stages = {}
    for t in tasks:
        p = resolve_preset(cfg, t)
        stages[f"{t}: demonstrations"] = 0.5
        for seed in p.seeds:
            for model in p.models:
                rows = (p.batch_size or p.batch_rows) * (2 if p.batch_size else 1)
                stages[f"{t}: seed {seed}: train {model}"] = p.steps * rows / 256 * 0.3 / 60
            for i in range(60 if p.samplers is None else len(p.samplers) + 6 * len(p.priors)):
                stages[f"{t}: seed {seed}: test {i + 1}"] = 0.1
    return stages


def run(cfg: BenchRun, command: str | None = None) -> dict[str, Any]:
    """Run the benchmark ``cfg`` describes; ``command`` (the command line) goes in the results."""
    tasks = _tasks(cfg)
    if cfg.report_only:
        return rewrite_reports([_stem(cfg, t) for t in tasks], cfg.output_dir)
    device = resolve_device(cfg.device)
    head = results_header(command, device, preset=cfg.preset, obs=cfg.obs)
    clock = StageClock(_stages(tasks, cfg))
    results = {t: bench_task(t, cfg, resolve_preset(cfg, t), clock, head) for t in tasks}
    clock.start("done")
    summary = summarize(cfg.output_dir)
    if summary:
        print(f"headline table: {summary}", file=sys.stderr)
    return results
