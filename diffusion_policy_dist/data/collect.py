"""Scripted-expert demonstrations of the built-in tasks, collected into a zarr replay buffer.

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

import numpy as np
from tqdm.auto import tqdm

from ..evaluation.envs import EVAL_SEED_BASE, dpd_env_spec
from .dataset import infer_shape_meta
from .replay_buffer import ReplayBuffer

_WORKER_ENV: dict[tuple, Any] = {}


def _rollout(job: tuple[str, str, int, int]) -> dict[str, Any]:
    """Run one expert episode in a worker (the env is built once per worker and reused)."""
    os.environ.setdefault("MUJOCO_GL", "egl")
    from ..envs import make_env, make_expert, rollout_expert

    task, obs_mode, image_size, seed = job
    key = (task, obs_mode, image_size)
    if key not in _WORKER_ENV:
        _WORKER_ENV[key] = make_env(task, obs_mode=obs_mode, image_size=image_size)
    env = _WORKER_ENV[key]
    try:
        ep = rollout_expert(env, make_expert(task, seed=seed), seed=seed)
    except Exception as e:  # an unstable episode is a failed demo, not a failed collection
        return {"seed": seed, "success": False, "error": f"{type(e).__name__}: {e}"}
    ep["seed"] = seed
    return ep


def _seeds(start: int, skip: set[int]) -> Iterator[int]:
    s = start
    while True:
        if s >= EVAL_SEED_BASE:
            raise ValueError(f"collection seeds must stay below {EVAL_SEED_BASE} (evaluation seeds)")
        if s not in skip:
            yield s
        s += 1


def collect(
    task: str,
    episodes: int,
    output: str,
    obs_mode: str = "lowdim",
    seed: int = 0,
    workers: int = 1,
    image_size: int = 96,
    progress: bool = True,
) -> dict[str, Any]:
    """Collect until ``output`` holds ``episodes`` successful expert episodes. Returns a summary."""
    from ..envs import TASKS, make_expert

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; built-in tasks are {sorted(TASKS)}")
    if episodes < 1:
        raise ValueError(f"episodes must be >= 1, got {episodes}")
    spec = dpd_env_spec(task, obs_mode, image_size)
    if os.path.exists(output):
        buf = ReplayBuffer.open(output, mode="a")
        have = dict(buf.attrs.get("env") or {})
        for k in ("task", "obs_mode", "image_size"):
            if have.get(k) != spec[k]:
                raise ValueError(
                    f"{output} holds {k}={have.get(k)!r} demonstrations; this command asks for "
                    f"{k}={spec[k]!r}. Use another output path."
                )
    else:
        expert = make_expert(task, seed=0)
        buf = ReplayBuffer.create(
            output,
            attrs={
                "env": spec,
                "expert": {"name": type(expert).__name__, "task": task,
                           "mode_names": spec["mode_names"], "mode_probs": spec["mode_probs"]},
                "collection": {"base_seed": seed, "failed_seeds": []},
            },
        )
    stored = {int(r["seed"]) for r in buf.episode_info if "seed" in r}
    coll = dict(buf.attrs.get("collection") or {})
    failed = set(int(s) for s in coll.get("failed_seeds", []))
    start_n = buf.n_episodes
    bar = tqdm(total=episodes, initial=min(start_n, episodes), desc=f"collect {task}",
               disable=not progress, dynamic_ncols=True,
               mininterval=0.5 if sys.stderr.isatty() else 10.0)
    seed_iter = _seeds(seed, stored | failed)
    new_failed: list[int] = []
    pool = mp.get_context("spawn").Pool(workers) if workers > 1 else None
    try:
        while buf.n_episodes < episodes:
            need = episodes - buf.n_episodes
            # a small surplus covers expert failures without a second round in the usual case
            batch = [next(seed_iter) for _ in range(need + max(1, need // 20))]
            jobs = [(task, obs_mode, int(image_size), s) for s in batch]
            results = pool.imap(_rollout, jobs) if pool else map(_rollout, jobs)
            for ep in results:
                if buf.n_episodes >= episodes:
                    break
                if not ep["success"]:
                    new_failed.append(int(ep["seed"]))
                    coll["failed_seeds"] = sorted(failed | set(new_failed))
                    buf.attrs["collection"] = coll
                    bar.set_postfix(failed=len(new_failed))
                    continue
                data = {**ep["obs"], "action": ep["action"]}
                info = {"seed": int(ep["seed"]), "mode": int(ep["mode"]),
                        "mode_name": spec["mode_names"][ep["mode"]] if ep["mode"] >= 0 else None,
                        "expert_mode": int(ep["expert_mode"]), "success": True,
                        "length": int(ep["length"])}
                buf.add_episode(data, info=info)
                if "shape_meta" not in buf.attrs:
                    buf.attrs["shape_meta"] = infer_shape_meta(buf)
                bar.update(1)
    finally:
        bar.close()
        if pool is not None:
            pool.terminate()
    modes = [r.get("mode", -1) for r in buf.episode_info]
    freq = {n: float(np.mean([m == i for m in modes])) for i, n in enumerate(spec["mode_names"])}
    return {
        "output": output, "episodes": buf.n_episodes, "added": buf.n_episodes - start_n,
        "failed_this_run": len(new_failed), "failed_total": len(failed | set(new_failed)),
        "steps": buf.n_steps, "mode_freq": freq,
    }


def demo_mode_freq(buffer: ReplayBuffer) -> dict[str, float] | None:
    """Mode frequencies of a dataset's demonstrations (from its per-episode info), if known."""
    env = dict(buffer.attrs.get("env") or {})
    names = env.get("mode_names")
    modes = [r.get("mode") for r in buffer.episode_info]
    if not names or not modes or any(m is None for m in modes):
        return None
    return {n: float(np.mean([m == i for m in modes])) for i, n in enumerate(names)}
