"""How fast each model learns per unit of training work: validation success (and the env's
score) against FLOPs, examples and network rows, for DDPM and distributional variants.

The variants differ in how the m generator samples of an example are paid for: ``concat_m*``
feed the noise at the input (m whole network passes per example; at 256 rows per step, as the
bench used to compare, it sees 256 / m examples per step); ``late_m*`` feed it into the last
decoder level only (one trunk pass and m small heads per example; 256 examples per step, as
DDPM). ``*_bf16`` train under bfloat16 autocast. Each variant trains once (one seed, one torch
thread, ``--jobs`` at a time, each in its own process) keeping ``--points`` checkpoints, and every
checkpoint is rolled out on validation seeds (distributional-1 for generators, DDPM-100 for the
mean model). Finished trainings and evaluations are reused, so an interrupted run continues.

    python benchmarks/train_efficiency.py --task obstacle_avoid --steps 1000 --points 10
    python benchmarks/train_efficiency.py --task pusht --obs keypoints --steps 3000 --points 6 \\
        --variants ddpm,late_m8,concat_m8,concat_m2

Writes ``benchmarks/results/train_efficiency/<task>.{json,md,png}`` with the command.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import json
import multiprocessing as mp
import os
import shlex
import sys
from pathlib import Path
from typing import Any

from diffusion_policy_dist.benchmarks.suite import results_header, train_run, val_losses

from diffusion_policy_dist.files import write_json_atomic

ROWS = 256  # network rows per step of the equal-rows variants (the bench's budget)
VARIANTS: dict[str, dict[str, Any]] = {
    "ddpm": {"policy": "ddpm", "batch": 256},
    "ddpm_bf16": {"policy": "ddpm", "batch": 256, "precision": "bf16"},
    **{
        f"concat_m{m}": {"policy": "distributional", "m": m, "batch": ROWS // m}
        for m in (2, 4, 8, 16)
    },
    "late_m4": {"policy": "distributional", "m": 4, "batch": 256, "late": 1},
    "late_m8": {"policy": "distributional", "m": 8, "batch": 256, "late": 1},
    "late_m16": {"policy": "distributional", "m": 16, "batch": 256, "late": 1},
    "late2_m8": {"policy": "distributional", "m": 8, "batch": 256, "late": 2},
    "late_m8_bf16": {"policy": "distributional", "m": 8, "batch": 256, "late": 1,
                     "precision": "bf16"},
}  # fmt: skip


def overrides(v: dict[str, Any], data: Path, steps: int, points: int, seed: int) -> list[str]:
    """``dpd train`` overrides of one variant."""
    every = max(1, steps // points)
    out = [
        f"dataset.path={data}", f"policy={v['policy']}", "network=small",
        f"training.steps={steps}", f"training.batch_size={v['batch']}",
        f"training.val_every={max(1, steps // 20)}", f"training.log_every={max(1, steps // 50)}",
        f"training.checkpoint_every={every}", f"training.keep_every={every}",
        f"training.precision={v.get('precision', 'fp32')}", f"seed={seed}", "threads=1",
        "device=cpu", "training.progress=false",
    ]  # fmt: skip
    if v["policy"] == "distributional":
        out.append(f"loss.m={v['m']}")
    if v.get("late"):
        out += ["policy.noise_injection=late", f"policy.noise_levels={v['late']}"]
    return out


def evaluate_point(ckpt: Path, episodes: int) -> dict[str, Any]:
    """Validation success and score of one checkpoint with its model's reference sampler."""
    import torch
    from diffusion_policy_dist.envs import VALIDATION_SEED_BASE
    from diffusion_policy_dist.envs.workers import EnvSource

    from diffusion_policy_dist.evaluation import EnvPool, evaluate
    from diffusion_policy_dist.training.build import policy_from_checkpoint

    torch.set_num_threads(1)
    pol, loaded = policy_from_checkpoint(ckpt, device="cpu")
    meta = loaded.meta
    dist = meta["policy"]["kind"] == "distributional"
    sampler = {"kind": "distributional", "steps": 1} if dist else {"kind": "ddpm", "steps": 100}
    source = EnvSource.from_spec(meta["env"])
    ev = {"episodes": episodes, "n_envs": episodes, "vector": "sync", "progress": False,
          "seed": VALIDATION_SEED_BASE, "rollout_threads": 1, "latency_trials": 0}  # fmt: skip
    with EnvPool(source, episodes, processes=False) as pool:
        res = evaluate(pol, source, ev, sampler=sampler, pool=pool)
    return {"step": meta["step"], "success": res["success_rate"],
            "score": res.get("mean_score"), "sampler": sampler}  # fmt: skip


