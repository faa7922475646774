"""Benchmark reports: the targets checked on measured numbers, Markdown tables and plots.

Results files written before training seeds and work budgets (no ``summary`` in them) are
rewritten in their own format, so ``report_only`` reproduces their tables unchanged.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from diffusion_policy_dist.benchmarks.suite import (
    flatten_step,
    markdown_table,
    plot_results,
    val_losses,
)
from diffusion_policy_dist.benchmarks.summary import summarize

from diffusion_policy_dist.files import write_json_atomic
from diffusion_policy_dist.stats import format_modes


def check_targets(rows: list[dict], demo_modes: dict | None) -> list[dict]:
    """The package's claims, checked on measured rows (reported as measured, never assumed)."""

    def row(method, nfe):
        plain = (r for r in rows if not r.get("variant") and "psld" not in r.get("model", ""))
        return next((r for r in plain if r["method"] == method and r["nfe"] == nfe), None)

    ddpm, d1 = row("ddpm", 100), row("distributional (churn 0)", 1)
    d2 = row("distributional (churn 0)", 2)
    out = []

    def target(text: str, measured: Any, met: bool) -> None:
        out.append({"target": text, "measured": measured, "met": bool(met)})

    if ddpm and d1:
        ratio = (
            d1["success_rate"] / ddpm["success_rate"] if ddpm["success_rate"] > 0 else float("inf")
        )
        target("distributional-1 success >= 95% of DDPM-100's", round(ratio, 3), ratio >= 0.95)
        speed = ddpm["latency_ms_p50"] / d1["latency_ms_p50"]
        target("DDPM-100 latency / distributional-1 latency >= 50", round(speed, 1), speed >= 50)
        lof = d1["latency_over_forward"]
        target("distributional-1 latency <= 1.3x one bare forward", round(lof, 3), lof <= 1.3)
        if demo_modes and d1["mode_freq"]:
            gap = max(abs(d1["mode_freq"].get(k, 0.0) - v) for k, v in demo_modes.items()
                      if k != "undetermined")  # fmt: skip
            text = "distributional-1 mode frequencies within 10 points of the demos'"
            target(text, round(100 * gap, 1), gap <= 0.10)
    if ddpm and d2:
        lo, hi = ddpm["success_ci95"]
        # "matches within the CI": not below DDPM-100's 95% interval (above it is better still)
        measured = f"{d2['success_rate']:.2f} vs {ddpm['success_rate']:.2f} (CI {lo:.2f}-{hi:.2f})"
        target(
            "distributional-2 matches DDPM-100 within its 95% CI (or beats it)",
            measured,
            d2["success_rate"] >= lo,
        )
    return out


def _targets_md(targets: Sequence[Mapping[str, Any]]) -> list[str]:
    return [
        "\n## Targets (as measured)\n",
        "| target | measured | met |",
        "|---|---|---|",
        *[f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else 'NO'} |" for t in targets],
    ]


def write_legacy_report(result: dict[str, Any], stem: Path) -> None:
    """The single-seed, wall-clock-budget format of the first benchmark files."""
    head, rows = result["header"], result["rows"]
    result["targets"] = check_targets(rows, head.get("demo_mode_freq"))
    write_json_atomic(stem.with_suffix(".json"), result)
    n_test = head["test_seeds"][1] - head["test_seeds"][0] + 1
    title = (
        f"{head['task']} ({head.get('obs', 'lowdim')}): {head.get('train_budget_s')} s training "
        f"per model, {n_test} test episodes"
    )
    plot_results(rows, stem.with_suffix(".png"), title)
    train = "; ".join(
        f"{k}: {v['step']} steps, {v['train_wallclock_s']:.0f} s, {v['step_ms']:.0f} ms/step, "
        f"peak memory {v['peak_memory_mb']:.0f} MB"
        for k, v in head["train"].items()
    )
    md = [
        f"# {stem.name}\n",
        f"Command: `{head['command']}`  ",
        f"Commit `{head['git_commit']}`, {head['date']}, "
        f"{head['machine']}, device {head['device']}, preset {head['preset']}\n",
        f"Training (same wall-clock budget, {head.get('network', '')} UNet): " + train + "\n",
        markdown_table(rows, head.get("demo_mode_freq")),
        *_targets_md(result["targets"]),
        f"\n![success and latency vs NFE]({stem.name}.png)\n",
    ]
    stem.with_suffix(".md").write_text("\n".join(md))
    print("\n" + "\n".join(md), file=sys.stderr)


