"""``dpd bench preset=realtime``: success and smoothness when the world does not wait.

Per task and training seed, on the preset's trained models:

- **delay sweep**: each delay sampler under a fixed delay of d control steps with each
  transition (d = 0: the world pauses, the reference), on the test seeds; the distributional
  sampler runs on the plain model and on the one trained with a committed prefix;
- **control rates**: each rate sampler at each rate with its own latency measured per call on
  this machine, one env at a time (one robot), with the best transition of the sweep.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffusion_policy_dist.benchmarks.runs import parse_sampler

from diffusion_policy_dist.evaluation import EnvPool, evaluate
from diffusion_policy_dist.files import write_json_atomic

KEYS = (
    "success_rate",
    "success_ci95",
    "mean_score",
    "boundary_jerk",
    "interior_jerk",
    "deadline_miss_rate",
    "stale_step_rate",
    "delay_steps",
    "latency_ms_p95",
    "episodes",
)


def _models_for(spec: Mapping[str, Any], models: Sequence[str]) -> list[str]:
    if spec["kind"] == "distributional":
        return [m for m in ("distributional", "distributional_prefix") if m in models]
    return [m for m in ("ddpm",) if m in models]


def _row(res: Mapping[str, Any], **ctx: Any) -> dict[str, Any]:
    return {**ctx, **{k: res.get(k) for k in KEYS}}


def delay_sweep(policies, source, grid, ev: dict, seed: int, progress) -> list[dict]:
    rows = []
    with EnvPool(source, ev["n_envs"], processes=False) as pool:
        for spec_text in grid.delay_samplers:
            spec = parse_sampler(spec_text)
            for model in _models_for(spec, list(policies)):
                for d in grid.delays:
                    for tr in ["sync"] if d == 0 else grid.transitions:
                        cfg = {**ev, "control_hz": 10.0, "latency": f"{d}steps", "transition": tr}
                        progress(f"{model} {spec_text} d={d} {tr}")
                        res = evaluate(policies[model], source, cfg, sampler=spec, pool=pool)
                        rows.append(
                            _row(
                                res,
                                seed=seed,
                                model=model,
                                sampler=spec_text,
                                delay=d,
                                transition=tr,
                            )
                        )
    return rows


def best_transition(rows: Sequence[Mapping[str, Any]], model: str) -> str:
    """The transition with the best mean success over the non-zero delays (then least jerk)."""
    by: dict[str, list] = {}
    for r in rows:
        if r["model"] == model and r["delay"] > 0:
            by.setdefault(r["transition"], []).append((r["success_rate"], r["boundary_jerk"] or 0))
    if not by:
        return "naive"
    return max(by, key=lambda t: (sum(s for s, _ in by[t]) / len(by[t]), -sum(j for _, j in by[t])))


def rate_runs(policies, source, grid, ev: dict, seed: int, sweep_rows, progress) -> list[dict]:
    rows = []
    cfg0 = {**ev, "episodes": grid.rate_episodes, "n_envs": 1, "latency": "measured"}
    with EnvPool(source, 1, processes=False) as pool:
        for spec_text in grid.rate_samplers:
            spec = parse_sampler(spec_text)
            for model in _models_for(spec, list(policies)):
                tr = best_transition(sweep_rows, model)
                for hz in grid.rates:
                    progress(f"{model} {spec_text} at {hz:g} Hz ({tr})")
                    cfg = {**cfg0, "control_hz": hz, "transition": tr}
                    res = evaluate(policies[model], source, cfg, sampler=spec, pool=pool)
                    rows.append(
                        _row(res, seed=seed, model=model, sampler=spec_text, rate=hz, transition=tr)
                    )
    return rows


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "-"
    return f"{v:.0%}" if pct else f"{v:.3g}"


def report_md(result: Mapping[str, Any]) -> list[str]:
    """The two tables of a realtime result (mean over seeds where several)."""
    lines = [
        "## Success and boundary jerk against delay (fixed delay in control steps)\n",
        "| model | sampler | delay | transition | success | boundary jerk | interior jerk "
        "| stale steps |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["delay_rows"]:
        lines.append(
            f"| {r['model']} | {r['sampler']} | {r['delay']} | {r['transition']} | "
            f"{_fmt(r['success_rate'], True)} | {_fmt(r['boundary_jerk'])} | "
            f"{_fmt(r['interior_jerk'])} | {_fmt(r['stale_step_rate'], True)} |"
        )
    lines += [
        "\n## End to end at a control rate, with each sampler's latency measured here\n",
        "| model | sampler | rate (Hz) | transition | success | latency p95 (ms) | delay "
        "p50 / max | deadline misses | boundary jerk |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rate_rows"]:
        d = r["delay_steps"] or {}
        lines.append(
            f"| {r['model']} | {r['sampler']} | {r['rate']:g} | {r['transition']} | "
            f"{_fmt(r['success_rate'], True)} | {_fmt(r['latency_ms_p95'])} | "
            f"{d.get('p50')} / {d.get('max')} | {_fmt(r['deadline_miss_rate'], True)} | "
            f"{_fmt(r['boundary_jerk'])} |"
        )
    return lines


def plot(result: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    rows = result["delay_rows"]
    for key in sorted({(r["model"], r["sampler"], r["transition"]) for r in rows if r["delay"]}):
        pts = sorted(
            (r["delay"], r["success_rate"])
            for r in rows
            if (r["model"], r["sampler"], r["transition"]) == key
            or (r["delay"] == 0 and (r["model"], r["sampler"]) == key[:2])
        )
        ax.plot(*zip(*pts, strict=True), marker="o", label=" ".join(key))
    ax.set(
        xlabel="inference delay (control steps)",
        ylabel="success",
        ylim=(-0.03, 1.03),
        title=f"{result['header']['task']}: success vs delay",
    )
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def write_realtime_report(result: dict[str, Any], stem: Path) -> None:
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stem.with_suffix(".json"), result)
    plot(result, stem.with_suffix(".png"))
    head = result["header"]
    md = [
        f"# {stem.name}: real time\n",
        f"Command: `{head['command']}`  ",
        f"Commit `{head['git_commit']}`, {head['date']}, {head['machine']}, device "
        f"{head['device']}, seeds {head['seeds']}\n",
        *report_md(result),
        f"\n![success vs delay]({stem.name}.png)\n",
    ]
    stem.with_suffix(".md").write_text("\n".join(md))
