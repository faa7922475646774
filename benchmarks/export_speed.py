"""Exported policies against the torch policy on this CPU: chunk latency at batch 1 (p50/p95)
and throughput at batch 64, onnxruntime (CPU execution provider, 1 and 2 threads) vs eager torch
(1 and 2 threads) vs the torch-compiled network (1 thread, batch 1), for distributional-1,
distributional-2 and DDIM-10 on the small UNet and on a camera policy; and the file sizes.
Measured side by side in one run, calls interleaved in rounds; run it on a quiet machine.

    python benchmarks/export_speed.py [--trials 200]

Writes ``benchmarks/results/export_speed.{json,md}``.
"""

from __future__ import annotations

import argparse
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

CASES = {
    "distributional-1": ("distributional", {"kind": "distributional", "steps": 1}),
    "distributional-2": ("distributional", {"kind": "distributional", "steps": 2}),
    "ddim-10": ("mean", {"kind": "ddim", "steps": 10}),
}
LOWDIM = {"obs": {"state": {"shape": [20], "type": "low_dim"}}, "action": {"shape": [2]}}
IMAGE = {
    "obs": {
        "image": {"shape": [3, 96, 96], "type": "rgb"},
        "agent_pos": {"shape": [2], "type": "low_dim"},
    },
    "action": {"shape": [2]},
}


def make_policy(kind: str, shape_meta):
    from diffusion_policy_dist.policy import DiffusionPolicy, Window

    cfg = {"kind": kind}
    if kind == "mean":
        cfg.update(loss={"kind": "mse"}, sampler={"kind": "ddpm", "steps": 100})
    torch.manual_seed(0)
    pol = DiffusionPolicy(cfg, shape_meta, Window(16, 2, 8))
    rng = np.random.default_rng(0)
    low = {k: rng.normal(size=(100, *m["shape"]))
           for k, m in shape_meta["obs"].items() if m["type"] == "low_dim"}  # fmt: skip
    pol.normalizer.fit({**low, "action": rng.normal(size=(100, 2))})
    return pol.eval()


def observations(shape_meta, B: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, m in shape_meta["obs"].items():
        if m["type"] == "rgb":
            out[key] = torch.randint(0, 256, (B, 2, *m["shape"]), dtype=torch.uint8)
        else:
            out[key] = torch.randn(B, 2, *m["shape"])
    return out


def runners(pol, sampler, path: Path):
    from diffusion_policy_dist.policy.fast import FixedShapeSampler
    from diffusion_policy_dist.runtime import OnnxPolicy

    ort = {n: OnnxPolicy(path, threads=n) for n in (1, 2)}
    compiled: dict = {}

    def torch_call(threads):
        def call(obs):
            torch.set_num_threads(threads)
            with torch.inference_mode():
                pol.predict_action(obs, sampler=sampler)

        return call

    def compiled_call(obs):
        torch.set_num_threads(1)
        B = next(iter(obs.values())).shape[0]
        if B not in compiled:
            compiled[B] = FixedShapeSampler(pol, sampler, B, mode="compile")
        compiled[B](obs)

    return {  # (the compiled network: batch 1 only, where it matters; each case compiles anew)
        "onnxruntime, 1 thread": lambda obs: ort[1].predict_action(obs),
        "onnxruntime, 2 threads": lambda obs: ort[2].predict_action(obs),
        "torch eager, 1 thread": torch_call(1),
        "torch eager, 2 threads": torch_call(2),
        "torch compiled network, 1 thread": compiled_call,
    }


def measure(fns: dict, obs, trials: int, rounds: int = 5) -> dict[str, list[float]]:
    """Every runner ``trials / rounds`` times per round, rounds interleaved."""
    out = {k: [] for k in fns}
    for fn in fns.values():  # warm-up (and compilation)
        for _ in range(3):
            fn(obs)
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(max(1, trials // rounds)):
                t0 = time.perf_counter()
                fn(obs)
                out[name].append(1000 * (time.perf_counter() - t0))
    return out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    a = ap.parse_args(argv)
    from diffusion_policy_dist.export import export_onnx
    from diffusion_policy_dist.files import write_json_atomic
    from diffusion_policy_dist.provenance import header

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy_name, sm in (("low-dim (Push-T keypoints)", LOWDIM), ("camera 96x96", IMAGE)):
            for case, (kind, sampler) in CASES.items():
                if policy_name.startswith("camera") and case == "ddim-10":
                    continue
                pol = make_policy(kind, sm)
                path = Path(tmp) / f"{kind}.onnx"
                export_onnx(pol, path, sampler)
                fns = runners(pol, sampler, path)
                for B in (1, 64):
                    run = {k: f for k, f in fns.items() if B == 1 or "compiled" not in k}
                    ms = measure(run, observations(sm, B), a.trials if B == 1 else a.trials // 10)
                    for name, v in ms.items():
                        rows.append({"policy": policy_name, "sampler": case, "batch": B,
                                     "runner": name, "p50_ms": statistics.median(v),
                                     "p95_ms": float(np.percentile(v, 95)),
                                     "chunks_per_s": 1000 * B / statistics.median(v),
                                     "file_mb": path.stat().st_size / 1e6})  # fmt: skip
                        print(f"[export_speed] {rows[-1]}", file=sys.stderr, flush=True)
    command = shlex.join(["python", "benchmarks/export_speed.py", *(argv or sys.argv[1:])])
    result = {"header": header(command), "rows": rows}
    out = Path(a.out)
    write_json_atomic(out / "export_speed.json", result)
    (out / "export_speed.md").write_text(markdown(result))
    print(markdown(result))
    return result


def markdown(result: dict) -> str:
    h = result["header"]
    lines = [
        "# Exported policies: onnxruntime vs torch on this CPU\n",
        f"Command: `{h['command']}`  ",
        f"Commit `{h['git_commit']}`, {h['date']}, {h['machine']}\n",
        "Small UNet (4.5M parameters), untrained (speed does not depend on the weights); latency "
        "at batch 1, throughput at batch 64; runners interleaved in rounds.\n",
        "| policy | sampler | batch | runner | p50 (ms) | p95 (ms) | chunks/s | file (MB) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['policy']} | {r['sampler']} | {r['batch']} | {r['runner']} | "
            f"{r['p50_ms']:.2f} | {r['p95_ms']:.2f} | {r['chunks_per_s']:.0f} | "
            f"{r['file_mb']:.1f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
