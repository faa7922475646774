"""Schemas of ``dpd bench`` and ``dpd demo``; their presets are in ``configs/bench.yaml`` and
``configs/demo.yaml``.

Every budget is work, never wall-clock: each model trains for ``steps`` optimizer steps of the
same ``batch_size`` examples (every model sees the same data; each one's FLOPs per step are
counted and reported: the distributional model's m = 4 samples with late noise injection cost
1.3x a DDPM step), or, with ``batch_size`` null, of ``batch_rows`` network rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

OBS_ALIASES = {"lowdim": "state"}  # the spelling of version 0.1
MODELS = ("ddpm", "distributional", "psld_mean", "psld_distributional", "distributional_prefix")


@dataclass
class RealtimeGrid:
    """The real-time comparison (``preset=realtime``): ``delay_samplers`` under a fixed delay
    of each of ``delays`` control steps with each of ``transitions`` (0: the world pauses), and
    ``rate_samplers`` at each of ``rates`` Hz with their own latency measured on this machine
    (one env at a time, so the latency is one robot's)."""

    delays: list[int] = field(default_factory=lambda: [0, 1, 2, 4, 8])
    transitions: list[str] = field(default_factory=lambda: ["naive", "blend", "prefix"])
    delay_samplers: list[str] = field(default_factory=lambda: ["distributional-1", "ddim-10"])
    rates: list[float] = field(default_factory=lambda: [10.0, 50.0])
    rate_samplers: list[str] = field(
        default_factory=lambda: ["distributional-1", "distributional-2", "ddim-10", "ddpm-100"]
    )
    rate_episodes: int = 20


@dataclass
class BenchPreset:
    """One benchmark size.

    - ``tasks``: what ``task=all`` runs; ``task_settings``: per-task replacements of these
      fields (e.g. Push-T's steps, or its evaluation seeds ``eval_seed: 100000``).
    - ``models`` (see :data:`MODELS`) share the UNet ``network`` and ``steps``, and either the
      examples per step (``batch_size``: every model sees the same data; the compute per step of
      each is counted in FLOPs and reported) or, with ``batch_size`` null, the network rows per
      step (``batch_rows``); each is trained once per seed in ``seeds``.
    - ``samplers``: what to evaluate, as ``kind-steps[@option=value,...]`` strings (e.g.
      ``ddpm-100``, ``distributional-2@churn=1``); null runs the sweep: every NFE in ``nfe`` for
      DDPM/DDIM/conjugate (lambda tuned on ``val_episodes`` validation seeds over ``lambdas``)
      and distributional at each churn, plus the phase-space samplers for psld models.
    - ``priors``: alphas of truncated-diffusion priors fitted to the trained models (with
      ``prior_steps`` steps), each evaluated with distributional and DDIM at ``prior_nfe``.
    - ``curve_points``: checkpoints along each run evaluated on ``curve_episodes`` validation
      episodes (the convergence curve, with the validation loss).
    - ``state_obs``: the task's observation mode when the run asks for low-dim observations
      (``obs=state``), e.g. Push-T's ``keypoints`` (Diffusion Policy's low-dim observation).
    """

    tasks: list[str] = field(default_factory=lambda: ["obstacle_avoid", "block_push", "pick_place"])
    demos: int = 100
    network: str = "small"
    steps: int = 500
    batch_rows: int = 256
    batch_size: int | None = 256
    precision: str = "fp32"
    m: int = 4
    seeds: list[int] = field(default_factory=lambda: [0])
    models: list[str] = field(default_factory=lambda: ["ddpm", "distributional"])
    samplers: list[str] | None = None
    nfe: list[int] = field(default_factory=lambda: [1, 2, 4, 8, 16, 100])
    churns: list[float] = field(default_factory=lambda: [0.0, 1.0])
    lambdas: list[float] = field(
        default_factory=lambda: [-1.0, -0.5, -0.2, -0.1, 0.0, 0.1, 0.2, 0.5, 1.0]
    )
    lambdas_at_100: list[float] = field(default_factory=lambda: [-0.1, 0.0, 0.1])
    priors: list[float] = field(default_factory=list)
    prior_steps: int = 1000
    prior_nfe: list[int] = field(default_factory=lambda: [1, 2, 4])
    test_episodes: int = 50
    val_episodes: int = 20
    eval_seed: int | None = None
    curve_points: int = 0
    curve_episodes: int = 20
    threads: int | None = None
    state_obs: str = "state"
    image_size: int = 96
    crop_shape: list[int] | None = None
    num_workers: int = 0
    image: dict[str, Any] = field(default_factory=dict)
    task_settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    realtime: RealtimeGrid | None = None

    def __post_init__(self) -> None:
        bad = [m for m in self.models if m not in MODELS]
        if bad:
            raise ValueError(f"bench models {bad} unknown; choose from {list(MODELS)}")
        if self.batch_size is None and self.batch_rows % self.m:
            raise ValueError(f"batch_rows={self.batch_rows} must be a multiple of m={self.m}")
        if self.steps < 1 or not self.seeds:
            raise ValueError("a preset needs steps >= 1 and at least one seed")


@dataclass
class BenchRun:
    """``dpd bench``: ``task`` (all: the preset's tasks, one, or a comma list), ``preset``,
    ``obs`` (state | image), where results go (``output_dir``; a preset other than quick writes
    under ``output_dir/<preset>``) and where datasets and checkpoints are kept (reused by a
    re-run). ``jobs``: trainings at once, each in its own process (give each a torch thread
    with the preset's ``threads`` on a CPU; on one GPU they share it). ``report_only``: rewrite
    tables and plots from the stored results. ``train_only``: train (or finish) every run and
    stop; a later run without it evaluates them."""

    task: str = "all"
    preset: str = "quick"
    obs: str = "state"
    output_dir: str = "benchmarks/results"
    work_dir: str = "outputs/bench"
    device: str = "auto"
    workers: int = 2
    jobs: int = 1
    progress: bool = True
    report_only: bool = False
    train_only: bool = False
    presets: dict[str, BenchPreset] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.obs = OBS_ALIASES.get(self.obs, self.obs)


@dataclass
class DemoRun:
    """``dpd demo``: collect, train the distributional policy and the DDPM baseline on the same
    data (``steps`` of ``batch_size`` examples; the FLOPs each costs are reported), evaluate
    distributional-1/2 against DDPM-100 and DDIM-1, plot and film, on one task.
    ``curve_points`` checkpoints along each run are rolled out on ``curve_episodes`` validation
    seeds: the verdict says whether validation success had settled."""

    task: str = "obstacle_avoid"
    demos: int = 100
    steps: int = 800
    batch_size: int = 256
    m: int = 4
    network: str = "small"
    episodes: int = 50
    curve_points: int = 4
    curve_episodes: int = 20
    video_episodes: int = 3
    output_dir: str = "outputs/demo"
    workers: int = 2
    threads: int | None = None
    device: str = "auto"
    progress: bool = True
