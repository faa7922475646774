"""A pool of env slots for evaluation: parallel resets and steps, and recovery from lost workers.

Each slot is one :mod:`env worker <diffusion_policy_dist.envs.workers>`. Calls go out to every
slot involved before any answer is awaited, so envs in processes step in parallel. A worker that
dies or stops answering fails only the episode it was running (with reason ``worker_died`` or
``timeout``) and is replaced; a worker whose episode ended with an env error is replaced too,
so a broken env state never leaks into the next episode.
"""

from __future__ import annotations

from typing import Any

from ..envs.safe import failure_info
from ..envs.workers import EnvSource, LocalWorker, ProcessWorker, WorkerLost

# the first answer includes spawning a process and importing MuJoCo/gymnasium
START_TIMEOUT_S = 120.0


def lost_info(err: WorkerLost) -> dict[str, Any]:
    """The info of an episode whose worker was lost (as :class:`SafeEnv` reports a failure
    inside the env)."""
    return failure_info(err.reason, str(err))


class EnvPool:
    """``n`` slots of the env ``source`` builds (rendering frames if ``render``), each in its own
    process (``processes``) or all in this one. Reusable across evaluations of one env."""

    def __init__(
        self,
        source: EnvSource,
        n: int,
        render: bool = False,
        processes: bool = True,
        timeout_s: float = 60.0,
    ) -> None:
        self.source, self.n, self.render = source, n, render
        self.processes, self.timeout_s = processes, timeout_s
        self.workers: list[Any] = []
        try:
            self.workers = [self._new() for _ in range(n)]
            for w in self.workers:
                w.wait_ready(max(START_TIMEOUT_S, timeout_s))
        except BaseException:
            self.close()
            raise
        self.observation_space, self.action_space = self.workers[0].spaces

    def _new(self):
        cls = ProcessWorker if self.processes else LocalWorker
        return cls(self.source.factory, self.render)

    def replace(self, i: int) -> None:
        """Start a fresh worker in slot ``i``."""
        self.workers[i].kill()
        self.workers[i] = self._new()
        self.workers[i].wait_ready(max(START_TIMEOUT_S, self.timeout_s))

    def _call_many(self, calls: dict[int, tuple[str, Any]]) -> dict[int, Any]:
        """Send every call, then collect the answers; a lost worker's answer is the
        :class:`WorkerLost` itself, and its slot gets a fresh worker."""
        for i, (cmd, arg) in calls.items():
            self.workers[i].send(cmd, arg)
        out: dict[int, Any] = {}
        for i in calls:
            try:
                out[i] = self.workers[i].recv(self.timeout_s)
            except WorkerLost as e:
                out[i] = e
        for i, v in out.items():
            if isinstance(v, WorkerLost):
                self.replace(i)
        return out

    def reset(self, slots: dict[int, tuple[int, bool]]) -> dict[int, tuple[Any, dict]]:
        """Reset slot ``i`` with ``(seed, record_frames)`` for each entry; ``(obs, info)`` each
        (obs None for a lost worker)."""
        out = self._call_many({i: ("reset", arg) for i, arg in slots.items()})
        return {
            i: ((None, lost_info(v)) if isinstance(v, WorkerLost) else v) for i, v in out.items()
        }

    def step(self, actions: dict[int, Any]) -> dict[int, tuple[Any, float, bool, bool, dict]]:
        """Step slot ``i`` with ``actions[i]``; ``(obs, reward, terminated, truncated, info)``
        each (a lost worker's episode ends as a failure)."""
        out = self._call_many({i: ("step", a) for i, a in actions.items()})
        return {
            i: ((None, 0.0, False, False, lost_info(v)) if isinstance(v, WorkerLost) else v)
            for i, v in out.items()
        }

    def frames(self, i: int) -> list:
        """The frames slot ``i`` recorded in its current episode ([] if its worker is lost)."""
        frames = self._call_many({i: ("frames", None)})[i]
        return frames if isinstance(frames, list) else []

    def close(self) -> None:
        for w in self.workers:
            try:
                w.close()
            except Exception:
                pass
        self.workers = []

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
