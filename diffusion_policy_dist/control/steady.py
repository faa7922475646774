"""Keeping a control loop's timing steady in Python: no garbage-collector pauses in the middle of
an episode, and the inference thread on a core of its own.

CPython's cyclic garbage collector runs when allocations pass a threshold, wherever that
happens: inside a chunk request it adds milliseconds to one call in a few hundred, which is
exactly the tail a deadline sees. :func:`quiet_gc` collects once, freezes what exists (so later
collections skip it) and turns automatic collection off; the loop then collects at points where
nothing is timed (between episodes). Tensors are freed by reference counting all the same.
"""

from __future__ import annotations

import contextlib
import gc
import os
import threading
from collections.abc import Iterator


@contextlib.contextmanager
def quiet_gc() -> Iterator[None]:
    """No automatic garbage collection inside the block; call :func:`collect` where nothing is
    timed. Restores the collector's state on exit."""
    was_enabled = gc.isenabled()
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        yield
    finally:
        gc.unfreeze()
        if was_enabled:
            gc.enable()


def collect() -> None:
    """A collection at a safe point (e.g. between episodes)."""
    gc.collect()


def pin_this_thread(cpu: int | None) -> None:
    """Run the calling thread on ``cpu`` only (Linux; elsewhere, or with None, a no-op)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return
    if not 0 <= cpu < (os.cpu_count() or 1):
        raise ValueError(f"cpu {cpu} is not one of this machine's {os.cpu_count()} CPUs")
    os.sched_setaffinity(threading.get_native_id(), {cpu})
