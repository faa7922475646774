"""The headline table across tasks, from the per-task results that ``dpd bench`` wrote.

    python -m diffusion_policy_dist.benchmarks.summary [results_dir]

Writes ``<results_dir>/summary.md``: per task, DDPM-100 against the one-step samplers (and
distributional-2), with success rates, latencies and the speed-up, each task's numbers taken
from its own JSON (so from one run, side by side).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

KEY_ROWS = (
    ("ddpm", 100, "DDPM-100"),
    ("ddim", 1, "DDIM-1"),
    ("ddim", 10, "DDIM-10"),
    ("conjugate", 1, "conjugate-1"),
    ("distributional (churn 0)", 1, "**distributional-1**"),
    ("distributional (churn 0)", 2, "distributional-2"),
    ("distributional (churn 1)", 2, "distributional-2, churn 1"),
)


def _rows(data: dict) -> list[dict] | None:
    """The headline rows of a results file: pooled over seeds (``summary``, one model per
    sampler, no priors) or a single-seed file of version 0.1 (``rows``)."""
    if "summary" in data:
        rows = [r for r in data["summary"] if not r.get("variant")]
        for r in rows:
            r.setdefault("method_label", r["label"].split(": ", 1)[-1])
        return rows
    if "rows" in data and "targets" in data:
        return [{**r, "method_label": r["method"], "pooled_ci95": r["success_ci95"]}
                for r in data["rows"]]  # fmt: skip
    return None


def _task_lines(path: Path, data: dict, rows: list[dict]) -> list[str]:
    head = data["header"]
    ref = next((r for r in rows if r["method"] == "ddpm" and r["nfe"] == 100), None)
    demo = head.get("demo_mode_freq") or {}
    seeds = head.get("seeds", [0])
    lines = [
        f"\n### {path.parent.name + '/' if path.parent.name != 'results' else ''}{path.stem}\n",
        f"`{head['command']}` (commit `{head['git_commit']}`, {head['date']}, {head['machine']}; "
        f"{len(seeds)} training seed(s); demonstrations' modes: "
        + ", ".join(f"{k} {v:.0%}" for k, v in demo.items()) + ")\n",
        "| sampler | success (95% CI) | score | modes | latency p50 | speed-up vs DDPM-100 |",
        "|---|---|---|---|---|---|",
    ]  # fmt: skip
    for method, nfe, label in KEY_ROWS:
        r = next((x for x in rows if x["method_label"] == method and x["nfe"] == nfe), None)
        if r is None:
            continue
        one_seed = len(r.get("seeds") or [None]) < 2
        lo, hi = r["pooled_ci95"] if one_seed else r["success_ci95"]
        modes = ", ".join(
            f"{k} {v:.0%}" for k, v in (r.get("mode_freq") or {}).items()
            if k != "undetermined" and v is not None
        )  # fmt: skip
        score = f"{r['mean_score']:.3f}" if r.get("mean_score") is not None else "-"
        speed = f"{ref['latency_ms_p50'] / r['latency_ms_p50']:.0f}x" if ref else "-"
        lines.append(
            f"| {label} | {r['success_rate']:.0%} ({lo:.0%}-{hi:.0%}) | {score} | "
            f"{modes or '-'} | {r['latency_ms_p50']:.1f} ms | {speed} |"
        )
    met = [t for t in data["targets"] if t["met"]]
    lines.append(f"\nTargets met: {len(met)} of {len(data['targets'])} "
                 f"(see [{path.stem}.md]({path.stem}.md)).\n")  # fmt: skip
    return lines


def summarize(results_dir: str | Path) -> Path | None:
    """Write ``summary.md`` in ``results_dir`` (and in each preset folder below it)."""
    results_dir = Path(results_dir)
    for sub in sorted(p for p in results_dir.iterdir() if p.is_dir()):
        summarize(sub)
    lines = []
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        rows = _rows(data) if isinstance(data, dict) else None
        if rows:
            lines += _task_lines(path, data, rows)
    if not lines:
        return None
    out = results_dir / "summary.md"
    out.write_text(
        "# dpd bench: headline numbers\n\n"
        "Made from the per-task JSON files beside it by "
        "`python -m diffusion_policy_dist.benchmarks.summary`; every number comes from the run "
        "named under its task. Success: mean over training seeds with a 95% t-interval across "
        "seeds (one seed: the Wilson interval of its episodes).\n" + "\n".join(lines)
    )
    return out


def main() -> None:
    default = Path(__file__).parent / "results"
    out = summarize(sys.argv[1] if len(sys.argv) > 1 else default)
    print(out.read_text() if out else "no dpd bench results found")


if __name__ == "__main__":
    main()
