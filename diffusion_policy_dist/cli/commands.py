"""The bodies of the ``dpd`` commands; each takes its validated config object."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

from .schemas import CollectRun, EvalRun, ImportRobomimicRun, InfoRun


def run(name: str, cfg: Any, command_line: str) -> int:
    """Run command function ``name``; returns the exit status (1 with a clean message for a
    user error, unless ``DPD_TRACEBACK`` is set)."""
    from ..data import DatasetError
    from ..data.lock import DatasetLockedError
    from ..envs.spec import UntrustedEnvError
    from ..envs.workers import EnvBuildError
    from ..training.checkpoint import CheckpointError

    fn = globals()[name]
    try:
        out = fn(cfg, command_line) if name in ("bench", "demo") else fn(cfg)
    except KeyboardInterrupt:
        print(f"{command_line.split()[1]}: interrupted", file=sys.stderr)
        return 130
    except (
        ValueError,
        FileNotFoundError,
        FileExistsError,
        KeyError,
        ImportError,
        DatasetError,
        CheckpointError,
        UntrustedEnvError,
        DatasetLockedError,
        EnvBuildError,
    ) as e:
        if os.environ.get("DPD_TRACEBACK"):
            raise
        print(f"dpd {command_line.split()[1]}: error: {e}", file=sys.stderr)
        print("(set DPD_TRACEBACK=1 for the full traceback)", file=sys.stderr)
        return 1
    return out if isinstance(out, int) else 0


def train(cfg) -> int:
    """Exit status 0, or 128 + the signal (130 for Ctrl-C, 143 for SIGTERM) when a signal
    stopped the run: its checkpoint is saved, but it is not the requested training."""
    from ..training.build import train_from_config

    summary = train_from_config(cfg)
    keys = ("step", "loss", "val_loss", "train_wallclock_s", "checkpoint")
    main_rank = os.environ.get("RANK", "0") == "0"  # under torchrun, one summary
    if main_rank:
        print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=1), file=sys.stderr)
    if summary.get("stop_signal"):
        if main_rank:
            print(
                f"training stopped by signal {summary['stop_signal']} at step "
                f"{summary['step']}; re-run the same command to continue",
                file=sys.stderr,
            )
        return 128 + int(summary["stop_signal"])
    return 0


def collect(cfg: CollectRun) -> dict[str, Any]:
    from ..data.collect import Source, collect_from
    from ..env_options import env_spec, trust_of
    from ..envs.spec import task_env_spec

    if cfg.task in ("gym", "python"):
        spec = env_spec(cfg.task, None, cfg.env)
        if not cfg.expert:
            raise ValueError(f"task={cfg.task} has no scripted expert; name one: expert=module:fn")
        expert, name = cfg.expert, str(spec.get("env_id") or "env").replace("/", "_")
    else:
        spec = task_env_spec(cfg.task, cfg.obs, cfg.image_size)
        expert, name = cfg.expert or f"task:{cfg.task}", cfg.task
    out = cfg.output or f"data/{name}{'_image' if cfg.obs == 'image' else ''}.zarr"
    source = Source(spec, expert, trust_of(cfg.env, cfg.expert))
    summary = collect_from(source, cfg.episodes, out, cfg.seed, cfg.workers, cfg.progress)
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return summary


def evaluate(cfg: EvalRun) -> dict[str, Any]:
    from ..env_options import env_spec, trust_of
    from ..envs.workers import EnvSource
    from ..evaluation import evaluate as run_eval
    from ..evaluation import format_summary
    from ..training.build import policy_from_checkpoint, resolve_device

    policy, ckpt = policy_from_checkpoint(
        cfg.checkpoint, use_ema=cfg.use_ema, device=resolve_device(cfg.device)
    )
    sampler = cfg.sampler if cfg.sampler is not None else policy.sampler_cfg
    spec = env_spec(cfg.task, cfg.obs, cfg.env, ckpt.meta.get("env"))
    if spec is None:
        raise ValueError(
            "the checkpoint records no env (train with task=<name> or task=gym env.id=..., or "
            "on a dataset that records its env); pass task=<name> or task=gym env.id=<id>"
        )
    trust = trust_of(cfg.env)
    run_dir = ckpt.path.parent.parent if ckpt.path.parent.name == "checkpoints" else ckpt.path
    name = f"{sampler.kind}-{sampler.steps}"
    if cfg.eval.control_hz:
        name += f"-{cfg.eval.control_hz:g}hz-{cfg.eval.transition}"
    out = cfg.output_dir or str(Path(run_dir) / "eval" / name)
    result = run_eval(
        policy,
        EnvSource.from_spec(spec, trust),
        cfg.eval,
        sampler=sampler,
        output_dir=out,
        checkpoint=str(ckpt.path),
        extra={
            "demo_mode_freq": ckpt.meta.get("demo_mode_freq"),
            "train_step": ckpt.meta.get("step"),
        },
    )
    print(f"\n{format_summary(result)}\n  results -> {out}/eval.json", file=sys.stderr)
    return result


def _is_dataset(path: str) -> bool:
    return path.endswith(".zip") or os.path.exists(os.path.join(path, "meta"))


def _lerobot_info(path: str) -> int:
    from ..data.lerobot import LeRobotFolder, check

    folder = LeRobotFolder(path)
    problems = check(folder)
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    lengths = [e.length for e in folder.episodes]
    spread = {"min": min(lengths, default=0), "max": max(lengths, default=0)}
    summary = {**folder.describe(), "problems": problems, "episode_lengths": spread}
    print(json.dumps(summary, indent=1))
    return 1 if problems else 0


def info(cfg: InfoRun) -> int:
    from ..data.lerobot import is_lerobot

    if cfg.path.endswith(".onnx"):  # an exported policy: its metadata (checked on loading)
        from ..runtime import OnnxPolicy

        print(json.dumps(OnnxPolicy(cfg.path).meta, indent=1))
        return 0
    if is_lerobot(cfg.path):
        return _lerobot_info(cfg.path)
    if _is_dataset(cfg.path):
        from ..data import ReplayBuffer, infer_shape_meta

        buf = ReplayBuffer.open(cfg.path)
        lengths = buf.episode_lengths
        print(buf)
        problems = [*buf.problems, *buf.verify()]
        for problem in problems:
            print(f"PROBLEM: {problem}", file=sys.stderr)
        summary = {
            "problems": problems,
            "shape_meta": infer_shape_meta(buf) if "action" in buf.keys() else None,
            "env": dict(buf.attrs.get("env") or {}) or None,
            "mode_freq": buf.mode_frequencies(),
            "episode_lengths": {
                "min": int(lengths.min()) if buf.n_episodes else 0,
                "max": int(lengths.max()) if buf.n_episodes else 0,
            },
        }
        print(json.dumps(summary, indent=1))
        return 1 if problems else 0
    from ..training.checkpoint import read_meta, resolve_checkpoint

    meta = read_meta(cfg.path)
    keep = (
        "step",
        "total_steps",
        "train_wallclock_s",
        "shape_meta",
        "window",
        "env",
        "demo_mode_freq",
        "network_params",
        "device",
        "created",
        "git_commit",
        "versions",
        "policy",
    )
    print(f"checkpoint {resolve_checkpoint(cfg.path)}")
    print(json.dumps({k: meta.get(k) for k in keep}, indent=1))
    return 0


def repair(cfg: InfoRun) -> int:
    """Cut a dataset back to its committed episodes (what an interrupted writer left), so that
    any reader, Diffusion Policy's included, opens it."""
    import warnings

    from ..data import ReplayBuffer

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with ReplayBuffer.open(cfg.path, writable=True) as buf:
            n, steps = buf.n_episodes, buf.n_steps
    for w in caught:
        print(str(w.message), file=sys.stderr)
    buf = ReplayBuffer.open(cfg.path)
    left = [*buf.problems, *buf.verify()]
    for problem in left:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    print(f"{cfg.path}: {n} episodes, {steps} steps" + ("" if caught else "; nothing to repair"))
    return 1 if left else 0


