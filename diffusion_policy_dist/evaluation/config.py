"""Options of a closed-loop evaluation (the ``eval`` section of ``dpd eval``)."""

from __future__ import annotations

from dataclasses import dataclass

from ..control.transitions import check_transition, parse_latency
from ..envs import EVAL_SEED_BASE


@dataclass
class EvalConfig:
    """``episodes`` under seeds ``seed, seed+1, ...`` in ``n_envs`` parallel envs (``vector``:
    ``async`` runs each env in its own process, guarded by ``env_timeout_s`` per call;
    ``sync`` steps them in this process, faster for cheap envs but without hang protection).
    ``video``: record the first k episodes. ``rollout_threads``/``torch_threads``: torch CPU
    threads for the batched rollouts and for the batch-1 latency measurement (null: leave
    torch's setting; 1 by default, as env workers share the cores: see
    ``benchmarks/results/threads.md``). ``latency_trials``: timed batch-1 calls (0 skips the
    measurement).

    Real time: with ``control_hz`` the env keeps stepping at that rate while the policy thinks,
    for ``latency`` = ``measured`` (each call's own time), ``<x>ms`` or ``<k>steps``, and chunks
    change by ``transition`` (sync | naive | blend | prefix; ``blend_steps`` of overlap). ``sync``
    pauses the world for every chunk (the zero-delay reference)."""

    episodes: int = 50
    n_envs: int = 10
    seed: int = EVAL_SEED_BASE
    video: int = 0
    video_format: str = "gif"
    vector: str = "async"
    torch_threads: int | None = 1
    rollout_threads: int | None = 1
    latency_trials: int = 30
    policy_seed: int = 0
    env_timeout_s: float = 60.0
    progress: bool = True
    control_hz: float | None = None
    latency: str = "measured"
    transition: str = "sync"
    blend_steps: int = 2

    def __post_init__(self) -> None:
        self._check_realtime()
        if self.episodes < 1 or self.n_envs < 1:
            raise ValueError(
                f"eval.episodes and eval.n_envs must be >= 1, got {self.episodes}, {self.n_envs}"
            )
        if self.video < 0 or self.latency_trials < 0:
            raise ValueError("eval.video and eval.latency_trials must be >= 0")
        if self.vector not in ("async", "sync"):
            raise ValueError(f"eval.vector must be async or sync, got {self.vector!r}")
        if self.video_format not in ("gif", "mp4"):
            raise ValueError(f"eval.video_format must be gif or mp4, got {self.video_format!r}")
        for name in ("torch_threads", "rollout_threads"):
            v = getattr(self, name)
            if v is not None and v < 1:
                raise ValueError(f"eval.{name} must be >= 1 or null, got {v}")
        if not self.env_timeout_s > 0:
            raise ValueError(f"eval.env_timeout_s must be > 0, got {self.env_timeout_s}")

    def _check_realtime(self) -> None:
        check_transition(self.transition)
        parse_latency(self.latency)
        if self.control_hz is not None and not self.control_hz > 0:
            raise ValueError(f"eval.control_hz must be > 0 or null, got {self.control_hz}")
        if self.transition != "sync" and self.control_hz is None:
            raise ValueError(
                f"eval.transition={self.transition} needs a control rate: set eval.control_hz"
            )
        if self.blend_steps < 1:
            raise ValueError(f"eval.blend_steps must be >= 1, got {self.blend_steps}")
