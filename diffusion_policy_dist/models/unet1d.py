"""Conditional 1-D temporal UNet (Diffusion-Policy style) with FiLM conditioning.

The network maps ``x_in [B, H, C_in]``, a time ``t [B]`` in [0, 1] and a global condition
``cond [B, D]`` to ``[B, H, C_out]``. It knows nothing about schedules or parameterizations:
whether its input holds extra noise channels, and what its output means, is decided by the
policy that wraps it.

With ``noise_dim`` > 0 it also takes ``noise [B, m, noise_dim]``, m vectors per row that enter
only the last ``noise_levels`` decoder levels (by FiLM, with the condition): everything before
them (the encoder, the middle and the earlier decoder levels) runs once per row and is shared by
the row's m outputs ``[B, m, H, C_out]``. A generator trained on m samples per example then costs
about one trunk plus m small heads instead of m whole networks. Each vector is shared over the
horizon, so it can move a whole trajectory (e.g. to another mode), not only jitter its steps.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn


class SinusoidalTimeEmbedding(nn.Module):
    """``t [B]`` -> ``[B, dim]`` sin/cos features. t in [0, 1] is scaled by ``scale`` first so
    the frequencies cover the same range as DDPM's integer timesteps."""

    def __init__(self, dim: int, scale: float = 1000.0) -> None:
        super().__init__()
        if dim % 2:
            raise ValueError(f"time embedding dim must be even, got {dim}")
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half) / max(half - 1, 1))
        self.register_buffer("freqs", freqs, persistent=False)
        self.scale = scale

    def forward(self, t: Tensor) -> Tensor:
        arg = (t.float() * self.scale)[:, None] * self.freqs[None]
        return torch.cat([arg.sin(), arg.cos()], dim=-1)