def _stopped(e) -> int:
    print(f"{e}; re-run the same command to continue", file=sys.stderr)
    return 128 + e.signum


def bench(cfg, command_line: str) -> dict[str, Any] | int:
    """The bench's results, or 128 + the signal that stopped a training (checkpoint saved)."""
    from ..benchmarks.bench import run as run_bench
    from ..benchmarks.suite import TrainingStopped

    try:
        return run_bench(cfg, command_line)
    except TrainingStopped as e:
        return _stopped(e)


def demo(cfg, command_line: str) -> dict[str, Any] | int:
    """The demo's record, or 128 + the signal that stopped a training (checkpoint saved)."""
    from ..benchmarks.demo import run as run_demo
    from ..benchmarks.suite import TrainingStopped

    try:
        return run_demo(cfg, command_line)
    except TrainingStopped as e:
        return _stopped(e)


def export(cfg) -> dict[str, Any]:
    from ..benchmarks.runs import parse_sampler
    from ..export import export_onnx
    from ..training.build import load_policy

    policy = load_policy(cfg.checkpoint, use_ema=cfg.use_ema)
    sampler = parse_sampler(cfg.sampler) if cfg.sampler else None
    out = cfg.output or str(Path(cfg.checkpoint) / "policy.onnx")
    batch = "dynamic" if cfg.batch == "dynamic" else int(cfg.batch)
    meta = export_onnx(policy, out, sampler, batch, cfg.checkpoint, cfg.opset)
    noise = ", ".join(f"{n['name']} {n['shape']}" for n in meta["noise"])
    print(f"wrote {out} ({Path(out).stat().st_size / 1e6:.1f} MB): sampler "
          f"{meta['sampler']['kind']}-{meta['sampler']['steps']}, batch {meta['batch']}, "
          f"noise inputs {noise}", file=sys.stderr)  # fmt: skip
    return meta


def import_lerobot(cfg) -> dict[str, Any]:
    from ..data.lerobot import to_replay_buffer

    out = cfg.output or f"data/{Path(cfg.input).resolve().name}.zarr"
    summary = to_replay_buffer(cfg.input, out, cfg.keys, cfg.overwrite, cfg.progress)
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return summary


def export_lerobot(cfg) -> dict[str, Any]:
    from ..data.lerobot_write import from_replay_buffer

    summary = from_replay_buffer(cfg.input, cfg.output, cfg.fps, cfg.task)
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return summary


def tune(cfg) -> dict[str, Any]:
    from .tune import tune as run_tune

    return run_tune(cfg)


def import_robomimic(cfg: ImportRobomimicRun) -> dict[str, Any]:
    from ..data.robomimic import import_robomimic as run_import

    out = cfg.output or f"data/{Path(cfg.input).stem}.zarr"
    summary = run_import(
        cfg.input, out, obs_keys=cfg.obs_keys, overwrite=cfg.overwrite, progress=cfg.progress
    )
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return summary
