"""Training cost of the energy loss against MSE at the same number of examples per step: with
the noise at the network's input (m = 4, 8, 16 whole passes per example) and with late noise
injection (one trunk pass and m heads per example, ``policy.noise_injection=late``), in fp32
and under bf16 autocast.

For each UNet size (small, dp) and each configuration, one training step (forward, backward,
AdamW) is timed on a synthetic batch, its FLOPs are counted (matrix products and convolutions,
forward and backward, by torch), and the peak memory of the step is recorded (CUDA allocator
peak on a GPU; on a CPU the growth of the process's peak resident set, measured in a fresh
subprocess per configuration so earlier configurations cannot hide it). Configurations are
interleaved over several rounds, so the reported ratios come from measurements taken side by
side in one run.

    python benchmarks/train_cost.py --networks small --batch-small 256 --threads 1
    python benchmarks/train_cost.py --device cuda --batch-small 256 --batch-dp 256

Writes ``benchmarks/results/train_cost.{json,md}`` with the command that produced them.
"""

from __future__ import annotations

import argparse
import json
import resource
import shlex
import statistics
import subprocess
import sys
import time
from pathlib import Path

LATE = {"kind": "distributional", "noise_injection": "late"}
INPUT = {"kind": "distributional", "noise_injection": "concat"}
LOSSES = {
    "mse": {"kind": "mean", "loss": {"kind": "mse"}},
    "mse bf16": {"kind": "mean", "loss": {"kind": "mse"}, "precision": "bf16"},
    "energy_m4 input": {**INPUT, "loss": {"kind": "energy", "m": 4}},
    "energy_m8 input": {**INPUT, "loss": {"kind": "energy", "m": 8}},
    "energy_m16 input": {**INPUT, "loss": {"kind": "energy", "m": 16}},
    "energy_m4 late": {**LATE, "loss": {"kind": "energy", "m": 4}},
    "energy_m8 late": {**LATE, "loss": {"kind": "energy", "m": 8}},
    "energy_m16 late": {**LATE, "loss": {"kind": "energy", "m": 16}},
    "energy_m8 late bf16": {**LATE, "loss": {"kind": "energy", "m": 8}, "precision": "bf16"},
}
NETWORKS = {
    "small": {"down_dims": [64, 128, 256], "time_embed_dim": 128},
    "dp": {"down_dims": [256, 512, 1024], "time_embed_dim": 256},
}
H, DA, OBS_DIM, TO = 16, 2, 10, 2


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: kB


def _setup(spec: dict, dev):
    """The policy of one configuration and a synthetic batch of ``spec["batch"]`` examples."""
    import numpy as np
    import torch

    from diffusion_policy_dist.policy import DiffusionPolicy, Window

    cfg = dict(LOSSES[spec["loss"]])
    cfg.pop("precision", None)
    cfg["network"] = NETWORKS[spec["network"]]
    sm = {"obs": {"state": {"shape": [OBS_DIM], "type": "low_dim"}}, "action": {"shape": [DA]}}
    pol = DiffusionPolicy(cfg, sm, Window(H, TO, 8))
    rng = np.random.default_rng(0)
    pol.normalizer.fit(
        {"state": rng.normal(size=(100, OBS_DIM)), "action": rng.normal(size=(100, DA))}
    )
    B = spec["batch"]
    batch = {
        "obs": {"state": torch.randn(B, TO, OBS_DIM, device=dev)},
        "action": torch.randn(B, H, DA, device=dev),
        "action_is_pad": torch.zeros(B, H, dtype=torch.bool, device=dev),
    }
    return pol.to(dev).train(), batch


