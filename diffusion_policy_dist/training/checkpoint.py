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
"""

from __future__ import annotations

import json
import os
import random
import shutil
import uuid
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from safetensors.torch import load_file, save_file

FORMAT = "diffusion_policy_dist.checkpoint"
VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint that is missing, incomplete or incompatible."""


def _fsync_dir(path: Path) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


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


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, torch.Tensor):
        return x.tolist()
    return x


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
                entry[name] = _jsonable(v)
        per_param[str(pid)] = entry
    return tensors, {"state": per_param, "param_groups": _jsonable(state["param_groups"])}


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
        "numpy": [np_state[0], np_state[1].tolist(), *[_jsonable(v) for v in np_state[2:]]],
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
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = final.with_name(f".{final.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.mkdir()
    try:
        tensors = {f"model.{k}": v for k, v in model_state.items()}
        if ema_state is not None:
            tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
        _save_tensors(tmp / "model.safetensors", tensors, {"format": FORMAT, "version": VERSION})
        meta = {
            "format": FORMAT,
            "version": VERSION,
            **_jsonable(dict(meta)),
            "has_ema": ema_state is not None,
        }
        _write_text(tmp / "meta.json", json.dumps(meta, indent=2, sort_keys=False))
        _write_text(
            tmp / "config.yaml", yaml.safe_dump(_jsonable(dict(config or {})), sort_keys=False)
        )
        if normalizer_stats is not None:
            _write_text(
                tmp / "normalizer.json", json.dumps(_jsonable(dict(normalizer_stats)), indent=1)
            )
        if training_state is not None:
            ts_dir = tmp / "training_state"
            ts_dir.mkdir()
            state = dict(training_state)
            structure: dict[str, Any] = {}
            if "optimizer" in state:
                opt_tensors, structure["optimizer"] = flatten_optimizer_state(
                    state.pop("optimizer")
                )
                _save_tensors(ts_dir / "optimizer.safetensors", opt_tensors)
            if "rng" in state:
                rng_tensors, structure["rng"] = state.pop("rng")
                _save_tensors(ts_dir / "rng.safetensors", rng_tensors)
            structure.update(_jsonable(state))
            _write_text(ts_dir / "state.json", json.dumps(structure))
        _fsync_dir(tmp)
        old = None
        if final.exists():
            old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """The checkpoint directory to read for ``path``: ``path`` itself, ``path/checkpoints/latest``
    for a run directory, or the moved-aside copy left by a crash during replacement."""
    p = Path(path)
    if (p / "checkpoints" / "latest").exists() or list((p / "checkpoints").glob(".latest.old-*")):
        p = p / "checkpoints" / "latest"
    if (p / "meta.json").exists():
        return p
    leftovers = sorted(p.parent.glob(f".{p.name}.old-*"), key=lambda q: q.stat().st_mtime)
    for cand in reversed(leftovers):
        if (cand / "meta.json").exists() and (cand / "model.safetensors").exists():
            warnings.warn(
                f"{p} is missing; using the copy left by an interrupted save: {cand}", stacklevel=2
            )
            return cand
    if not p.exists():
        raise CheckpointError(f"no checkpoint at {path}")
    raise CheckpointError(f"{p} is not a checkpoint directory (no meta.json)")


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
        structure = json.loads((ts / "state.json").read_text())
        out = {k: v for k, v in structure.items() if k not in ("optimizer", "rng")}
        if "optimizer" in structure:
            out["optimizer"] = unflatten_optimizer_state(
                load_file(str(ts / "optimizer.safetensors")), structure["optimizer"]
            )
        if "rng" in structure:
            out["rng"] = (load_file(str(ts / "rng.safetensors")), structure["rng"])
        return out


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a checkpoint directory (no pickle anywhere)."""
    p = resolve_checkpoint(path)
    meta = json.loads((p / "meta.json").read_text())
    if meta.get("format") != FORMAT:
        raise CheckpointError(
            f"{p}/meta.json: not a {FORMAT} checkpoint (format={meta.get('format')!r})"
        )
    if int(meta.get("version", 0)) > VERSION:
        raise CheckpointError(
            f"{p}: checkpoint version {meta['version']} is newer than this package "
            f"supports ({VERSION})"
        )
    if not (p / "model.safetensors").exists():
        raise CheckpointError(f"{p}: model.safetensors is missing")
    tensors = load_file(str(p / "model.safetensors"))
    model = {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}
    ema = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")} or None
    config = yaml.safe_load((p / "config.yaml").read_text()) if (p / "config.yaml").exists() else {}
    return Checkpoint(p, meta, config or {}, model, ema)
