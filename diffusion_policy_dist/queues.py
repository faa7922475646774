"""The observation history and the action queue of a policy running in a loop (numpy or torch;
importing this module needs neither torch nor the rest of the package, so the exported-policy
runtime uses it too).

One implementation serves :meth:`DiffusionPolicy.select_action` (one batch of envs stepped
together) and the evaluation rollout (one history and queue per env slot), so both pad and slice
exactly as the dataset does:

- :class:`ObsHistory` keeps the last ``To`` observations; at an episode start it repeats the
  first one, as the dataset pads a window that starts before its episode;
- :class:`ActionQueue` holds the executed part of the last planned chunk.
"""

from __future__ import annotations

import collections
from collections.abc import Mapping
from typing import Any

import numpy as np


def _stack(frames: list[Any], axis: int) -> Any:
    if isinstance(frames[0], np.ndarray):
        return np.stack(frames, axis=axis)
    import torch

    return torch.stack(frames, dim=axis)


def camera_chw(obs: Mapping[str, Any], shape_meta: Mapping[str, Any]) -> dict[str, Any]:
    """Camera frames given channels-last (``[..., H, W, C]``, as envs render them) turned into
    the channels-first ``[..., C, H, W]`` that ``shape_meta`` describes; other keys unchanged."""
    out = dict(obs)
    for key, spec in shape_meta["obs"].items():
        if spec.get("type") != "rgb" or key not in out:
            continue
        v, want = out[key], tuple(spec["shape"])
        if tuple(v.shape[-3:]) != want and (v.shape[-1], *v.shape[-3:-1]) == want:
            out[key] = (
                np.moveaxis(v, -1, -3)
                if isinstance(v, np.ndarray)
                else v.permute(*range(v.dim() - 3), -1, -3, -2)
            )
    return out


def select_obs(obs: Mapping[str, Any], shape_meta: Mapping[str, Any]) -> dict[str, Any]:
    """The policy's observations from an env's ``{key: [..., *shape]}``: each key of
    ``shape_meta["obs"]``, taken as is or, for a key defined as a slice of another
    (``"agent_pos=state[0:2]"``), cut from its source, exactly as the dataset did."""
    out = {}
    for key, spec in shape_meta["obs"].items():
        if key in obs:
            out[key] = obs[key]
        elif "source" in spec and spec["source"] in obs:
            a, b = spec["slice"]
            out[key] = obs[spec["source"]][..., a:b]
        else:
            raise KeyError(
                f"the policy needs observation {key!r}"
                + (f" (from {spec['source']!r})" if "source" in spec else "")
                + f"; got keys {sorted(obs)}"
            )
    return out


class ObsHistory:
    """The last ``n_obs_steps`` observations ``{key: [B, *shape]}`` (numpy or torch)."""

    def __init__(self, n_obs_steps: int) -> None:
        self.n_obs_steps = n_obs_steps
        self._frames: collections.deque = collections.deque(maxlen=n_obs_steps)

    def reset(self) -> None:
        self._frames.clear()

    def __len__(self) -> int:
        return len(self._frames)

    def push(self, obs: Mapping[str, Any]) -> None:
        """Add the current observation; the first after a reset fills the whole history."""
        if not self._frames:
            for _ in range(self.n_obs_steps - 1):
                self._frames.append(dict(obs))
        self._frames.append(dict(obs))

    def stacked(self) -> dict[str, Any]:
        """``{key: [B, To, *shape]}``, oldest first."""
        if not self._frames:
            raise RuntimeError("ObsHistory is empty: push an observation first")
        keys = self._frames[-1].keys()
        return {k: _stack([f[k] for f in self._frames], axis=1) for k in keys}


class ActionQueue:
    """Actions ``[B, Da]`` still to execute from the last chunk ``[B, Ta, Da]``."""

    def __init__(self) -> None:
        self._chunk: Any = None
        self._next = 0

    def reset(self) -> None:
        self._chunk, self._next = None, 0

    def __len__(self) -> int:
        return 0 if self._chunk is None else self._chunk.shape[1] - self._next

    def remaining(self) -> Any:
        """What is left ``[B, n, Da]`` (n may be 0), without consuming it."""
        return None if self._chunk is None else self._chunk[:, self._next :]

    def set(self, chunk: Any) -> None:
        """Replace what is left with a new chunk ``[B, Ta, Da]``."""
        self._chunk, self._next = chunk, 0

    def pop(self) -> Any:
        """The next action ``[B, Da]``."""
        if not len(self):
            raise IndexError("ActionQueue is empty: plan a chunk first")
        a = self._chunk[:, self._next]
        self._next += 1
        return a
