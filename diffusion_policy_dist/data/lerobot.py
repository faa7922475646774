"""LeRobot datasets (``LeRobotDataset`` v3.0 and v2.1) read with pyarrow and PyAV, no lerobot.

The layout, from ``meta/info.json`` (``codebase_version``, ``fps``, ``features`` with dtype,
shape and names, path templates):

- v3.0: ``data/chunk-XXX/file-XXX.parquet`` hold the frames of many episodes (columns: every
  feature, ``timestamp``, ``frame_index``, ``episode_index``, ``index``, ``task_index``);
  ``meta/episodes/chunk-XXX/file-XXX.parquet`` one row per episode (``dataset_from_index`` /
  ``dataset_to_index``, and per camera the video file and ``from_timestamp`` /
  ``to_timestamp`` within it); ``meta/tasks.parquet``; ``videos/<key>/chunk-XXX/file-XXX.mp4``
  hold many episodes each.
- v2.1: one parquet and one MP4 per episode (``data/chunk-XXX/episode_XXXXXX.parquet``,
  ``videos/chunk-XXX/<key>/episode_XXXXXX.mp4``), ``meta/episodes.jsonl``,
  ``meta/tasks.jsonl``.

Cameras are features of dtype ``video`` (MP4, usually AV1: decoded with PyAV's dav1d) or
``image`` (PNG bytes in the parquet). :func:`to_replay_buffer` decodes every episode once into a
zarr dataset in Diffusion Policy's layout (cameras uint8 ``[T, H, W, C]``), checking each
episode on the way: frame counts, monotonic timestamps, shapes against ``info.json``, finite
values, readable videos. A problem names the file, the episode and the key.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .replay_buffer import DatasetError, atomic_buffer

VERSIONS = ("v3.0", "v2.1")
#: columns every LeRobot frame has, which are bookkeeping, not observations or actions
BOOKKEEPING = ("timestamp", "frame_index", "episode_index", "index", "task_index")
CAMERA_DTYPES = ("video", "image")


def is_lerobot(path: str | Path) -> bool:
    return (Path(path) / "meta" / "info.json").is_file()


@dataclass
class Episode:
    """Where one episode's frames are: its parquet file and rows, and per camera its video file
    and time range (v3.0: many episodes per file; v2.1: one)."""

    index: int
    length: int
    tasks: list[str]
    data_file: Path
    rows: tuple[int, int] | None  # [from, to) in the dataset's ``index`` (None: the whole file)
    videos: dict[str, tuple[Path, float, float]]  # key -> (file, from_timestamp, to_timestamp)


class LeRobotFolder:
    """A LeRobot dataset folder: its metadata, episodes and features (nothing decoded yet)."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        info_path = self.path / "meta" / "info.json"
        if not info_path.is_file():
            raise DatasetError(f"{self.path} is not a LeRobot dataset: no meta/info.json")
        try:
            self.info = json.loads(info_path.read_text())
        except json.JSONDecodeError as e:
            raise DatasetError(f"{info_path} is not valid JSON: {e}") from e
        self.version = str(self.info.get("codebase_version"))
        if self.version not in VERSIONS:
            raise DatasetError(f"{info_path}: codebase_version {self.version!r}; readable "
                               f"versions are {list(VERSIONS)}")  # fmt: skip
        self.fps = float(self.info["fps"])
        self.features: dict[str, dict] = self.info["features"]
        self.tasks = self._tasks()
        self.episodes = self._episodes()

    # ------------------------------------------------------------------ metadata
    @property
    def cameras(self) -> list[str]:
        return [k for k, f in self.features.items() if f["dtype"] in CAMERA_DTYPES]

    @property
    def numeric(self) -> list[str]:
        return [k for k, f in self.features.items()
                if f["dtype"] not in CAMERA_DTYPES and f["dtype"] != "string"
                and k not in BOOKKEEPING]  # fmt: skip

    def _tasks(self) -> dict[int, str]:
        if self.version == "v3.0":  # the task text is the (pandas) index column
            table = _read_parquet(self.path / "meta" / "tasks.parquet")
            text = next(c for c in table.column_names if c != "task_index")
            return {int(r["task_index"]): str(r[text]) for r in table.to_pylist()}
        rows = _read_jsonl(self.path / "meta" / "tasks.jsonl")
        return {int(r["task_index"]): str(r["task"]) for r in rows}

    def _episodes(self) -> list[Episode]:
        eps = self._episodes_v30() if self.version == "v3.0" else self._episodes_v21()
        return sorted(eps, key=lambda e: e.index)

    def _episodes_v30(self) -> list[Episode]:
        files = sorted((self.path / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetError(f"{self.path}/meta/episodes holds no chunk-*/file-*.parquet")
        out = []
        for f in files:
            for r in _read_parquet(f).to_pylist():
                videos = {
                    k: (self._file("video_path", video_key=k,
                                   chunk_index=r[f"videos/{k}/chunk_index"],
                                   file_index=r[f"videos/{k}/file_index"]),
                        float(r[f"videos/{k}/from_timestamp"]),
                        float(r[f"videos/{k}/to_timestamp"]))
                    for k in self.cameras if self.features[k]["dtype"] == "video"
                }  # fmt: skip
                data = self._file("data_path", chunk_index=r["data/chunk_index"],
                                  file_index=r["data/file_index"])  # fmt: skip
                rows = (int(r["dataset_from_index"]), int(r["dataset_to_index"]))
                out.append(Episode(int(r["episode_index"]), int(r["length"]),
                                   list(r.get("tasks") or []), data, rows, videos))  # fmt: skip
        return out

    def _episodes_v21(self) -> list[Episode]:
        size = int(self.info.get("chunks_size", 1000))
        out = []
        for r in _read_jsonl(self.path / "meta" / "episodes.jsonl"):
            ep = int(r["episode_index"])
            kw = {"episode_chunk": ep // size, "episode_index": ep}
            videos = {k: (self._file("video_path", video_key=k, **kw), 0.0, float("inf"))
                      for k in self.cameras if self.features[k]["dtype"] == "video"}  # fmt: skip
            data = self._file("data_path", **kw)
            out.append(Episode(ep, int(r["length"]), list(r.get("tasks") or []), data, None,
                               videos))  # fmt: skip
        return out

    def _file(self, template: str, **kw: Any) -> Path:
        return self.path / self.info[template].format(**kw)

    def describe(self) -> dict[str, Any]:
        """What ``dpd info`` prints about the folder."""
        return {
            "format": f"LeRobot {self.version}",
            "path": str(self.path),
            "episodes": len(self.episodes),
            "frames": sum(e.length for e in self.episodes),
            "fps": self.fps,
            "features": {
                k: {"dtype": f["dtype"], "shape": f["shape"]}
                for k, f in self.features.items()
                if k not in BOOKKEEPING
            },
            "cameras": {k: self.features[k]["dtype"] for k in self.cameras},
            "tasks": sorted(set(self.tasks.values())),
        }

    def fingerprint(self) -> str:
        """Changes when any file of the dataset changes (names, sizes, modification times)."""
        h = hashlib.sha256()
        for p in sorted(self.path.rglob("*")):
            if p.is_file() and not p.name.startswith("."):
                st = p.stat()
                h.update(f"{p.relative_to(self.path)}:{st.st_size}:{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]


def _read_parquet(path: Path):
    import pyarrow.parquet as pq

    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    try:
        return pq.read_table(path)
    except Exception as e:  # pyarrow raises several types for a damaged file
        raise DatasetError(f"{path} is not a readable parquet file ({e})") from e


def _read_jsonl(path: Path) -> list[dict]:
    if not path.is_file():
        raise DatasetError(f"{path} is missing")
    try:
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    except json.JSONDecodeError as e:
        raise DatasetError(f"{path} is not valid JSON lines: {e}") from e


# ---------------------------------------------------------------------- reading episodes
def _frames_table(folder: LeRobotFolder, ep: Episode, cache: dict) -> dict[str, list]:
    """The episode's rows of its parquet file, in frame order, as ``{column: values}``."""
    import pyarrow.compute as pc

    if ep.data_file not in cache:
        cache.clear()  # one file at a time: a v3.0 file holds many episodes
        cache[ep.data_file] = _read_parquet(ep.data_file)
    table = cache[ep.data_file]
    table = table.filter(pc.equal(table["episode_index"], ep.index)).sort_by("frame_index")
    rows = {c: table[c].to_pylist() for c in table.column_names}
    if table.num_rows != ep.length:
        raise DatasetError(f"{ep.data_file}: episode {ep.index} has {table.num_rows} frames; the "
                           f"episode metadata says {ep.length}")  # fmt: skip
    return rows


def _check_timestamps(folder: LeRobotFolder, ep: Episode, ts: np.ndarray) -> None:
    steps = np.diff(ts)
    if len(steps) and (steps <= 0).any():
        i = int(np.argmax(steps <= 0)) + 1
        raise DatasetError(f"{ep.data_file}: episode {ep.index}: timestamps are not increasing "
                           f"at frame {i} ({ts[i - 1]:.4f} then {ts[i]:.4f})")  # fmt: skip


def _column(folder: LeRobotFolder, ep: Episode, rows, key: str) -> np.ndarray:
    f = folder.features[key]
    values = np.asarray([np.asarray(v, dtype=np.float32).reshape(-1) for v in rows[key]])
    want = tuple(int(s) for s in f["shape"])
    if values.shape[1:] != (int(np.prod(want)),):
        raise DatasetError(f"{ep.data_file}: episode {ep.index}: {key!r} has "
                           f"{values.shape[1]} numbers per frame; info.json says shape "
                           f"{list(want)}")  # fmt: skip
    values = values.reshape(len(values), *want)
    if not np.isfinite(values).all():
        i = int(np.argwhere(~np.isfinite(values.reshape(len(values), -1)).all(1))[0][0])
        raise DatasetError(f"{ep.data_file}: episode {ep.index}: {key!r} holds NaN or inf "
                           f"(first at frame {i})")  # fmt: skip
    return values


def _images(folder: LeRobotFolder, ep: Episode, rows, key: str) -> np.ndarray:
    import io

    from PIL import Image

    frames = []
    for i, cell in enumerate(rows[key]):
        try:
            frames.append(np.asarray(Image.open(io.BytesIO(cell["bytes"])).convert("RGB")))
        except Exception as e:
            raise DatasetError(f"{ep.data_file}: episode {ep.index}: {key!r} frame {i} is "
                               f"not a readable image ({e})") from e  # fmt: skip
    return np.stack(frames)


def _video(folder: LeRobotFolder, ep: Episode, key: str, ts: np.ndarray) -> np.ndarray:
    """The episode's frames of camera ``key``: those whose time in the file is closest to
    ``from_timestamp + timestamp`` of each row (within half a frame)."""
    import av

    path, start, _ = ep.videos[key]
    if not path.is_file():
        raise DatasetError(f"{path} is missing (camera {key!r}, episode {ep.index})")
    want = start + ts
    out: list[np.ndarray | None] = [None] * len(ts)
    tol = 0.5 / folder.fps
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            container.seek(max(0, int((want[0] - tol) / stream.time_base)), stream=stream,
                           backward=True)  # fmt: skip
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base)
                if t > want[-1] + tol:
                    break
                i = int(np.argmin(np.abs(want - t)))
                if abs(want[i] - t) <= tol and out[i] is None:
                    out[i] = frame.to_ndarray(format="rgb24")
    except av.error.FFmpegError as e:
        raise DatasetError(
            f"{path}: camera {key!r}, episode {ep.index}: cannot decode ({e})"
        ) from e
    missing = [i for i, f in enumerate(out) if f is None]
    if missing:
        raise DatasetError(f"{path}: camera {key!r}, episode {ep.index}: no frame at "
                           f"{len(missing)} of its {len(ts)} timestamps (first: frame "
                           f"{missing[0]}, t = {want[missing[0]]:.3f} s)")  # fmt: skip
    return np.stack(out)


def read_episode(folder: LeRobotFolder, ep: Episode, keys: Sequence[str], cache: dict) -> dict:
    """One episode as ``{key: [T, ...]}`` (cameras uint8 ``[T, H, W, C]``), checked."""
    rows = _frames_table(folder, ep, cache)
    ts = np.asarray(rows["timestamp"], dtype=np.float64)
    _check_timestamps(folder, ep, ts)
    out = {}
    for key in keys:
        f = folder.features[key]
        if f["dtype"] == "video":
            v = _video(folder, ep, key, ts)
        elif f["dtype"] == "image":
            v = _images(folder, ep, rows, key)
        else:
            v = _column(folder, ep, rows, key)
        if f["dtype"] in CAMERA_DTYPES and tuple(v.shape[1:]) != tuple(f["shape"]):
            raise DatasetError(f"{ep.data_file}: episode {ep.index}: camera {key!r} frames are "
                               f"{list(v.shape[1:])}; info.json says {f['shape']}")  # fmt: skip
        out[key] = v
    return out


def iter_episodes(folder: LeRobotFolder, keys: Sequence[str]) -> Iterator[tuple[Episode, dict]]:
    cache: dict = {}
    for ep in folder.episodes:
        yield ep, read_episode(folder, ep, keys, cache)


def check(folder: LeRobotFolder) -> list[str]:
    """Every problem of the folder, each naming its file, episode and key: missing files,
    episodes that disagree with their metadata, frames that cannot be decoded (everything is
    read once)."""
    problems, cache = [], {}
    keys = [*folder.numeric, *folder.cameras]
    for ep in folder.episodes:
        try:
            read_episode(folder, ep, keys, cache)
        except DatasetError as e:
            problems.append(str(e))
    return problems


def cached_buffer(src: str | Path, cache_dir: str | Path | None = None, progress: bool = True):
    """The zarr copy of the LeRobot dataset ``src``, decoded once and kept in ``cache_dir``
    (default ``~/.cache/diffusion_policy_dist/lerobot``) under the folder's name and a
    fingerprint of its files, so a changed dataset is decoded again; returns its path."""
    folder = LeRobotFolder(src)
    root = Path(cache_dir or Path.home() / ".cache" / "diffusion_policy_dist" / "lerobot")
    path = root / f"{folder.path.resolve().name}-{folder.version}-{folder.fingerprint()}.zarr"
    if not path.exists():
        root.mkdir(parents=True, exist_ok=True)
        to_replay_buffer(folder.path, path, progress=progress)
    return path


def to_replay_buffer(
    src: str | Path,
    output: str | Path,
    keys: Sequence[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> dict[str, Any]:
    """Decode the LeRobot dataset ``src`` into a zarr dataset at ``output`` (written whole at a
    temporary path, then renamed); ``keys``: the features to keep (default: every numeric
    feature and camera). Returns a summary."""
    from tqdm.auto import tqdm

    folder = LeRobotFolder(src)
    keys = list(keys) if keys else [*folder.numeric, *folder.cameras]
    unknown = [k for k in keys if k not in folder.features or k in BOOKKEEPING]
    if unknown:
        raise DatasetError(f"{src}: no feature(s) {unknown}; it has "
                           f"{[k for k in folder.features if k not in BOOKKEEPING]}")  # fmt: skip
    attrs = {"source": {"format": f"lerobot-{folder.version}", "path": str(folder.path.resolve()),
                        "fps": folder.fps, "fingerprint": folder.fingerprint(),
                        "tasks": sorted(set(folder.tasks.values()))}}  # fmt: skip
    with atomic_buffer(output, overwrite=overwrite, attrs=attrs) as buf:
        bar = tqdm(total=len(folder.episodes), desc=f"decode {folder.path.name}",
                   disable=not progress)  # fmt: skip
        with bar:
            for ep, episode in iter_episodes(folder, keys):
                buf.add_episode(episode, info={"lerobot_episode": ep.index, "tasks": ep.tasks})
                bar.update(1)
    frames = sum(e.length for e in folder.episodes)
    return {"input": str(src), "output": str(output), "episodes": len(folder.episodes),
            "frames": frames, "keys": keys, "fps": folder.fps}  # fmt: skip
