"""What a resumed run must share with the checkpoint it continues, and how a new step count
applies. A run resumes only into the same policy, data and optimizer settings; ``steps`` may
grow (the cosine schedule stretches from there) or shrink (the run ends at once)."""

from __future__ import annotations

import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..policy.config import NOISE_OPTIONS, policy_config, to_dict
from .checkpoint import CheckpointError

#: training settings that shaped the optimizer state or the data order (never changed on resume)
SETTINGS = ("lr", "weight_decay", "betas", "lr_schedule", "grad_clip", "ema", "ema_power")


def check_same_run(path: Path, ours: Mapping[str, Any], meta: Mapping[str, Any]) -> None:
    """This run's shape_meta, window and policy must be the checkpoint's."""
    for key in ("shape_meta", "window", "policy"):
        if key in ours and key in meta and not same(key, ours[key], meta[key]):
            raise CheckpointError(
                f"cannot resume from {path}: its {key} differs from this run's.\n"
                f"  checkpoint: {meta[key]}\n  this run:   {ours[key]}\n"
                "Use a new output_dir, or training.resume=never to start over."
            )


def check_same_settings(
    path: Path, saved: Mapping[str, Any] | None, now: Mapping[str, Any]
) -> None:
    """Settings a resumed run cannot honour (they shaped the optimizer state and the data
    order) must not have changed; a setting the checkpoint predates is not compared."""
    if saved is None:  # written before settings were recorded
        return
    always = (*SETTINGS, "batch_size", "warmup_steps", "seed")
    changed = {
        k: (saved.get(k), v)
        for k, v in now.items()
        if (k in saved or k in always) and canon(saved.get(k)) != canon(v)
    }
    if changed:
        lines = "\n".join(
            f"  training.{k}: checkpoint {a!r}, this run {b!r}" for k, (a, b) in changed.items()
        )
        raise CheckpointError(
            f"cannot resume from {path} with changed settings:\n{lines}\n"
            "Put them back, use a new output_dir, or training.resume=never to start over."
        )


def new_total(path: Path, asked: int, total: int, step: int, budgeted: bool) -> int:
    """The step count a resumed run trains to: ``asked`` (``training.steps``) when it differs
    from the checkpoint's ``total`` (never below the current ``step``), unless a wall-clock
    budget sets it."""
    if budgeted or asked == total:
        return total
    new = max(asked, step)
    print(
        f"{path} was trained to {total} steps; training.steps={asked}: "
        f"{'continuing to' if new > step else 'stopping at'} step {new}",
        file=sys.stderr,
    )
    return new


def same(key: str, ours: Any, theirs: Any) -> bool:
    """Whether a checkpoint's ``key`` matches this run's. A policy is compared with the fields
    a later version added filled with their defaults, without its default sampler (an
    inference choice that ``dpd tune`` may have changed) and, for a mean model, without the
    distributional model's noise options (they build nothing; their defaults may change)."""
    if key == "policy":
        ours, theirs = (_shaping(to_dict(policy_config(p))) for p in (ours, theirs))
    return canon(ours) == canon(theirs)


def _shaping(policy: dict[str, Any]) -> dict[str, Any]:
    """The fields of a policy config that shape its weights or its training."""
    unused = {"sampler"} | (set(NOISE_OPTIONS) if policy["kind"] == "mean" else set())
    return {k: v for k, v in policy.items() if k not in unused}


def canon(x: Any) -> str:
    return json.dumps(x, sort_keys=True, default=str)
