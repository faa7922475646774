"""Chunk transitions under an inference delay: when to ask for the next chunk and what to
execute when it arrives. Pure functions on arrays, shared by the threaded :class:`Controller`
and the latency-aware evaluation, so both execute exactly the same actions.

Time is counted in control steps. A chunk requested at step T returns ``plan [A, Da]``: its
actions for steps T, T+1, ... (the policy's ``action_pred`` from the current step on). It
arrives ``elapsed`` steps later; meanwhile the previous chunk kept running.

- ``sync``: ask when the queue is empty and wait (the world pauses): today's behaviour, the
  reference;
- ``naive``: ask ``delay`` steps before the queue runs out; on arrival drop the actions that are
  already in the past and switch;
- ``blend``: ask ``blend_steps`` earlier still and cross-fade the overlapping actions, from the
  old chunk's to the new one's, linearly over the overlap;
- ``prefix``: like ``naive``, but the actions still queued at the request are committed and the
  new chunk is planned to continue them (inpainting, and conditioning for models trained with
  ``policy.prefix_steps``).
"""

from __future__ import annotations

import math
import re

import numpy as np

TRANSITIONS = ("sync", "naive", "blend", "prefix")


def check_transition(name: str) -> str:
    if name not in TRANSITIONS:
        raise ValueError(f"transition must be one of {list(TRANSITIONS)}, got {name!r}")
    return name


def delay_steps(latency_ms: float, control_hz: float) -> int:
    """Control steps that pass while a chunk is computed: ceil(latency x rate)."""
    return math.ceil(latency_ms * control_hz / 1000.0 - 1e-9)


def parse_latency(text: str | float | int) -> tuple[str, float]:
    """``measured`` | ``<x>ms`` (or a bare number: ms) | ``<k>steps`` -> ``(kind, value)``."""
    s = str(text).strip().lower()
    if s == "measured":
        return "measured", math.nan
    m = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(ms|steps?)?", s)
    if not m:
        raise ValueError(
            f"latency must be 'measured', '<x>ms' or '<k>steps', got {text!r} (e.g. 35ms, 2steps)"
        )
    value, unit = float(m.group(1)), m.group(2) or "ms"
    if unit.startswith("step"):
        if value != int(value):
            raise ValueError(f"a latency in steps must be a whole number, got {text!r}")
        return "steps", value
    return "ms", value


def request_lead(transition: str, delay: int, blend_steps: int = 2) -> int:
    """Ask for the next chunk once at most this many actions are left in the queue."""
    if transition == "sync":
        return 0
    return delay + (blend_steps if transition == "blend" else 0)


def next_queue(
    transition: str,
    old: np.ndarray,
    plan: np.ndarray,
    elapsed: int,
    n_action_steps: int,
) -> np.ndarray:
    """The actions to execute from the arrival on.

    ``old [r, Da]``: what is left of the previous chunk at the arrival; ``plan [A, Da]``: the
    new chunk from its request step; ``elapsed``: steps since the request. Returns up to
    ``n_action_steps`` actions (fewer when the plan runs out: the caller asks again early).
    """
    new = plan[elapsed : elapsed + n_action_steps]
    if transition != "blend" or not len(old) or not len(new):
        return np.array(new, copy=True)
    k = min(len(old), len(new))
    w_old = (k - np.arange(k)) / (k + 1.0)  # k=2: old weights 2/3, 1/3
    out = np.array(new, copy=True)
    out[:k] = w_old[:, None] * old[:k] + (1.0 - w_old[:, None]) * new[:k]
    return out


def boundary_jerk(actions: np.ndarray, boundaries: list[int]) -> float | None:
    """Mean squared second difference of executed ``actions [T, Da]`` at chunk boundaries (the
    steps where a new chunk's first action ran), in squared action units averaged over the
    action dimensions: at boundary b, the differences centred on b-1 and b."""
    vals = []
    for b in boundaries:
        for c in (b - 1, b):
            if 1 <= c < len(actions) - 1:
                d2 = actions[c + 1] - 2 * actions[c] + actions[c - 1]
                vals.append(float(np.mean(d2**2)))
    return float(np.mean(vals)) if vals else None


def interior_jerk(actions: np.ndarray, boundaries: list[int]) -> float | None:
    """The same second difference away from the boundaries: the chunks' own smoothness."""
    near = {c for b in boundaries for c in (b - 1, b)}
    vals = [
        float(np.mean((actions[c + 1] - 2 * actions[c] + actions[c - 1]) ** 2))
        for c in range(1, len(actions) - 1)
        if c not in near
    ]
    return float(np.mean(vals)) if vals else None
