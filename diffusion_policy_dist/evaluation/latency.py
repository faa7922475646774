"""Per-chunk latency of a policy at batch size 1, as a control loop calls it, against the floor:
one bare network forward. Both go through public policy methods only."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from typing import Any

import torch

from ..stats import percentiles

WARMUP_CALLS = 3  # excluded from the timings (first calls allocate and warm caches)


def time_calls(fn: Callable[[], Any], trials: int, device: torch.device) -> list[float]:
    """Wall-clock of ``trials`` calls of ``fn`` in ms (after warm-up; CUDA synchronized)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    times = []
    for i in range(trials + WARMUP_CALLS):
        sync()
        t0 = time.perf_counter()
        fn()
        sync()
        if i >= WARMUP_CALLS:
            times.append(1000 * (time.perf_counter() - t0))
    return times


def trials_for(steps: int, wanted: int) -> int:
    """Fewer timed calls at high NFE: a 100-step call is already 100 forwards long."""
    return max(10, min(wanted, wanted * 16 // max(steps, 16)))


@torch.no_grad()
def measure_latency(
    policy, obs1: Mapping[str, torch.Tensor], sampler: Any, trials: int, seed: int = 0
) -> dict[str, Any]:
    """Latency of ``predict_action`` on the batch-1 observation ``obs1`` and of one forward."""
    dev = policy.device
    gen = torch.Generator(device=dev).manual_seed(seed)
    info: dict[str, Any] = {}

    def chunk() -> None:
        out = policy.predict_action(obs1, sampler=sampler, generator=gen, return_info=True)
        info.setdefault("prior_ms", []).append(out["prior_ms"])
        info["nfe"] = out["nfe"]

    chunk_ms = time_calls(chunk, trials, dev)
    cond = policy.encode_obs(obs1)
    fwd_ms = time_calls(lambda: policy.one_forward(cond, generator=gen), trials, dev)
    c, f = percentiles(chunk_ms), percentiles(fwd_ms)
    prior = info["prior_ms"][WARMUP_CALLS:]
    return {
        "latency_ms_p50": c["p50"],
        "latency_ms_p95": c["p95"],
        "latency_ms_p99": c["p99"],
        "latency_ms_max": c["max"],
        "latency_ms_mean": c["mean"],
        "forward_ms_p50": f["p50"],
        "forward_ms_p95": f["p95"],
        "latency_over_forward": c["p50"] / f["p50"] if f["p50"] > 0 else float("nan"),
        "prior_ms_p50": percentiles(prior)["p50"] if any(prior) else 0.0,
        "nfe": info["nfe"],
    }


def not_measured(nfe: int) -> dict[str, Any]:
    """The latency keys of a run that skipped timing (e.g. tuning on validation seeds)."""
    nan = float("nan")
    keys = ("latency_ms_p50", "latency_ms_p95", "latency_ms_p99", "latency_ms_max",
            "latency_ms_mean", "forward_ms_p50")  # fmt: skip
    return {
        **dict.fromkeys(keys, nan),
        "forward_ms_p95": nan,
        "latency_over_forward": nan,
        "prior_ms_p50": nan,
        "nfe": nfe,
    }
