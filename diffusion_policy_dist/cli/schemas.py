"""Schemas of the commands that have no layer of their own to live in (``eval``, ``collect``,
``info``, ``import-robomimic``); ``train``'s is :class:`~..training.config.TrainRun` and the
benchmarks' are in :mod:`..benchmarks.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..evaluation.config import EvalConfig

OBS_ALIASES = {"lowdim": "state"}  # the spelling of version 0.1


def _obs(value: str | None) -> str | None:
    return OBS_ALIASES.get(value, value) if value is not None else None


@dataclass
class EnvOptions:
    """A gymnasium env (``task=gym``): ``id``; ``obs_keys`` (Dict keys to keep, under their own
    names; ``flatten`` concatenates them into one ``state``); ``success_key`` (null:
    ``info["is_success"]``, else ``info["success"]``); ``module`` to import first (a package you
    trust); ``factory`` (``module:function``, with ``task=python``); ``kwargs`` for it."""

    id: str | None = None
    obs_keys: list[str] | None = None
    flatten: bool = False
    success_key: str | None = None
    module: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None


@dataclass
class EvalRun:
    """``dpd eval``: a checkpoint (directory or training run), its env (null: the one recorded
    in the checkpoint), the sampler (default: the checkpoint's) and the evaluation options."""

    checkpoint: str = "???"
    use_ema: bool = True
    task: str | None = None
    obs: str | None = None
    env: EnvOptions = field(default_factory=EnvOptions)
    sampler: Any = None
    eval: EvalConfig = field(default_factory=EvalConfig)
    output_dir: str | None = None
    device: str = "auto"

    def __post_init__(self) -> None:
        self.obs = _obs(self.obs)


@dataclass
class CollectRun:
    """``dpd collect``: scripted-expert demonstrations of a task into a zarr dataset (null
    output: ``data/<task>.zarr``, ``data/<task>_image.zarr`` for ``obs=image``)."""

    task: str = "obstacle_avoid"
    episodes: int = 100
    output: str | None = None
    obs: str = "state"
    seed: int = 0
    workers: int = 2
    image_size: int = 96
    progress: bool = True

    def __post_init__(self) -> None:
        self.obs = _obs(self.obs)
        if self.episodes < 1 or self.workers < 1:
            raise ValueError("episodes and workers must be >= 1")


@dataclass
class InfoRun:
    """``dpd info path=<checkpoint or dataset>``."""

    path: str = "???"


@dataclass
class ImportRobomimicRun:
    """``dpd import-robomimic``: a robomimic HDF5 file to a zarr dataset (null output:
    ``data/<input stem>.zarr``; null obs_keys: every key under the first demo's ``obs/``)."""

    input: str = "???"
    output: str | None = None
    obs_keys: list[str] | None = None
    overwrite: bool = False
    progress: bool = True
