"""What a GPU does for this package, in one script that one H100 finishes in under 8 minutes.

    python benchmarks/gpu.py                       # on the GPU machine
    python benchmarks/gpu.py --device cpu --quick  # the same code at a tiny size (a check)

1. Chunk latency at batch 1 (p50/p95/p99 over ``--trials``) and throughput at batch 64 and 256
   (chunks/s) for distributional-1, distributional-2, DDIM-10 and DDPM-100 on the small UNet,
   eager vs the captured chunk (CUDA graph), fp32 vs bf16, and the compiled network at batch 1
   (:class:`~diffusion_policy_dist.policy.fast.FixedShapeSampler`).
2. Training steps/s at 256 examples per step for DDPM, distributional with late noise injection
   (m = 8) and with the noise at the input (m = 8, 32 examples: 256 network rows), fp32 vs bf16.
3. With more than one GPU: the same training across all of them (torchrun, DDP), steps/s and
   the scaling against one GPU.

The networks are untrained (speed does not depend on the weights); observations have Push-T's
keypoint size (20 numbers, 2 steps of history); chunks are 16 x 2. Writes
``benchmarks/results/gpu.{json,md}`` with the command and the card that produced them.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

SAMPLERS = {
    "distributional-1": ("distributional", {"kind": "distributional", "steps": 1}),
    "distributional-2": ("distributional", {"kind": "distributional", "steps": 2}),
    "ddim-10": ("mean", {"kind": "ddim", "steps": 10}),
    "ddpm-100": ("mean", {"kind": "ddpm", "steps": 100}),
}
TRAIN = {
    "ddpm": {"kind": "mean", "loss": {"kind": "mse"}},
    "distributional late m8": {"kind": "distributional", "noise_injection": "late",
                               "loss": {"kind": "energy", "m": 8}},
    "distributional input m8 (32 ex)": {"kind": "distributional",
                                        "loss": {"kind": "energy", "m": 8}},
}  # fmt: skip
SHAPE_META = {"obs": {"state": {"shape": [20], "type": "low_dim"}}, "action": {"shape": [2]}}


def make_policy(kind: str, device, network: dict, extra: dict | None = None):
    from diffusion_policy_dist.policy import DiffusionPolicy, Window

    cfg = {"kind": kind, "network": network, **(extra or {})}
    if kind == "mean":
        cfg.setdefault("loss", {"kind": "mse"})
        cfg.setdefault("sampler", {"kind": "ddpm", "steps": 100})
    torch.manual_seed(0)
    pol = DiffusionPolicy(cfg, SHAPE_META, Window(16, 2, 8))
    rng = np.random.default_rng(0)
    pol.normalizer.fit({"state": rng.normal(size=(100, 20)), "action": rng.normal(size=(100, 2))})
    return pol.to(device)


def _sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(fn, device, trials: int) -> list[float]:
    """Milliseconds of ``trials`` calls after 5 warm-up calls."""
    for _ in range(5):
        fn()
    _sync(device)
    out = []
    for _ in range(trials):
        t0 = time.perf_counter()
        fn()
        _sync(device)
        out.append(1000 * (time.perf_counter() - t0))
    return out


def latency_rows(args, device, network) -> list[dict]:
    from diffusion_policy_dist.policy.fast import FixedShapeSampler

    rows, pols = [], {k: make_policy(k, device, network) for k in ("distributional", "mean")}
    for name, (kind, sampler) in SAMPLERS.items():
        for batch in args.batches:
            obs = {"state": torch.randn(batch, 2, 20, device=device)}
            for mode in args.modes:
                # compiling takes ~30 s per case: the batch-1 latency of the fast samplers only
                if mode == "compile" and (batch > 1 or name == "ddpm-100"):
                    continue
                for precision in ("fp32", "bf16"):
                    fast = FixedShapeSampler(pols[kind], sampler, batch, mode, precision)
                    trials = args.trials if batch == 1 else max(5, args.trials // 10)
                    ms = time_calls(lambda fast=fast, obs=obs: fast(obs), device, trials)
                    p50 = statistics.median(ms)
                    rows.append({
                        "sampler": name, "batch": batch, "mode": fast.mode, "precision": precision,
                        "p50_ms": p50, "p95_ms": float(np.percentile(ms, 95)),
                        "p99_ms": float(np.percentile(ms, 99)), "max_ms": max(ms),
                        "chunks_per_s": 1000 * batch / p50,
                    })  # fmt: skip
                    print(f"[gpu] {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def train_rows(args, device, network) -> list[dict]:
    from diffusion_policy_dist.precision import autocast

    rows = []
    for name, cfg in TRAIN.items():
        B = 32 if "32 ex" in name else 256
        for precision in ("fp32", "bf16"):
            pol = make_policy(cfg["kind"], device, network, cfg).train()
            opt = torch.optim.AdamW(pol.parameters(), lr=1e-4)
            batch = {"obs": {"state": torch.randn(B, 2, 20, device=device)},
                     "action": torch.randn(B, 16, 2, device=device)}  # fmt: skip

            def step(pol=pol, opt=opt, batch=batch, precision=precision):
                with autocast(precision, device):
                    loss, _ = pol(batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

            ms = time_calls(step, device, args.train_steps)
            rows.append({"model": name, "examples": B, "precision": precision,
                         "step_ms": statistics.median(ms),
                         "steps_per_s": 1000 / statistics.median(ms)})  # fmt: skip
            print(f"[gpu] {rows[-1]}", file=sys.stderr, flush=True)
    return rows


def ddp_rows(args) -> list[dict]:
    """The same short training on every GPU at once (torchrun), if there is more than one."""
    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if n < 2:
        return []
    rows = []
    for procs in (1, n):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={procs}", __file__, "--ddp-worker"]  # fmt: skip
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        rows.append({"gpus": procs, **json.loads(out.strip().splitlines()[-1])})
    rows[-1]["speedup"] = rows[-1]["steps_per_s"] / rows[0]["steps_per_s"]
    return rows


def ddp_worker() -> None:
    """One rank of the DDP measurement: 256 examples per step split over the ranks."""
    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel

    dist.init_process_group("nccl")
    rank, world = dist.get_rank(), dist.get_world_size()
    device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
    torch.cuda.set_device(device)
    pol = make_policy("distributional", device, {"down_dims": [64, 128, 256]}, TRAIN[
        "distributional late m8"]).train()  # fmt: skip
    model = DistributedDataParallel(pol, device_ids=[device])
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-4)
    B = 256 // world
    batch = {"obs": {"state": torch.randn(B, 2, 20, device=device)},
             "action": torch.randn(B, 16, 2, device=device)}  # fmt: skip

    def step():
        loss, _ = model(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    ms = statistics.median(time_calls(step, device, 50))
    if rank == 0:
        print(json.dumps({"step_ms": ms, "steps_per_s": 1000 / ms, "examples_per_step": 256}))
    dist.destroy_process_group()


def markdown(result: dict) -> str:
    h = result["header"]
    lines = [
        "# GPU: chunk latency, throughput and training speed\n",
        f"Command: `{h['command']}`  ",
        f"Commit `{h['git_commit']}`, {h['date']}, {h['machine']}, device {h['device']}\n",
        "| sampler | batch | path | precision | p50 (ms) | p95 | p99 | max | chunks/s |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["latency"]:
        lines.append(
            f"| {r['sampler']} | {r['batch']} | {r['mode']} | {r['precision']} | "
            f"{r['p50_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | {r['max_ms']:.3f} | "
            f"{r['chunks_per_s']:.0f} |"
        )
    lines += [
        "",
        "| training | examples/step | precision | ms/step | steps/s |",
        "|---|---|---|---|---|",
    ]
    for r in result["train"]:
        lines.append(f"| {r['model']} | {r['examples']} | {r['precision']} | "
                     f"{r['step_ms']:.1f} | {r['steps_per_s']:.1f} |")  # fmt: skip
    if result["ddp"]:
        lines += ["", "| GPUs (DDP, 256 examples/step) | steps/s | speed-up |", "|---|---|---|"]
        for r in result["ddp"]:
            lines.append(f"| {r['gpus']} | {r['steps_per_s']:.1f} | {r.get('speedup', 1.0):.2f} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--quick", action="store_true", help="tiny network and few trials (a check)")
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--train-steps", type=int, default=30)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--ddp-worker", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.ddp_worker:
        return ddp_worker() or {}
    from diffusion_policy_dist.files import write_json_atomic
    from diffusion_policy_dist.provenance import header

    device = torch.device(a.device)
    network = {"down_dims": [64, 128, 256]}
    a.batches, a.modes = [1, 64, 256], ["eager", "graph", "compile"]
    if a.quick:
        network = {"down_dims": [16, 32], "kernel_size": 3, "time_embed_dim": 16}
        a.batches, a.modes, a.trials, a.train_steps = [1, 4], ["eager", "graph"], 5, 2
    command = shlex.join(["python", "benchmarks/gpu.py", *(argv or sys.argv[1:])])
    result = {"header": header(command, device), "latency": latency_rows(a, device, network)}
    result["train"] = train_rows(a, device, network)
    result["ddp"] = [] if a.quick else ddp_rows(a)
    out = Path(a.out)
    stem = "gpu" if device.type == "cuda" else "gpu_code_check_cpu"
    write_json_atomic(out / f"{stem}.json", result)
    (out / f"{stem}.md").write_text(markdown(result))
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
