"""Episodes stored in a zarr group, in Diffusion Policy's layout.

::

    <path>/
      data/<key>          [N_steps, *shape]  time on axis 0, episodes concatenated
      meta/episode_ends   [N_episodes] int64 cumulative ends (exclusive)
      .zattrs             format version, shape_meta, env spec, per-episode info, ...

Reads Diffusion Policy's own files (zarr v2, directory or ``.zip``) and zarr v3 groups. Writes
zarr v2 by default so that zarr-python 2 (DP's environment) can read what we write.

Appending is atomic per episode: data arrays are extended first, then the per-episode info,
and ``meta/episode_ends`` last. That last write is the commit: a process killed mid-append
leaves data beyond ``episode_ends[-1]``, which readers ignore and the next append trims.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import zarr

from ..files import building_dir, leftovers, replace_dir, temp_sibling
from ..stats import mode_frequencies
from .lock import DatasetLock

FORMAT_NAME = "diffusion_policy_dist.replay_buffer"
FORMAT_VERSION = 1


class DatasetError(ValueError):
    """A dataset that cannot be used as it is; the message names the file, key and shapes."""


def _new_group(path: str | os.PathLike, attrs: Mapping[str, Any] | None, zarr_format: int):
    """An empty dataset group at ``path``: ``data/``, ``meta/episode_ends`` and our attributes."""
    root = zarr.open_group(str(path), mode="w", zarr_format=zarr_format)
    root.require_group("data")
    meta = root.require_group("meta")
    meta.create_array("episode_ends", shape=(0,), chunks=(4096,), dtype="int64")
    root.attrs.update(
        {"format": FORMAT_NAME, "format_version": FORMAT_VERSION, "episode_info": []}
        | dict(attrs or {})
    )
    return root


def is_zarr_group(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a directory holding a zarr group (v2 or v3)."""
    return any(os.path.exists(os.path.join(path, f)) for f in (".zgroup", "zarr.json"))


def _default_compressor(dtype: np.dtype, zarr_format: int):
    """zstd via blosc: fast to decode, the usual choice for both images and low-dim data."""
    if zarr_format == 2:
        import numcodecs

        shuffle = numcodecs.Blosc.NOSHUFFLE if dtype == np.uint8 else numcodecs.Blosc.SHUFFLE
        return numcodecs.Blosc(cname="zstd", clevel=3, shuffle=shuffle)
    from zarr.codecs import BloscCodec

    return BloscCodec(
        cname="zstd", clevel=3, shuffle="noshuffle" if dtype == np.uint8 else "shuffle"
    )


def _default_chunks(shape: tuple[int, ...], dtype: np.dtype) -> tuple[int, ...]:
    if dtype == np.uint8 and len(shape) >= 2:  # images: one frame per chunk
        return (1, *shape)
    return (1024, *shape)


