"""One writer per dataset: an OS file lock beside the dataset, held while it is open for writing.

The lock is ``.<name>.lock`` next to the dataset (so it exists before the dataset does, and
guards its creation too); the holder describes itself in ``.<name>.writer.json`` so that a second
writer is told who holds it. The OS releases the lock when its process dies, so a killed writer
never leaves a dataset locked.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

from filelock import FileLock, Timeout


class DatasetLockedError(RuntimeError):
    """Another process is writing to this dataset."""


class DatasetLock:
    """The write lock of the dataset at ``path``; :meth:`acquire` fails at once if taken."""

    def __init__(self, path: str | os.PathLike) -> None:
        p = Path(path).absolute()
        self.path = p
        self._lock = FileLock(str(p.with_name(f".{p.name}.lock")))
        self._owner = p.with_name(f".{p.name}.writer.json")

    def acquire(self) -> DatasetLock:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise DatasetLockedError(
                f"{self.path} is being written by another process ({self._describe_owner()}); "
                "wait for it to finish, or write to another path. Nothing was changed."
            ) from None
        me = {"pid": os.getpid(), "command": " ".join(sys.argv), "since": time.strftime("%c")}
        self._owner.write_text(json.dumps(me))
        return self

    def _describe_owner(self) -> str:
        try:
            o = json.loads(self._owner.read_text())
            return f"PID {o['pid']}, since {o['since']}: {o['command']}"
        except (OSError, ValueError, KeyError):
            return "unknown process"

    def release(self) -> None:
        if self._lock.is_locked:
            try:
                self._owner.unlink()
            except OSError:
                pass
            self._lock.release()

    @property
    def held(self) -> bool:
        return self._lock.is_locked