def _budget_text(p: Mapping[str, Any]) -> str:
    if p.get("batch_size"):
        return (f"every model {p['steps']} optimizer steps of {p['batch_size']} examples (the "
                f"same data; distributional: m={p['m']} samples each; compute per step in "
                "GFLOP below)")  # fmt: skip
    return (f"every model {p['steps']} optimizer steps of {p['batch_rows']} network rows (equal "
            f"steps are equal compute; distributional: {p['batch_rows'] // p['m']} examples x "
            f"m={p['m']})")  # fmt: skip


def _train_md(head: Mapping[str, Any]) -> list[str]:
    p = head["preset_settings"]
    lines = [
        f"Training: {_budget_text(p)}, {p['network']} UNet, seeds {head['seeds']}.\n",
        "| seed | model | steps | GFLOP/step | wall-clock (s) | ms/step | val loss, last 25% |",
        "|---|---|---|---|---|---|---|",
    ]
    for seed, models in head["train"].items():
        for model, t in models.items():
            fall = t.get("val_loss_still_falling")
            state = f"still falling ({fall:.0%})" if fall else "flat (within 5%)"
            flops = t.get("train_flops_per_step")
            gf = f"{flops / 1e9:.0f}" if flops else "-"
            lines.append(f"| {seed} | {model} | {t['step']} | {gf} | {t['train_wallclock_s']:.0f} "
                         f"| {t['step_ms']:.0f} | {state} |")  # fmt: skip
    return lines