class ReplayBuffer:
    """A zarr-backed store of episodes. Use :meth:`create` or :meth:`open`, not the constructor.

    - ``add_episode({key: [T, *shape]})`` appends one episode atomically;
    - ``get_episode(i) -> {key: np.ndarray}``;
    - ``n_episodes``, ``n_steps``, ``episode_ends``, ``episode_lengths``, ``keys()``;
    - ``attrs``: the root attributes (shape_meta, env spec, episode info ...).
    """

    def __init__(
        self, root: zarr.Group, path: str, writable: bool, lock: DatasetLock | None = None
    ) -> None:
        self.root = root
        self.path = path
        self.writable = writable
        self._lock = lock
        self.problems: list[str] = []  # what a read-only open saw but did not repair
        self._validate()

    # ------------------------------------------------------------------ construction
    @classmethod
    def create(
        cls,
        path: str | os.PathLike,
        *,
        overwrite: bool = False,
        attrs: Mapping[str, Any] | None = None,
        zarr_format: int = 2,
    ) -> ReplayBuffer:
        """Create an empty buffer at ``path`` and hold its write lock. It is built under a
        temporary name and renamed, so a crash leaves either nothing or a complete empty
        dataset. Refuses an existing path unless ``overwrite``."""
        path = str(path)
        lock = DatasetLock(path).acquire()
        try:
            if os.path.exists(path) and not overwrite:
                raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
            for stale in leftovers(path):  # from a creation that was killed (we hold the lock)
                shutil.rmtree(stale, ignore_errors=True)
            tmp = temp_sibling(path)
            _new_group(tmp, attrs, zarr_format)
            replace_dir(tmp, path)
            return cls(zarr.open_group(path, mode="a"), path, True, lock)
        except BaseException:
            lock.release()
            raise

    @classmethod
    def open(cls, path: str | os.PathLike, writable: bool = False) -> ReplayBuffer:
        """Open an existing buffer, read-only unless ``writable`` (then it holds the dataset's
        write lock until :meth:`close`, and repairs an interrupted append). ``.zip`` paths are
        read-only."""
        path = str(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"dataset {path} does not exist")
        if path.endswith(".zip"):
            if writable:
                raise ValueError(f"{path}: zip stores are read-only; convert to a directory first")
            from zarr.storage import ZipStore

            store: Any = ZipStore(path, mode="r")
        else:
            store = path
            if not is_zarr_group(path):
                raise DatasetError(
                    f"{path} is not a zarr dataset (no .zgroup or zarr.json in it); "
                    "nothing was written to it"
                )
        lock = DatasetLock(path).acquire() if writable else None
        try:
            root = zarr.open_group(store, mode="a" if writable else "r")
            return cls(root, path, writable, lock)
        except BaseException as e:
            if lock is not None:
                lock.release()
            if isinstance(e, (DatasetError, KeyboardInterrupt)):
                raise
            raise DatasetError(f"{path} is not a readable zarr group: {e}") from e

    def close(self) -> None:
        """Release the write lock (a read-only buffer has none)."""
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> ReplayBuffer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ------------------------------------------------------------------ validation
    @property
    def is_ours(self) -> bool:
        return self.root.attrs.get("format") == FORMAT_NAME

    def _validate(self) -> None:
        p = self.path
        for name in ("data", "meta"):
            if name not in self.root:
                raise DatasetError(
                    f"{p}: missing group '{name}/'; expected Diffusion Policy's layout "
                    f"data/<key> + meta/episode_ends (found {sorted(self.root.keys())})"
                )
        if "episode_ends" not in self.root["meta"]:
            raise DatasetError(f"{p}: missing 'meta/episode_ends'")
        raw = np.asarray(self.root["meta/episode_ends"][:], dtype=np.int64)
        if raw.ndim != 1:
            raise DatasetError(f"{p}: meta/episode_ends must be 1-D, got shape {raw.shape}")
        shapes = {k: tuple(self.root["data"][k].shape) for k in self.keys()}
        lengths = {k: shape[0] for k, shape in shapes.items()}
        self._ends = self._committed_ends(raw, min(lengths.values(), default=0))
        n_steps = int(self._ends[-1]) if len(self._ends) else 0
        for key, n in lengths.items():
            if n < n_steps or (n > n_steps and not self.is_ours):
                raise DatasetError(
                    f"{p}: data/{key} has shape {shapes[key]} ({n} steps) but meta/episode_ends "
                    f"says the {len(self._ends)} episodes end at step {n_steps}"
                )
        stale = {k: n for k, n in lengths.items() if n > n_steps}
        if stale or len(self._ends) < len(raw):
            what = (
                f"an interrupted or damaged append after episode {len(self._ends)}: "
                f"{len(raw) - len(self._ends)} uncommitted episode_ends entries, "
                f"{len(stale)} data arrays longer than the {n_steps} committed steps"
            )
            if self.writable:
                warnings.warn(f"{p}: repairing {what}", stacklevel=3)
                self._trim(n_steps, stale)
            else:
                self.problems.append(
                    f"{what}. Readers of this package ignore them, Diffusion Policy's does not; "
                    f"repair with: dpd repair path={p}"
                )

    def _committed_ends(self, ends: np.ndarray, shortest: int) -> np.ndarray:
        """The committed prefix of ``meta/episode_ends``. In our own datasets a trailing entry
        that does not increase (an append killed between growing the array and writing its
        value) or that passes the shortest data array (a damaged write) is not committed."""
        n = len(ends)
        while (
            self.is_ours
            and n
            and (ends[n - 1] <= (ends[n - 2] if n > 1 else 0) or ends[n - 1] > shortest)
        ):
            n -= 1
        ends = ends[:n]
        if len(ends) and (np.any(np.diff(ends) <= 0) or ends[0] <= 0):
            raise DatasetError(
                f"{self.path}: meta/episode_ends must be strictly increasing and positive; got "
                f"{ends[:10].tolist()}{' ...' if len(ends) > 10 else ''}"
            )
        return ends

    def _trim(self, n_steps: int, stale: Mapping[str, int]) -> None:
        """Cut data arrays and episode records back to the committed episodes."""
        for key in stale:
            arr = self.root["data"][key]
            arr.resize((n_steps, *arr.shape[1:]))
        ends_arr = self.root["meta/episode_ends"]
        if ends_arr.shape[0] != len(self._ends):
            ends_arr.resize((len(self._ends),))
            ends_arr[:] = self._ends
        info = list(self.root.attrs.get("episode_info", []))
        if len(info) > len(self._ends):
            self.root.attrs["episode_info"] = info[: len(self._ends)]

    # ------------------------------------------------------------------ properties
    @property
    def attrs(self):
        return self.root.attrs

    @property
    def episode_ends(self) -> np.ndarray:
        return self._ends.copy()

    @property
    def n_episodes(self) -> int:
        return len(self._ends)

    @property
    def n_steps(self) -> int:
        return int(self._ends[-1]) if len(self._ends) else 0

    @property
    def episode_lengths(self) -> np.ndarray:
        return np.diff(np.concatenate([[0], self._ends]))

    @property
    def episode_info(self) -> list[dict]:
        """Per-episode records (seed, mode, expert success, ...) for committed episodes."""
        return list(self.root.attrs.get("episode_info", []))[: self.n_episodes]

    def mode_frequencies(self) -> dict[str, float] | None:
        """Behaviour-mode frequencies of the demonstrations (per-episode ``mode`` records and the
        env spec's ``mode_names``), or None when the dataset doesn't record modes."""
        names = dict(self.attrs.get("env") or {}).get("mode_names")
        modes = [r.get("mode") for r in self.episode_info]
        if not names or not modes or any(m is None for m in modes):
            return None
        return mode_frequencies([int(m) for m in modes], names)

    def keys(self) -> list[str]:
        return sorted(self.root["data"].array_keys())

    def shape(self, key: str) -> tuple[int, ...]:
        """Per-step shape of ``data/<key>``."""
        return tuple(self._array(key).shape[1:])

    def dtype(self, key: str) -> np.dtype:
        return self._array(key).dtype

    def _array(self, key: str):
        if key not in self.root["data"]:
            raise KeyError(f"{self.path}: no key 'data/{key}'; keys are {self.keys()}")
        return self.root["data"][key]

    def __len__(self) -> int:
        return self.n_episodes

    def __repr__(self) -> str:
        shapes = ", ".join(f"{k}{list(self.shape(k))}:{self.dtype(k)}" for k in self.keys())
        return (
            f"ReplayBuffer({self.path!r}, episodes={self.n_episodes}, steps={self.n_steps}, "
            f"{shapes})"
        )

    # ------------------------------------------------------------------ reading
    def episode_slice(self, i: int) -> slice:
        if not -self.n_episodes <= i < self.n_episodes:
            raise IndexError(
                f"{self.path}: episode {i} out of range (n_episodes={self.n_episodes})"
            )
        i %= self.n_episodes
        start = int(self._ends[i - 1]) if i > 0 else 0
        return slice(start, int(self._ends[i]))

    def get_episode(self, i: int, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """Episode ``i`` as ``{key: np.ndarray [T, *shape]}``."""
        sl = self.episode_slice(i)
        return {k: self._read(k, sl) for k in (keys or self.keys())}

    def load(self, keys: list[str] | None = None) -> dict[str, np.ndarray]:
        """All committed steps of ``keys`` as in-memory arrays ``[n_steps, *shape]``."""
        return {k: self._read(k, slice(0, self.n_steps)) for k in (keys or self.keys())}

    def _read(self, key: str, sl: slice) -> np.ndarray:
        try:
            return np.asarray(self._array(key)[sl])
        except KeyError:
            raise
        except Exception as e:  # a chunk that doesn't decode: say which one
            bad = self.verify([key]) or [f"data/{key}: {type(e).__name__}: {e}"]
            raise DatasetError(f"{self.path}: {bad[0]}; the dataset is damaged") from e

    def verify(self, keys: list[str] | None = None) -> list[str]:
        """Decode every chunk of every committed step; one message per chunk that fails
        (naming the key, the chunk and its steps)."""
        bad = []
        for key in keys or self.keys():
            arr = self._array(key)
            step = arr.chunks[0]
            for c, start in enumerate(range(0, self.n_steps, step)):
                stop = min(start + step, self.n_steps)
                try:
                    arr[start:stop]
                except Exception as e:
                    bad.append(
                        f"data/{key} chunk {c} (steps {start}-{stop - 1}, shape "
                        f"{tuple(arr.shape)}) cannot be decoded: {type(e).__name__}: {e}"
                    )
        return bad

    # ------------------------------------------------------------------ writing
    def _check_episode(self, episode: Mapping[str, np.ndarray]) -> int:
        """The episode's length T, after checking its keys, lengths, shapes and values against
        the stored arrays (arrays a killed first append left behind are dropped)."""
        if not episode:
            raise ValueError("add_episode: empty episode dict")
        lengths = {k: v.shape[0] if v.ndim else None for k, v in episode.items()}
        T = next(iter(lengths.values()))
        if T is None or T == 0 or any(n != T for n in lengths.values()):
            raise ValueError(
                f"add_episode: every key needs the same non-zero length; got {lengths}"
            )
        existing = self.keys()
        if existing and sorted(episode) != existing and self.n_episodes == 0:
            # arrays left by a first append that was killed before its commit hold no episode:
            # drop them, so the dataset can still be (re)started with any keys
            for k in existing:
                del self.root["data"][k]
            existing = []
        if existing and sorted(episode) != existing:
            raise ValueError(
                f"add_episode: {self.path} stores keys {existing}, episode has {sorted(episode)}"
            )
        for k, v in episode.items():
            if np.issubdtype(v.dtype, np.floating) and not np.isfinite(v).all():
                bad = int(np.argwhere(~np.isfinite(v.reshape(T, -1)).all(1))[0][0])
                raise ValueError(f"add_episode: {k!r} has NaN/inf (first at step {bad} of {T})")
            if k in existing and tuple(v.shape[1:]) != self.shape(k):
                raise ValueError(
                    f"add_episode: {k!r} has per-step shape {tuple(v.shape[1:])}, "
                    f"{self.path} stores {self.shape(k)}"
                )
        return T

    def add_episode(
        self,
        episode: Mapping[str, np.ndarray],
        info: Mapping[str, Any] | None = None,
        chunks: Mapping[str, tuple[int, ...]] | None = None,
    ) -> int:
        """Append one episode ``{key: [T, *shape]}`` (all keys, equal T) and return its index.

        ``info`` is a JSON-able record kept in ``attrs["episode_info"]`` (e.g. seed, mode).
        The episode becomes visible only once fully written.
        """
        if not self.writable:
            raise PermissionError(f"{self.path} is open read-only; open it with writable=True")
        episode = {k: np.asarray(v) for k, v in episode.items()}
        T = self._check_episode(episode)
        data = self.root["data"]
        for k, v in episode.items():
            if k not in data:
                shape = tuple(v.shape[1:])
                data.create_array(
                    k,
                    shape=(0, *shape),
                    chunks=(chunks or {}).get(k, _default_chunks(shape, v.dtype)),
                    dtype=v.dtype,
                    compressors=_default_compressor(v.dtype, self.root.metadata.zarr_format),
                )
            data[k].append(v.astype(data[k].dtype, copy=False), axis=0)
        if info is not None or "episode_info" in self.root.attrs:
            records = list(self.root.attrs.get("episode_info", []))[: self.n_episodes]
            records.append(dict(info or {}))
            self.root.attrs["episode_info"] = records
        new_end = self.n_steps + T
        self.root["meta/episode_ends"].append(np.array([new_end], dtype=np.int64))  # commit
        self._ends = np.append(self._ends, new_end)
        return self.n_episodes - 1


@contextlib.contextmanager
def atomic_buffer(path: str | os.PathLike, overwrite: bool = False, **create_kwargs):
    """Build a whole new buffer at a temporary path and move it to ``path`` only on success,
    holding ``path``'s write lock throughout. An exception inside the block leaves any existing
    dataset at ``path`` untouched."""
    path = Path(path)
    lock = DatasetLock(path).acquire()
    try:
        if path.exists() and not overwrite:
            raise FileExistsError(f"{path} already exists; pass overwrite=True to replace it")
        with building_dir(path) as tmp:
            shutil.rmtree(tmp)  # the group is created at this name
            attrs, fmt = create_kwargs.get("attrs"), create_kwargs.get("zarr_format", 2)
            buf = ReplayBuffer(_new_group(tmp, attrs, fmt), str(tmp), writable=True)
            yield buf
        buf.path = str(path)
    finally:
        lock.release()
