"""Torch threads on a shared CPU: training throughput with 1 thread vs torch's default, alone
and with a second job on the same cores (what ``threads=1``, ``eval.rollout_threads`` and
``eval.torch_threads`` are for).

    python benchmarks/threads.py [--steps 20]

Each configuration runs the small UNet's training step (batch 256 rows, synthetic data) in
fresh subprocesses; "shared" runs two such jobs at once and reports the first one's rate. The
machine's load average is recorded: these are wall-clock rates, so compare them only within one
run. Writes ``benchmarks/results/threads.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

WORKER = r"""
import sys, time, torch
threads = int(sys.argv[1]); steps = int(sys.argv[2])
if threads: torch.set_num_threads(threads)
from diffusion_policy_dist.policy import DiffusionPolicy, Window
sm = {"obs": {"state": {"shape": [10], "type": "low_dim"}}, "action": {"shape": [2]}}
net = {"down_dims": [64, 128, 256], "time_embed_dim": 128}
pol = DiffusionPolicy({"kind": "mean", "loss": {"kind": "mse"}, "sampler": {"kind": "ddim"},
                       "network": net}, sm, Window(16, 2, 8))
pol.normalizer.fit({"state": torch.randn(100, 10), "action": torch.rand(100, 2)})
opt = torch.optim.AdamW(pol.parameters(), 1e-4)
batch = {"obs": {"state": torch.randn(256, 2, 10)}, "action": torch.rand(256, 16, 2)}
for i in range(steps + 3):
    if i == 3: t0 = time.perf_counter()
    loss, _ = pol.compute_loss(batch); opt.zero_grad(); loss.backward(); opt.step()
print(steps / (time.perf_counter() - t0), torch.get_num_threads())
"""


def _run(threads: int, steps: int, jobs: int) -> tuple[float, int]:
    cmd = [sys.executable, "-c", WORKER, str(threads), str(steps)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(jobs)]
    outs = [p.communicate()[0].split() for p in procs]
    return float(outs[0][0]), int(outs[0][1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "threads"))
    args = ap.parse_args()
    from diffusion_policy_dist.provenance import header

    rows = []
    for jobs in (1, 2):
        for threads in (0, 1):  # 0: torch's default (one per core)
            rate, used = _run(threads, args.steps, jobs)
            rows.append({"jobs": jobs, "threads": used, "default": threads == 0,
                         "steps_per_s": rate})  # fmt: skip
            print(rows[-1], file=sys.stderr)
    cmd = "python " + " ".join(shlex.quote(a) for a in sys.argv)
    head = {
        **header(cmd, "cpu"),
        "load_average_after": list(os.getloadavg()),
        "cpus": os.cpu_count(),
    }
    out = Path(args.out)
    out.with_suffix(".json").write_text(json.dumps({"header": head, "rows": rows}, indent=1))
    md = ["# Torch threads on a shared CPU\n", f"Command: `{cmd}`  ",
          f"Commit `{head['git_commit']}`, {head['date']}, {head['machine']}, "
          f"load average after {head['load_average_after']}\n",
          "| jobs at once | torch threads per job | train steps/s (small UNet, 256 rows) |",
          "|---|---|---|"]  # fmt: skip
    md += [f"| {r['jobs']} | {r['threads']}{' (default)' if r['default'] else ''} | "
           f"{r['steps_per_s']:.2f} |" for r in rows]  # fmt: skip
    out.with_suffix(".md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main()
