"""The one closed-loop evaluation runner, for every policy and environment.

Episodes run under fixed seeds ``seed, seed+1, ...`` (disjoint from collection seeds) in a pool
of env slots (:mod:`.pool`), by the rollout loop (:mod:`.rollout`). An env that raises, hangs,
returns NaN or whose worker dies fails its episode, which is logged with its seed and reason, and
the run goes on. Latency is measured separately at batch size 1 (:mod:`.latency`) and the result
is assembled and written by :mod:`.report`.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..control.transitions import parse_latency
from ..envs.spec import env_mismatch
from ..envs.workers import EnvSource
from ..files import write_json_atomic
from ..policy.config import build_config, to_dict
from ..policy.diffusion_policy import sampler_options
from .config import EvalConfig
from .latency import measure_latency, not_measured, trials_for
from .pool import EnvPool
from .realtime import Clock, RealtimeRollout, realtime_metrics
from .report import build_result, episode_stats
from .rollout import Rollout
from .video import write_video


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run the block with ``n`` torch CPU threads (None: unchanged)."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def env_source(env: EnvSource | Mapping[str, Any]) -> EnvSource:
    """An :class:`EnvSource` from itself or an env spec (run only what the spec may run)."""
    return env if isinstance(env, EnvSource) else EnvSource.from_spec(env)


@contextlib.contextmanager
def _pool_for(source: EnvSource, cfg: EvalConfig, n: int, pool: EnvPool | None):
    if pool is None:
        with EnvPool(source, n, cfg.video > 0, cfg.vector == "async", cfg.env_timeout_s) as own:
            yield own
        return
    if pool.n != n or (cfg.video > 0 and not pool.render):
        raise ValueError(
            f"the env pool ({pool.n} x {pool.source.label}, render={pool.render}) does not fit "
            f"this evaluation ({n} envs, video={cfg.video})"
        )
    yield pool


def _video_writer(pool: EnvPool, source: EnvSource, cfg: EvalConfig, out_dir: Path | None):
    def on_end(episode: int, slot: int) -> None:
        if out_dir is None or episode >= cfg.video:
            return
        frames = pool.frames(slot)
        if frames:
            path = out_dir / "videos" / f"episode_{episode:03d}"
            write_video(frames, path, fps=int(source.control_hz or 10), fmt=cfg.video_format)

    return on_end


def clock_of(cfg: EvalConfig) -> Clock | None:
    """The control clock of a real-time evaluation (None: the world pauses for each chunk)."""
    if cfg.control_hz is None:
        return None
    return Clock(cfg.control_hz, parse_latency(cfg.latency), cfg.transition, cfg.blend_steps)


def _roll_out(policy, pool, source, sc, cfg, out_dir, clock: Clock | None) -> Rollout:
    seeds = [cfg.seed + i for i in range(cfg.episodes)]
    msg = env_mismatch(pool.observation_space, pool.action_space, policy.shape_meta)
    if msg:
        raise ValueError(f"env {source.label}: {msg} (the policy's shape_meta comes from its data)")
    gen = torch.Generator(device=policy.device).manual_seed(cfg.policy_seed)
    bar = tqdm(
        total=cfg.episodes,
        desc=f"eval {sc.describe()}",
        disable=not cfg.progress,
        dynamic_ncols=True,
        mininterval=0.5 if sys.stderr.isatty() else 10.0,
    )
    with bar:
        on_end = _video_writer(pool, source, cfg, out_dir)
        args = (policy, pool, sc, seeds, gen, cfg.video, on_end, lambda: bar.update(1))
        if clock is None or clock.transition == "sync":
            rollout = Rollout(*args)
        else:
            rollout = RealtimeRollout(*args, clock=clock)
        rollout.run()
    return rollout


def evaluate(
    policy,
    env: EnvSource | Mapping[str, Any],
    cfg: EvalConfig | Mapping | None = None,
    sampler: Any = None,
    output_dir: str | Path | None = None,
    checkpoint: str | None = None,
    extra: Mapping[str, Any] | None = None,
    pool: EnvPool | None = None,
) -> dict[str, Any]:
    """Roll ``policy`` out in ``env`` (an env spec or an :class:`EnvSource`) and return (and,
    with ``output_dir``, write as ``eval.json``) the results. ``sampler`` overrides the policy's
    default; ``pool`` reuses running env workers (``min(n_envs, episodes)`` slots)."""
    cfg = build_config(EvalConfig, cfg, "eval")
    sc = policy.sampler_cfg if sampler is None else sampler_options(sampler)
    source, out_dir = env_source(env), Path(output_dir) if output_dir else None
    policy.eval()
    n, clock = min(cfg.n_envs, cfg.episodes), clock_of(cfg)
    t_start = time.perf_counter()
    with torch_threads(cfg.rollout_threads), _pool_for(source, cfg, n, pool) as p:
        rollout = _roll_out(policy, p, source, sc, cfg, out_dir, clock)
    rollout_s = time.perf_counter() - t_start
    with torch_threads(cfg.torch_threads):
        if cfg.latency_trials > 0 and rollout.first_obs is not None:
            trials = trials_for(sc.steps, cfg.latency_trials)
            latency = measure_latency(policy, rollout.first_obs, sc, trials, cfg.policy_seed)
        else:
            latency = not_measured(max(rollout.nfe_seen, default=sc.steps))
        threads = torch.get_num_threads()
    records = rollout.records_done()
    run = {
        "sampler": to_dict(sc),
        "sampler_label": sc.describe(),
        "checkpoint": checkpoint,
        "env": dict(source.spec),
        "seeds": [cfg.seed, cfg.seed + cfg.episodes - 1],
        "n_envs": n,
        "n_action_steps": policy.window.n_action_steps,
        "device": str(policy.device),
        "torch_threads": threads,
        "rollout_wallclock_s": rollout_s,
        "chunk_ms": rollout.chunk_ms,
        "realtime": realtime_metrics(rollout, clock, rollout.records_done()),
    }
    stats = episode_stats(records, source.mode_names)
    result = build_result(
        stats, latency, run, records, {"sampler_label": sc.describe(), **(extra or {})}
    )
    if out_dir:
        write_json_atomic(out_dir / "eval.json", result)
    return result
