"""Our demonstrations in LeRobot's v3.0 layout, so LeRobot's tools (and everyone who reads its
format) can use them: ``dpd export-lerobot input=<zarr> output=<folder>``.

Written with pyarrow only: ``meta/info.json``, ``meta/tasks.parquet`` (pandas' index layout,
as LeRobot reads it), ``meta/episodes/chunk-000/file-000.parquet``,
``data/chunk-000/file-000.parquet`` and ``meta/stats.json``. Low-dim keys become
``observation.<key>`` (float32), cameras ``observation.images.<key>`` stored as PNG images in the
parquet (LeRobot's ``image`` dtype: lossless, no video encoder needed), actions ``action``.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from .replay_buffer import ReplayBuffer


def _name(key: str, camera: bool) -> str:
    return "action" if key == "action" else f"observation.{'images.' if camera else ''}{key}"


def _png(frame: np.ndarray) -> dict[str, Any]:
    from PIL import Image

    out = io.BytesIO()
    Image.fromarray(frame).save(out, format="PNG")
    return {"bytes": out.getvalue(), "path": None}


def _features(buf: ReplayBuffer, cameras: set[str]) -> dict[str, dict]:
    out = {}
    for key in buf.keys():
        shape = list(buf.shape(key))
        if key in cameras:
            out[_name(key, True)] = {"dtype": "image", "shape": shape,
                                     "names": ["height", "width", "channels"]}  # fmt: skip
        else:
            out[_name(key, False)] = {"dtype": "float32", "shape": shape, "names": None}
    out["timestamp"] = {"dtype": "float32", "shape": [1], "names": None}
    for key in ("frame_index", "episode_index", "index", "task_index"):
        out[key] = {"dtype": "int64", "shape": [1], "names": None}
    return out


def _frames(buf: ReplayBuffer, cameras: set[str], fps: float, task_index: list[int]):
    """The data table's columns, frame by frame."""
    cols: dict[str, list] = {}
    ends = list(buf.episode_lengths.cumsum())
    starts = [0, *ends[:-1]]
    for ep, (a, b) in enumerate(zip(starts, ends, strict=True)):
        for key in buf.keys():
            values = np.asarray(buf.root["data"][key][a:b])
            name = _name(key, key in cameras)
            col = cols.setdefault(name, [])
            col += (
                [_png(v) for v in values] if key in cameras else values.astype(np.float32).tolist()
            )
        n = b - a
        cols.setdefault("timestamp", []).extend((np.arange(n) / fps).astype(np.float32).tolist())
        cols.setdefault("frame_index", []).extend(range(n))
        cols.setdefault("episode_index", []).extend([ep] * n)
        cols.setdefault("index", []).extend(range(a, b))
        cols.setdefault("task_index", []).extend([task_index[ep]] * n)
    return cols, starts, ends


def _write_tasks(path: Path, tasks: list[str]) -> None:
    """tasks.parquet as pandas writes a frame indexed by the task text (LeRobot reads it with
    pandas: the index holds the text, the column ``task_index``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    pandas_meta = {
        "index_columns": ["__index_level_0__"], "column_indexes": [],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": None, "field_name": "__index_level_0__", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None},
        ],
        "creator": {"library": "pyarrow", "version": pa.__version__}, "pandas_version": "2.2.0",
    }  # fmt: skip
    table = pa.table({"task_index": list(range(len(tasks))), "__index_level_0__": tasks})
    table = table.replace_schema_metadata({"pandas": json.dumps(pandas_meta)})
    pq.write_table(table, path)


def from_replay_buffer(src: str | Path, output: str | Path, fps: float = 10.0,
                       task: str | None = None) -> dict[str, Any]:  # fmt: skip
    """Write the zarr dataset ``src`` as a LeRobot v3.0 folder ``output`` (which must not
    exist); each episode's task is ``task`` or its recorded mode's name."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    buf, out = ReplayBuffer.open(src), Path(output)
    if out.exists():
        raise FileExistsError(f"{out} already exists")
    cameras = {k for k in buf.keys() if buf.dtype(k) == np.uint8 and len(buf.shape(k)) == 3}
    names = _task_names(buf, task)
    tasks = sorted(set(names))
    cols, starts, ends = _frames(buf, cameras, fps, [tasks.index(t) for t in names])
    for d in ("data/chunk-000", "meta/episodes/chunk-000"):
        (out / d).mkdir(parents=True)
    pq.write_table(pa.table(cols), out / "data" / "chunk-000" / "file-000.parquet")
    episodes = {"episode_index": list(range(buf.n_episodes)), "tasks": [[t] for t in names],
                "length": [b - a for a, b in zip(starts, ends, strict=True)],
                "data/chunk_index": [0] * buf.n_episodes, "data/file_index": [0] * buf.n_episodes,
                "dataset_from_index": starts, "dataset_to_index": ends,
                "meta/episodes/chunk_index": [0] * buf.n_episodes,
                "meta/episodes/file_index": [0] * buf.n_episodes}  # fmt: skip
    pq.write_table(pa.table(episodes), out / "meta" / "episodes" / "chunk-000" / "file-000.parquet")
    _write_tasks(out / "meta" / "tasks.parquet", tasks)
    info = _info(buf, cameras, fps, len(tasks))
    (out / "meta" / "info.json").write_text(json.dumps(info, indent=4))
    (out / "meta" / "stats.json").write_text(json.dumps(_stats(cols, cameras), indent=1))
    return {"input": str(src), "output": str(out), "episodes": buf.n_episodes,
            "frames": buf.n_steps, "tasks": tasks}  # fmt: skip


def _task_names(buf: ReplayBuffer, task: str | None) -> list[str]:
    if task:
        return [task] * buf.n_episodes
    modes = dict(buf.attrs.get("env") or {}).get("mode_names") or []
    info = buf.episode_info if buf.attrs.get("episode_info") else [{}] * buf.n_episodes
    out = []
    for rec in info:
        m = rec.get("mode", -1)
        out.append(f"demonstration ({modes[m]})" if 0 <= m < len(modes) else "demonstration")
    return out


def _info(buf: ReplayBuffer, cameras: set[str], fps: float, n_tasks: int) -> dict[str, Any]:
    return {
        "codebase_version": "v3.0", "robot_type": None,
        "total_episodes": buf.n_episodes, "total_frames": buf.n_steps, "total_tasks": n_tasks,
        "chunks_size": 1000, "data_files_size_in_mb": 100, "video_files_size_in_mb": 200,
        "fps": fps, "splits": {"train": f"0:{buf.n_episodes}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
        "video_path": None,
        "features": _features(buf, cameras),
    }  # fmt: skip


def _stats(cols: dict[str, list], cameras: set[str]) -> dict[str, dict]:
    """Per-feature min/max/mean/std/count of the numeric columns (cameras are left out)."""
    out = {}
    for name, values in cols.items():
        if name.startswith("observation.images.") or not values:
            continue
        v = np.asarray(values, dtype=np.float64).reshape(len(values), -1)
        out[name] = {"min": v.min(0).tolist(), "max": v.max(0).tolist(), "count": [len(v)],
                     "mean": v.mean(0).tolist(), "std": v.std(0).tolist()}  # fmt: skip
    return out
