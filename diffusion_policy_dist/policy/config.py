"""Typed, validated policy configuration.

Every section is a dataclass whose ``__post_init__`` checks its values; the hydra config store
(:mod:`diffusion_policy_dist.config`) uses these classes as the schema, so a misspelled option
or a bad value fails when the command line is read. Choices with their own options (schedule,
loss, sampler) are dataclasses from the registries of :mod:`..diffusion`, picked by ``kind``.

:func:`build_config` turns plain dicts (a checkpoint's ``meta.json``) back into these objects,
refusing unknown keys with a message that names the field.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from ..data.normalizer import SCHEMES
from ..diffusion.losses import LOSSES, EnergyLoss, LossConfig
from ..diffusion.parameterization import PREDICTIONS
from ..diffusion.processes import PROCESS_CONFIGS, make_process
from ..diffusion.samplers import (
    SAMPLERS,
    DistributionalSampler,
    SamplerConfig,
    check_sampler_runs,
)
from ..diffusion.schedules import CosineSchedule

T = TypeVar("T")

#: the default of each choice a policy makes: its one source (a run config's groups use it too)
DEFAULT_CHOICES: dict[str, Any] = {
    "schedule": CosineSchedule,
    "loss": EnergyLoss,
    "sampler": DistributionalSampler,
}

POLICY_KINDS = ("mean", "distributional")
NOISE_INJECTIONS = ("concat", "film", "late")


def _choice(where: str, value: Any, choices) -> None:
    if value not in choices:
        raise ValueError(f"{where} must be one of {list(choices)}, got {value!r}")


@dataclass
class NetworkConfig:
    """The UNet: channel widths per level (the horizon halves between levels), conv kernel,
    GroupNorm groups and the width of the diffusion-time embedding."""

    down_dims: tuple[int, ...] = (64, 128, 256)
    kernel_size: int = 5
    n_groups: int = 8
    time_embed_dim: int = 128

    def __post_init__(self) -> None:
        self.down_dims = tuple(int(d) for d in self.down_dims)
        if not self.down_dims or any(d % self.n_groups for d in self.down_dims):
            raise ValueError(
                f"network.down_dims {list(self.down_dims)} must be non-empty and divisible by "
                f"network.n_groups={self.n_groups}"
            )
        if self.kernel_size < 1 or self.kernel_size % 2 == 0:
            raise ValueError(f"network.kernel_size must be odd and >= 1, got {self.kernel_size}")
        if self.time_embed_dim < 2 or self.time_embed_dim % 2:
            raise ValueError(f"network.time_embed_dim must be even, got {self.time_embed_dim}")


@dataclass
class ObsEncoderConfig:
    """Camera encoders. ``crop_shape``: ``"auto"`` (7/8 of each side, e.g. 96 -> 84 and
    64 -> 56), an explicit ``[h, w]``, or None for no crop (random in training, centre in eval)."""

    crop_shape: Any = "auto"
    share_rgb_encoder: bool = False
    num_keypoints: int = 32
    image_feature_dim: int | None = 64

    def __post_init__(self) -> None:
        c = self.crop_shape
        if (isinstance(c, str) and c != "auto") or (
            not isinstance(c, str) and c is not None and len(c) != 2
        ):
            raise ValueError(
                f"policy.obs_encoder.crop_shape must be 'auto', [h, w] or null, got {c!r}"
            )
        if c is not None and not isinstance(c, str):
            self.crop_shape = (int(c[0]), int(c[1]))


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
            raise ValueError(f"policy.prior.alpha must be in (0, 1) or null, got {self.alpha}")
        if self.components < 1 or self.hidden < 1:
            raise ValueError("policy.prior.components and policy.prior.hidden must be >= 1")


#: options that only a distributional model uses (its noise input)
NOISE_OPTIONS = ("noise_injection", "noise_dim", "noise_levels")


@dataclass
class PolicyOptions:
    """The ``policy`` config group. ``kind``: the denoiser (``mean``: predicts eps/x0/v, trained
    with MSE; ``distributional``: samples x0 from extra noise, trained with a scoring rule).
    ``prediction``: what a mean model's network predicts. ``noise_injection``/``noise_dim``: how a
    distributional model gets its noise (``concat``: ``[H, noise_dim]`` extra input channels;
    ``film``: a vector joining the condition of every block; ``late``: a vector entering only
    the last ``noise_levels`` decoder levels, so an example's ``loss.m`` samples share one pass
    of the rest of the network). ``normalizer``: ``limits`` ([-1, 1]) or ``gaussian``.
    ``prefix_steps``: train with a committed prefix (real-time control): each example sees its
    first d executed actions (d uniform in 0..prefix_steps) and a mask as extra input channels,
    so a chunk planned during a delay of d steps continues the actions already committed."""

    kind: str = "distributional"
    prediction: str = "epsilon"
    noise_injection: str = "late"
    noise_dim: int | None = None
    noise_levels: int = 1
    normalizer: str = "limits"
    obs_encoder: ObsEncoderConfig = field(default_factory=ObsEncoderConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    prefix_steps: int = 0

    def __post_init__(self) -> None:
        _choice("policy.kind", self.kind, POLICY_KINDS)
        if self.prefix_steps < 0:
            raise ValueError(f"policy.prefix_steps must be >= 0, got {self.prefix_steps}")
        _choice("policy.prediction", self.prediction, PREDICTIONS)
        _choice("policy.noise_injection", self.noise_injection, NOISE_INJECTIONS)
        _choice("policy.normalizer", self.normalizer, SCHEMES)
        if self.noise_dim is not None and self.noise_dim < 1:
            raise ValueError(f"policy.noise_dim must be >= 1 or null, got {self.noise_dim}")
        if self.noise_levels < 1:
            raise ValueError(f"policy.noise_levels must be >= 1, got {self.noise_levels}")


@dataclass
class PolicyConfig(PolicyOptions):
    """Everything that builds a policy: the ``policy`` group plus the network, schedule, loss
    and default sampler (in a run config these are their own groups)."""

    network: NetworkConfig = field(default_factory=NetworkConfig)
    schedule: Any = field(default_factory=DEFAULT_CHOICES["schedule"])
    loss: Any = field(default_factory=DEFAULT_CHOICES["loss"])
    sampler: Any = field(default_factory=DEFAULT_CHOICES["sampler"])

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.loss, LossConfig) or not isinstance(self.sampler, SamplerConfig):
            raise TypeError("policy: loss and sampler must be built config objects")
        if self.kind == "mean" and self.loss.kind != "mse":
            raise ValueError(
                f"policy.kind=mean is trained with loss=mse, got loss={self.loss.kind} "
                "(use policy=distributional for scoring-rule losses)"
            )
        if self.kind == "distributional" and self.loss.kind == "mse":
            raise ValueError(
                "policy.kind=distributional needs loss=energy or a kernel loss; for the x0-MSE "
                "ablation on the same code path use loss=energy loss.beta=2 loss.lam=0"
            )
        self._check_process()

    def _check_process(self) -> None:
        """The forward process must take this model and be integrated by its sampler."""
        process = make_process(self.schedule)
        process.check_policy(self.kind, self.prediction, self.prior.alpha)
        check_sampler_runs(self.sampler, process)


def build_config(cls: type[T], data: Mapping[str, Any] | T | None, where: str) -> T:
    """Dataclass ``cls`` from a plain mapping, recursing into dataclass-typed fields; an unknown
    key is an error naming ``where`` and the valid keys."""
    if data is None:
        return cls()
    if isinstance(data, cls):
        return data
    if not isinstance(data, Mapping):
        raise TypeError(f"{where}: expected a mapping, got {type(data).__name__}")
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ValueError(
            f"{where}: unknown option(s) {unknown}; valid options are {sorted(fields)}"
        )
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for k, v in data.items():
        sub = hints.get(k)
        nested = isinstance(sub, type) and dataclasses.is_dataclass(sub)
        kwargs[k] = build_config(sub, v, f"{where}.{k}") if nested else v
    return cls(**kwargs)


def build_choice(
    registry: Mapping[str, type[T]],
    data: Mapping[str, Any] | T,
    where: str,
    default_kind: str | None = None,
) -> T:
    """The registered options class that ``data["kind"]`` (else ``default_kind``) names, built
    from ``data``."""
    if not isinstance(data, Mapping):
        return data
    kind = data.get("kind", default_kind)
    data = {**data, "kind": kind}
    if kind not in registry:
        raise ValueError(f"{where}.kind must be one of {list(registry)}, got {kind!r}")
    return build_config(registry[kind], data, where)


def policy_config(data: Mapping[str, Any] | PolicyConfig, where: str = "policy") -> PolicyConfig:
    """A :class:`PolicyConfig` from a plain dict (e.g. a checkpoint's ``meta["policy"]``)."""
    if isinstance(data, PolicyConfig):
        return data
    d = dict(data)
    defaults = PolicyConfig.__dataclass_fields__
    for key, registry in (("schedule", PROCESS_CONFIGS), ("loss", LOSSES), ("sampler", SAMPLERS)):
        if key in d:
            default_kind = defaults[key].default_factory().kind
            d[key] = build_choice(registry, d[key], f"{where}.{key}", default_kind)
    return build_config(PolicyConfig, d, where)


def to_dict(obj: Any) -> Any:
    """A config object as plain YAML/JSON values (tuples become lists)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {k: to_dict(v) for k, v in obj.items()}
    return obj
