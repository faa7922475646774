"""Schemas of ``dpd bench`` and ``dpd demo``; their presets are in ``configs/bench.yaml`` and
``configs/demo.yaml``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OBS_ALIASES = {"lowdim": "state"}  # the spelling of version 0.1


@dataclass
class BenchPreset:
    """One benchmark size. Every model of a task is trained with the same UNet (``network``)
    and budget; ``batch_mean`` examples per step for the mean model, ``batch_distributional``
    examples x ``m`` generator samples for the distributional one. Evaluated at every NFE in
    ``nfe``; conjugate's lambda tuned on ``val_episodes`` validation seeds over ``lambdas``.
    ``image``: settings replaced for ``obs=image``."""

    demos: int = 100
    train_budget_s: float = 120.0
    network: str = "small"
    batch_mean: int = 256
    batch_distributional: int = 32
    m: int = 8
    nfe: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 100])
    churns: list[float] = field(default_factory=lambda: [0.0, 1.0])
    lambdas: list[float] = field(
        default_factory=lambda: [-1.0, -0.5, -0.2, -0.1, 0.0, 0.1, 0.2, 0.5, 1.0]
    )
    lambdas_at_100: list[float] = field(default_factory=lambda: [-0.1, 0.0, 0.1])
    test_episodes: int = 50
    val_episodes: int = 20
    threads: int | None = 2
    image_size: int = 96
    crop_shape: list[int] | None = None
    num_workers: int = 0
    image: dict[str, Any] = field(default_factory=dict)


@dataclass
class BenchRun:
    """``dpd bench``: ``task`` (all, one, or a comma list), ``preset``, ``obs`` (state | image),
    where results go and where datasets and checkpoints are kept (reused by a re-run).
    ``report_only``: rewrite tables and plots from the stored results."""

    task: str = "all"
    preset: str = "quick"
    obs: str = "state"
    output_dir: str = "benchmarks/results"
    work_dir: str = "outputs/bench"
    device: str = "auto"
    workers: int = 2
    progress: bool = True
    report_only: bool = False
    presets: dict[str, BenchPreset] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.obs = OBS_ALIASES.get(self.obs, self.obs)


@dataclass
class DemoRun:
    """``dpd demo``: collect, train the distributional policy and the DDPM baseline, evaluate,
    plot and film, on one task."""

    task: str = "obstacle_avoid"
    demos: int = 100
    train_budget_s: float = 150.0
    network: str = "small"
    batch_mean: int = 256
    batch_distributional: int = 32
    episodes: int = 50
    video_episodes: int = 3
    output_dir: str = "outputs/demo"
    workers: int = 2
    threads: int | None = 2
    device: str = "auto"
    progress: bool = True
