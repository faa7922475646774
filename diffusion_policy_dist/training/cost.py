"""What a training step costs, in work rather than seconds: floating-point operations counted by
torch (:class:`torch.utils.flop_counter.FlopCounterMode`: matrix products and convolutions,
forward and backward), and the autocast context of a run's precision.

FLOPs do not depend on the machine or its load, so they compare models whose network rows cost
different amounts (a generator whose m samples share one trunk pass, or a mean model) on one
scale; wall-clock is measured and reported beside them.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn


def autocast(precision: str, device: torch.device | str):
    """The forward pass's context for ``precision`` (``fp32``: none; ``bf16``: bfloat16
    autocast on ``device``'s type, CPU or CUDA)."""
    if precision == "fp32":
        return contextlib.nullcontext()
    if precision == "bf16":
        return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)
    raise ValueError(f"unknown precision {precision!r}; choose fp32 or bf16")


def train_step_flops(policy: nn.Module, batch: Mapping[str, Any], precision: str = "fp32") -> int:
    """FLOPs of one training step's forward and backward pass of ``policy`` on ``batch``
    (the optimizer's update is not counted). Runs the step for real, without touching the
    random streams (forked) or leaving gradients behind."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(policy.parameters()).device
    devices = [device] if device.type == "cuda" else []
    counter = FlopCounterMode(display=False)
    with torch.random.fork_rng(devices=devices), counter:
        with autocast(precision, device):
            loss, _ = policy(batch)
        loss.backward()
    for p in policy.parameters():
        p.grad = None
    return int(counter.get_total_flops())
