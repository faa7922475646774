"""Small statistics used by evaluation and benchmarks."""

from __future__ import annotations

import math
from collections.abc import Sequence

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
    """Fraction of episodes per mode name among episodes whose mode was determined, plus the
    count of undetermined ones under ``"undetermined"`` (as a fraction of all episodes)."""
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


def percentiles(values_ms: Sequence[float]) -> dict[str, float]:
    v = np.asarray(values_ms, dtype=np.float64)
    if v.size == 0:
        return {"p50": float("nan"), "p95": float("nan"), "mean": float("nan")}
    return {
        "p50": float(np.percentile(v, 50)),
        "p95": float(np.percentile(v, 95)),
        "mean": float(v.mean()),
    }