def worker(spec: dict) -> dict:
    """Time ``steps`` training steps of one configuration in this (fresh) process."""
    import torch

    from diffusion_policy_dist.precision import autocast
    from diffusion_policy_dist.training.cost import train_step_flops

    torch.manual_seed(0)
    if spec["threads"]:
        torch.set_num_threads(spec["threads"])
    dev = torch.device(spec["device"])
    precision = LOSSES[spec["loss"]].get("precision", "fp32")
    pol, batch = _setup(spec, dev)
    opt = torch.optim.AdamW(pol.parameters(), lr=1e-4)
    flops = train_step_flops(pol, batch, precision)

    def step():
        with autocast(precision, dev):
            loss, _ = pol(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    step()  # warm-up (allocations, kernels)
    sync()
    base_mb = _rss_mb()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
        base_cuda = torch.cuda.memory_allocated() / 2**20
    times = []
    for _ in range(spec["steps"]):
        sync()
        t0 = time.perf_counter()
        step()
        sync()
        times.append(1000 * (time.perf_counter() - t0))
    out = {
        "step_ms": times,
        "peak_rss_mb": _rss_mb(),
        "base_rss_mb": base_mb,
        "params": sum(p.numel() for p in pol.net.parameters()),
        "flops": flops,
    }
    if dev.type == "cuda":
        out["peak_cuda_mb"] = torch.cuda.max_memory_allocated() / 2**20
        out["step_cuda_mb"] = out["peak_cuda_mb"] - base_cuda
    return out


def _measure(args) -> dict[tuple[str, str], list[dict]]:
    """Every configuration once per round, each in a fresh subprocess (interleaved, so drifts
    of the machine's speed hit all of them alike)."""
    nets = args.networks.split(",")
    runs: dict[tuple[str, str], list[dict]] = {(n, loss): [] for n in nets for loss in LOSSES}
    total, k, t_start = args.rounds * len(runs), 0, time.time()
    for r in range(args.rounds):
        for net, loss in runs:
            spec = {
                "network": net,
                "loss": loss,
                "device": args.device,
                "steps": args.steps,
                "batch": args.batch_small if net == "small" else args.batch_dp,
                "threads": args.threads,
            }
            k += 1
            eta = (time.time() - t_start) / (k - 1) * (total - k + 1) if k > 1 else float("nan")
            print(f"[{k}/{total}] round {r + 1} {net} {loss} (eta {eta:.0f}s)", file=sys.stderr)
            res = subprocess.run(
                [sys.executable, __file__, "--worker", json.dumps(spec)],
                capture_output=True,
                text=True,
                check=True,
            )
            runs[(net, loss)].append(json.loads(res.stdout.strip().splitlines()[-1]))
    return runs


def _rows(runs: dict, args) -> list[dict]:
    rows = []
    for (net, loss), rs in runs.items():
        if args.device.startswith("cuda"):
            mem = statistics.median(x["step_cuda_mb"] for x in rs)
        else:
            mem = statistics.median(x["peak_rss_mb"] - x["base_rss_mb"] for x in rs)
        rows.append(
            {
                "network": net,
                "loss": loss,
                "batch": args.batch_small if net == "small" else args.batch_dp,
                "params": rs[0]["params"],
                "gflop": rs[0]["flops"] / 1e9,
                "step_ms_median": statistics.median(t for x in rs for t in x["step_ms"]),
                "step_mem_mb": mem,
                "peak_mem_mb": statistics.median(
                    x.get("peak_cuda_mb", x["peak_rss_mb"]) for x in rs
                ),
            }
        )
    for row in rows:
        ref = next(x for x in rows if x["network"] == row["network"] and x["loss"] == "mse")
        row["time_ratio_vs_mse"] = row["step_ms_median"] / ref["step_ms_median"]
        row["flop_ratio_vs_mse"] = row["gflop"] / ref["gflop"]
        row["peak_mem_ratio_vs_mse"] = row["peak_mem_mb"] / ref["peak_mem_mb"]
    return rows


def _markdown(rows: list[dict], header: dict) -> list[str]:
    md = [
        "# Training cost: energy loss vs MSE\n",
        f"Command: `{header['command']}`  ",
        f"Date: {header['date']}, device: {header['device']}, machine: {header['machine']}, "
        f"commit `{header['git_commit']}`\n",
        "| network | params | examples | loss | GFLOP | FLOP / MSE | step (ms, median) "
        "| time / MSE | peak mem (MB) | peak mem / MSE |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        md.append(
            f"| {r['network']} | {r['params'] / 1e6:.1f}M | {r['batch']} | {r['loss']} | "
            f"{r['gflop']:.1f} | {r['flop_ratio_vs_mse']:.2f}x | {r['step_ms_median']:.0f} | "
            f"{r['time_ratio_vs_mse']:.2f}x | {r['peak_mem_mb']:.0f} | "
            f"{r['peak_mem_ratio_vs_mse']:.2f}x |"
        )
    md.append(
        f"\n{header['memory_note']}. With the noise at the input the energy loss runs the whole "
        "UNet on batch x m rows (the observation encoder once per example), so its cost grows "
        "linearly in m; with late injection only the last decoder level and the head run m "
        "times. bf16: the forward pass under bfloat16 autocast (FLOPs are counted alike)."
    )
    return md


def main(argv: list[str]) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--batch-small", type=int, default=64)
    ap.add_argument("--batch-dp", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3, help="timed steps per configuration per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch default)")
    ap.add_argument("--networks", default="small,dp")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.worker:
        print(json.dumps(worker(json.loads(args.worker))))
        return
    from diffusion_policy_dist.files import write_json_atomic
    from diffusion_policy_dist.provenance import header as provenance

    rows = _rows(_measure(args), args)
    header = {
        **provenance(shlex.join(["python", "benchmarks/train_cost.py", *argv]), args.device),
        "rounds": args.rounds,
        "steps_per_round": args.steps,
        "memory_note": (
            "CUDA: allocator peak during the timed steps minus memory held before them"
            if args.device.startswith("cuda")
            else "CPU: growth of the process's peak RSS during the timed steps; peak_mem is the "
            "whole process's peak RSS"
        ),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    write_json_atomic(out / "train_cost.json", {"header": header, "rows": rows})
    md = _markdown(rows, header)
    (out / "train_cost.md").write_text("\n".join(md) + "\n")
    print("\n".join(md))


if __name__ == "__main__":
    main(sys.argv[1:])
