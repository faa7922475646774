"""Self-describing checkpoint directories, written atomically and loaded without unpickling.

::

    <ckpt>/
      model.safetensors     policy weights ("model.*") and EMA weights ("ema.*")
      config.yaml           the resolved run config
      meta.json             format, step, shape_meta, window, policy config, env spec, versions
      normalizer.json       human-readable normalization statistics (the weights hold the truth)
      training_state/       optimizer + LR schedule + RNG + loop counters, for exact resume
        optimizer.safetensors, rng.safetensors, state.json

A checkpoint is written to a hidden temporary directory and renamed into place; an existing one
is moved aside first and deleted only after the new one is in place, so a crash at any moment
leaves a complete checkpoint on disk (``resolve_checkpoint`` finds the moved-aside copy).

Loading reads JSON, YAML (safe loader) and safetensors only; names in the files select
registered implementations. Checkpoints of format version 1 (package 0.1) are migrated on read.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

from ..files import building_dir, leftovers, strict_json

FORMAT = "diffusion_policy_dist.checkpoint"
VERSION = 2


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or incompatible."""


def _write_text(path: Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _save_tensors(
    path: Path, tensors: Mapping[str, torch.Tensor], metadata: dict | None = None
) -> None:
    clean = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    save_file(clean, str(path), metadata={k: str(v) for k, v in (metadata or {}).items()})
    with open(path, "rb+") as f:
        os.fsync(f.fileno())


# ---------------------------------------------------------------------- optimizer / RNG state
def flatten_optimizer_state(state: Mapping[str, Any]) -> tuple[dict[str, torch.Tensor], dict]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and a JSON structure."""
    tensors: dict[str, torch.Tensor] = {}
    per_param: dict[str, dict] = {}
    for pid, st in state["state"].items():
        entry = {}
        for name, v in st.items():
            if isinstance(v, torch.Tensor):
                key = f"state.{pid}.{name}"
                tensors[key] = v
                entry[name] = {"__tensor__": key}
            else:
                entry[name] = strict_json(v)
        per_param[str(pid)] = entry
    return tensors, {"state": per_param, "param_groups": strict_json(state["param_groups"])}


def unflatten_optimizer_state(tensors: Mapping[str, torch.Tensor], structure: Mapping) -> dict:
    state = {}
    for pid, entry in structure["state"].items():
        state[int(pid)] = {
            k: (tensors[v["__tensor__"]] if isinstance(v, dict) and "__tensor__" in v else v)
            for k, v in entry.items()
        }
    groups = []
    for g in structure["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    return {"state": state, "param_groups": groups}


def capture_rng() -> tuple[dict[str, torch.Tensor], dict]:
    """All global RNG states: torch (CPU and CUDA) as tensors, numpy and python as JSON."""
    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"torch_cuda_{i}"] = s
    np_state = np.random.get_state()  # noqa: NPY002 (the legacy global stream is what users seed)
    py_state = random.getstate()
    structure = {
        "numpy": [np_state[0], np_state[1].tolist(), *[strict_json(v) for v in np_state[2:]]],
        "python": [py_state[0], list(py_state[1]), py_state[2]],
    }
    return tensors, structure


def restore_rng(tensors: Mapping[str, torch.Tensor], structure: Mapping) -> None:
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[k] for k in sorted(tensors) if k.startswith("torch_cuda_")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    n = structure["numpy"]
    np.random.set_state((n[0], np.array(n[1], dtype=np.uint32), *n[2:]))  # noqa: NPY002
    p = structure["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))


# ---------------------------------------------------------------------- save / load
def save_checkpoint(
    path: str | os.PathLike,
    *,
    model_state: Mapping[str, torch.Tensor],
    meta: Mapping[str, Any],
    config: Mapping[str, Any] | None = None,
    ema_state: Mapping[str, torch.Tensor] | None = None,
    normalizer_stats: Mapping[str, Any] | None = None,
    training_state: Mapping[str, Any] | None = None,
) -> Path:
    """Write a checkpoint directory atomically (see module docstring). Returns its path.

    ``training_state`` may hold ``optimizer`` (a state_dict), ``rng`` (from :func:`capture_rng`)
    and any JSON-able counters.
    """
    final = Path(path)
    with building_dir(final) as tmp:
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        if ema_state is not None:
            tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
        _save_tensors(tmp / "model.safetensors", tensors, {"format": FORMAT, "version": VERSION})
        head = {"format": FORMAT, "version": VERSION}
        body = {k: v for k, v in strict_json(dict(meta)).items() if k not in head}
        body["has_ema"] = ema_state is not None
        _write_text(tmp / "meta.json", json.dumps({**head, **body}, indent=2))
        _write_text(
            tmp / "config.yaml", yaml.safe_dump(strict_json(dict(config or {})), sort_keys=False)
        )
        if normalizer_stats is not None:
            _write_text(
                tmp / "normalizer.json", json.dumps(strict_json(dict(normalizer_stats)), indent=1)
            )
        if training_state is not None:
            _save_training_state(tmp / "training_state", training_state)
    for stale in leftovers(final):  # copies left by saves that were killed
        shutil.rmtree(stale, ignore_errors=True)
    return final


def _save_training_state(ts_dir: Path, training_state: Mapping[str, Any]) -> None:
    ts_dir.mkdir()
    state = dict(training_state)
    structure: dict[str, Any] = {}
    if "optimizer" in state:
        opt_tensors, structure["optimizer"] = flatten_optimizer_state(state.pop("optimizer"))
        _save_tensors(ts_dir / "optimizer.safetensors", opt_tensors)
    if "rng" in state:
        rng_tensors, structure["rng"] = state.pop("rng")
        _save_tensors(ts_dir / "rng.safetensors", rng_tensors)
    structure.update(strict_json(state))
    _write_text(ts_dir / "state.json", json.dumps(structure))


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory to read for ``path``: ``path`` itself, ``path/checkpoints/latest``
    for a run directory, or the moved-aside copy left by a crash during replacement."""
    p = Path(path)
    if (p / "checkpoints" / "latest").exists() or list((p / "checkpoints").glob(".latest.old-*")):
        p = p / "checkpoints" / "latest"
    if (p / "meta.json").exists():
        return p
    moved = sorted(p.parent.glob(f".{p.name}.old-*"), key=lambda q: q.stat().st_mtime)
    for cand in reversed(moved):
        if (cand / "meta.json").exists() and (cand / "model.safetensors").exists():
            warnings.warn(
                f"{p} is missing; using the copy left by an interrupted save: {cand}", stacklevel=2
            )
            return cand
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    raise CheckpointError(f"{p} is not a checkpoint directory (no meta.json)")


def _read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise CheckpointError(f"{path} is not valid JSON: {e}") from e


def _load_tensors(path: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(str(path))
    except Exception as e:  # safetensors raises its own error type for bad headers
        raise CheckpointError(
            f"{path} is not a readable safetensors file ({type(e).__name__}: {e}); the checkpoint "
            "is damaged or truncated"
        ) from e


def _migrate_choice(d: Mapping[str, Any], old_key: str, registry: Mapping[str, type]) -> dict:
    """A version-1 group dict (``name``/``method`` picks the class; every option of every class
    stored) as today's: ``kind`` plus the options its class takes, unset (None) ones dropped."""
    d = dict(d)
    kind = d.pop(old_key, None) or d.pop("kind", None)
    if kind not in registry:
        raise CheckpointError(f"unknown {old_key} {kind!r} (known: {list(registry)})")
    own = {f for f in registry[kind].__dataclass_fields__ if f != "kind"}
    return {"kind": kind, **{k: v for k, v in d.items() if k in own and v is not None}}


def migrate_meta(meta: Mapping[str, Any], where: str = "meta.json") -> dict:
    """A checkpoint's meta in today's format (version 1 -> 2: groups name their implementation
    with ``kind``, and env specs with ``kind``/``obs``). Raises a clear error for anything else."""
    meta = dict(meta)
    version = int(meta.get("version", 0))
    if meta.get("format") != FORMAT:
        raise CheckpointError(f"{where}: not a {FORMAT} checkpoint (format={meta.get('format')!r})")
    if version > VERSION:
        raise CheckpointError(
            f"{where}: checkpoint version {version} is newer than this package supports "
            f"({VERSION}); upgrade diffusion_policy_dist"
        )
    if version == 1 and isinstance(meta.get("policy"), Mapping):
        from ..diffusion.losses import LOSSES
        from ..diffusion.samplers import SAMPLERS

        policy = dict(meta["policy"])
        try:
            policy["loss"] = _migrate_choice(policy["loss"], "name", LOSSES)
            policy["sampler"] = _migrate_choice(policy["sampler"], "method", SAMPLERS)
            schedule = dict(policy["schedule"])
            policy["schedule"] = {"kind": schedule.pop("name", None), **schedule}
            policy["normalizer"] = policy.pop("normalizer_mode", "limits")
        except (KeyError, CheckpointError) as e:
            raise CheckpointError(f"{where}: cannot read version-1 field policy.{e}") from e
        meta["policy"] = policy
    if version == 1 and meta.get("env"):
        from ..envs.spec import migrate_spec

        meta["env"] = migrate_spec(meta["env"])
    if version < VERSION:
        meta["migrated_from_version"] = version
    meta["version"] = VERSION
    return meta


def read_meta(path: str | os.PathLike) -> dict:
    """The (migrated) ``meta.json`` of the checkpoint at ``path``."""
    p = resolve_checkpoint(path)
    return migrate_meta(_read_json(p / "meta.json"), str(p / "meta.json"))


@dataclass
class Checkpoint:
    path: Path
    meta: dict
    config: dict
    model_state: dict[str, torch.Tensor]
    ema_state: dict[str, torch.Tensor] | None

    def training_state(self) -> dict | None:
        """Optimizer state_dict, RNG (tensors, structure) and counters, or None if absent."""
        ts = self.path / "training_state"
        if not (ts / "state.json").exists():
            return None
        structure = _read_json(ts / "state.json")
        out = {k: v for k, v in structure.items() if k not in ("optimizer", "rng")}
        if "optimizer" in structure:
            out["optimizer"] = unflatten_optimizer_state(
                _load_tensors(ts / "optimizer.safetensors"), structure["optimizer"]
            )
        if "rng" in structure:
            out["rng"] = (_load_tensors(ts / "rng.safetensors"), structure["rng"])
        return out


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint directory (no pickle anywhere)."""
    p = resolve_checkpoint(path)
    meta = migrate_meta(_read_json(p / "meta.json"), str(p / "meta.json"))
    if not (p / "model.safetensors").exists():
        raise CheckpointError(f"{p}: model.safetensors is missing")
    tensors = _load_tensors(p / "model.safetensors")
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    config = {}
    if (p / "config.yaml").exists():
        try:
            config = yaml.safe_load((p / "config.yaml").read_text()) or {}
        except yaml.YAMLError as e:
            raise CheckpointError(f"{p / 'config.yaml'} is not valid YAML: {e}") from e
    return Checkpoint(p, meta, config, model, ema)
