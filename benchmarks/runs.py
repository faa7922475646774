"""What a benchmark evaluates: sampler specs, the NFE sweep, and rows pooled across seeds."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from diffusion_policy_dist.diffusion.samplers import SAMPLERS, samplers_for
from diffusion_policy_dist.stats import wilson_interval

# t_{0.975} with n - 1 degrees of freedom, for intervals across a few training seeds
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306}
# the phase-space integrators the sweep runs (of samplers_for("phase_space"), which also holds
# naive_se, conjugate_se and the distributional bridge)
PSLD_METHODS = ("euler", "reduced_se", "reduced_vv", "naive_vv", "reduced_oba", "lambda_ddim",
                "conjugate_vv", "em", "sscs")  # fmt: skip


def parse_sampler(spec: str) -> dict[str, Any]:
    """``"distributional-2@churn=1"`` -> ``{"kind": "distributional", "steps": 2,
    "churn": 1.0}``."""
    head, _, opts = spec.partition("@")
    kind, _, steps = head.rpartition("-")
    if not kind or not steps.isdigit():
        raise ValueError(f"sampler spec {spec!r}: expected kind-steps[@option=value,...]")
    out: dict[str, Any] = {"kind": kind, "steps": int(steps)}
    for item in filter(None, opts.split(",")):
        k, _, v = item.partition("=")
        out[k] = float(v) if v.replace(".", "", 1).lstrip("-").isdigit() else v
    return out


def model_for(sampler: Mapping[str, Any], models: Sequence[str]) -> str:
    """The model a sampler spec runs on: distributional samplers on the distributional model,
    the others on the mean model (of the phase-space pair for phase-space kinds)."""
    psld = sampler["kind"] in samplers_for("phase_space") and sampler["kind"] != "distributional"
    dist = sampler["kind"] == "distributional"
    want = ("psld_" if psld else "") + ("distributional" if dist else "mean")
    want = {"mean": "ddpm"}.get(want, want)
    if want not in models:
        raise ValueError(f"sampler {sampler} needs the {want} model, which the preset lacks")
    return want


def steps_for_nfe(kind: str, nfe: int) -> int:
    """Steps that spend about ``nfe`` network calls (a naive integrator calls more per step)."""
    per = SAMPLERS[kind].nfe_per_step
    return max(1, round((nfe + per - 1) / per))  # a naive scheme spends per * steps - per + 1


def sweep(models: Sequence[str], nfe: Sequence[int], churns: Sequence[float], tuned: Mapping):
    """``(model, sampler)`` pairs of the NFE sweep; ``tuned[k]`` is conjugate's lambda at k."""
    runs = []
    if "ddpm" in models:
        runs.append(("ddpm", {"kind": "ddpm", "steps": 100}))
    for k in nfe:
        if "ddpm" in models:
            runs.append(("ddpm", {"kind": "ddim", "steps": k, "eta": 0.0}))
            if k > 1:  # (its first step is DDIM's)
                runs.append(("ddpm", {"kind": "dpmpp_2m", "steps": k}))
            if k in tuned:
                runs.append(("ddpm", {"kind": "conjugate", "steps": k, "lam": tuned[k]}))
        for model in ("distributional", "psld_distributional"):
            if model in models:
                runs += [
                    (model, {"kind": "distributional", "steps": k, "churn": c}) for c in churns
                ]
        if "psld_mean" in models:
            runs += [("psld_mean", {"kind": m, "steps": steps_for_nfe(m, k)}) for m in PSLD_METHODS]
    return runs


def _t_interval(values: Sequence[float]) -> list[float]:
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return [mean, mean]
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    half = _T975.get(n - 1, 1.96) * sd / math.sqrt(n)
    return [max(0.0, mean - half), min(1.0, mean + half)]


def _mean(values: Sequence[float | None]) -> float | None:
    vals = [v for v in values if v is not None and math.isfinite(v)]
    return sum(vals) / len(vals) if vals else None


def pool_seeds(rows: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """One summary row per (model, method, NFE, variant): the mean success over training seeds
    with its 95% t-interval across seeds, and the pooled success with its Wilson interval."""
    groups: dict[tuple, list[Mapping[str, Any]]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["method"], r["nfe"], r.get("variant")), []).append(r)
    out = []
    for (model, method, nfe, variant), rs in groups.items():
        rates = [r["success_rate"] for r in rs]
        succ, n = sum(r["successes"] for r in rs), sum(r["episodes"] for r in rs)
        modes = {
            k: _mean([(r.get("mode_freq") or {}).get(k) for r in rs])
            for k in (rs[0].get("mode_freq") or {})
        }
        out.append({
            **{k: rs[0][k] for k in ("task", "churn", "label") if k in rs[0]},
            "model": model, "method": method, "nfe": nfe, "variant": variant,
            "seeds": [r.get("seed") for r in rs],
            "lam": [r.get("lam") for r in rs] if rs[0].get("lam") is not None else None,
            "success_rate": sum(rates) / len(rates),
            "success_ci95": _t_interval(rates),
            "success_by_seed": rates,
            "pooled_success": succ / n if n else 0.0,
            "pooled_ci95": list(wilson_interval(succ, n)),
            "episodes": n, "successes": succ,
            "mean_score": _mean([r.get("mean_score") for r in rs]),
            "mode_freq": modes or None,
            **{k: _mean([r.get(k) for r in rs]) for k in (
                "latency_ms_p50", "latency_ms_p95", "latency_over_forward", "forward_ms_p50",
                "control_rate_hz", "prior_ms_p50")},
        })  # fmt: skip
    return out
