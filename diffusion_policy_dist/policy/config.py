"""Typed, validated policy configuration.

Each section is a flat dataclass; :func:`from_dict` refuses unknown keys (a misspelled option
is an error, not a silent default) and every ``__post_init__`` checks its values.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..diffusion.grids import GRIDS
from ..diffusion.losses import KERNELS, WEIGHTINGS
from ..diffusion.parameterization import PREDICTIONS
from ..diffusion.sampling import METHODS, check_opts
from ..diffusion.schedules import SCHEDULES

T = TypeVar("T")


def _choice(section: str, name: str, value: Any, choices) -> None:
    if value not in choices:
        raise ValueError(f"{section}.{name} must be one of {sorted(choices)}, got {value!r}")


def from_dict(cls: type[T], data: Mapping[str, Any] | T | None, section: str) -> T:
    """Build dataclass ``cls`` from a mapping, recursing into dataclass-typed fields."""
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise TypeError(f"{section}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{section}: unknown option(s) {unknown}; valid options are {sorted(fields)}"
        )
    kwargs = {}
    for k, v in data.items():
        ftype = fields[k].type
        sub = _NESTED.get((cls.__name__, k))
        if sub is not None:
            kwargs[k] = from_dict(sub, v, f"{section}.{k}")
        elif isinstance(v, list) and "tuple" in str(ftype):
            kwargs[k] = tuple(v)
        else:
            kwargs[k] = v
    return cls(**kwargs)


def to_dict(obj: Any) -> dict[str, Any]:
    """Plain, YAML/JSON-able dict of a config dataclass (tuples become lists)."""

    def conv(v):
        if isinstance(v, tuple):
            return [conv(x) for x in v]
        if isinstance(v, dict):
            return {k: conv(x) for k, x in v.items()}
        return v

    return {k: conv(v) for k, v in dataclasses.asdict(obj).items()}


@dataclass
class NetworkConfig:
    down_dims: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    n_groups: int = 8
    time_embed_dim: int = 128

    def __post_init__(self) -> None:
        self.down_dims = tuple(int(d) for d in self.down_dims)
        if not self.down_dims or any(d % self.n_groups for d in self.down_dims):
            raise ValueError(
                f"network.down_dims {self.down_dims} must be non-empty and divisible by "
                f"n_groups={self.n_groups}"
            )


@dataclass
class LossConfig:
    """``mse`` (mean models) or ``energy`` / ``kernel`` (distributional models)."""

    name: str = "energy"
    beta: float = 1.0
    lam: float = 1.0
    m: int = 8
    kernel: str = "rbf"
    bandwidth: float | None = None
    weighting: str = "uniform"
    weight_bias: float = 0.0
    mask_padding: bool = False

    def __post_init__(self) -> None:
        _choice("loss", "name", self.name, ("mse", "energy", "kernel"))
        _choice("loss", "kernel", self.kernel, KERNELS)
        _choice("loss", "weighting", self.weighting, WEIGHTINGS)
        if not 0.0 < self.beta <= 2.0:
            raise ValueError(f"loss.beta must be in (0, 2], got {self.beta}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"loss.lam must be in [0, 1], got {self.lam}")
        needs_pairs = self.name == "kernel" or (self.name == "energy" and self.lam > 0)
        if self.m < (2 if needs_pairs else 1):
            raise ValueError(
                f"loss.m must be >= {2 if needs_pairs else 1} for loss.name={self.name} "
                f"with lam={self.lam}, got {self.m}"
            )


@dataclass
class SamplerConfig:
    """Which sampler, how many steps, and its options (``eta``/``churn``/``lam`` by method)."""

    method: str = "distributional"
    steps: int = 1
    grid: str = "uniform"
    t_start: float = 1.0
    eta: float | None = None
    churn: float | None = None
    lam: float | None = None
    clip_x0: float | None = 1.0
    use_prior: bool = True  # truncated policies start at t' from their prior when t_start is 1

    def __post_init__(self) -> None:
        _choice("sampler", "method", self.method, METHODS)
        _choice("sampler", "grid", self.grid, GRIDS)
        if self.steps < 1:
            raise ValueError(f"sampler.steps must be >= 1, got {self.steps}")
        if not 0.0 < self.t_start <= 1.0:
            raise ValueError(f"sampler.t_start must be in (0, 1], got {self.t_start}")
        check_opts(self.method, self.opts())

    def opts(self) -> dict[str, Any]:
        """Method options that are set (None means 'not used')."""
        names = ("eta", "churn", "lam", "clip_x0")
        return {k: getattr(self, k) for k in names if getattr(self, k) is not None}

    def describe(self) -> str:
        extra = ", ".join(f"{k}={v}" for k, v in self.opts().items() if k != "clip_x0")
        return f"{self.method}-{self.steps}" + (f" ({extra})" if extra else "")


@dataclass
class ObsEncoderConfig:
    """Camera encoders. ``crop_shape``: ``"auto"`` (7/8 of each side, e.g. 96 -> 84 and
    64 -> 56), an explicit ``[h, w]``, or None for no crop (random in training, centre in eval)."""

    crop_shape: tuple[int, int] | str | None = "auto"
    share_rgb_encoder: bool = False
    num_keypoints: int = 32
    image_feature_dim: int | None = 64

    def __post_init__(self) -> None:
        if isinstance(self.crop_shape, str) and self.crop_shape != "auto":
            raise ValueError(
                f"policy.obs_encoder.crop_shape must be 'auto', [h, w] or null, "
                f"got {self.crop_shape!r}"
            )


@dataclass
class PriorConfig:
    """Truncated diffusion: start sampling at t' (chosen by its alpha) from a learned prior
    p_phi(x_t' | o). ``alpha`` None disables truncation."""

    alpha: float | None = None
    components: int = 8
    hidden: int = 256
    weight: float = 1.0

    def __post_init__(self) -> None:
        if self.alpha is not None and not 0.0 < self.alpha < 1.0:
            raise ValueError(f"prior.alpha must be in (0, 1) or null, got {self.alpha}")


@dataclass
class PolicyConfig:
    kind: str = "distributional"
    prediction: str = "epsilon"
    noise_injection: str = "concat"
    noise_dim: int | None = None
    schedule: dict = field(default_factory=lambda: {"name": "cosine"})
    network: NetworkConfig = field(default_factory=NetworkConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    sampler: SamplerConfig = field(default_factory=SamplerConfig)
    obs_encoder: ObsEncoderConfig = field(default_factory=ObsEncoderConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    normalizer_mode: str = "limits"

    def __post_init__(self) -> None:
        _choice("policy", "kind", self.kind, ("mean", "distributional"))
        _choice("policy", "prediction", self.prediction, PREDICTIONS)
        _choice("policy", "noise_injection", self.noise_injection, ("concat", "film"))
        _choice("policy", "normalizer_mode", self.normalizer_mode, ("limits", "gaussian"))
        self.schedule = dict(self.schedule)
        _choice("policy.schedule", "name", self.schedule.get("name"), SCHEDULES)
        if self.kind == "mean" and self.loss.name != "mse":
            raise ValueError(
                f"policy.kind=mean is trained with loss.name=mse, got {self.loss.name!r} "
                "(use policy=distributional for scoring-rule losses)"
            )
        if self.kind == "distributional" and self.loss.name == "mse":
            raise ValueError(
                "policy.kind=distributional needs loss.name=energy or kernel; for the x0-MSE "
                "ablation on the same code path use loss.name=energy loss.beta=2 loss.lam=0"
            )


_NESTED = {
    ("PolicyConfig", "network"): NetworkConfig,
    ("PolicyConfig", "loss"): LossConfig,
    ("PolicyConfig", "sampler"): SamplerConfig,
    ("PolicyConfig", "obs_encoder"): ObsEncoderConfig,
    ("PolicyConfig", "prior"): PriorConfig,
}
