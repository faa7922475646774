"""The one closed-loop evaluation runner, for every policy and environment.

Episodes run in gymnasium vector envs (subprocesses by default) under fixed seeds
``seed, seed+1, ...`` that are disjoint from collection seeds. Each policy call plans a chunk
for every running env and executes ``n_action_steps`` actions. A slot whose episode ends waits
for the chunk boundary, then starts the next episode. An env that raises (or a worker process
that dies) fails its episode, is logged, and the evaluation goes on.

Latency is measured separately at batch size 1, as a control loop would call the policy, and
compared with one bare network forward (the floor).
"""

from __future__ import annotations

import collections
import functools
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from gymnasium.vector import AsyncVectorEnv, AutoresetMode, SyncVectorEnv
from tqdm.auto import tqdm

from ..json_files import write_json_atomic
from ..policy.config import SamplerConfig, from_dict, to_dict
from .envs import EVAL_SEED_BASE, make_env
from .metrics import mode_frequencies, percentiles, wilson_interval
from .video import write_video


@dataclass
class EvalConfig:
    episodes: int = 50
    n_envs: int = 10
    seed: int = EVAL_SEED_BASE
    video: int = 0
    video_format: str = "gif"
    vector: str = "async"
    torch_threads: int | None = 1  # for the batch-1 latency measurement
    rollout_threads: int | None = None  # for the batched rollouts (None: torch's default)
    latency_trials: int = 30
    policy_seed: int = 0
    progress: bool = True

    def __post_init__(self) -> None:
        if self.episodes < 1 or self.n_envs < 1:
            raise ValueError(
                f"eval.episodes and eval.n_envs must be >= 1, got {self.episodes}, {self.n_envs}"
            )
        if self.vector not in ("async", "sync"):
            raise ValueError(f"eval.vector must be async or sync, got {self.vector!r}")
        if self.video_format not in ("gif", "mp4"):
            raise ValueError(f"eval.video_format must be gif or mp4, got {self.video_format!r}")


def _info_at(info: Mapping[str, Any], key: str, i: int, default: Any = None) -> Any:
    """Value of ``key`` for sub-env ``i`` in a vector env's info dict (respecting its mask)."""
    if key not in info:
        return default
    mask = info.get(f"_{key}")
    if mask is not None and not bool(mask[i]):
        return default
    return info[key][i]


class _Slots:
    """Per-env bookkeeping: which episode runs where, and its observation history."""

    def __init__(self, n: int, n_obs_steps: int) -> None:
        self.episode = [-1] * n
        self.done = [True] * n
        self.history = [collections.deque(maxlen=n_obs_steps) for _ in range(n)]
        self.To = n_obs_steps

    def start(self, i: int, episode: int, obs: Mapping[str, np.ndarray]) -> None:
        self.episode[i], self.done[i] = episode, False
        self.history[i].clear()
        for _ in range(self.To):  # pad like the dataset: repeat the first observation
            self.history[i].append(obs)

    def running(self) -> list[int]:
        return [i for i in range(len(self.episode)) if self.episode[i] >= 0 and not self.done[i]]


def _split_obs(obs: Mapping[str, np.ndarray], n: int) -> list[dict[str, np.ndarray]]:
    return [{k: np.asarray(v[i]) for k, v in obs.items()} for i in range(n)]


def obs_space_mismatch(space: gym.Space, shape_meta: Mapping) -> str | None:
    """Why the env's observations cannot feed the policy, or None when they fit. Cameras may
    come HWC from the env and are CHW in shape_meta."""
    if not isinstance(space, gym.spaces.Dict):
        return f"observation space {space} is not a Dict of named observations"
    for key, spec in shape_meta["obs"].items():
        want = tuple(int(d) for d in spec["shape"])
        if key not in space.spaces:
            return (
                f"the policy needs observation {key!r} of shape {want}, the env provides "
                f"{sorted(space.spaces)}"
            )
        got = tuple(space.spaces[key].shape or ())
        ok = got == want
        if spec.get("type") == "rgb" and len(got) == 3:
            ok = ok or (got[2], got[0], got[1]) == want
        if not ok:
            return f"observation {key!r} has shape {got}, the policy expects {want}"
    return None