class Conv1dBlock(nn.Module):
    """Conv1d -> GroupNorm -> Mish on ``[B, C, H]``."""

    def __init__(self, c_in: int, c_out: int, kernel_size: int, n_groups: int = 8) -> None:
        super().__init__()
        if c_out % n_groups:
            raise ValueError(f"channels {c_out} not divisible by GroupNorm groups {n_groups}")
        self.net = nn.Sequential(
            nn.Conv1d(c_in, c_out, kernel_size, padding=kernel_size // 2),
            nn.GroupNorm(n_groups, c_out),
            nn.Mish(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class FiLMResBlock1d(nn.Module):
    """Two conv blocks with a FiLM (per-channel scale and bias) from the condition between them,
    plus a residual path. ``x [B, C_in, H]``, ``cond [B, D]`` -> ``[B, C_out, H]``."""

    def __init__(
        self, c_in: int, c_out: int, cond_dim: int, kernel_size: int = 5, n_groups: int = 8
    ) -> None:
        super().__init__()
        self.block1 = Conv1dBlock(c_in, c_out, kernel_size, n_groups)
        self.block2 = Conv1dBlock(c_out, c_out, kernel_size, n_groups)
        self.film = nn.Sequential(nn.Mish(), nn.Linear(cond_dim, 2 * c_out))
        self.residual = nn.Conv1d(c_in, c_out, 1) if c_in != c_out else nn.Identity()
        self.c_out = c_out

    def forward(self, x: Tensor, cond: Tensor) -> Tensor:
        h = self.block1(x)
        scale, bias = self.film(cond).unsqueeze(-1).chunk(2, dim=1)
        h = self.block2(scale * h + bias)
        return h + self.residual(x)


class ConditionalUnet1D(nn.Module):
    """FiLM-conditioned temporal UNet.

    Args:
        in_channels: channels of ``x_in`` (action dim, plus noise channels for a generator).
        out_channels: channels of the output (action dim).
        cond_dim: size of the global condition vector (0 for none).
        down_dims: channel widths per level; the horizon halves between levels.
        kernel_size, n_groups: conv kernel and GroupNorm groups.
        time_embed_dim: width of the diffusion-time embedding.
        noise_dim: size of the per-sample noise vectors of the late levels (0: none).
        noise_levels: how many of the last decoder levels see them (1 to len(down_dims) - 1).

    ``forward(x [B, H, in_channels], t [B], cond [B, cond_dim] | None) -> [B, H, out_channels]``;
    with ``noise_dim``, ``forward(x, t, cond, noise [B, m, noise_dim]) -> [B, m, H, out_channels]``
    (``noise [B, noise_dim]`` gives ``[B, H, out_channels]``).
    H must be divisible by ``2 ** (len(down_dims) - 1)`` (the policy enforces the stricter
    ``2 ** len(down_dims)``, as LeRobot does, so sizes stay comfortable for every level).
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        cond_dim: int = 0,
        down_dims: Sequence[int] = (64, 128, 256),
        kernel_size: int = 5,
        n_groups: int = 8,
        time_embed_dim: int = 128,
        noise_dim: int = 0,
        noise_levels: int = 1,
    ) -> None:
        super().__init__()
        down_dims = list(down_dims)
        if not down_dims:
            raise ValueError("down_dims must list at least one width")
        if noise_dim and not 1 <= noise_levels <= len(down_dims) - 1:
            raise ValueError(
                f"noise_levels must be in [1, {len(down_dims) - 1}] (the decoder levels of "
                f"down_dims {down_dims}), got {noise_levels}"
            )
        self.in_channels, self.out_channels, self.cond_dim = in_channels, out_channels, cond_dim
        self.noise_dim = noise_dim
        # decoder levels from this index on see the noise (none when noise_dim is 0)
        self.first_late = len(down_dims) - 1 - noise_levels if noise_dim else len(down_dims)
        self.down_dims = down_dims
        self.time_embed = nn.Sequential(
            SinusoidalTimeEmbedding(time_embed_dim),
            nn.Linear(time_embed_dim, 4 * time_embed_dim),
            nn.Mish(),
            nn.Linear(4 * time_embed_dim, time_embed_dim),
        )
        self._build(in_channels, out_channels, time_embed_dim + cond_dim, kernel_size, n_groups)

    def _build(self, c_in: int, c_out: int, c: int, kernel_size: int, n_groups: int) -> None:
        """The encoder, middle, decoder (late levels' FiLM also sees the noise) and head."""
        down_dims, noise_dim = self.down_dims, self.noise_dim

        def block(a: int, b: int, extra: int = 0) -> FiLMResBlock1d:
            return FiLMResBlock1d(a, b, c + extra, kernel_size, n_groups)

        widths = [c_in, *down_dims]
        self.down = nn.ModuleList()
        for i, (a, b) in enumerate(itertools.pairwise(widths)):
            last = i == len(down_dims) - 1
            self.down.append(
                nn.ModuleList(
                    [
                        block(a, b),
                        block(b, b),
                        nn.Conv1d(b, b, 3, stride=2, padding=1) if not last else nn.Identity(),
                    ]
                )
            )
        self.mid = nn.ModuleList([block(down_dims[-1], down_dims[-1]) for _ in range(2)])
        self.up = nn.ModuleList()
        # every decoder level upsamples once, undoing the len(down_dims)-1 downsamples
        for i, (a, b) in enumerate(reversed(list(itertools.pairwise(widths[1:])))):
            extra = noise_dim if i >= self.first_late else 0
            blocks = [block(2 * b, a, extra), block(a, a, extra)]  # (init order kept)
            up = nn.ConvTranspose1d(a, a, 4, stride=2, padding=1)
            self.up.append(nn.ModuleList([*blocks, up]))
        self.head = nn.Sequential(
            Conv1dBlock(down_dims[0], down_dims[0], kernel_size, n_groups),
            nn.Conv1d(down_dims[0], c_out, 1),
        )

    def _condition(self, x: Tensor, t: Tensor, cond: Tensor | None) -> Tensor:
        """The FiLM input ``[B, time_embed_dim + cond_dim]``: time embedding and condition."""
        if x.dim() != 3 or x.shape[-1] != self.in_channels:
            raise ValueError(
                f"ConditionalUnet1D expects x [B, H, {self.in_channels}], got {tuple(x.shape)}"
            )
        c = self.time_embed(t.expand(x.shape[0]))
        if self.cond_dim:
            if cond is None or cond.shape != (x.shape[0], self.cond_dim):
                got = None if cond is None else tuple(cond.shape)
                raise ValueError(f"expected cond [{x.shape[0]}, {self.cond_dim}], got {got}")
            c = torch.cat([c, cond], dim=-1)
        return c

    def _noise(self, noise: Tensor | None, batch: int) -> Tensor | None:
        """``noise`` as ``[B, m, noise_dim]`` (checked), or None for a network without it."""
        if not self.noise_dim:
            if noise is not None:
                raise ValueError("this network takes no noise (built with noise_dim=0)")
            return None
        if noise is not None and noise.dim() == 2:
            noise = noise.unsqueeze(1)
        if noise is None or noise.dim() != 3 or noise.shape[::2] != (batch, self.noise_dim):
            got = None if noise is None else tuple(noise.shape)
            raise ValueError(f"expected noise [{batch}, m, {self.noise_dim}], got {got}")
        return noise

    def forward(
        self, x: Tensor, t: Tensor, cond: Tensor | None = None, noise: Tensor | None = None
    ) -> Tensor:
        c = self._condition(x, t, cond)
        xi = self._noise(noise, x.shape[0])
        h = x.transpose(1, 2)
        skips = []
        for res1, res2, down in self.down:
            h = res2(res1(h, c), c)
            skips.append(h)
            h = down(h)
        for res in self.mid:
            h = res(h, c)
        for i, (res1, res2, up) in enumerate(self.up):
            if i == self.first_late:  # fan out: each row's m samples share what came before
                m = xi.shape[1]
                h, c = h.repeat_interleave(m, 0), c.repeat_interleave(m, 0)
                skips = [s.repeat_interleave(m, 0) for s in skips]
                c = torch.cat([c, xi.flatten(0, 1).to(c.dtype)], dim=-1)
            h = torch.cat([h, skips.pop()], dim=1)
            h = res2(res1(h, c), c)
            h = up(h)
        out = self.head(h).transpose(1, 2)
        if xi is None:
            return out
        out = out.unflatten(0, (x.shape[0], xi.shape[1]))
        return out if noise.dim() == 3 else out.squeeze(1)