def run_variant(name: str, args: dict[str, Any]) -> dict[str, Any]:
    """Train (or reuse) one variant and evaluate (or reuse) its checkpoints."""
    v, work = VARIANTS[name], Path(args["work_dir"]) / name
    data = Path(args["work_dir"]) / "demos.zarr"
    meta = train_run(overrides(v, data, args["steps"], args["points"], args["seed"]), work, True)
    cache = work / "curve.json"
    done = json.loads(cache.read_text()) if cache.exists() else {}
    kept = sorted((work / "checkpoints").glob("step_*"))
    for ck in [*kept, work / "checkpoints" / "latest"]:
        key = ck.name if ck.name != "latest" else f"step_{meta['step']:07d}"
        if key not in done:
            done[key] = evaluate_point(ck, args["episodes"])
            write_json_atomic(cache, done)
    per_step = meta.get("train_flops_per_step") or 0
    rows = v["batch"] * v.get("m", 1)
    curve = []
    for p in sorted(done.values(), key=lambda p: p["step"]):
        s = p["step"]
        curve.append({**p, "examples": s * v["batch"], "rows": s * rows, "flops": s * per_step})
    return {
        "variant": name, **v, "rows_per_step": rows, "flops_per_step": per_step,
        "step_ms": 1000 * meta["train_wallclock_s"] / max(1, meta["step"]),
        "params": meta.get("network_params"), "curve": curve,
        "val_loss": val_losses(work / "metrics.jsonl"),
    }  # fmt: skip


def _reach(curve: list[dict], key: str, level: float, unit: str) -> float | None:
    """The first ``unit`` amount at which ``key`` reaches ``level`` (None: never)."""
    return next((p[unit] for p in curve if (p.get(key) or 0.0) >= level), None)


