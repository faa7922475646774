"""Per-key affine normalization whose statistics live in the module's state_dict.

``limits`` maps each dimension's [min, max] to [-1, 1]; ``gaussian`` maps to zero mean and unit
std. Constant dimensions (range or std below ``eps``) are only centred (scale 1), so they map to
0 and round-trip exactly instead of blowing up.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
import torch
from torch import Tensor, nn

SCHEMES = ("limits", "gaussian")


class Normalizer(nn.Module):
    """Normalizes named arrays ``[..., *shape]`` with per-element statistics of ``shape``.

    Construct with the keys and per-frame shapes (so a checkpoint's state_dict loads into a
    fresh instance), then :meth:`fit` on data. ``normalize``/``unnormalize`` take a key and a
    tensor, or a dict of them (keys without statistics, e.g. images, pass through).
    """

    def __init__(
        self,
        shapes: Mapping[str, tuple[int, ...]],
        scheme: str | Mapping[str, str] = "limits",
        eps: float = 1e-4,
    ) -> None:
        super().__init__()
        self.keys_ = sorted(shapes)
        self.eps = eps
        self.schemes = {
            k: (scheme if isinstance(scheme, str) else scheme.get(k, "limits")) for k in self.keys_
        }
        for k, m in self.schemes.items():
            if m not in SCHEMES:
                raise ValueError(f"normalizer scheme for {k!r} must be one of {SCHEMES}, got {m!r}")
        for k in self.keys_:
            shape = tuple(int(d) for d in shapes[k])
            for stat, fill in (
                ("scale", 1.0),
                ("offset", 0.0),
                ("min", 0.0),
                ("max", 0.0),
                ("mean", 0.0),
                ("std", 1.0),
            ):
                self.register_buffer(f"{self._safe(k)}__{stat}", torch.full(shape, fill))
        self.register_buffer("fitted", torch.zeros((), dtype=torch.bool))

    @staticmethod
    def _safe(key: str) -> str:
        return key.replace(".", "_").replace("/", "_")

    def _get(self, key: str, stat: str) -> Tensor:
        return getattr(self, f"{self._safe(key)}__{stat}")

    def fit(self, data: Mapping[str, np.ndarray | Tensor]) -> Normalizer:
        """Compute statistics from ``{key: [N, *shape]}`` arrays (every key of the normalizer)."""
        for k in self.keys_:
            if k not in data:
                raise KeyError(f"normalizer.fit: no data for key {k!r}; got {sorted(data)}")
            x = torch.as_tensor(np.asarray(data[k]), dtype=torch.float64)
            shape = tuple(self._get(k, "scale").shape)
            if tuple(x.shape[1:]) != shape:
                raise ValueError(
                    f"normalizer.fit: {k!r} has shape {tuple(x.shape)}, expected [N, {shape}]"
                )
            if x.shape[0] == 0:
                raise ValueError(f"normalizer.fit: {k!r} is empty")
            if not torch.isfinite(x).all():
                raise ValueError(f"normalizer.fit: {k!r} contains NaN or inf")
            lo, hi = x.min(0).values, x.max(0).values
            mean, std = x.mean(0), x.std(0, unbiased=False)
            if self.schemes[k] == "limits":
                rng = hi - lo
                const = rng < self.eps
                scale = torch.where(const, torch.ones_like(rng), 2.0 / rng.clamp_min(self.eps))
                center = torch.where(const, lo, 0.5 * (hi + lo))
            else:
                const = std < self.eps
                scale = torch.where(const, torch.ones_like(std), 1.0 / std.clamp_min(self.eps))
                center = mean
            for stat, v in (
                ("scale", scale),
                ("offset", -center * scale),
                ("min", lo),
                ("max", hi),
                ("mean", mean),
                ("std", std),
            ):
                self._get(k, stat).copy_(v.float())
        self.fitted.fill_(True)
        return self

    def __contains__(self, key: str) -> bool:
        return key in self.keys_

    def normalize(self, key_or_dict, x: Tensor | None = None):
        if isinstance(key_or_dict, Mapping):
            return {k: (self.normalize(k, v) if k in self else v) for k, v in key_or_dict.items()}
        return x * self._get(key_or_dict, "scale") + self._get(key_or_dict, "offset")

    def unnormalize(self, key_or_dict, x: Tensor | None = None):
        if isinstance(key_or_dict, Mapping):
            return {k: (self.unnormalize(k, v) if k in self else v) for k, v in key_or_dict.items()}
        return (x - self._get(key_or_dict, "offset")) / self._get(key_or_dict, "scale")

    def stats(self) -> dict[str, dict[str, list]]:
        """Human-readable statistics (written beside checkpoints as normalizer.json)."""
        out: dict[str, dict[str, list]] = {}
        for k in self.keys_:
            out[k] = {"scheme": self.schemes[k]}
            for stat in ("min", "max", "mean", "std", "scale", "offset"):
                out[k][stat] = self._get(k, stat).tolist()
        return out
