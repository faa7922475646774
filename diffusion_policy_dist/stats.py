"""Small statistics shared by data, evaluation and benchmarks (numpy only, no torch): binomial
confidence intervals, behaviour-mode frequencies and latency percentiles."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np


def wilson_interval(successes: int, n: int, z: float = 1.959964) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion (well-behaved at 0 and n)."""
    if n <= 0:
        return (0.0, 1.0)
    p = successes / n
    denom = 1 + z * z / n
    center = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if successes <= 0 else max(0.0, center - half)
    hi = 1.0 if successes >= n else min(1.0, center + half)  # exact ends, not 1 - 1e-16
    return (lo, hi)


def mode_frequencies(modes: Sequence[int], mode_names: Sequence[str] | None) -> dict | None:
    """Fraction of episodes per behaviour mode among episodes whose mode was determined (a mode
    index ``0 <= m < len(mode_names)``), plus the fraction of all episodes whose mode was not
    determined under ``"undetermined"``. None without mode names."""
    if not mode_names:
        return None
    modes = list(modes)
    n = len(modes)
    known = [m for m in modes if 0 <= m < len(mode_names)]
    out = {
        name: (sum(m == i for m in known) / len(known) if known else 0.0)
        for i, name in enumerate(mode_names)
    }
    out["undetermined"] = (n - len(known)) / n if n else 0.0
    return out


def percentiles(values: Sequence[float]) -> dict[str, float]:
    """``{"p50", "p95", "p99", "mean", "max"}`` of ``values`` (NaN for none)."""
    v = np.asarray(values, dtype=np.float64)
    if v.size == 0:
        return dict.fromkeys(("p50", "p95", "p99", "mean", "max"), float("nan"))
    return {
        "p50": float(np.percentile(v, 50)),
        "p95": float(np.percentile(v, 95)),
        "p99": float(np.percentile(v, 99)),
        "mean": float(v.mean()),
        "max": float(v.max()),
    }


def format_modes(freq: Mapping[str, float] | None) -> str:
    """``"left 45%, right 55%"`` (the undetermined share is left out), or ``"-"``."""
    parts = [f"{k} {v:.0%}" for k, v in (freq or {}).items() if k != "undetermined"]
    return ", ".join(parts) or "-"
