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
    try:
        import h5py
    except ImportError as e:  # pragma: no cover - the hdf5 extra is missing
        raise ImportError(
            "importing robomimic HDF5 files needs h5py: pip install 'diffusion_policy_dist[hdf5]'"
        ) from e
    src = Path(hdf5_path)
    if not src.exists():
        raise FileNotFoundError(f"robomimic file {src} does not exist")
    with h5py.File(src, "r") as f:
        if "data" not in f:
            raise DatasetError(
                f"{src}: no 'data' group; expected robomimic's layout data/demo_<i>/{{actions, "
                f"obs/<key>}} (found {sorted(f.keys())})"
            )
        group = f["data"]
        demos = sorted((k for k in group.keys() if k.startswith("demo")), key=_demo_index)
        if not demos:
            raise DatasetError(f"{src}: 'data' holds no demo_<i> groups (found {list(group)})")
        first = group[demos[0]]
        if "obs" not in first:
            raise DatasetError(f"{src}: data/{demos[0]} has no 'obs' group")
        keys = list(obs_keys) if obs_keys else sorted(first["obs"].keys())
        if "action" in keys:
            raise DatasetError(f"{src}: an observation key named 'action' would hide the actions")
        shapes = {k: None for k in keys}
        env_args = group.attrs.get("env_args")
        if isinstance(env_args, bytes):
            env_args = env_args.decode()
        try:
            env_args = json.loads(env_args) if env_args else None
        except json.JSONDecodeError:
            env_args = {"raw": str(env_args)}
        attrs = {
            "source": {"format": "robomimic-hdf5", "file": str(src.resolve())},
            "robomimic_env_args": env_args,
        }
        steps = 0
        with atomic_buffer(output, overwrite=overwrite, attrs=attrs) as buf:
            for name in tqdm(demos, desc=f"import {src.name}", disable=not progress):
                demo = group[name]
                if "actions" not in demo:
                    raise DatasetError(f"{src}: data/{name} has no 'actions' dataset")
                episode = {"action": np.asarray(demo["actions"][:], dtype=np.float32)}
                T = episode["action"].shape[0]
                for k in keys:
                    if k not in demo.get("obs", {}):
                        raise DatasetError(
                            f"{src}: data/{name}/obs has no key {k!r} "
                            f"(it has {sorted(demo.get('obs', {}).keys())})"
                        )
                    v = np.asarray(demo["obs"][k][:])
                    if v.dtype != np.uint8:
                        v = v.astype(np.float32)
                    if shapes[k] is None:
                        shapes[k] = v.shape[1:]
                    if v.shape[0] != T or v.shape[1:] != shapes[k]:
                        raise DatasetError(
                            f"{src}: data/{name}/obs/{k} has shape {v.shape}; expected "
                            f"({T}, {', '.join(map(str, shapes[k]))}) like the actions and the "
                            "first demo"
                        )
                    episode[k] = v
                try:
                    buf.add_episode(episode, info={"demo": name})
                except ValueError as e:
                    raise DatasetError(f"{src}: data/{name}: {e}") from e
                steps += T
    return {
        "input": str(src),
        "output": str(output),
        "episodes": len(demos),
        "steps": steps,
        "obs_keys": keys,
        "shapes": {k: list(s) for k, s in shapes.items()},
    }
