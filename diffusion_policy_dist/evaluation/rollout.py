"""The rollout loop: episodes of a policy in a pool of env slots, one control tick at a time.

Each slot keeps the policy's :class:`ObsHistory` and :class:`ActionQueue`. Slots whose queue is
empty are planned together in one batched ``predict_action`` call and every running slot then
executes one action per tick. All chunks of a batch start together; a slot whose episode ends
waits for the chunk boundary of the others, then starts the next episode, so the same seeds give
the same batches, hence the same actions, on every run.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from ..control.transitions import boundary_jerk, interior_jerk
from ..envs.safe import failure_info
from ..queues import ActionQueue, ObsHistory, camera_chw, select_obs
from .pool import EnvPool

LOST = ("worker_died", "timeout")  # failure reasons after which the pool replaced the worker


@dataclass
class _Slot:
    history: ObsHistory
    queue: ActionQueue = field(default_factory=ActionQueue)
    episode: int = -1
    running: bool = False
    ret: float = 0.0
    length: int = 0
    success: bool = False
    score: float | None = None  # running max of info["score"] (e.g. Push-T's coverage score)
    actions: list = field(default_factory=list)  # executed this episode
    boundaries: list = field(default_factory=list)  # steps where a new chunk's first action ran
    fresh: bool = False  # the queue holds a chunk not yet started
    stale: int = 0  # steps that held the last action because no chunk was ready


class Rollout:
    """Runs ``seeds`` (one episode each, in order) with ``sampler`` and returns one record per
    episode. ``on_end(episode, slot)`` is called when an episode ends, before its slot is
    reused (e.g. to fetch its video frames); ``record_first`` episodes record frames."""

    def __init__(
        self,
        policy,
        pool: EnvPool,
        sampler: Any,
        seeds: Sequence[int],
        generator: torch.Generator,
        record_first: int = 0,
        on_end: Callable[[int, int], None] | None = None,
        progress: Callable[[], None] | None = None,
    ) -> None:
        self.policy, self.pool, self.sampler = policy, pool, sampler
        self.seeds, self.generator = list(seeds), generator
        self.record_first, self.on_end, self.progress = record_first, on_end, progress
        self.slots = [_Slot(ObsHistory(policy.window.n_obs_steps)) for _ in range(pool.n)]
        self.pending = list(range(len(self.seeds)))
        self.records: list[dict[str, Any] | None] = [None] * len(self.seeds)
        self.chunk_ms: list[float] = []
        self.nfe_seen: set[int] = set()
        self.first_obs: dict[str, torch.Tensor] | None = None

    def run(self) -> list[dict[str, Any]]:
        self._refill()
        while self.pending or self._running():
            if not self._running():  # every slot idle (episodes ended at their reset)
                self._refill()
                continue
            self._plan()
            self._tick()
            if all(not len(self.slots[i].queue) for i in self._running()):
                self._refill()  # a chunk boundary: idle slots take the next episodes
        return self.records_done()

    def records_done(self) -> list[dict[str, Any]]:
        """The records of the episodes that ended, in episode order."""
        return [r for r in self.records if r is not None]

    def _running(self) -> list[int]:
        return [i for i, s in enumerate(self.slots) if s.running]

    def _refill(self) -> None:
        idle = [i for i, s in enumerate(self.slots) if not s.running]
        assign = {i: self.pending.pop(0) for i in idle[: len(self.pending)]}
        if not assign:
            return
        resets = {i: (self.seeds[ep], ep < self.record_first) for i, ep in assign.items()}
        for i, (obs, info) in self.pool.reset(resets).items():
            slot = self.slots[i]
            slot.episode, slot.running = assign[i], True
            slot.ret, slot.length, slot.success, slot.score = 0.0, 0, False, None
            slot.actions, slot.boundaries, slot.fresh, slot.stale = [], [], False, 0
            slot.history.reset()
            slot.queue.reset()
            if info.get("crashed"):
                self._finish(i, info)
            else:
                slot.history.push({k: np.asarray(v)[None] for k, v in obs.items()})

    def _batch_obs(self, which: list[int]) -> dict[str, torch.Tensor]:
        """The policy's ``{key: [B, To, *shape]}`` for the slots ``which``."""
        hist = [self.slots[i].history.stacked() for i in which]
        obs = {k: np.concatenate([h[k] for h in hist]) for k in hist[0]}
        obs = camera_chw(select_obs(obs, self.policy.shape_meta), self.policy.shape_meta)
        dev = self.policy.device
        return {k: torch.as_tensor(np.ascontiguousarray(v), device=dev) for k, v in obs.items()}

    def _predict(self, which: list[int], **kw: Any) -> dict[str, Any]:
        """One batched, timed ``predict_action`` for the slots ``which`` (``kw``: e.g. a
        committed prefix); keeps the first observation for the latency measurement."""
        obs = self._batch_obs(which)
        if self.first_obs is None:
            self.first_obs = {k: v[:1] for k, v in obs.items()}
        out = _timed_predict(self.policy, obs, self.sampler, self.generator, self.chunk_ms, **kw)
        self.nfe_seen.add(out["nfe"])
        return out

    def _plan(self) -> None:
        """One batched chunk for every running slot whose queue is empty."""
        which = [i for i in self._running() if not len(self.slots[i].queue)]
        if not which:
            return
        out = self._predict(which)
        actions = out["action"].detach().cpu().numpy().astype(np.float32)
        for j, i in enumerate(which):
            self.slots[i].queue.set(actions[j : j + 1])
            self.slots[i].fresh = True

    def _next_action(self, i: int) -> np.ndarray:
        """Slot ``i``'s action for this step (noting chunk boundaries)."""
        slot = self.slots[i]
        if slot.fresh:
            slot.boundaries.append(len(slot.actions))
            slot.fresh = False
        a = slot.queue.pop()[0]
        slot.actions.append(a)
        return a

    def _tick(self) -> None:
        """Every running slot executes its next action."""
        actions = {i: self._next_action(i) for i in self._running()}
        bad = [i for i, a in actions.items() if not np.isfinite(a).all()]
        for i in bad:  # never send NaN to an env: the policy failed this episode
            del actions[i]
            self._finish(i, failure_info("non_finite", "the policy produced a non-finite action"))
        for i, (obs, rew, _, _, info) in self.pool.step(actions).items():
            slot = self.slots[i]
            slot.ret += float(rew)
            slot.length += 1
            slot.success |= bool(info.get("is_success", False))
            if info.get("score") is not None and not info.get("crashed"):
                slot.score = max(float(info["score"]), slot.score or 0.0)
            if info.get("crashed") or info.get("done"):
                self._finish(i, info)
            else:
                slot.history.push({k: np.asarray(v)[None] for k, v in obs.items()})

    def _finish(self, i: int, info: Mapping[str, Any]) -> None:
        slot = self.slots[i]
        ep, crashed = slot.episode, bool(info.get("crashed"))
        self.records[ep] = {
            "episode": ep,
            "seed": self.seeds[ep],
            "success": slot.success and not crashed,
            "score": (0.0 if crashed else slot.score) if slot.score is not None else None,
            "return": slot.ret,
            "length": slot.length,
            "mode": -1 if crashed else int(info.get("mode", -1)),
            "crashed": crashed,
            "reason": info.get("reason") if crashed else None,
            "error": str(info["error"]) if crashed and info.get("error") else None,
            **_smoothness(slot),
        }
        slot.running = False
        slot.queue.reset()
        if crashed:
            print(
                f"[eval] episode {ep} (seed {self.seeds[ep]}) failed: {info.get('reason')}: "
                f"{info.get('error')}",
                file=sys.stderr,
            )
        if self.on_end is not None:
            self.on_end(ep, i)
        if crashed and info.get("reason") not in LOST:  # a broken env state must not leak into
            self.pool.replace(i)  # the next episode (lost workers were replaced already)
        if self.progress is not None:
            self.progress()


def _smoothness(slot: _Slot) -> dict[str, Any]:
    acts = np.asarray(slot.actions)
    return {
        "boundary_jerk": boundary_jerk(acts, slot.boundaries),
        "interior_jerk": interior_jerk(acts, slot.boundaries),
        "chunks": len(slot.boundaries),
        "stale_steps": slot.stale,
    }


def _timed_predict(policy, obs, sampler, generator, times_ms: list[float], **kw) -> dict[str, Any]:
    t0 = time.perf_counter()
    out = policy.predict_action(obs, sampler=sampler, generator=generator, return_info=True, **kw)
    times_ms.append(1000 * (time.perf_counter() - t0))
    return out
