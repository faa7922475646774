"""From a composed run config to live objects: dataset, policy, trainer; and back from a
checkpoint to a policy.

A run config is a plain mapping with sections ``dataset``, ``window``, ``policy``, ``network``,
``schedule``, ``loss``, ``sampler``, ``training`` (see ``configs/train.yaml``). Every entry
point (``dpd train``, tests, benchmarks) goes through :func:`train_from_config`, so there is one
way to train.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from .. import __version__
from ..data import ReplayBuffer, infer_shape_meta, make_datasets
from ..data.collect import demo_mode_freq
from ..data.dataset import check_shape_meta
from ..policy import DiffusionPolicy, PolicyConfig, Window
from ..policy.config import from_dict, to_dict
from .checkpoint import Checkpoint, load_checkpoint
from .trainer import Trainer


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def git_commit() -> str | None:
    """The checkout's HEAD commit, with ``+dirty`` when tracked files differ from it (results
    made from uncommitted code say so); None outside a git checkout."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )

    try:
        sha = git("rev-parse", "HEAD").stdout.strip()
        if not sha:
            return None
        return sha + ("+dirty" if git("diff", "--quiet", "HEAD").returncode == 1 else "")
    except Exception:
        return None


def versions() -> dict[str, str]:
    import mujoco
    import numpy
    import zarr

    return {
        "diffusion_policy_dist": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "zarr": zarr.__version__,
        "mujoco": mujoco.__version__,
        "python": platform.python_version(),
    }


def policy_config(cfg: Mapping[str, Any]) -> PolicyConfig:
    """Merge ``policy`` with the ``network``, ``schedule``, ``loss`` and ``sampler`` groups."""
    merged = dict(cfg.get("policy") or {})
    for section in ("network", "schedule", "loss", "sampler"):
        if cfg.get(section) is not None:
            merged[section] = dict(cfg[section])
    return from_dict(PolicyConfig, merged, "policy")


def build_policy_and_data(cfg: Mapping[str, Any]):
    """``(policy, train_set, val_set, buffer, shape_meta)`` with the normalizer fitted on the
    training episodes."""
    ds = dict(cfg["dataset"])
    path = ds.get("path")
    if not path or path == "???":
        raise ValueError("dataset.path is required (a zarr directory in Diffusion Policy's layout)")
    buffer = ReplayBuffer.open(path)
    shape_meta = infer_shape_meta(buffer, ds.get("obs_keys"), ds.get("action_key", "action"))
    if cfg.get("shape_meta"):
        check_shape_meta(cfg["shape_meta"], shape_meta, f"config shape_meta vs dataset {path}")
    window = Window(**dict(cfg["window"]))
    train_set, val_set = make_datasets(
        buffer,
        shape_meta,
        window,
        val_ratio=float(ds.get("val_ratio", 0.1)),
        seed=int(cfg.get("seed", 0)),
        action_key=ds.get("action_key", "action"),
    )
    policy = DiffusionPolicy(policy_config(cfg), shape_meta, window)
    policy.normalizer.fit(train_set.low_dim_data())
    return policy, train_set, val_set, buffer, shape_meta


def train_from_config(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """Train a policy as the config says and return the trainer's summary."""
    seed = int(cfg.get("seed", 0))
    torch.manual_seed(seed)
    if cfg.get("threads"):
        torch.set_num_threads(int(cfg["threads"]))
    device = resolve_device(cfg.get("device"))
    policy, train_set, val_set, buffer, shape_meta = build_policy_and_data(cfg)
    out = cfg.get("output_dir") or os.path.join("outputs", "train", time.strftime("%Y%m%d-%H%M%S"))
    n_params = sum(p.numel() for p in policy.net.parameters())
    meta = {
        "shape_meta": shape_meta,
        "window": {
            k: getattr(policy.window, k) for k in ("horizon", "n_obs_steps", "n_action_steps")
        },
        "policy": to_dict(policy.cfg),
        "env": dict(buffer.attrs.get("env") or {}) or None,
        "demo_mode_freq": demo_mode_freq(buffer),
        "dataset": {
            "path": os.path.abspath(buffer.path),
            "n_episodes": buffer.n_episodes,
            "n_steps": buffer.n_steps,
            "train_windows": len(train_set),
            "val_windows": len(val_set) if val_set else 0,
        },
        "network_params": n_params,
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": str(device),
    }
    trainer = Trainer(
        policy,
        train_set,
        cfg.get("training") or {},
        out,
        val_set=val_set,
        meta=meta,
        config=dict(cfg),
        seed=seed,
        device=device,
    )
    summary = trainer.fit()
    summary["output_dir"] = str(out)
    return summary


def policy_from_checkpoint(
    ckpt: Checkpoint | str | os.PathLike,
    use_ema: bool = True,
    device: str | torch.device = "cpu",
    expected_shape_meta: Mapping[str, Any] | None = None,
) -> tuple[DiffusionPolicy, Checkpoint]:
    """Rebuild the policy from a checkpoint alone (EMA weights by default) in eval mode."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    meta = ckpt.meta
    for key in ("shape_meta", "window", "policy"):
        if key not in meta:
            raise ValueError(f"{ckpt.path}/meta.json lacks {key!r}; cannot rebuild the policy")
    if expected_shape_meta is not None:
        check_shape_meta(meta["shape_meta"], expected_shape_meta, f"checkpoint {ckpt.path}")
    policy = DiffusionPolicy(meta["policy"], meta["shape_meta"], Window(**meta["window"]))
    state = ckpt.ema_state if (use_ema and ckpt.ema_state is not None) else ckpt.model_state
    missing, unexpected = policy.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{ckpt.path}/model.safetensors does not fit the policy it describes: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return policy.to(device).eval(), ckpt