def policy_obs(
    histories: list[list[dict[str, np.ndarray]]], shape_meta: Mapping, device
) -> dict[str, torch.Tensor]:
    """Stack per-env observation histories (lists of obs dicts) into the policy's
    ``{key: [B, To, *shape]}``, turning HWC camera frames into CHW."""
    out = {}
    for key, spec in shape_meta["obs"].items():
        provided = sorted(histories[0][0])
        if key not in provided:
            raise KeyError(f"the policy needs observation {key!r} but the env provides {provided}")
        arr = np.stack([np.stack([o[key] for o in h]) for h in histories])  # [B, To, ...]
        if spec.get("type") == "rgb" and tuple(arr.shape[2:]) != tuple(spec["shape"]):
            arr = np.moveaxis(arr, -1, -3)
        out[key] = torch.as_tensor(np.ascontiguousarray(arr), device=device)
    return out


class EnvPool:
    """A vector env of ``n`` copies of an env, shareable by several evaluations (starting env
    worker processes costs seconds, which adds up over a benchmark's many samplers)."""

    def __init__(self, env_spec: Mapping, n: int, render: bool = False, vector: str = "async"):
        self.spec, self.n, self.render, self.vector = dict(env_spec), n, render, vector
        self.envs = _make_vector(self.spec, n, render, vector)

    def rebuild(self) -> None:
        self.close()
        self.envs = _make_vector(self.spec, self.n, self.render, self.vector)

    def close(self) -> None:
        try:
            if isinstance(self.envs, AsyncVectorEnv):
                self.envs.close(terminate=True)
            else:
                self.envs.close()
        except Exception:
            pass

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _dead_workers(envs: gym.vector.VectorEnv, wait_s: float = 2.0) -> list[int]:
    """Indices of the vector env's worker processes that have exited.

    A worker's pipe reaches EOF a moment before its process can be reaped, so a dead worker can
    still look alive right after the failed call: poll for up to ``wait_s`` before giving up.
    """
    procs = getattr(envs, "processes", [])
    deadline = time.perf_counter() + wait_s
    while True:
        dead = [j for j, proc in enumerate(procs) if not proc.is_alive()]
        if dead or not procs or time.perf_counter() > deadline:
            return dead
        time.sleep(0.02)


def _make_vector(env_spec: Mapping, n: int, render: bool, kind: str) -> gym.vector.VectorEnv:
    fns = [functools.partial(make_env, dict(env_spec), render) for _ in range(n)]
    if kind == "async" and n > 1:
        return AsyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED, context="spawn")
    return SyncVectorEnv(fns, autoreset_mode=AutoresetMode.DISABLED)


@torch.no_grad()
def measure_latency(
    policy, history: dict[str, torch.Tensor], sampler: SamplerConfig, trials: int, seed: int = 0
) -> dict[str, Any]:
    """Batch-1 wall-clock of ``predict_action`` (the full control-loop call) and of one bare
    network forward, both on the policy's device."""
    dev = policy.device
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    gen = torch.Generator(device=dev).manual_seed(seed)
    obs1 = {k: v[:1] for k, v in history.items()}
    chunk_ms, nfe, prior_ms = [], 0, []
    for i in range(trials + 3):
        sync()
        t0 = time.perf_counter()
        out = policy.predict_action(obs1, sampler=sampler, generator=gen, return_info=True)
        sync()
        if i >= 3:  # warm-up calls excluded
            chunk_ms.append(1000 * (time.perf_counter() - t0))
            prior_ms.append(out["prior_ms"])
        nfe = out["nfe"]
    cond = policy.encode_obs(obs1)
    in_ch = policy.net.in_channels
    x = torch.randn(1, policy.window.horizon, in_ch, device=dev)
    if policy.distributional and policy.cfg.noise_injection == "film":
        cond = torch.cat([cond, torch.randn(1, *policy.noise_shape, device=dev)], dim=-1)
    t = torch.full((1,), 0.5, device=dev)
    fwd_ms = []
    for i in range(trials + 3):
        sync()
        t0 = time.perf_counter()
        policy.net(x, t, cond)
        sync()
        if i >= 3:
            fwd_ms.append(1000 * (time.perf_counter() - t0))
    c, f = percentiles(chunk_ms), percentiles(fwd_ms)
    return {
        "latency_ms_p50": c["p50"],
        "latency_ms_p95": c["p95"],
        "latency_ms_mean": c["mean"],
        "forward_ms_p50": f["p50"],
        "forward_ms_p95": f["p95"],
        "latency_over_forward": c["p50"] / f["p50"] if f["p50"] > 0 else float("nan"),
        "prior_ms_p50": percentiles(prior_ms)["p50"] if any(prior_ms) else 0.0,
        "nfe": nfe,
    }


