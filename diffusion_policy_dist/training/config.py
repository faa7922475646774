"""The configuration of a training run: its schema, defaults and validation in one place.

:class:`TrainRun` is what ``dpd train`` composes (``configs/train.yaml`` holds only the choice of
presets); every section is a dataclass checked in ``__post_init__``. Python users can build a
``TrainRun`` directly.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from ..env_options import EnvOptions
from ..policy.config import DEFAULT_CHOICES, NetworkConfig, PolicyConfig, PolicyOptions
from ..precision import PRECISIONS
from ..window import Window

MISSING = "???"  # OmegaConf's marker of a required value


def _positive_int(where: str, value: Any, least: int = 1) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < least:
        raise ValueError(f"{where} must be an integer >= {least}, got {value!r}")


@dataclass
class DatasetConfig:
    """``path``: a zarr dataset (Diffusion Policy's layout, directory or ``.zip``) or a LeRobot
    dataset folder (v3.0 or v2.1: decoded once into a zarr copy in ``cache_dir``, default
    ``~/.cache/diffusion_policy_dist/lerobot``); ``obs_keys``: the observation keys (null:
    inferred; LeRobot features by their names, e.g. ``observation.state``); ``val_ratio``:
    fraction of episodes held out for the validation loss."""

    path: str = MISSING
    obs_keys: list[str] | None = None
    action_key: str = "action"
    val_ratio: float = 0.1
    cache_dir: str | None = None

    def __post_init__(self) -> None:
        if not 0.0 <= self.val_ratio < 1.0:
            raise ValueError(f"dataset.val_ratio must be in [0, 1), got {self.val_ratio}")


@dataclass
class TrainConfig:
    """The optimization. ``batch_size`` counts examples; a distributional model runs
    ``loss.m`` network rows per example, so ``batch_rows`` (when set) fixes the rows per step
    instead and the batch size follows: ``batch_rows / rows per example``. The learning rate
    warms up linearly for ``warmup_steps`` (null: ``warmup_fraction`` of the run's steps).
    ``precision``: ``fp32``, or ``bf16`` (the forward pass under bfloat16 autocast, on a CPU or
    a GPU; weights, optimizer state and the loss stay float32)."""

    steps: int = 2000
    batch_size: int = 256
    batch_rows: int | None = None
    lr: float = 1e-3
    weight_decay: float = 1e-6
    betas: tuple[float, float] = (0.95, 0.999)
    warmup_steps: int | None = None
    warmup_fraction: float = 0.05
    lr_schedule: str = "cosine"
    grad_clip: float | None = 1.0
    ema: bool = True
    ema_power: float = 0.75
    ema_max_decay: float = 0.9999
    val_every: int = 250
    val_batches: int = 4
    log_every: int = 25
    checkpoint_every: int = 500
    keep_every: int | None = None
    num_workers: int = 0
    time_budget_s: float | None = None
    resume: str = "auto"
    progress: bool = True
    precision: str = "fp32"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        _positive_int("training.steps", self.steps)
        _positive_int("training.batch_size", self.batch_size)
        for name in ("log_every", "checkpoint_every", "val_batches"):
            _positive_int(f"training.{name}", getattr(self, name))
        for name in ("val_every", "num_workers"):
            _positive_int(f"training.{name}", getattr(self, name), least=0)
        if self.warmup_steps is not None:
            _positive_int("training.warmup_steps", self.warmup_steps, least=0)
        if not 0.0 <= self.warmup_fraction < 1.0:
            raise ValueError(
                f"training.warmup_fraction must be in [0, 1), got {self.warmup_fraction}"
            )
        for name in ("keep_every", "batch_rows"):
            if getattr(self, name) is not None:
                _positive_int(f"training.{name}", getattr(self, name))
        if not self.lr > 0:
            raise ValueError(f"training.lr must be > 0, got {self.lr}")
        if self.lr_schedule not in ("cosine", "constant"):
            raise ValueError(
                f"training.lr_schedule must be cosine or constant, got {self.lr_schedule!r}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"training.precision must be one of {list(PRECISIONS)}, got {self.precision!r}"
            )
        if self.resume not in ("auto", "always", "never"):
            raise ValueError(f"training.resume must be auto, always or never, got {self.resume!r}")
        if self.time_budget_s is not None and not self.time_budget_s > 0:
            raise ValueError(
                f"training.time_budget_s must be > 0 or null, got {self.time_budget_s}"
            )

    def examples_per_step(self, rows_per_example: int) -> int:
        """The batch size for a model that runs ``rows_per_example`` network rows per example."""
        if self.batch_rows is None:
            return self.batch_size
        if self.batch_rows % rows_per_example:
            raise ValueError(
                f"training.batch_rows={self.batch_rows} is not a multiple of the "
                f"{rows_per_example} network rows per example (loss.m)"
            )
        return self.batch_rows // rows_per_example


@dataclass
class TrainRun:
    """Everything ``dpd train`` needs. ``network``, ``schedule``, ``loss`` and ``sampler`` (the
    checkpoint's default sampler) are config groups of their own; :meth:`policy_config` joins
    them with ``policy``. ``task``/``obs``/``env`` name the env the checkpoint records for
    evaluation (null: the one the dataset records), e.g. ``task=gym env.id=FetchPush-v4``."""

    dataset: DatasetConfig = field(default_factory=DatasetConfig)
    window: Window = field(default_factory=Window)
    policy: PolicyOptions = field(default_factory=PolicyOptions)
    network: NetworkConfig = field(default_factory=NetworkConfig)
    schedule: Any = field(default_factory=DEFAULT_CHOICES["schedule"])
    loss: Any = field(default_factory=DEFAULT_CHOICES["loss"])
    sampler: Any = field(default_factory=DEFAULT_CHOICES["sampler"])
    training: TrainConfig = field(default_factory=TrainConfig)
    output_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    threads: int | None = None
    task: str | None = None
    obs: str | None = None
    env: EnvOptions = field(default_factory=EnvOptions)

    def __post_init__(self) -> None:
        if self.threads is not None:
            _positive_int("threads", self.threads)
        if not any(isinstance(v, str) for v in (self.schedule, self.loss, self.sampler)):
            self.policy_config()  # the groups must fit together (checked when composed)

    def policy_config(self) -> PolicyConfig:
        p = self.policy  # every field of the policy group, whatever it holds
        return PolicyConfig(
            **{f.name: getattr(p, f.name) for f in dataclasses.fields(PolicyOptions)},
            network=self.network,
            schedule=self.schedule,
            loss=self.loss,
            sampler=self.sampler,
        )
