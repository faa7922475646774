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
    ("conjugate", 1, "conjugate-1"),
    ("distributional (churn 0)", 1, "**distributional-1**"),
    ("distributional (churn 0)", 2, "distributional-2"),
)


def summarize(results_dir: str | Path) -> Path | None:
    results_dir = Path(results_dir)
    lines = []
    for path in sorted(results_dir.glob("*.json")):
        data = json.loads(path.read_text())
        if not isinstance(data, dict) or "rows" not in data or "targets" not in data:
            continue  # not a dpd bench task file (train_cost, env_speed, loader ...)
        head, rows = data["header"], data["rows"]
        ref = next((r for r in rows if r["method"] == "ddpm"), None)
        demo = head.get("demo_mode_freq") or {}
        lines.append(
            f"\n### {path.stem}\n\n"
            f"`{head['command']}` (commit `{head['git_commit']}`, {head['date']}, "
            f"{head['machine']}; demonstrations' modes: "
            + ", ".join(f"{k} {v:.0%}" for k, v in demo.items())
            + ")\n"
        )
        lines.append("| sampler | success (95% CI) | modes | latency p50 | speed-up vs DDPM-100 |")
        lines.append("|---|---|---|---|---|")
        for method, nfe, label in KEY_ROWS:
            r = next((x for x in rows if x["method"] == method and x["nfe"] == nfe), None)
            if r is None:
                continue
            lo, hi = r["success_ci95"]
            modes = ", ".join(
                f"{k} {v:.0%}" for k, v in (r.get("mode_freq") or {}).items() if k != "undetermined"
            )
            speed = (
                f"{ref['latency_ms_p50'] / r['latency_ms_p50']:.0f}x"
                if ref and r["latency_ms_p50"]
                else "-"
            )
            lines.append(
                f"| {label} | {r['success_rate']:.0%} ({lo:.0%}-{hi:.0%}) | {modes or '-'} | "
                f"{r['latency_ms_p50']:.1f} ms | {speed} |"
            )
        met = [t for t in data["targets"] if t["met"]]
        lines.append(
            f"\nTargets met: {len(met)} of {len(data['targets'])} "
            f"(see [{path.stem}.md]({path.stem}.md)).\n"
        )
    if not lines:
        return None
    out = results_dir / "summary.md"
    out.write_text(
        "# dpd bench: headline numbers\n\n"
        "Made from the per-task JSON files beside it by "
        "`python -m diffusion_policy_dist.benchmarks.summary`; every number comes from the run "
        "named under its task.\n" + "\n".join(lines)
    )
    return out


def main() -> None:
    default = Path(__file__).parent / "results"
    out = summarize(sys.argv[1] if len(sys.argv) > 1 else default)
    print(out.read_text() if out else "no dpd bench results found")


if __name__ == "__main__":
    main()
