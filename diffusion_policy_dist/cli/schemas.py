"""Schemas of the commands that have no layer of their own to live in (``eval``, ``collect``,
``info``, ``import-robomimic``); ``train``'s is :class:`~..training.config.TrainRun` and the
benchmarks' are in :mod:`..benchmarks.config`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ..env_options import OBS_ALIASES, EnvOptions
from ..envs import VALIDATION_SEED_BASE
from ..evaluation.config import EvalConfig


def _obs(value: str | None) -> str | None:
    return OBS_ALIASES.get(value, value) if value is not None else None


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
    """``dpd collect``: scripted-expert demonstrations into a zarr dataset (null output:
    ``data/<task>.zarr``, ``data/<task>_image.zarr`` for ``obs=image``). A registry task brings
    its expert; for ``task=gym`` (or ``python``) name yours: ``expert=module:function``, where
    ``function(seed=...)`` returns an object with ``reset(env) -> mode`` and ``act(env)``."""

    task: str = "obstacle_avoid"
    env: EnvOptions = field(default_factory=EnvOptions)
    expert: str | None = None
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
    """``dpd info path=<checkpoint, zarr dataset, LeRobot folder or exported .onnx policy>``."""

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


@dataclass
class TuneRun:
    """``dpd tune``: pick the checkpoint's default sampler for a control rate. Each candidate
    (``kind-steps[@option=value]``; null: the usual ones for the checkpoint's model) is rolled
    out on ``episodes`` validation seeds, one env at a time so latency is that of one robot,
    with the env running at ``control_hz`` while the policy thinks (``transition``). The best
    that never misses a deadline becomes the default, written atomically into meta.json (the
    previous one is kept in its ``sampler_history``); ``write=false`` only prints the table."""

    checkpoint: str = "???"
    control_hz: float = "???"  # type: ignore[assignment]
    candidates: list[str] | None = None
    transition: str = "prefix"
    episodes: int = 10
    seed: int = VALIDATION_SEED_BASE
    write: bool = True
    use_ema: bool = True
    device: str = "auto"
    progress: bool = True


@dataclass
class ExportRun:
    """``dpd export``: a checkpoint as one ONNX graph (``format=onnx``) that maps observation
    histories and explicit noise to action chunks, for :mod:`diffusion_policy_dist.runtime`.
    ``sampler``: ``kind-steps[@option=value]`` (null: the checkpoint's default sampler);
    ``batch``: ``dynamic`` or a fixed number of rows; ``output`` (null:
    ``<checkpoint>/policy.onnx``)."""

    checkpoint: str = "???"
    format: str = "onnx"
    sampler: str | None = None
    batch: str = "dynamic"
    output: str | None = None
    use_ema: bool = True
    opset: int = 18

    def __post_init__(self) -> None:
        if self.format == "pt2":
            raise ValueError(
                "format=pt2 is not offered: torch.export cannot trace the sampler, whose step "
                "coefficients are computed on the host (data-dependent Python floats); use "
                "format=onnx"
            )
        if self.format != "onnx":
            raise ValueError(f"format must be onnx, got {self.format!r}")
        if self.batch != "dynamic" and not str(self.batch).isdigit():
            raise ValueError(f"batch must be 'dynamic' or a number of rows, got {self.batch!r}")


@dataclass
class ImportLeRobotRun:
    """``dpd import-lerobot``: a LeRobot dataset folder (v3.0 or v2.1) decoded into a zarr
    dataset (null output: ``data/<folder name>.zarr``; null keys: every numeric feature and
    camera). ``dpd train dataset.path=<folder>`` does the same into a cache by itself."""

    input: str = "???"
    output: str | None = None
    keys: list[str] | None = None
    overwrite: bool = False
    progress: bool = True


@dataclass
class ExportLeRobotRun:
    """``dpd export-lerobot``: a zarr dataset written as a LeRobot v3.0 folder (cameras as PNG
    images), which LeRobot's own loader reads. ``task``: every episode's task text (null: the
    recorded mode's name, e.g. "demonstration (left)")."""

    input: str = "???"
    output: str = "???"
    fps: float = 10.0
    task: str | None = None
