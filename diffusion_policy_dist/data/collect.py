"""Scripted-expert demonstrations of a registry task, collected into a zarr replay buffer.

Episode seeds are ``seed, seed+1, ...``; each seed fixes both the initial state and the expert's
mode choice, so a dataset does not depend on the number of workers. Workers roll episodes out in
parallel; the main process appends them in seed order, one atomic append per episode. Failed
expert episodes are dropped and their seeds recorded. Re-running the same command on an existing
dataset skips every seed already stored or failed and adds only the missing episodes.
"""

from __future__ import annotations

import multiprocessing as mp
import os
import sys
from collections.abc import Iterator
from typing import Any

from tqdm.auto import tqdm

from ..envs import EVAL_SEED_BASE, get_task, migrate_spec, rollout_expert, task_env_spec
from .dataset import infer_shape_meta
from .replay_buffer import ReplayBuffer

_WORKER_ENV: dict[tuple, Any] = {}


def _rollout(job: tuple[str, str, int, int]) -> dict[str, Any]:
    """Run one expert episode in a worker (the env is built once per worker and reused)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    task_name, obs, image_size, seed = job
    task = get_task(task_name)
    key = (task_name, obs, image_size)
    if key not in _WORKER_ENV:
        _WORKER_ENV[key] = task.make_env(obs, image_size=image_size)
    try:
        ep = rollout_expert(_WORKER_ENV[key], task.make_expert(seed=seed), seed=seed)
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


def _open_or_create(output: str, spec: dict[str, Any], seed: int) -> ReplayBuffer:
    """The dataset at ``output``: opened (it must hold this task's demos) or created."""
    if os.path.exists(output):
        buf = ReplayBuffer.open(output, writable=True)
        have = migrate_spec(buf.attrs.get("env") or {})
        for k in ("task", "obs", "image_size"):
            if have.get(k) != spec[k]:
                raise ValueError(
                    f"{output} holds {k}={have.get(k)!r} demonstrations; this command asks for "
                    f"{k}={spec[k]!r}. Use another output path."
                )
        return buf
    task = get_task(spec["task"])
    expert = {
        "name": task.expert.__name__,
        "task": spec["task"],
        "mode_names": spec["mode_names"],
        "mode_probs": spec["mode_probs"],
    }
    attrs = {"env": spec, "expert": expert, "collection": {"base_seed": seed, "failed_seeds": []}}
    return ReplayBuffer.create(output, attrs=attrs)


def _episode_record(ep: dict[str, Any], mode_names: list[str]) -> dict[str, Any]:
    mode = int(ep["mode"])
    return {
        "seed": int(ep["seed"]),
        "mode": mode,
        "mode_name": mode_names[mode] if mode >= 0 else None,
        "expert_mode": int(ep["expert_mode"]),
        "success": True,
        "length": int(ep["length"]),
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
    """Collect until ``output`` holds ``episodes`` successful expert episodes. Returns a summary."""
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    spec = task_env_spec(task, obs, image_size)
    buf = _open_or_create(output, spec, seed)
    stored = {int(r["seed"]) for r in buf.episode_info if "seed" in r}
    coll = dict(buf.attrs.get("collection") or {})
    failed = {int(s) for s in coll.get("failed_seeds", [])}
    start_n = buf.n_episodes
    bar = tqdm(
        total=episodes,
        initial=min(start_n, episodes),
        desc=f"collect {task}",
        disable=not progress,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )
    seed_iter = _seeds(seed, stored | failed)
    new_failed: list[int] = []
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        while buf.n_episodes < episodes:
            need = episodes - buf.n_episodes
            # a small surplus covers expert failures without a second round in the usual case
            batch = [next(seed_iter) for _ in range(need + max(1, need // 20))]
            jobs = [(task, obs, int(image_size), s) for s in batch]
            for ep in pool.imap(_rollout, jobs) if pool else map(_rollout, jobs):
                if buf.n_episodes >= episodes:
                    break
                if not ep["success"]:
                    new_failed.append(int(ep["seed"]))
                    coll["failed_seeds"] = sorted(failed | set(new_failed))
                    buf.attrs["collection"] = coll
                    bar.set_postfix(failed=len(new_failed))
                    continue
                data = {**ep["obs"], "action": ep["action"]}
                buf.add_episode(data, info=_episode_record(ep, spec["mode_names"]))
                if "shape_meta" not in buf.attrs:
                    buf.attrs["shape_meta"] = infer_shape_meta(buf)
                bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    return {
        "output": output,
        "episodes": buf.n_episodes,
        "added": buf.n_episodes - start_n,
        "failed_this_run": len(new_failed),
        "failed_total": len(failed | set(new_failed)),
        "steps": buf.n_steps,
        "mode_freq": buf.mode_frequencies(),
    }
