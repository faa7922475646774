"""The bodies of the ``dpd`` commands; each takes the composed config as a plain dict."""

from __future__ import annotations

import json
import sys
from typing import Any


def train(cfg: dict[str, Any]) -> dict[str, Any]:
    from ..training.build import train_from_config

    summary = train_from_config(cfg)
    keys = ("step", "loss", "val_loss", "train_wallclock_s", "checkpoint")
    print(json.dumps({k: summary[k] for k in keys if k in summary}, indent=1), file=sys.stderr)
    return summary


def collect(cfg: dict[str, Any]) -> dict[str, Any]:
    from ..data.collect import collect as run_collect

    out = cfg.get("output") or f"data/{cfg['task']}{'_image' if cfg['obs'] == 'image' else ''}.zarr"
    summary = run_collect(
        cfg["task"],
        int(cfg["episodes"]),
        out,
        obs_mode=cfg["obs"],
        seed=int(cfg["seed"]),
        workers=int(cfg["workers"]),
        image_size=int(cfg["image_size"]),
        progress=bool(cfg["progress"]),
    )
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return summary


def resolve_sampler(ckpt_sampler: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """The sampler to evaluate with: the checkpoint's default with the non-null overrides on top,
    or, when the method changes, that method's defaults (configs/sampler/<method>.yaml)."""
    import importlib.resources

    import yaml

    ov = {k: v for k, v in (override or {}).items() if v is not None}
    method = ov.get("method", ckpt_sampler.get("method"))
    if method != ckpt_sampler.get("method"):
        files = (
            importlib.resources.files("diffusion_policy_dist.configs")
            / "sampler"
            / f"{method}.yaml"
        )
        if not files.is_file():
            raise ValueError(f"unknown sampler {method!r}")
        base = yaml.safe_load(files.read_text())
    else:
        base = dict(ckpt_sampler)
    base.update(ov)
    return base


def env_spec_from_cfg(cfg: dict[str, Any], ckpt_env: dict[str, Any] | None) -> dict[str, Any]:
    """The env to evaluate in: the checkpoint's, a built-in task, or any gymnasium env."""
    from ..evaluation import dpd_env_spec, gym_env_spec

    task = cfg.get("task")
    if task is None:
        if not ckpt_env:
            raise ValueError(
                "the checkpoint records no env (its dataset had no 'env' attribute); "
                "pass task=<name> or task=gym env.id=<id>"
            )
        spec = dict(ckpt_env)
        if cfg.get("obs") and spec.get("type") == "dpd":
            spec = dpd_env_spec(spec["task"], cfg["obs"], spec.get("image_size", 96))
        return spec
    if task == "gym":
        e = cfg.get("env") or {}
        if not e.get("id"):
            raise ValueError("task=gym needs env.id=<registered gymnasium id>")
        return gym_env_spec(
            e["id"],
            e.get("obs_keys"),
            e.get("success_key"),
            e.get("module"),
            e.get("kwargs"),
            e.get("max_episode_steps"),
        )
    obs = cfg.get("obs") or (ckpt_env or {}).get("obs_mode", "lowdim")
    return dpd_env_spec(task, obs, (ckpt_env or {}).get("image_size", 96))


def evaluate(cfg: dict[str, Any]) -> dict[str, Any]:
    from pathlib import Path

    from ..evaluation import evaluate as run_eval
    from ..evaluation import format_summary
    from ..policy.config import SamplerConfig, from_dict
    from ..training.build import policy_from_checkpoint, resolve_device

    policy, ckpt = policy_from_checkpoint(
        cfg["checkpoint"],
        use_ema=bool(cfg.get("use_ema", True)),
        device=resolve_device(cfg.get("device")),
    )
    sampler = from_dict(
        SamplerConfig,
        resolve_sampler(ckpt.meta["policy"]["sampler"], cfg.get("sampler")),
        "sampler",
    )
    spec = env_spec_from_cfg(cfg, ckpt.meta.get("env"))
    run_dir = ckpt.path.parent.parent if ckpt.path.parent.name == "checkpoints" else ckpt.path
    out = cfg.get("output_dir") or str(Path(run_dir) / "eval" / f"{sampler.method}-{sampler.steps}")
    result = run_eval(
        policy,
        spec,
        cfg.get("eval"),
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


def info(cfg: dict[str, Any]) -> None:
    import os

    path = cfg["path"]
    if os.path.exists(os.path.join(path, "meta", "episode_ends")) or os.path.exists(
        os.path.join(path, "meta")
    ):
        from ..data import ReplayBuffer, infer_shape_meta
        from ..data.collect import demo_mode_freq

        buf = ReplayBuffer.open(path)
        print(buf)
        print(
            json.dumps(
                {
                    "shape_meta": infer_shape_meta(buf) if "action" in buf.keys() else None,
                    "env": dict(buf.attrs.get("env") or {}) or None,
                    "mode_freq": demo_mode_freq(buf),
                    "episode_lengths": {
                        "min": int(buf.episode_lengths.min()) if buf.n_episodes else 0,
                        "max": int(buf.episode_lengths.max()) if buf.n_episodes else 0,
                    },
                },
                indent=1,
            )
        )
        return
    from ..training.checkpoint import load_checkpoint

    ck = load_checkpoint(path)
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
    )
    print(f"checkpoint {ck.path}")
    print(
        json.dumps({k: ck.meta.get(k) for k in keep} | {"policy": ck.meta.get("policy")}, indent=1)
    )


def bench(cfg: dict[str, Any]) -> dict[str, Any]:
    from ..benchmarks.bench import run

    return run(cfg)


def demo(cfg: dict[str, Any]) -> dict[str, Any]:
    from .demo import run

    return run(cfg)


def import_robomimic(cfg: dict[str, Any]) -> dict[str, Any]:
    from pathlib import Path

    from ..data.robomimic import import_robomimic as run_import

    out = cfg.get("output") or f"data/{Path(cfg['input']).stem}.zarr"
    summary = run_import(
        cfg["input"],
        out,
        obs_keys=cfg.get("obs_keys"),
        overwrite=bool(cfg.get("overwrite")),
        progress=bool(cfg.get("progress", True)),
    )
    print(json.dumps(summary, indent=1), file=sys.stderr)
    return summary
