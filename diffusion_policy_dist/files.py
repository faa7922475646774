"""Atomic file and directory writes, and strict JSON.

Everything the package writes for a user to keep (checkpoints, datasets, results) goes through
here: files and whole directories are built under a hidden temporary name beside their final
path and renamed into place, so a reader (or a crash) never sees half of one. JSON is strict:
NaN and inf become ``null`` (``NaN`` is not JSON).
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any


def strict_json(obj: Any) -> Any:
    """``obj`` as plain JSON values: NaN/inf floats become None, tuples and arrays lists, numpy and
    torch scalars Python numbers, and any other non-JSON value its ``str``."""
    if isinstance(obj, float):
        return obj if math.isfinite(obj) else None
    if isinstance(obj, dict):
        return {str(k): strict_json(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [strict_json(v) for v in obj]
    if obj is None or isinstance(obj, (bool, int, str)):
        return obj
    if hasattr(obj, "tolist"):  # numpy arrays and scalars, torch tensors
        return strict_json(obj.tolist())
    if hasattr(obj, "item"):
        return strict_json(obj.item())
    return str(obj)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a directory entry (a rename) to disk where the platform allows it."""
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


def temp_sibling(path: str | os.PathLike, tag: str = "tmp") -> Path:
    """A fresh hidden name beside ``path``: ``.<name>.<tag>-<8 hex>``."""
    p = Path(path)
    return p.with_name(f".{p.name}.{tag}-{uuid.uuid4().hex[:8]}")


def leftovers(path: str | os.PathLike) -> list[Path]:
    """Temporary and moved-aside copies of ``path`` left by interrupted writes."""
    p = Path(path)
    if not p.parent.exists():
        return []
    return sorted(
        q for q in p.parent.iterdir() if q.name.startswith((f".{p.name}.tmp-", f".{p.name}.old-"))
    )


def write_text_atomic(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` via a temporary file and a rename (fsynced)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(path)
    try:
        with open(tmp, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def write_json_atomic(path: str | os.PathLike, obj: Any, indent: int | None = 1) -> Path:
    """Strict JSON (see :func:`strict_json`) written atomically."""
    return write_text_atomic(path, json.dumps(strict_json(obj), indent=indent, allow_nan=False))


def replace_dir(tmp: str | os.PathLike, final: str | os.PathLike) -> None:
    """Move the finished directory ``tmp`` to ``final``. An existing ``final`` is first moved
    aside and deleted only once the new one is in place, so at every instant one complete copy
    exists on disk (under ``final`` or under its ``.old-`` name)."""
    tmp, final = Path(tmp), Path(final)
    fsync_dir(tmp)
    old = None
    if final.exists():
        old = temp_sibling(final, "old")
        os.replace(final, old)
    os.replace(tmp, final)
    fsync_dir(final.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building_dir(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary directory beside ``final``; on a clean exit it replaces ``final``
    (:func:`replace_dir`), on an exception it is removed and ``final`` is left untouched."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = temp_sibling(final)
    tmp.mkdir()
    try:
        yield tmp
        replace_dir(tmp, final)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
