"""Env workers: one env behind a small command interface, in its own process or in this one.

A :class:`ProcessWorker` runs the env in a spawned process and answers ``reset``, ``step`` and
``frames`` over a pipe; every answer is awaited with a timeout, so an env that hangs or whose
process dies surfaces as :class:`WorkerLost` (with a reason) instead of blocking or killing the
caller. A :class:`LocalWorker` runs the env in this process behind the same interface (faster for
cheap envs; it cannot be timed out). Both wrap the env in :class:`~.safe.SafeEnv`.

An :class:`EnvSource` says how to build the env: a picklable ``factory(render) -> gym.Env``
(e.g. from an env spec) plus what evaluation reports about it.
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from .safe import SafeEnv
from .spec import Trust, check_trusted, make_env, migrate_spec, spec_label

EnvFactory = Callable[[bool], gym.Env]  # render -> env; picklable for process workers


@dataclass(frozen=True)
class EnvSource:
    """How to build an env (``factory(render)``) and what to report about it: ``spec`` (JSON,
    written to results), ``mode_names`` (behaviour modes of ``info["mode"]``), ``control_hz``."""

    factory: EnvFactory
    spec: Mapping[str, Any] = field(default_factory=dict)
    mode_names: tuple[str, ...] | None = None
    control_hz: float | None = None

    @property
    def label(self) -> str:
        return spec_label(self.spec)

    @classmethod
    def from_spec(cls, spec: Mapping[str, Any], trust: Trust | None = None) -> EnvSource:
        """The source of an env spec (see :mod:`.spec`); only what ``trust`` allows is run."""
        spec = migrate_spec(spec)
        check_trusted(spec, trust)  # before any worker starts: refuse in this process
        names = spec.get("mode_names")
        return cls(
            functools.partial(make_env, spec, trust=trust),
            spec,
            tuple(names) if names else None,
            spec.get("control_hz"),
        )


class WorkerLost(RuntimeError):
    """The worker process died or stopped answering; ``reason`` is ``worker_died`` or
    ``timeout``."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class EnvBuildError(RuntimeError):
    """The env could not be built at all (a configuration problem, not a failed episode)."""


def _run(env: SafeEnv, cmd: str, arg: Any) -> Any:
    if cmd == "reset":
        seed, record = arg
        env.record = bool(record)
        return env.reset(seed=seed)
    if cmd == "step":
        return env.step(arg)
    if cmd == "frames":
        return env.pop_frames()
    raise ValueError(f"unknown worker command {cmd!r}")


def _serve(conn, factory: EnvFactory, render: bool) -> None:
    """The worker process: build the env, then answer commands until ``close`` or EOF."""
    try:
        env = SafeEnv(factory(render))
        conn.send(("ok", (env.observation_space, env.action_space)))
    except BaseException as e:
        conn.send(("build_error", f"{type(e).__name__}: {e}\n{traceback.format_exc(limit=4)}"))
        return
    while True:
        try:
            cmd, arg = conn.recv()
        except (EOFError, KeyboardInterrupt):
            break
        if cmd == "close":
            break
        try:
            conn.send(("ok", _run(env, cmd, arg)))
        except BaseException as e:  # SafeEnv catches env errors; this is the worker's own
            conn.send(("error", f"{type(e).__name__}: {e}"))
    env.close()


class ProcessWorker:
    """An env in a spawned process. ``send`` then ``recv(timeout)``; a dead or silent worker
    raises :class:`WorkerLost` (and is killed). Call :meth:`wait_ready` after creating it."""

    def __init__(self, factory: EnvFactory, render: bool = False) -> None:
        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=_serve, args=(child, factory, render), daemon=True)
        self._proc.start()
        child.close()
        self.spaces: tuple[gym.Space, gym.Space] | None = None
        self._send_error: WorkerLost | None = None

    def wait_ready(self, timeout_s: float) -> None:
        """Wait for the env to be built; raises :class:`EnvBuildError` if building failed."""
        status, payload = self._answer(timeout_s, "starting the env")
        if status == "build_error":
            self.kill()
            raise EnvBuildError(f"the env could not be built in its worker: {payload}")
        self.spaces = payload

    def send(self, cmd: str, arg: Any = None) -> None:
        self._send_error = None
        try:
            self._conn.send((cmd, arg))
        except (BrokenPipeError, OSError) as e:  # reported by the matching recv
            self._send_error = WorkerLost("worker_died", f"env worker is gone ({e})")

    def recv(self, timeout_s: float) -> Any:
        if self._send_error is not None:
            raise self._send_error
        status, payload = self._answer(timeout_s, "the last command")
        if status != "ok":
            raise WorkerLost("worker_died", f"env worker failed: {payload}")
        return payload

    def _answer(self, timeout_s: float, what: str) -> tuple[str, Any]:
        try:
            if not self._conn.poll(timeout_s):
                self.kill()
                raise WorkerLost(
                    "timeout", f"env worker did not answer {what} within {timeout_s} s"
                )
            return self._conn.recv()
        except (EOFError, OSError) as e:
            self._proc.join(timeout=2.0)
            code = self._proc.exitcode
            self.kill()
            raise WorkerLost("worker_died", f"env worker died (exit code {code}): {e!r}") from e

    def kill(self) -> None:
        if self._proc.is_alive():
            self._proc.kill()
        self._proc.join(timeout=5.0)
        self._conn.close()

    def close(self) -> None:
        try:
            self._conn.send(("close", None))
            self._proc.join(timeout=5.0)
        except (BrokenPipeError, OSError):
            pass
        self.kill()


class LocalWorker:
    """The same interface with the env in this process (no timeouts, no process cost)."""

    def __init__(self, factory: EnvFactory, render: bool = False) -> None:
        try:
            self.env = SafeEnv(factory(render))
        except Exception as e:
            raise EnvBuildError(f"the env could not be built: {type(e).__name__}: {e}") from e
        self.spaces = (self.env.observation_space, self.env.action_space)
        self._result: Any = None

    def wait_ready(self, timeout_s: float) -> None:
        pass

    def send(self, cmd: str, arg: Any = None) -> None:
        self._result = _run(self.env, cmd, arg)

    def recv(self, timeout_s: float) -> Any:
        return self._result

    def kill(self) -> None:
        self.env.close()

    close = kill
