"""From a run config to live objects (dataset, policy, trainer), and from a checkpoint back to a
policy.

Every entry point (``dpd train``, tests, benchmarks) goes through :func:`train_from_config`, so
there is one way to train; every reader of checkpoints goes through :func:`load_policy`.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Mapping
from typing import Any

import torch

from ..data import ReplayBuffer, infer_shape_meta, make_datasets
from ..data.dataset import check_shape_meta
from ..data.lerobot import cached_buffer, is_lerobot
from ..policy import DiffusionPolicy, Window
from ..policy.config import policy_config, to_dict
from ..provenance import git_commit, versions
from .checkpoint import Checkpoint, CheckpointError, load_checkpoint
from .config import TrainRun
from .distributed import World, join, leave
from .trainer import Trainer


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``auto``: CUDA when available, else CPU; a CUDA device that isn't there is an error."""
    if device in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as e:
        raise ValueError(f"device={device!r} is not a torch device ({e})") from e
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"device={device!r}, but torch sees no CUDA device; use device=cpu or auto"
        )
    if dev.type == "cuda" and dev.index is not None and dev.index >= torch.cuda.device_count():
        raise ValueError(f"device={device!r}, but only {torch.cuda.device_count()} CUDA devices")
    return dev


def build_policy_and_data(run: TrainRun):
    """``(policy, train_set, val_set, buffer, shape_meta)`` with the normalizer fitted on the
    training episodes."""
    ds = run.dataset
    if not ds.path or ds.path == "???":
        raise ValueError("dataset.path is required (a zarr dataset in Diffusion Policy's layout)")
    path = ds.path
    if is_lerobot(path):
        path = cached_buffer(path, ds.cache_dir)
    buffer = ReplayBuffer.open(path)
    for problem in buffer.problems:
        print(f"warning: {ds.path}: {problem}", file=sys.stderr)
    shape_meta = infer_shape_meta(buffer, ds.obs_keys, ds.action_key)
    train_set, val_set = make_datasets(
        buffer,
        shape_meta,
        run.window,
        val_ratio=ds.val_ratio,
        seed=run.seed,
        action_key=ds.action_key,
    )
    policy = DiffusionPolicy(run.policy_config(), shape_meta, run.window)
    policy.normalizer.fit(train_set.low_dim_data())
    return policy, train_set, val_set, buffer, shape_meta


def run_env_spec(run: TrainRun, buffer, shape_meta) -> dict[str, Any] | None:
    """The env the checkpoint records: the one named on the command line (checked against the
    dataset's observations and actions now, not at evaluation) or the dataset's."""
    from ..env_options import env_spec, trust_of

    spec = env_spec(run.task, run.obs, run.env, buffer.attrs.get("env"))
    if run.task is not None:
        from ..envs.spec import env_mismatch, make_env

        env = make_env(spec, trust=trust_of(run.env))
        try:
            msg = env_mismatch(env.observation_space, env.action_space, shape_meta)
        finally:
            env.close()
        if msg:
            raise ValueError(f"the env {run.task} {spec.get('env_id', '')} does not fit "
                             f"dataset {buffer.path}: {msg}")  # fmt: skip
    return spec


def _run_meta(run: TrainRun, policy, buffer, train_set, val_set, device) -> dict[str, Any]:
    """What a checkpoint says about itself besides its weights."""
    return {
        "shape_meta": policy.shape_meta,
        "window": to_dict(policy.window),
        "policy": to_dict(policy.cfg),
        "env": run_env_spec(run, buffer, policy.shape_meta),
        "demo_mode_freq": buffer.mode_frequencies(),
        "dataset": {
            "path": os.path.abspath(buffer.path),
            "n_episodes": buffer.n_episodes,
            "n_steps": buffer.n_steps,
            "train_windows": len(train_set),
            "val_windows": len(val_set) if val_set else 0,
            "source": buffer.attrs.get("source"),  # e.g. a LeRobot folder, its fps and tasks
        },
        "network_params": sum(p.numel() for p in policy.net.parameters()),
        "versions": versions(),
        "git_commit": git_commit(),
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "device": str(device),
    }


def train_from_config(run: TrainRun) -> dict[str, Any]:
    """Train a policy as the run config says and return the trainer's summary. Under torchrun
    every process runs this; they train one model together (see :mod:`.distributed`)."""
    torch.manual_seed(run.seed)
    if run.threads:
        torch.set_num_threads(run.threads)
    world, device = join(resolve_device(run.device))
    try:
        return _train(run, world, device)
    finally:
        leave(world)


