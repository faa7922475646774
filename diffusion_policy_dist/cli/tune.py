"""``dpd tune``: the sampler that meets a control rate on this machine, written as the
checkpoint's default (see :class:`~.schemas.TuneRun`)."""

from __future__ import annotations

import datetime
import sys
from typing import Any

from .schemas import TuneRun

CANDIDATES = {  # by denoiser kind
    "distributional": ["distributional-1", "distributional-2", "distributional-4"],
    "mean": ["ddim-1", "ddim-2", "ddim-4", "ddim-10", "ddpm-100"],
}


def _parse(spec: str) -> dict[str, Any]:
    from ..benchmarks.runs import parse_sampler

    return parse_sampler(spec)


def _rows(cfg: TuneRun, policy, source, candidates: list[str]) -> list[dict[str, Any]]:
    from ..evaluation import evaluate

    rows = []
    for spec in candidates:
        res = evaluate(
            policy,
            source,
            sampler=_parse(spec),
            cfg={
                "episodes": cfg.episodes,
                "n_envs": 1,
                "seed": cfg.seed,
                "vector": "sync",
                "control_hz": cfg.control_hz,
                "latency": "measured",
                "transition": cfg.transition,
                "progress": cfg.progress,
                "latency_trials": 10,
            },
        )
        rows.append(
            {
                "sampler": spec,
                "success_rate": res["success_rate"],
                "mean_score": res["mean_score"],
                "latency_ms_p95": res["latency_ms_p95"],
                "delay_steps_max": res["delay_steps"]["max"],
                "deadline_miss_rate": res["deadline_miss_rate"] or 0.0,
                "fits": (res["deadline_miss_rate"] or 0.0) == 0.0,
            }
        )
    return rows


def choose(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The best candidate that never missed a deadline (success, then score, then latency);
    when none fits, the fastest."""
    fit = [r for r in rows if r["fits"]]
    if not fit:
        return min(rows, key=lambda r: r["latency_ms_p95"])
    return max(fit, key=lambda r: (r["success_rate"], r["mean_score"] or 0.0, -r["latency_ms_p95"]))


def _table(rows: list[dict[str, Any]], best: dict[str, Any], hz: float) -> str:
    lines = [
        f"at {hz:g} Hz ({1000 / hz:.1f} ms per step):",
        "  sampler                 success  latency p95  delay max  deadline misses",
    ]
    for r in rows:
        mark = "  <- chosen" if r is best else ""
        lines.append(
            f"  {r['sampler']:<22} {r['success_rate']:8.0%} {r['latency_ms_p95']:9.1f} ms"
            f" {r['delay_steps_max']:6d} st {r['deadline_miss_rate']:14.0%}{mark}"
        )
    return "\n".join(lines)


def write_default_sampler(ckpt_dir, sampler: dict[str, Any], note: str) -> None:
    """Make ``sampler`` the checkpoint's default (meta.json, written atomically); the one it
    replaces goes to ``sampler_history`` with the date and ``note``."""
    from ..files import write_json_atomic
    from ..policy.config import to_dict
    from ..policy.diffusion_policy import sampler_options
    from ..training.checkpoint import _read_json

    path = ckpt_dir / "meta.json"
    meta = _read_json(path)
    old = meta["policy"].get("sampler")
    meta.setdefault("sampler_history", []).append(
        {
            "sampler": old,
            "replaced": datetime.datetime.now(datetime.UTC).isoformat(),
            "by": note,
        }
    )
    meta["policy"]["sampler"] = to_dict(sampler_options(sampler))
    write_json_atomic(path, meta)


def tune(cfg: TuneRun) -> dict[str, Any]:
    from ..env_options import EnvOptions, env_spec, trust_of
    from ..envs.workers import EnvSource
    from ..training.build import policy_from_checkpoint, resolve_device

    policy, ckpt = policy_from_checkpoint(
        cfg.checkpoint, use_ema=cfg.use_ema, device=resolve_device(cfg.device)
    )
    spec = env_spec(None, None, EnvOptions(), ckpt.meta.get("env"))
    if spec is None:
        raise ValueError(f"{ckpt.path}/meta.json records no env to tune on")
    candidates = cfg.candidates or CANDIDATES[policy.cfg.kind]
    source = EnvSource.from_spec(spec, trust_of(EnvOptions()))
    rows = _rows(cfg, policy, source, candidates)
    best = choose(rows)
    print(_table(rows, best, cfg.control_hz), file=sys.stderr)
    if not best["fits"]:
        print(
            f"no candidate meets {cfg.control_hz:g} Hz; the fastest is {best['sampler']}",
            file=sys.stderr,
        )
    if cfg.write:
        note = f"dpd tune control_hz={cfg.control_hz:g} transition={cfg.transition}"
        write_default_sampler(ckpt.path, _parse(best["sampler"]), note)
    print(f"chosen sampler: {best['sampler']}" + ("" if cfg.write else " (not written)"))
    return {"rows": rows, "chosen": best["sampler"]}