def summary_table(summary: Sequence[Mapping[str, Any]], demo_modes) -> str:
    """Success over training seeds: mean and 95% interval across seeds, and pooled episodes."""
    lines = [
        "| model: sampler | NFE | success, mean over seeds (95% CI) | pooled episodes (Wilson) "
        "| score | modes | latency p50 (ms) | x forward | prior (ms) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in summary:
        lo, hi = r["success_ci95"]
        plo, phi = r["pooled_ci95"]
        score = f"{r['mean_score']:.3f}" if r.get("mean_score") is not None else "-"
        prior = f"{r['prior_ms_p50']:.2f}" if r.get("prior_ms_p50") else "-"
        lines.append(
            f"| {r.get('label', r['method'])} | {r['nfe']} | {r['success_rate']:.0%} "
            f"({lo:.0%}-{hi:.0%}) | {r['pooled_success']:.0%} ({plo:.0%}-{phi:.0%}, n="
            f"{r['episodes']}) | {score} | {format_modes(r.get('mode_freq'))} | "
            f"{r['latency_ms_p50']:.1f} | {r['latency_over_forward']:.2f} | {prior} |"
        )
    if demo_modes:
        lines += ["", "Demonstrations' modes: " + format_modes(demo_modes)]
    return "\n".join(lines)


def val_curves(head: Mapping[str, Any], work_dir: str | None) -> dict[str, list[list[float]]]:
    """``{"<model> seed <s>": [[step, val_loss], ...]}`` read from each run's metrics.jsonl, so
    the results file keeps them (``report_only`` redraws without the work folder)."""
    obs = head.get("obs", "state")
    name = head["task"] if obs in ("state", "lowdim") else f"{head['task']}_{obs}"
    base, out = Path(work_dir or "outputs/bench") / name, {}
    for seed, models in head["train"].items():
        for model in models:
            path = base / f"seed{seed}" / model / "metrics.jsonl"
            if path.exists():
                out[f"{model} seed {seed}"] = [list(v) for v in val_losses(path)]
    return out


def curve_metric(curves: Sequence[Mapping[str, Any]]) -> str:
    """``score`` when the env reports one (Push-T), else ``success``."""
    return "score" if any(c.get("score") is not None for c in curves) else "success"


def curve_series(curves: Sequence[Mapping[str, Any]], key: str) -> dict[tuple, list[tuple]]:
    """``{(model, seed): [(step, value), ...]}`` of the convergence checkpoints."""
    out: dict[tuple, list[tuple]] = {}
    for c in curves:
        out.setdefault((c["model"], c["seed"]), []).append((c["step"], c[key]))
    return {k: sorted(v) for k, v in sorted(out.items())}


def flatten_md(result: Mapping[str, Any]) -> list[str]:
    """When each run's validation success (or score) stopped moving (:func:`flatten_step`)."""
    curves, p = result.get("curves") or [], result["header"]["preset_settings"]
    if not curves:
        return []
    key, n = curve_metric(curves), p["curve_episodes"]
    lines = [
        f"\nValidation {key} along training ({n} validation episodes per checkpoint; "
        "flattened: the first checkpoint from which every later one lies in the final one's "
        "95% interval):\n",
        f"| model | seed | {key} at each checkpoint (step: value) | flattened at step |",
        "|---|---|---|---|",
    ]
    for (model, seed), pts in curve_series(curves, key).items():
        vals = ", ".join(f"{s}: {v:.2f}" for s, v in pts)
        lines.append(f"| {model} | {seed} | {vals} | {flatten_step(pts, n)} |")
    return lines


def plot_convergence(result: Mapping[str, Any], stem: Path) -> Path | None:
    """Validation loss along each run (and the kept checkpoints' validation success)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    head = result["header"]
    curves = result.get("val_curves") or {}
    if not curves:
        return None
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(11, 4.2))
    for label, pts in curves.items():
        ax1.plot([p[0] for p in pts], [p[1] for p in pts], label=label)
    key = curve_metric(result.get("curves", []))
    for (model, seed), pts in curve_series(result.get("curves", []), key).items():
        ax2.plot(*zip(*pts, strict=True), marker="o", label=f"{model} seed {seed}")
    ax1.set(xlabel="optimizer step", ylabel="validation loss", yscale="log")
    ax2.set(xlabel="optimizer step", ylabel=f"validation {key}", ylim=(-0.03, 1.03))
    for ax in (ax1, ax2):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.suptitle(f"{head['task']}: convergence (DDPM-100 and distributional-1 on validation seeds)")
    fig.tight_layout()
    out = stem.with_name(stem.name + "_convergence.png")
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def write_report(result: dict[str, Any], stem: Path, work_dir: str | None = None) -> None:
    """``<stem>.json``, ``.md``, ``.png`` and ``_convergence.png`` of one task's results."""
    if "summary" not in result:
        return write_legacy_report(result, stem)
    head, summary = result["header"], result["summary"]
    result["targets"] = check_targets(summary, head.get("demo_mode_freq"))
    if work_dir is not None:
        result["val_curves"] = val_curves(head, work_dir)
    stem.parent.mkdir(parents=True, exist_ok=True)
    write_json_atomic(stem.with_suffix(".json"), result)
    n_test = head["test_seeds"][1] - head["test_seeds"][0] + 1
    p = head["preset_settings"]
    per_step = f"{p['batch_size']} examples" if p.get("batch_size") else f"{p['batch_rows']} rows"
    title = (f"{head['task']} ({head['obs']}): {p['steps']} steps x {per_step} per "
             f"model, {len(head['seeds'])} seed(s), {n_test} test episodes")  # fmt: skip
    plot_results(summary, stem.with_suffix(".png"), title)
    conv = plot_convergence(result, stem)
    md = [
        f"# {stem.name}\n",
        f"Command: `{head['command']}`  ",
        f"Commit `{head['git_commit']}`, {head['date']}, {head['machine']}, device "
        f"{head['device']}, preset {head['preset']}, load average {head.get('load_average')}\n",
        *_train_md(head),
        "",
        summary_table(summary, head.get("demo_mode_freq")),
        *_targets_md(result["targets"]),
        *flatten_md(result),
        f"\n![success and latency vs NFE]({stem.name}.png)\n",
    ]
    if conv is not None:
        md.append(f"![convergence]({conv.name})\n")
    stem.with_suffix(".md").write_text("\n".join(md))
    print("\n" + "\n".join(md), file=sys.stderr)


def rewrite_reports(stems: Sequence[Path], output_dir: str | Path) -> dict:
    """Re-check the targets and rewrite the Markdown and plots from the measured rows already
    in ``<stem>.json`` (nothing is re-run or re-measured)."""
    results = {}
    for stem in stems:
        if not stem.with_suffix(".json").exists():
            raise FileNotFoundError(f"{stem}.json does not exist: run dpd bench for it first")
        result = json.loads(stem.with_suffix(".json").read_text())
        write_report(result, stem)
        results[stem.name] = result
    summarize(output_dir)
    return results
