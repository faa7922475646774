"""The result of an evaluation: the ``eval.json`` dict, and its short human-readable summary."""

from __future__ import annotations

import collections
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..stats import format_modes, mode_frequencies, percentiles, wilson_interval


def episode_stats(records: Sequence[Mapping[str, Any]], mode_names) -> dict[str, Any]:
    """Success with its 95% Wilson interval, behaviour modes, returns and failures."""
    n = len(records)
    successes = sum(bool(r["success"]) for r in records)
    failed = [r for r in records if r["crashed"]]
    return {
        "success_rate": successes / n if n else 0.0,
        "success_ci95": list(wilson_interval(successes, n)),
        "episodes": n,
        "successes": successes,
        "mode_freq": mode_frequencies([r["mode"] for r in records if r["success"]], mode_names),
        "mean_return": float(np.mean([r["return"] for r in records])) if n else 0.0,
        "mean_score": _mean_score(records),
        "mean_length": float(np.mean([r["length"] for r in records])) if n else 0.0,
        "crashed": len(failed),
        "failures_by_reason": dict(collections.Counter(r["reason"] for r in failed)),
        "mode_freq_all": mode_frequencies([r["mode"] for r in records], mode_names),
    }


def _mean_score(records: Sequence[Mapping[str, Any]]) -> float | None:
    """Mean over episodes of the env's episode score (its running max, e.g. Push-T's
    clip(coverage / 0.95, 0, 1)); None for envs without a score. A failed episode scores 0."""
    if not records or all(r.get("score") is None for r in records):
        return None
    return float(np.mean([r.get("score") or 0.0 for r in records]))


def rates(latency: Mapping[str, Any], n_action_steps: int) -> dict[str, float]:
    """The control rate a latency allows: replans per second, and actions per second when each
    chunk's ``n_action_steps`` actions are executed while the next is computed."""
    p95 = latency["latency_ms_p95"]
    ok = p95 > 0 if math.isfinite(p95) else False
    return {
        "max_replan_hz": 1000.0 / p95 if ok else math.nan,
        "control_rate_hz": n_action_steps * 1000.0 / p95 if ok else math.nan,
    }


def build_result(
    stats: Mapping[str, Any],
    latency: Mapping[str, Any],
    run: Mapping[str, Any],
    records: Sequence[Mapping[str, Any]],
    extra: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """``eval.json``: episode statistics, latency and the run's context (``run``: sampler,
    checkpoint, env, seeds, n_envs, n_action_steps, device, torch_threads, rollout_wallclock_s,
    chunk_ms)."""
    head = {k: stats[k] for k in ("success_rate", "success_ci95", "episodes", "successes")}
    return {
        **head,
        "nfe": latency["nfe"],
        "latency_ms_p50": latency["latency_ms_p50"],
        "latency_ms_p95": latency["latency_ms_p95"],
        "mode_freq": stats["mode_freq"],
        "sampler": run["sampler"],
        "checkpoint": run.get("checkpoint"),
        "latency_ms_p99": latency.get("latency_ms_p99"),
        "latency_ms_max": latency.get("latency_ms_max"),
        "latency_ms_mean": latency["latency_ms_mean"],
        "forward_ms_p50": latency["forward_ms_p50"],
        "latency_over_forward": latency["latency_over_forward"],
        "prior_ms_p50": latency["prior_ms_p50"],
        **rates(latency, run["n_action_steps"]),
        "batch_latency_ms_p50": percentiles(run["chunk_ms"])["p50"],
        **{k: stats[k] for k in ("mean_return", "mean_length", "crashed", "mode_freq_all")},
        "mean_score": stats["mean_score"],
        "failures_by_reason": stats["failures_by_reason"],
        **{k: run[k] for k in ("env", "seeds", "n_envs", "n_action_steps", "device")},
        "torch_threads": run["torch_threads"],
        "rollout_wallclock_s": run["rollout_wallclock_s"],
        **run.get("realtime", {}),
        "per_episode": list(records),
        **dict(extra or {}),
    }


def format_summary(result: Mapping[str, Any]) -> str:
    """A short table of one evaluation."""
    lo, hi = result["success_ci95"]
    rows = [
        ("sampler", result.get("sampler_label") or str(result["sampler"])),
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
    if result.get("control_hz"):
        d = result["delay_steps"]
        rows.append((
            "real time",
            f"{result['control_hz']:g} Hz, {result['transition']}, delay p50 {d['p50']:g} / max "
            f"{d['max']} steps, deadline misses {result['deadline_miss_rate'] or 0:.1%}",
        ))  # fmt: skip
        j = result.get("deadline_latency_ms")
        if j:
            rows.append((
                "judged on",
                f"calls of {result['deadline_batch']} env(s) at once: p50 {j['p50']:.2f} / p99 "
                f"{j['p99']:.2f} / max {j['max']:.2f} ms (the batch-1 latency above is one "
                "robot's)",
            ))  # fmt: skip
    if result.get("boundary_jerk") is not None:
        rows.append(("boundary jerk", f"{result['boundary_jerk']:.4g} (interior "
                                      f"{result['interior_jerk'] or 0:.4g})"))  # fmt: skip
    if result.get("mean_score") is not None:
        rows.append(("score", f"{result['mean_score']:.3f} (mean of each episode's best)"))
    if result.get("mode_freq"):
        rows.append(("modes (successes)", format_modes(result["mode_freq"])))
    if result.get("demo_mode_freq"):
        rows.append(("modes (demos)", format_modes(result["demo_mode_freq"])))
    if result.get("crashed"):
        reasons = ", ".join(f"{k} {v}" for k, v in result.get("failures_by_reason", {}).items())
        rows.append(("failed episodes", f"{result['crashed']} ({reasons})"))
    w = max(len(r[0]) for r in rows)
    return "\n".join(f"  {k:<{w}}  {v}" for k, v in rows)