def _train(run: TrainRun, world: World, device: torch.device) -> dict[str, Any]:
    policy, train_set, val_set, buffer, _ = build_policy_and_data(run)
    out = run.output_dir or world.broadcast(
        os.path.join("outputs", "train", time.strftime("%Y%m%d-%H%M%S"))
    )
    trainer = Trainer(
        policy,
        train_set,
        run.training,
        out,
        val_set=val_set,
        meta=_run_meta(run, policy, buffer, train_set, val_set, device),
        config=to_dict(run),
        seed=run.seed,
        device=device,
        world=world,
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
    """Rebuild the policy from a checkpoint alone (EMA weights by default) in eval mode, with
    the checkpoint it came from."""
    if not isinstance(ckpt, Checkpoint):
        ckpt = load_checkpoint(ckpt)
    meta, where = ckpt.meta, f"{ckpt.path}/meta.json"
    for key in ("shape_meta", "window", "policy"):
        if key not in meta:
            raise CheckpointError(f"{where} lacks {key!r}; cannot rebuild the policy")
    if expected_shape_meta is not None:
        check_shape_meta(meta["shape_meta"], expected_shape_meta, f"checkpoint {ckpt.path}")
    try:
        cfg = policy_config(meta["policy"], where=f"{where}: policy")
        window = Window(**meta["window"])
        policy = DiffusionPolicy(cfg, meta["shape_meta"], window)
    except (TypeError, ValueError) as e:
        raise CheckpointError(f"{where} describes a policy that cannot be built: {e}") from e
    check_config_agrees(ckpt)
    state = ckpt.ema_state if (use_ema and ckpt.ema_state is not None) else ckpt.model_state
    try:
        missing, unexpected = policy.load_state_dict(state, strict=False)
    except RuntimeError as e:  # a tensor of another shape than meta.json's policy has
        detail = " ".join(str(e).split())
        raise CheckpointError(
            f"{ckpt.path}/model.safetensors does not fit the policy its meta.json describes "
            f"(shape_meta, window or network edited?): {detail}"
        ) from e
    if missing or unexpected:
        raise CheckpointError(
            f"{ckpt.path}/model.safetensors does not fit the policy its meta.json describes: "
            f"missing {missing[:5]}, unexpected {unexpected[:5]}"
        )
    return policy.to(resolve_device(device)).eval(), ckpt


def check_config_agrees(ckpt: Checkpoint) -> None:
    """meta.json is what a checkpoint is rebuilt from; a ``config.yaml`` that says otherwise
    (edited by hand, say) is an error rather than silently ignored."""
    cfg, meta = ckpt.config or {}, ckpt.meta
    pairs = [("window", cfg.get("window"), meta.get("window"))]
    same_format = "migrated_from_version" not in meta  # old configs spell groups differently
    if same_format and isinstance(cfg.get("policy"), Mapping):
        pol = meta["policy"]
        # not the sampler: the default sampler is an inference choice (``dpd tune`` changes it)
        pairs += [(k, cfg.get(k), pol.get(k)) for k in ("network", "schedule", "loss")]
        pairs += [(f"policy.{k}", v, pol.get(k)) for k, v in cfg["policy"].items()]
    if "shape_meta" in cfg:
        pairs.append(("shape_meta", cfg["shape_meta"], meta.get("shape_meta")))
    for name, in_cfg, in_meta in pairs:
        if in_cfg is None or in_meta is None:
            continue
        if json.dumps(in_cfg, sort_keys=True) != json.dumps(in_meta, sort_keys=True):
            raise CheckpointError(
                f"{ckpt.path}: config.yaml and meta.json disagree on {name}:\n"
                f"  config.yaml: {in_cfg}\n  meta.json:   {in_meta}\n"
                "meta.json describes the weights; restore config.yaml (a checkpoint is not "
                "reconfigured by editing it: train a new one)"
            )


def load_policy(
    path: str | os.PathLike, device: str | torch.device = "cpu", use_ema: bool = True
) -> DiffusionPolicy:
    """The policy stored in a checkpoint directory (or a training run's output directory), in
    eval mode with its EMA weights; ``policy.checkpoint_meta`` holds what the checkpoint says
    about itself (shape_meta, env, training step ...)."""
    policy, ckpt = policy_from_checkpoint(path, use_ema=use_ema, device=device)
    policy.checkpoint_meta = ckpt.meta
    return policy
