"""Scripted-expert demonstrations collected into a zarr replay buffer.

The env is a registry task (with its own expert) or any env spec (a gymnasium env, say) with
an expert named by the user: ``"module:function"``, where ``function(seed=...)`` returns an object
with ``reset(env) -> mode`` and ``act(env) -> action`` (see :class:`~..envs.ScriptedExpert`).

Episode seeds are ``seed, seed+1, ...``; each seed fixes both the initial state and the expert's
mode choice, so a dataset does not depend on the number of workers. Workers roll episodes out in
parallel; the main process appends them in seed order, one atomic append per episode, holding the
dataset's write lock. Failed expert episodes are dropped and their seeds recorded. Re-running the
same command on an existing dataset skips every seed already stored or failed and adds only the
missing episodes.
"""

from __future__ import annotations

import importlib
import json
import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from tqdm.auto import tqdm

from ..envs import EVAL_SEED_BASE, Trust, get_task, make_env, migrate_spec, rollout_expert
from .dataset import infer_shape_meta
from .replay_buffer import ReplayBuffer

_WORKER_ENV: dict[str, Any] = {}


@dataclass(frozen=True)
class Source:
    """What to record: an env spec, the expert (``task:<name>`` for a registry task's own, or a
    ``module:function`` the user named) and what the user trusts to be imported."""

    spec: dict[str, Any]
    expert: str
    trust: Trust = Trust()  # noqa: RUF009 (a frozen, immutable default)
    max_steps: int | None = None

    def make_expert(self, seed: int):
        if self.expert.startswith("task:"):
            return get_task(self.expert[5:]).make_expert(seed=seed)
        if self.expert not in self.trust.factories:
            raise ValueError(f"expert {self.expert!r} was not named on the command line")
        module, _, fn = self.expert.partition(":")
        return getattr(importlib.import_module(module), fn)(seed=seed)


def _rollout(job: tuple[Source, int]) -> dict[str, Any]:
    """Run one expert episode in a worker (the env is built once per worker and reused)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    source, seed = job
    key = json.dumps(source.spec, sort_keys=True)
    if key not in _WORKER_ENV:
        _WORKER_ENV[key] = make_env(source.spec, trust=source.trust)
    try:
        expert = source.make_expert(seed)
        limit = source.max_steps or source.spec.get("max_episode_steps")
        ep = rollout_expert(_WORKER_ENV[key], expert, seed=seed, max_steps=limit)
    except Exception as e:  # an unstable episode is a failed demo, not a failed collection
        return {"seed": seed, "success": False, "error": f"{type(e).__name__}: {e}"}
    ep["seed"] = seed
    return ep


def _seeds(start: int, skip: set[int]) -> Iterator[int]:
    s = start
    while True:
        if s >= EVAL_SEED_BASE:
            raise ValueError(
                f"collection seeds must stay below {EVAL_SEED_BASE} (evaluation seeds)"
            )
        if s not in skip:
            yield s
        s += 1


def _open_or_create(output: str, source: Source, seed: int) -> ReplayBuffer:
    """The dataset at ``output``, open for writing: it must hold demos of the same env."""
    spec = source.spec
    if not os.path.exists(output):
        expert = {"name": source.expert, "mode_names": spec.get("mode_names")}
        coll = {"base_seed": seed, "failed_seeds": []}
        return ReplayBuffer.create(
            output, attrs={"env": spec, "expert": expert, "collection": coll}
        )
    buf = ReplayBuffer.open(output, writable=True)
    have = migrate_spec(buf.attrs.get("env") or {})
    for k in ("kind", "task", "env_id", "obs", "image_size", "obs_keys", "kwargs"):
        if have.get(k) != spec.get(k):
            buf.close()
            raise ValueError(
                f"{output} holds {k}={have.get(k)!r} demonstrations; this command asks for "
                f"{k}={spec.get(k)!r}. Use another output path."
            )
    return buf


def _record(ep: dict[str, Any], mode_names: list[str] | None) -> dict[str, Any]:
    mode = int(ep["mode"])
    return {
        "seed": int(ep["seed"]),
        "mode": mode,
        "mode_name": mode_names[mode] if mode_names and 0 <= mode < len(mode_names) else None,
        "expert_mode": int(ep["expert_mode"]),
        "success": True,
        "length": int(ep["length"]),
    }


class _Collector:
    """Fills one open dataset up to ``episodes`` successful episodes."""

    def __init__(self, buf: ReplayBuffer, source: Source, seed: int, bar) -> None:
        self.buf, self.source, self.bar = buf, source, bar
        self.coll = dict(buf.attrs.get("collection") or {})
        self.failed = {int(s) for s in self.coll.get("failed_seeds", [])}
        stored = {int(r["seed"]) for r in buf.episode_info if "seed" in r}
        self.seeds = _seeds(seed, stored | self.failed)
        self.new_failed: list[int] = []

    def run(self, episodes: int, pool) -> None:
        buf = self.buf
        while buf.n_episodes < episodes:
            need = episodes - buf.n_episodes
            # a small surplus covers expert failures without a second round in the usual case
            jobs = [(self.source, next(self.seeds)) for _ in range(need + max(1, need // 20))]
            for ep in pool.imap(_rollout, jobs) if pool else map(_rollout, jobs):
                if buf.n_episodes >= episodes:
                    break
                self._add(ep)

    def _add(self, ep: dict[str, Any]) -> None:
        buf = self.buf
        if not ep["success"]:
            self.new_failed.append(int(ep["seed"]))
            self.coll["failed_seeds"] = sorted(self.failed | set(self.new_failed))
            buf.attrs["collection"] = self.coll
            self.bar.set_postfix(failed=len(self.new_failed))
            return
        info = _record(ep, self.source.spec.get("mode_names"))
        buf.add_episode({**ep["obs"], "action": ep["action"]}, info=info)
        if "shape_meta" not in buf.attrs:
            buf.attrs["shape_meta"] = infer_shape_meta(buf)
        self.bar.update(1)


def collect_from(
    source: Source,
    episodes: int,
    output: str,
    seed: int = 0,
    workers: int = 1,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect until ``output`` holds ``episodes`` successful expert episodes of ``source``."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    with _open_or_create(output, source, seed) as buf:
        start_n = buf.n_episodes
        desc = f"collect {source.spec.get('task') or source.spec.get('env_id')}"
        bar_args = {"disable": not progress, "dynamic_ncols": True}
        bar_args["mininterval"] = 0.5 if sys.stderr.isatty() else 10.0
        with tqdm(total=episodes, initial=min(start_n, episodes), desc=desc, **bar_args) as bar:
            collector = _Collector(buf, source, seed, bar)
            pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
            try:
                collector.run(episodes, pool)
            finally:
                if pool is not None:
                    pool.terminate()
        return {
            "output": output,
            "episodes": buf.n_episodes,
            "added": buf.n_episodes - start_n,
            "failed_this_run": len(collector.new_failed),
            "failed_total": len(collector.failed | set(collector.new_failed)),
            "steps": buf.n_steps,
            "mode_freq": buf.mode_frequencies(),
        }


def collect(
    task: str,
    episodes: int,
    output: str,
    obs: str = "state",
    seed: int = 0,
    workers: int = 1,
    image_size: int = 96,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect a registry task's scripted-expert demonstrations (see :func:`collect_from`)."""
    from ..envs import task_env_spec

    source = Source(task_env_spec(task, obs, image_size), f"task:{task}")
    return collect_from(source, episodes, output, seed, workers, progress)
