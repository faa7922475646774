"""Import robomimic HDF5 demonstrations into a zarr replay buffer.

robomimic's layout: ``data/demo_<i>/actions [T, Da]``, ``data/demo_<i>/obs/<key> [T, ...]``
(images ``uint8 [T, H, W, C]``), with the env description as JSON in ``data.attrs["env_args"]``.
Each demo becomes one episode with keys ``action`` and the chosen observation keys; images stay
uint8 HWC, which the dataset layer serves as CHW camera observations. The whole zarr store is
written at a temporary path and renamed at the end, so an existing dataset is never
half-overwritten.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from .replay_buffer import DatasetError, atomic_buffer


def _demo_index(name: str) -> tuple[int, str]:
    m = re.search(r"(\d+)$", name)
    return (int(m.group(1)) if m else -1, name)


def _env_args(group: Any) -> Any:
    env_args = group.attrs.get("env_args")
    if isinstance(env_args, bytes):
        env_args = env_args.decode()
    try:
        return json.loads(env_args) if env_args else None
    except json.JSONDecodeError:
        return {"raw": str(env_args)}


def _demo_names(f: Any, src: Path) -> list[str]:
    if "data" not in f:
        raise DatasetError(
            f"{src}: no 'data' group; expected robomimic's layout data/demo_<i>/{{actions, "
            f"obs/<key>}} (found {sorted(f.keys())})"
        )
    demos = sorted((k for k in f["data"].keys() if k.startswith("demo")), key=_demo_index)
    if not demos:
        raise DatasetError(f"{src}: 'data' holds no demo_<i> groups (found {list(f['data'])})")
    if "obs" not in f["data"][demos[0]]:
        raise DatasetError(f"{src}: data/{demos[0]} has no 'obs' group")
    return demos


def _read_demo(demo: Any, name: str, keys: list[str], shapes: dict, src: Path) -> dict:
    """One demo as an episode ``{"action": [T, Da], key: [T, ...]}``; ``shapes`` (the first
    demo's per-step shapes) is filled in and checked."""
    if "actions" not in demo:
        raise DatasetError(f"{src}: data/{name} has no 'actions' dataset")
    episode = {"action": np.asarray(demo["actions"][:], dtype=np.float32)}
    T = episode["action"].shape[0]
    for k in keys:
        if k not in demo.get("obs", {}):
            have = sorted(demo.get("obs", {}).keys())
            raise DatasetError(f"{src}: data/{name}/obs has no key {k!r} (it has {have})")
        v = np.asarray(demo["obs"][k][:])
        if v.dtype != np.uint8:
            v = v.astype(np.float32)
        shapes.setdefault(k, v.shape[1:])
        if v.shape[0] != T or v.shape[1:] != shapes[k]:
            raise DatasetError(
                f"{src}: data/{name}/obs/{k} has shape {v.shape}; expected "
                f"({T}, {', '.join(map(str, shapes[k]))}) like the actions and the first demo"
            )
        episode[k] = v
    return episode


def _open_hdf5(src: Path):
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - the hdf5 extra is missing
        raise ImportError(
            "importing robomimic HDF5 files needs h5py: pip install 'diffusion_policy_dist[hdf5]'"
        ) from e
    if not src.exists():
        raise FileNotFoundError(f"robomimic file {src} does not exist")
    try:
        return h5py.File(src, "r")
    except OSError as e:
        raise DatasetError(f"{src} is not a readable HDF5 file ({e})") from e


def import_robomimic(
    hdf5_path: str | Path,
    output: str | Path,
    obs_keys: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Convert ``hdf5_path`` to a zarr dataset at ``output``; returns a summary.

    ``obs_keys`` picks observation keys (default: every key under the first demo's ``obs/``).
    Demos are taken in numeric order (demo_2 before demo_10).
    """
    src = Path(hdf5_path)
    with _open_hdf5(src) as f:
        demos = _demo_names(f, src)
        group = f["data"]
        keys = list(obs_keys) if obs_keys else sorted(group[demos[0]]["obs"].keys())
        if "action" in keys:
            raise DatasetError(f"{src}: an observation key named 'action' would hide the actions")
        attrs = {
            "source": {"format": "robomimic-hdf5", "file": str(src.resolve())},
            "robomimic_env_args": _env_args(group),
        }
        shapes: dict[str, tuple] = {}
        steps = 0
        with atomic_buffer(output, overwrite=overwrite, attrs=attrs) as buf:
            for name in tqdm(demos, desc=f"import {src.name}", disable=not progress):
                episode = _read_demo(group[name], name, keys, shapes, src)
                try:
                    buf.add_episode(episode, info={"demo": name})
                except ValueError as e:
                    raise DatasetError(f"{src}: data/{name}: {e}") from e
                steps += len(episode["action"])
    return {
        "input": str(src),
        "output": str(output),
        "episodes": len(demos),
        "steps": steps,
        "obs_keys": keys,
        "shapes": {k: list(v) for k, v in shapes.items()},
    }
