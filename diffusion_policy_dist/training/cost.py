"""What a training step costs, in work rather than seconds: floating-point operations counted by
torch (:class:`torch.utils.flop_counter.FlopCounterMode`: matrix products and convolutions,
forward and backward).

FLOPs do not depend on the machine or its load, so they compare models whose network rows cost
different amounts (a generator whose m samples share one trunk pass, or a mean model) on one
scale; wall-clock is measured and reported beside them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from ..precision import autocast


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
