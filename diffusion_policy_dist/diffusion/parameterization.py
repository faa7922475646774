"""Conversions between what a mean network predicts (eps, x0 or v) and the x0 estimate.

With ``x_t = a x0 + s eps`` and ``v = a eps - s x0``:
``x0 = (x_t - s eps) / a`` and ``x0 = (a x_t - s v) / (a^2 + s^2)`` (the latter holds for any
schedule, VP or not). ``a`` and ``s`` broadcast against the data (shape ``[B, 1, ...]``).
"""

from __future__ import annotations

from torch import Tensor

PREDICTIONS = ("epsilon", "sample", "v")
_EPS = 1e-6


def prediction_target(kind: str, x0: Tensor, eps: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """Regression target of a mean model that predicts ``kind``."""
    if kind == "epsilon":
        return eps
    if kind == "sample":
        return x0
    if kind == "v":
        return a * eps - s * x0
    raise ValueError(f"unknown prediction type {kind!r}; choose one of {PREDICTIONS}")


def to_x0(kind: str, pred: Tensor, x_t: Tensor, a: Tensor, s: Tensor) -> Tensor:
    """x0 estimate from a network output of the given prediction type."""
    if kind == "epsilon":
        return (x_t - s * pred) / a.clamp_min(_EPS)
    if kind == "sample":
        return pred
    if kind == "v":
        return (a * x_t - s * pred) / (a * a + s * s)
    raise ValueError(f"unknown prediction type {kind!r}; choose one of {PREDICTIONS}")


def expand_like(v: Tensor, x: Tensor) -> Tensor:
    """Reshape a per-example tensor ``[B]`` to ``[B, 1, ..., 1]`` so it broadcasts against x."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1))).to(x.dtype)