def evaluate(
    policy,
    env_spec: Mapping[str, Any],
    cfg: EvalConfig | Mapping | None = None,
    sampler: SamplerConfig | Mapping | None = None,
    output_dir: str | Path | None = None,
    checkpoint: str | None = None,
    extra: Mapping[str, Any] | None = None,
    pool: EnvPool | None = None,
) -> dict[str, Any]:
    """Roll ``policy`` out in the env ``env_spec`` describes and return (and write) the results.

    ``sampler`` overrides the policy's default sampler. Writes ``eval.json`` and videos to
    ``output_dir`` when given. ``pool`` reuses running env workers (it must hold
    ``min(n_envs, episodes)`` envs of this spec, rendering if videos are wanted).
    """
    cfg = from_dict(EvalConfig, cfg, "eval")
    sc = policy.sampler_cfg if sampler is None else from_dict(SamplerConfig, sampler, "sampler")
    policy.eval()
    dev = policy.device
    threads_before = torch.get_num_threads()
    if cfg.rollout_threads:
        torch.set_num_threads(int(cfg.rollout_threads))
    out_dir = Path(output_dir) if output_dir else None
    if out_dir:
        out_dir.mkdir(parents=True, exist_ok=True)
    mode_names = env_spec.get("mode_names")
    n = min(cfg.n_envs, cfg.episodes)
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    records: list[dict[str, Any] | None] = [None] * cfg.episodes
    gen = torch.Generator(device=dev).manual_seed(cfg.policy_seed)
    Ta = policy.window.n_action_steps
    slots = _Slots(n, policy.window.n_obs_steps)
    own_pool = pool is None
    if pool is None:
        pool = EnvPool(env_spec, n, cfg.video > 0, cfg.vector)
    elif pool.n != n or pool.spec != dict(env_spec) or (cfg.video > 0 and not pool.render):
        raise ValueError(
            f"the env pool ({pool.n} x {pool.spec.get('env_id')}, render={pool.render}) does not "
            f"fit this evaluation ({n} x {env_spec.get('env_id')}, video={cfg.video})"
        )
    envs = pool.envs
    space = envs.single_action_space
    problem = None
    if not isinstance(space, gym.spaces.Box) or space.shape != (policy.action_dim,):
        problem = (
            f"action space {space} does not fit the policy's continuous actions of shape "
            f"({policy.action_dim},)"
        )
    else:
        problem = obs_space_mismatch(envs.single_observation_space, policy.shape_meta)
        if problem:
            problem += " (the policy's shape_meta comes from its training data)"
    if problem:
        if own_pool:
            pool.close()
        raise ValueError(f"env {env_spec.get('env_id') or env_spec.get('task')}: {problem}")
    act_shape = space.shape
    last_action = np.zeros((n, *act_shape), dtype=np.float32)
    stats = {i: {"ret": 0.0, "len": 0, "success": False} for i in range(n)}
    chunk_batch_ms: list[float] = []
    nfe_seen = set()
    first_history: dict[str, torch.Tensor] | None = None
    pending = collections.deque(range(cfg.episodes))
    bar = tqdm(
        total=cfg.episodes,
        desc=f"eval {sc.describe()}",
        disable=not cfg.progress,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )
    t_start = time.perf_counter()

    def start_episodes(which: list[int]) -> None:
        assign = {}
        for i in which:
            if pending:
                assign[i] = pending.popleft()
            else:
                slots.episode[i], slots.done[i] = -1, True
        if not assign:
            return
        mask = np.array([i in assign for i in range(n)])
        if cfg.video > 0:
            envs.set_attr("record", [bool(i in assign and assign[i] < cfg.video) for i in range(n)])
        seed_list = [seeds[assign[i]] if i in assign else 0 for i in range(n)]
        obs, info = envs.reset(seed=seed_list, options={"reset_mask": mask})
        per_env = _split_obs(obs, n)
        for i, ep in assign.items():
            slots.start(i, ep, per_env[i])
            stats[i] = {"ret": 0.0, "len": 0, "success": False}
            if _info_at(info, "crashed", i, False):
                finish(i, info, crashed=True)

    def finish(i: int, info: Mapping[str, Any], crashed: bool = False) -> None:
        ep = slots.episode[i]
        err = _info_at(info, "error", i) if crashed else None
        mode = int(_info_at(info, "mode", i, -1) if not crashed else -1)
        records[ep] = {
            "episode": ep,
            "seed": seeds[ep],
            "success": bool(stats[i]["success"]) and not crashed,
            "return": float(stats[i]["ret"]),
            "length": int(stats[i]["len"]),
            "mode": mode,
            "crashed": bool(crashed),
            "error": None if err is None else str(err),
        }
        if crashed:
            print(f"[eval] episode {ep} (seed {seeds[ep]}) crashed: {err}", file=sys.stderr)
        slots.done[i] = True
        bar.update(1)

    try:
        start_episodes(list(range(n)))
        while slots.running() or pending:
            if not slots.running():  # every slot idle (after a rebuild): restart from the queue
                start_episodes(list(range(n)))
                continue
            running = slots.running()
            hist = policy_obs([list(slots.history[i]) for i in running], policy.shape_meta, dev)
            if first_history is None:
                first_history = hist
            t0 = time.perf_counter()
            out = policy.predict_action(hist, sampler=sc, generator=gen, return_info=True)
            chunk_batch_ms.append(1000 * (time.perf_counter() - t0))
            nfe_seen.add(out["nfe"])
            actions = out["action"].detach().cpu().numpy().astype(np.float32)
            full = np.repeat(last_action[:, None], Ta, axis=1)
            full[running] = actions
            for k in range(Ta):
                live = [i for i in running if not slots.done[i]]
                if not live:
                    break
                try:
                    obs, rew, term, trunc, info = envs.step(full[:, k])
                except Exception as e:  # a worker process died: fail its episode only
                    dead = _dead_workers(envs)
                    culprits = [j for j in live if j in dead] or live
                    print(
                        f"[eval] env worker(s) {culprits} died ({type(e).__name__}: {e}); "
                        "rebuilding the envs and re-running the other episodes",
                        file=sys.stderr,
                    )
                    for j in culprits:
                        err = f"env worker died: {type(e).__name__}: {e}"
                        finish(j, {"error": [err] * n}, crashed=True)
                    for j in live:
                        if j not in culprits:  # innocent bystanders start again from their seed
                            pending.appendleft(slots.episode[j])
                            slots.done[j] = True
                    pool.rebuild()
                    envs = pool.envs
                    slots.episode = [-1] * n
                    break
                last_action = full[:, k].copy()
                per_env = _split_obs(obs, n)
                for i in live:
                    stats[i]["ret"] += float(rew[i])
                    stats[i]["len"] += 1
                    stats[i]["success"] |= bool(_info_at(info, "is_success", i, False))
                    slots.history[i].append(per_env[i])
                    crashed = bool(_info_at(info, "crashed", i, False))
                    if bool(_info_at(info, "done", i, False)) or term[i] or trunc[i]:
                        finish(i, info, crashed=crashed)
            ended = [i for i in range(n) if slots.done[i]]
            if cfg.video > 0 and any(0 <= slots.episode[i] < cfg.video for i in ended) and out_dir:
                frames = envs.call("pop_frames")
                for i in ended:
                    if 0 <= slots.episode[i] < cfg.video and frames[i]:
                        write_video(
                            frames[i],
                            out_dir / "videos" / f"episode_{slots.episode[i]:03d}",
                            fps=int(env_spec.get("control_hz") or 10),
                            fmt=cfg.video_format,
                        )
            start_episodes(ended)
    finally:
        bar.close()
        if own_pool:
            pool.close()
    rollout_s = time.perf_counter() - t_start
    done_records = [r for r in records if r is not None]
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    if cfg.latency_trials > 0 and first_history is not None:
        # fewer timed calls at high NFE: a 100-step call is already 100 forwards long
        trials = max(10, min(cfg.latency_trials, cfg.latency_trials * 16 // max(sc.steps, 16)))
        lat = measure_latency(policy, first_history, sc, trials, cfg.policy_seed)
    else:  # timing skipped (e.g. while tuning on validation seeds)
        nan = float("nan")
        lat = {
            "nfe": max(nfe_seen) if nfe_seen else sc.steps,
            "latency_ms_p50": nan,
            "latency_ms_p95": nan,
            "latency_ms_mean": nan,
            "forward_ms_p50": nan,
            "forward_ms_p95": nan,
            "latency_over_forward": nan,
            "prior_ms_p50": nan,
        }
    torch.set_num_threads(threads_before)
    successes = sum(r["success"] for r in done_records)
    N = len(done_records)
    result: dict[str, Any] = {
        "success_rate": successes / N if N else 0.0,
        "success_ci95": list(wilson_interval(successes, N)),
        "episodes": N,
        "successes": successes,
        "nfe": lat["nfe"],
        "latency_ms_p50": lat["latency_ms_p50"],
        "latency_ms_p95": lat["latency_ms_p95"],
        "mode_freq": mode_frequencies(
            [r["mode"] for r in done_records if r["success"]], mode_names
        ),
        "sampler": to_dict(sc),
        "checkpoint": checkpoint,
        "latency_ms_mean": lat["latency_ms_mean"],
        "forward_ms_p50": lat["forward_ms_p50"],
        "latency_over_forward": lat["latency_over_forward"],
        "prior_ms_p50": lat["prior_ms_p50"],
        "max_replan_hz": 1000.0 / lat["latency_ms_p95"] if lat["latency_ms_p95"] > 0 else math.nan,
        "control_rate_hz": Ta * 1000.0 / lat["latency_ms_p95"]
        if lat["latency_ms_p95"] > 0
        else math.nan,
        "batch_latency_ms_p50": percentiles(chunk_batch_ms)["p50"],
        "mean_return": float(np.mean([r["return"] for r in done_records])) if N else 0.0,
        "mean_length": float(np.mean([r["length"] for r in done_records])) if N else 0.0,
        "crashed": sum(r["crashed"] for r in done_records),
        "mode_freq_all": mode_frequencies([r["mode"] for r in done_records], mode_names),
        "env": dict(env_spec),
        "seeds": [seeds[0], seeds[-1]],
        "n_envs": n,
        "n_action_steps": Ta,
        "device": str(dev),
        "torch_threads": torch.get_num_threads()
        if not cfg.torch_threads
        else int(cfg.torch_threads),
        "rollout_wallclock_s": rollout_s,
        "per_episode": done_records,
        **dict(extra or {}),
    }
    if out_dir:
        write_json_atomic(out_dir / "eval.json", result)
    return result


def format_summary(result: Mapping[str, Any]) -> str:
    """A short human-readable table of one evaluation."""
    lo, hi = result["success_ci95"]
    rows = [
        ("sampler", SamplerConfig(**{k: v for k, v in result["sampler"].items()}).describe()),
        (
            "success",
            f"{result['success_rate']:.1%}  (95% CI {lo:.1%}-{hi:.1%}, "
            f"{result['successes']}/{result['episodes']})",
        ),
        ("NFE", str(result["nfe"])),
        (
            "latency p50/p95",
            f"{result['latency_ms_p50']:.2f} / {result['latency_ms_p95']:.2f} ms "
            f"({result['latency_over_forward']:.2f}x one forward)",
        ),
        (
            "control rate",
            f"{result['control_rate_hz']:.0f} actions/s at p95 "
            f"({result['max_replan_hz']:.0f} replans/s)",
        ),
        ("mean return / length", f"{result['mean_return']:.3f} / {result['mean_length']:.1f}"),
    ]
    if result.get("mode_freq"):
        rows.append(
            ("modes (successes)", ", ".join(f"{k} {v:.0%}" for k, v in result["mode_freq"].items()))
        )
    if result.get("demo_mode_freq"):
        rows.append(
            (
                "modes (demos)",
                ", ".join(f"{k} {v:.0%}" for k, v in result["demo_mode_freq"].items()),
            )
        )
    if result.get("crashed"):
        rows.append(("crashed episodes", str(result["crashed"])))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)
