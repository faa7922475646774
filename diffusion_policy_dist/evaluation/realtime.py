"""The rollout under a control clock: the env keeps stepping while the policy thinks.

A chunk asked for at step T (from the observation of step T) arrives d steps later, d =
ceil(latency x control_hz), with the latency measured per call (``measured``) or given
(``<x>ms``, ``<k>steps``); meanwhile the slot executes what is left of its previous chunk (or
holds its last action: a stale step, and a deadline miss for that chunk). What is executed on
arrival, and when to ask, follow the chosen transition (:mod:`..control.transitions`, shared with
the threaded controller). An episode's first chunk is waited for (the robot starts still).
With ``sync`` the world pauses for every chunk: the plain rollout, the zero-delay reference.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ..control import steady
from ..control.transitions import delay_steps, next_queue, request_lead
from ..stats import percentiles
from .latency import WARMUP_CALLS
from .rollout import Rollout


@dataclass
class Clock:
    """``control_hz``; ``latency``: ``(kind, value)`` from :func:`parse_latency`."""

    control_hz: float
    latency: tuple[str, float]
    transition: str
    blend_steps: int = 2

    def label(self) -> str:
        kind, value = self.latency
        return "measured" if kind == "measured" else f"{value:g}{kind}"

    def delay(self, ms: float) -> int:
        kind, value = self.latency
        if kind == "steps":
            return int(value)
        return delay_steps(ms if kind == "measured" else value, self.control_hz)


@dataclass
class _Pending:
    plan: np.ndarray  # [A, Da] from the request step on
    requested: int  # the slot's step at the request
    arrives: int  # the step from which it can be executed
    missed: bool = False


class RealtimeRollout(Rollout):
    """:class:`Rollout` with a control clock (see the module docstring)."""

    def __init__(self, *args: Any, clock: Clock, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.clock = clock
        self.inflight: dict[int, _Pending] = {}
        self.delays: list[int] = []
        self.recent: collections.deque = collections.deque(maxlen=5)
        self.misses = self.requests = 0

    def run(self) -> list[dict[str, Any]]:
        """As :meth:`Rollout.run`, with steady timing when the latency is measured: warm-up
        chunks on the first observations (with noise of their own) and no garbage-collector
        pauses inside a timed call (collections happen as episodes end, untimed)."""
        if self.clock.latency[0] != "measured":
            return super().run()
        self._refill()
        obs = self._batch_obs(self._running())
        gen = torch.Generator(device=self.policy.device).manual_seed(0)
        for _ in range(WARMUP_CALLS):
            self.policy.predict_action(obs, sampler=self.sampler, generator=gen)
        with steady.quiet_gc():
            return super().run()

    def _lead(self) -> int:
        d = max(self.recent) if self.recent else self.clock.delay(0.0)
        return request_lead(self.clock.transition, d, self.clock.blend_steps)

    def _plan(self) -> None:
        lead = self._lead()
        which = [
            i
            for i in self._running()
            if i not in self.inflight
            and (not self.slots[i].actions or len(self.slots[i].queue) <= lead)
        ]
        if not which:
            return
        out = self._predict(which, **self._prefix(which))
        d = self.clock.delay(self.chunk_ms[-1])
        start = self.policy.window.action_start
        plans = out["action_pred"][:, start:].detach().cpu().numpy().astype(np.float32)
        self.recent.append(d)
        for j, i in enumerate(which):
            slot = self.slots[i]
            if not slot.actions:  # an episode's first chunk: waited for
                self._switch(i, _Pending(plans[j], slot.length, slot.length))
                continue
            self.requests += 1
            self.delays.append(d)
            self.inflight[i] = _Pending(plans[j], slot.length, slot.length + d)

    def _prefix(self, which: list[int]) -> dict[str, torch.Tensor]:
        """``prefix`` mode: each slot's queued actions, committed from this step on."""
        if self.clock.transition != "prefix":
            return {}
        room = self.policy.window.horizon - self.policy.window.action_start
        left = [_left(self.slots[i].queue)[:room] for i in which]
        width = max(len(x) for x in left)
        if width == 0:
            return {}
        da = self.policy.action_dim
        prefix = np.zeros((len(which), width, da), np.float32)
        for j, x in enumerate(left):
            if len(x):
                prefix[j, : len(x)] = x
        dev = self.policy.device
        lengths = torch.tensor([len(x) for x in left], device=dev)
        return {"prefix": torch.as_tensor(prefix, device=dev), "prefix_lengths": lengths}

    def _switch(self, i: int, p: _Pending) -> None:
        slot = self.slots[i]
        old = _left(slot.queue)
        n = self.policy.window.n_action_steps
        queue = next_queue(self.clock.transition, old, p.plan, slot.length - p.requested, n)
        slot.queue.set(queue[None])
        slot.fresh = len(queue) > 0
        self.misses += int(p.missed)

    def _next_action(self, i: int) -> np.ndarray:
        slot = self.slots[i]
        p = self.inflight.get(i)
        if p is not None and slot.length >= p.arrives:
            del self.inflight[i]
            self._switch(i, p)
        if len(slot.queue):
            return super()._next_action(i)
        slot.stale += 1  # nothing ready: hold the last action
        if p is not None:
            p.missed = True
        a = slot.actions[-1]
        slot.actions.append(a)
        return a

    def _tick(self) -> None:
        super()._tick()
        self._refill()  # episodes start as soon as a slot is free (chunks are not aligned)

    def _finish(self, i: int, info) -> None:
        steady.collect()  # between episodes: nothing is timed here
        p = self.inflight.pop(i, None)  # a chunk still due when the episode ended
        self.misses += int(p is not None and p.missed)
        super()._finish(i, info)


def _left(queue) -> np.ndarray:
    rest = queue.remaining()
    return np.zeros((0, 0), np.float32) if rest is None else rest[0]


def realtime_metrics(rollout: Rollout, clock: Clock | None, records) -> dict[str, Any]:
    """``eval.json``'s real-time keys: ``control_hz``, ``transition``, ``latency``,
    ``delay_steps`` (p50, max), ``boundary_jerk`` and ``interior_jerk`` (means over episodes),
    ``deadline_miss_rate`` (chunks that arrived after the queue ran out; for ``sync``, chunks
    slower than one control period) and ``stale_step_rate`` (held actions per executed step)."""
    steps = sum(r["length"] for r in records)
    out: dict[str, Any] = {
        "control_hz": None if clock is None else clock.control_hz,
        "transition": "sync" if clock is None else clock.transition,
        "latency": None if clock is None else clock.label(),
        "boundary_jerk": _mean(r.get("boundary_jerk") for r in records),
        "interior_jerk": _mean(r.get("interior_jerk") for r in records),
        "stale_step_rate": sum(r.get("stale_steps", 0) for r in records) / steps if steps else 0.0,
    }
    if clock is not None:  # the calls the deadline is judged on, as the rollout made them
        out["deadline_latency_ms"] = percentiles(rollout.chunk_ms)
        out["deadline_batch"] = len(rollout.slots)
    if isinstance(rollout, RealtimeRollout):
        d = np.asarray(rollout.delays or [0])
        out["delay_steps"] = {"p50": float(np.median(d)), "max": int(d.max())}
        out["deadline_miss_rate"] = rollout.misses / rollout.requests if rollout.requests else 0.0
    else:
        out["delay_steps"] = {"p50": 0.0, "max": 0}
        late = [ms > 1000.0 / clock.control_hz for ms in rollout.chunk_ms] if clock else []
        out["deadline_miss_rate"] = float(np.mean(late)) if late else None
    return out


def _mean(values) -> float | None:
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None
