"""Where a control loop's late chunks come from, on this machine: the tail (p99, max) of
chunk latency at batch 1 in a loop that steps a real env between requests, as a robot's loop
does, with each remedy added in turn.

    python benchmarks/control_tail.py --checkpoint <dir> [--calls 2000] [--hz 50]

Rows: ``plain`` (what a loop written naively gets: the first call of the run included, the
garbage collector on), ``+ warm-up`` (3 chunks before the loop), ``+ quiet gc`` (collection
only between episodes, :mod:`diffusion_policy_dist.control.steady`), ``+ inference_mode``,
``+ pinned`` (the loop on one core, inference in a thread pinned to the other, as
:class:`~diffusion_policy_dist.control.Controller` runs it with ``inference_cpu``). Each row
counts the chunks slower than one control period. Run it on a quiet machine. Writes
``benchmarks/results/control_tail.{json,md}``.
"""

from __future__ import annotations

import argparse
import concurrent.futures as cf
import contextlib
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

VARIANTS = ("plain", "+ warm-up", "+ quiet gc", "+ inference_mode", "+ pinned")


def loop(policy, env, calls: int, variant: int, pool) -> list[float]:
    """Chunk latencies (ms) of ``calls`` requests, each after n_action_steps env steps."""
    from diffusion_policy_dist.control import steady
    from diffusion_policy_dist.queues import camera_chw, select_obs

    gen = torch.Generator().manual_seed(0)
    n = policy.window.n_action_steps

    def request(obs):
        ctx = torch.inference_mode() if variant >= 3 else contextlib.nullcontext()
        with ctx:
            return policy.predict_action(obs, generator=gen)["action"][0].numpy()

    def batch(o):
        o = camera_chw(select_obs({k: np.asarray(v)[None, None] for k, v in o.items()},
                                  policy.shape_meta), policy.shape_meta)  # fmt: skip
        return {
            k: torch.as_tensor(np.repeat(v, policy.window.n_obs_steps, 1)) for k, v in o.items()
        }

    obs, _ = env.reset(seed=0)
    if variant >= 1:
        for _ in range(3):
            request(batch(obs))
    quiet = steady.quiet_gc() if variant >= 2 else contextlib.nullcontext()
    out = []
    with quiet:
        while len(out) < calls:
            t0 = time.perf_counter()
            b = batch(obs)
            acts = pool.submit(request, b).result() if variant >= 4 else request(b)
            out.append(1000 * (time.perf_counter() - t0))
            for a in acts[:n]:
                obs, _, term, trunc, _ = env.step(a)
                if term or trunc:
                    obs, _ = env.reset()
                    if variant >= 2:
                        steady.collect()
                    break
    return out


def worker(checkpoint: str, calls: int, variant: int) -> list[float]:
    """One row, in a fresh process (so no row inherits another's warmed-up state)."""
    from diffusion_policy_dist.envs.spec import make_env

    from diffusion_policy_dist import load_policy
    from diffusion_policy_dist.control import steady

    torch.set_num_threads(1)
    cpus = sorted(os.sched_getaffinity(0))
    policy = load_policy(checkpoint)
    env = make_env(policy.checkpoint_meta["env"])
    pinned = variant >= 4 and len(cpus) > 1
    pin = cpus[-1] if pinned else None
    with cf.ThreadPoolExecutor(1, initializer=steady.pin_this_thread, initargs=(pin,)) as ex:
        ex.submit(int).result()  # the thread exists (and is pinned) before the loop is
        if pinned:
            os.sched_setaffinity(0, {cpus[0]})  # the loop on one core, inference on another
        return loop(policy, env, calls, variant, ex)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--calls", type=int, default=2000)
    ap.add_argument("--hz", type=float, default=50.0)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--worker", type=int, default=None, help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.worker is not None:
        print(json.dumps(worker(a.checkpoint, a.calls, a.worker)))
        return {}
    from diffusion_policy_dist.files import write_json_atomic
    from diffusion_policy_dist.provenance import header
    from diffusion_policy_dist.stats import percentiles

    rows, period = [], 1000.0 / a.hz
    for v, name in enumerate(VARIANTS):
        cmd = [sys.executable, __file__, "--checkpoint", a.checkpoint, "--calls", str(a.calls),
               "--worker", str(v)]  # fmt: skip
        res = subprocess.run(cmd, capture_output=True, text=True, check=True)
        ms = json.loads(res.stdout.strip().splitlines()[-1])
        rows.append({"variant": name, **percentiles(ms), "late": int(sum(x > period for x in ms)),
                     "calls": len(ms), "first_ms": ms[0]})  # fmt: skip
        print(f"[control_tail] {rows[-1]}", file=sys.stderr, flush=True)
    command = shlex.join(["python", "benchmarks/control_tail.py", *(argv or sys.argv[1:])])
    result = {"header": {**header(command), "control_hz": a.hz, "load": os.getloadavg()},
              "rows": rows}  # fmt: skip
    out = Path(a.out)
    write_json_atomic(out / "control_tail.json", result)
    h = result["header"]
    md = [
        "# Where a control loop's late chunks come from\n",
        f"Command: `{h['command']}`  ",
        f"Commit `{h['git_commit']}`, {h['date']}, {h['machine']}, load average {h['load']}\n",
        f"Chunk latency at batch 1 over {a.calls} requests, each after one chunk's env steps; "
        f"late = slower than one period at {a.hz:g} Hz ({period:.0f} ms). Remedies add up "
        "from top to bottom.\n",
        "| loop | p50 (ms) | p95 | p99 | max | first call | late |",
        "|---|---|---|---|---|---|---|",
        *[
            f"| {r['variant']} | {r['p50']:.2f} | {r['p95']:.2f} | {r['p99']:.2f} | "
            f"{r['max']:.2f} | {r['first_ms']:.1f} | {r['late']} |"
            for r in rows
        ],
        "",
    ]
    (out / "control_tail.md").write_text("\n".join(md))
    print("\n".join(md))
    return result


if __name__ == "__main__":
    main()
