"""Numeric precision of a forward pass: ``fp32``, or ``bf16`` (bfloat16 autocast on a CPU or a
GPU; weights and what is computed outside the autocast block stay float32)."""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device | str):
    """The forward pass's context for ``precision`` (``fp32``: none; ``bf16``: bfloat16
    autocast on ``device``'s type, CPU or CUDA)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")