def markdown(result: dict[str, Any]) -> str:
    h, vs, key = result["header"], result["variants"], result["header"]["metric"]
    ref = next((v for v in vs if v["variant"] == "ddpm"), vs[0])
    ref_final = ref["curve"][-1][key]
    lines = [
        f"# Training efficiency on {h['task']} ({h['obs']})", "",
        f"Command: `{h['command']}`  ", f"Commit `{h['git_commit']}`, {h['date']}, {h['machine']}",
        "", f"{h['steps']} optimizer steps per variant, seed {h['seed']}, validation {key} on "
        f"{h['episodes']} validation episodes per checkpoint (generators: distributional-1; "
        "DDPM: DDPM-100). FLOPs: matrix products and convolutions of a step's forward and "
        "backward pass, counted by torch. Time per step: one torch thread, runs side by side "
        f"({h['jobs']} at a time) on a shared machine.", "",
        f"| variant | examples / step | rows / step | GFLOP / step | x DDPM | ms / step | x DDPM "
        f"| final {key} | best {key} | TFLOP to {0.95 * ref_final:.2f} (95% of DDPM's final) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for v in vs:
        reach = _reach(v["curve"], key, 0.95 * ref_final, "flops")
        best = max(p[key] or 0.0 for p in v["curve"])
        lines.append(
            f"| {v['variant']} | {v['batch']} | {v['rows_per_step']} | "
            f"{v['flops_per_step'] / 1e9:.1f} | {v['flops_per_step'] / ref['flops_per_step']:.2f} "
            f"| {v['step_ms']:.0f} | {v['step_ms'] / ref['step_ms']:.2f} | "
            f"{v['curve'][-1][key]:.2f} | {best:.2f} | "
            f"{'never' if reach is None else f'{reach / 1e12:.0f}'} |"
        )
    lines += ["", f"![curves]({Path(h['plot']).name})", ""]
    return "\n".join(lines)


def plot(result: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    key = result["header"]["metric"]
    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    for v in result["variants"]:
        style = {"color": "black", "lw": 2} if v["variant"].startswith("ddpm") else {}
        if v["variant"].endswith("bf16"):
            style["ls"] = "--"
        for ax, unit, scale in zip(axes[:2], ("flops", "examples"), (1e12, 1e3), strict=True):
            xs = [p[unit] / scale for p in v["curve"]]
            ax.plot(xs, [p[key] for p in v["curve"]], marker="o", label=v["variant"], **style)
        steps, losses = zip(*v["val_loss"], strict=True) if v["val_loss"] else ((), ())
        flops = [s * v["flops_per_step"] / 1e12 for s in steps]
        axes[2].plot(flops, losses, label=v["variant"], **style)
    for ax, xl in zip(axes, ("training TFLOPs", "training examples (thousands)",
                             "training TFLOPs"), strict=True):  # fmt: skip
        ax.set_xlabel(xl)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(f"validation {key}")
    axes[1].set_ylabel(f"validation {key}")
    axes[2].set_ylabel("validation loss (own objective)")
    axes[2].set_yscale("log")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"{result['header']['task']}: learning per unit of training work")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", default="obstacle_avoid")
    ap.add_argument("--obs", default="state")
    ap.add_argument("--demos", type=int, default=200)
    ap.add_argument("--steps", type=int, default=1000)
    ap.add_argument("--points", type=int, default=10)
    ap.add_argument("--episodes", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--work-dir", default="outputs/train_efficiency")
    ap.add_argument("--output", default="benchmarks/results/train_efficiency")
    a = ap.parse_args(argv)
    names = [n.strip() for n in a.variants.split(",") if n.strip()]
    bad = [n for n in names if n not in VARIANTS]
    if bad:
        raise SystemExit(f"unknown variants {bad}; choose from {list(VARIANTS)}")
    return run(a, names)


def run(a: argparse.Namespace, names: list[str]) -> dict[str, Any]:
    from diffusion_policy_dist.data.collect import collect

    work = Path(a.work_dir) / f"{a.task}{'' if a.obs == 'state' else '_' + a.obs}"
    collect(a.task, a.demos, str(work / "demos.zarr"), obs=a.obs, workers=2, progress=False)
    args = {**vars(a), "work_dir": str(work)}
    os.environ.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    ctx = mp.get_context("spawn")
    with cf.ProcessPoolExecutor(a.jobs, mp_context=ctx) as ex:
        futures = {n: ex.submit(run_variant, n, args) for n in names}
        variants = []
        for n in names:
            variants.append(futures[n].result())
            print(f"[train_efficiency] {n} done", file=sys.stderr, flush=True)
    out = Path(a.output)
    out.mkdir(parents=True, exist_ok=True)
    stem = out / work.name
    command = "python benchmarks/train_efficiency.py " + shlex.join(sys.argv[1:])
    metric = "score" if variants[0]["curve"][0].get("score") is not None else "success"
    head = results_header(command, "cpu", task=a.task, obs=a.obs, steps=a.steps, seed=a.seed,
                          episodes=a.episodes, jobs=a.jobs, demos=a.demos, metric=metric,
                          plot=str(stem) + ".png")  # fmt: skip
    result = {"header": head, "variants": variants}
    write_json_atomic(Path(f"{stem}.json"), result)
    plot(result, Path(f"{stem}.png"))
    Path(f"{stem}.md").write_text(markdown(result))
    print(f"wrote {stem}.md", file=sys.stderr)
    return result


if __name__ == "__main__":
    main()
