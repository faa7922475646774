"""The committed prefix of a chunk planned in real time.

While a chunk is being computed the robot keeps executing the previous one, so the first d
actions of the new chunk (from the current step on) are already committed. Two ways to use them:

- **conditioning** (models trained with ``policy.prefix_steps``): the network sees the committed
  actions and their mask as extra input channels; training draws d uniformly in
  ``0..prefix_steps`` per example, from the example's own actions;
- **inpainting** (any model, any sampler): each x0 estimate takes the committed values at the
  committed positions, so every coarse step moves the rest of the chunk towards them.

``known`` is ``[B, H, Da + 1]``: the committed actions (normalized, zero elsewhere) and a mask.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .. import shard


def random_known(x0: Tensor, max_steps: int, start: int) -> Tensor:
    """Training's ``known`` for clean chunks ``x0 [B, H, Da]``: d ~ U{0..max_steps} committed
    steps from index ``start`` (the current step of the window)."""
    B, H, _ = x0.shape
    d = shard.randint(0, max_steps + 1, B, 1, device=x0.device)
    pos = torch.arange(H, device=x0.device)[None] - start
    mask = ((pos >= 0) & (pos < d)).to(x0.dtype)[..., None]
    return torch.cat([x0 * mask, mask], dim=-1)


def known_from_prefix(prefix: Tensor, lengths: Tensor | None, horizon: int, start: int) -> Tensor:
    """``known`` for committed actions ``prefix [B, P, Da]`` (normalized) placed at ``start``;
    ``lengths [B]``: how many of each row's P actions are committed (all when None)."""
    B, P, Da = prefix.shape
    if start + P > horizon:
        raise ValueError(f"a committed prefix of {P} steps from step {start} exceeds the "
                         f"chunk's horizon {horizon}")  # fmt: skip
    known = prefix.new_zeros(B, horizon, Da + 1)
    n = torch.full((B,), P, device=prefix.device) if lengths is None else lengths.to(prefix.device)
    mask = (torch.arange(P, device=prefix.device)[None] < n[:, None]).to(prefix.dtype)[..., None]
    known[:, start : start + P, :Da] = prefix * mask
    known[:, start : start + P, Da:] = mask
    return known


def inpaint(x0: Tensor, known: Tensor) -> Tensor:
    """``x0 [B, H, Da]`` with the committed positions of ``known`` set to their values."""
    mask = known[..., -1:]
    return x0 * (1 - mask) + known[..., :-1] * mask
