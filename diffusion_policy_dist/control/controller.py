"""A policy inside a fixed-rate control loop: ``controller.step(obs) -> action`` never waits for
the network (except for an episode's first chunk), because the next chunk is computed in a
background thread while the current one executes.

    ctrl = Controller(policy, control_hz=50, transition="prefix")
    obs, _ = env.reset(seed=0)
    ctrl.reset()
    for _ in range(n):                # your loop, at 50 Hz
        obs, *_ = env.step(ctrl.step(obs))
    print(ctrl.stats())

Torch releases the GIL inside its kernels, so a thread is enough: ``step`` only copies the
observation, pops an action and, once per chunk, hands the history to the worker. The lead
(how early the next chunk is asked for) follows the measured latency: the delay in control
steps of the slowest of the last calls. Transitions: :mod:`.transitions`.
"""

from __future__ import annotations

import collections
import contextlib
import threading
import time
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np
import torch

from ..queues import ObsHistory, camera_chw, select_obs
from ..stats import percentiles
from . import steady
from .transitions import check_transition, delay_steps, next_queue, request_lead


class Controller:
    """Runs ``policy`` (anything with ``predict_action``, ``window`` and ``shape_meta``) at
    ``control_hz`` for one robot (observations ``{key: array [*shape]}``, no batch axis).

    ``sampler``: the policy's default when None. ``margin_steps``: extra lead beyond the measured
    delay. ``blend_steps``: overlap of ``blend``. ``seed``: the policy's sampling noise.

    Steady timing (:mod:`.steady`): ``warmup`` chunks are computed at construction (the first
    calls allocate); with ``quiet_gc`` the garbage collector runs only in :meth:`reset` (between
    episodes) while the controller is open; ``inference_cpu`` pins the inference thread to one
    core (your loop then keeps the others)."""

    def __init__(
        self,
        policy,
        control_hz: float,
        transition: str = "prefix",
        sampler: Any = None,
        margin_steps: int = 0,
        blend_steps: int = 2,
        seed: int = 0,
        warmup: int = 3,
        quiet_gc: bool = True,
        inference_cpu: int | None = None,
    ) -> None:
        if not control_hz > 0:
            raise ValueError(f"control_hz must be > 0, got {control_hz}")
        self.policy, self.control_hz = policy, float(control_hz)
        self.transition = check_transition(transition)
        self.sampler, self.margin, self.blend_steps = sampler, int(margin_steps), int(blend_steps)
        self.generator = torch.Generator(device=policy.device).manual_seed(seed)
        self._worker = ThreadPoolExecutor(
            1, thread_name_prefix="dpd-inference", initializer=steady.pin_this_thread,
            initargs=(inference_cpu,),
        )  # fmt: skip
        self._lock = threading.Lock()
        self.latency_ms: collections.deque = collections.deque(maxlen=20)
        self._warm_up(warmup)
        self._gc = steady.quiet_gc() if quiet_gc else contextlib.nullcontext()
        self._gc.__enter__()
        self._init_counters()
        self.reset()

    def _warm_up(self, calls: int) -> None:
        """Chunks on zero observations, in the inference thread, with noise of their own."""
        if calls <= 0:
            return
        To, meta = self.policy.window.n_obs_steps, self.policy.shape_meta["obs"]
        obs = {k: torch.zeros(1, To, *m["shape"]) for k, m in meta.items()}
        gen = torch.Generator(device=self.policy.device).manual_seed(0)
        for _ in range(calls):
            self._worker.submit(self._plan, obs, None, 0, gen).result()

    def _init_counters(self) -> None:
        self.step_ms: list[float] = []  # steps that did not wait (all but episode starts)
        self.start_ms: list[float] = []  # episode starts, which wait for the first chunk
        self.intervals_ms: list[float] = []
        self.delays: list[int] = []
        self.requests: list[int] = []  # the steps at which chunks were asked for
        self.chunks = self.deadline_misses = self.stale_steps = 0

    # ------------------------------------------------------------------ the loop
    def reset(self) -> None:
        """Start a new episode (waits for a chunk still being computed, then drops it); the
        garbage is collected here, where nothing is timed."""
        fut = getattr(self, "_future", None)
        if fut is not None:
            fut.result()
        steady.collect()
        self._history = ObsHistory(self.policy.window.n_obs_steps)
        self._queue: collections.deque = collections.deque()
        self._future: Future | None = None
        self._missed = False
        self._last: np.ndarray | None = None
        self._last_call: float | None = None
        self.tick = 0

    def step(self, obs: Mapping[str, Any]) -> np.ndarray:
        """The action for this control step, from the current observation."""
        t0 = time.perf_counter()
        if self._last_call is not None:
            self.intervals_ms.append(1000 * (t0 - self._last_call))
        self._last_call = t0
        self._history.push(self._prepare(obs))
        start = self._last is None and self._future is None
        if start:  # episode start: wait for a chunk
            self._request()
            self._arrive(self._future.result())
        elif self._future is not None and self._future.done():
            self._arrive(self._future.result())
        action = self._pop()
        if self._future is None and len(self._queue) + 1 <= self._lead():
            self._request()
        self.tick += 1
        (self.start_ms if start else self.step_ms).append(1000 * (time.perf_counter() - t0))
        return action

    def _prepare(self, obs: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        obs = {k: np.asarray(v)[None] for k, v in obs.items()}
        obs = camera_chw(select_obs(obs, self.policy.shape_meta), self.policy.shape_meta)
        return {k: torch.as_tensor(np.ascontiguousarray(v)) for k, v in obs.items()}

    def _pop(self) -> np.ndarray:
        if self._queue:
            self._last = self._queue.popleft()
        else:  # the chunk is late: hold the last action
            self.stale_steps += 1
            self._missed = True
        return self._last

    def _lead(self) -> int:
        d = delay_steps(max(self.latency_ms), self.control_hz) if self.latency_ms else 1
        return request_lead(self.transition, d + self.margin, self.blend_steps)

    # ------------------------------------------------------------------ the worker
    def _request(self) -> None:
        obs = {k: v.clone() for k, v in self._history.stacked().items()}
        prefix = None
        if self.transition == "prefix" and self._last is not None:
            room = self.policy.window.horizon - self.policy.window.action_start
            prefix = np.stack([self._last, *self._queue])[None, :room]  # from this step on
        self._missed = False
        self.requests.append(self.tick)
        self._future = self._worker.submit(self._plan, obs, prefix, self.tick)

    def _plan(self, obs, prefix, tick: int, generator=None) -> tuple[np.ndarray, int, float]:
        t0 = time.perf_counter()
        dev = self.policy.device
        obs = {k: v.to(dev) for k, v in obs.items()}
        kw = {} if prefix is None else {"prefix": torch.as_tensor(prefix, device=dev)}
        gen = generator or self.generator
        with self._lock, torch.inference_mode():
            out = self.policy.predict_action(obs, sampler=self.sampler, generator=gen, **kw)
        start = self.policy.window.action_start
        pred = out["action_pred"]  # a torch tensor, or numpy from an exported policy
        pred = pred.detach().cpu().numpy() if hasattr(pred, "detach") else np.asarray(pred)
        plan = pred[0, start:].astype(np.float32)
        return plan, tick, 1000 * (time.perf_counter() - t0)

    def _arrive(self, result: tuple[np.ndarray, int, float]) -> None:
        plan, tick, ms = result
        self._future = None
        self.latency_ms.append(ms)
        self.chunks += 1
        self.deadline_misses += int(self._missed)
        first = self._last is None
        elapsed = 0 if first else self.tick - tick
        if not first:
            self.delays.append(elapsed)
        old = np.array(self._queue) if self._queue else plan[:0]
        n = self.policy.window.n_action_steps
        queue = next_queue(self.transition, old, plan, elapsed, n)
        self._queue = collections.deque(queue)

    # ------------------------------------------------------------------ report
    def stats(self) -> dict[str, Any]:
        """What a real-time loop needs to know: the cost of ``step`` itself, the jitter of the
        calls, chunk latency and delay in steps, deadline misses and stale (held) actions."""
        period = 1000.0 / self.control_hz
        jitter = [abs(x - period) for x in self.intervals_ms]
        return {
            "control_hz": self.control_hz,
            "transition": self.transition,
            "steps": len(self.step_ms) + len(self.start_ms),
            "chunks": self.chunks,
            "step_ms": percentiles(self.step_ms),
            "episode_start_ms": percentiles(self.start_ms),
            "jitter_ms": percentiles(jitter),
            "latency_ms": percentiles(list(self.latency_ms)),
            "delay_steps": percentiles(self.delays),
            "deadline_misses": self.deadline_misses,
            "deadline_miss_rate": self.deadline_misses / self.chunks if self.chunks else 0.0,
            "stale_steps": self.stale_steps,
        }

    def close(self) -> None:
        self.reset()
        self._worker.shutdown(wait=True)
        self._gc.__exit__(None, None, None)

    def __enter__(self) -> Controller:
        return self

    def __exit__(self, *exc) -> None:
        self.close()
