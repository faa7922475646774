"""The policy window: the one place where horizon, history and executed steps meet.

With ``To = n_obs_steps``, ``H = horizon`` and ``Ta = n_action_steps`` a training example is a
window of H steps starting at the first observed step ``t - To + 1``: observations fill its first
To steps and actions all H. At run time the executed actions are ``chunk[To-1 : To-1+Ta]``,
i.e. the actions from the current step t on. The dataset pads ``To-1`` steps before an episode
and ``Ta-1`` after it, so every executable step appears in some window.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class Window:
    """``horizon`` H: steps per predicted chunk; ``n_obs_steps`` To: observation history;
    ``n_action_steps`` Ta: actions executed per chunk."""

    horizon: int = 16
    n_obs_steps: int = 2
    n_action_steps: int = 8

    def __post_init__(self) -> None:
        for name in ("horizon", "n_obs_steps", "n_action_steps"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"window.{name} must be a positive integer, got {v!r}")
        if self.n_action_steps > self.horizon - self.n_obs_steps + 1:
            raise ValueError(
                f"window: n_action_steps={self.n_action_steps} must be <= "
                "horizon - n_obs_steps + 1 "
                f"= {self.horizon} - {self.n_obs_steps} + 1 = {self.horizon - self.n_obs_steps + 1}"
            )

    def check_divisible(self, levels: int) -> None:
        """The UNet halves the horizon per level: require ``horizon % 2**levels == 0``."""
        factor = 2**levels
        if self.horizon % factor:
            raise ValueError(
                f"window.horizon={self.horizon} must be divisible by 2**len(down_dims) = {factor} "
                f"(down_dims has {levels} levels); "
                f"try horizon={max(factor, self.horizon // factor * factor)}"
                f" or {(self.horizon // factor + 1) * factor}"
            )

    @property
    def action_start(self) -> int:
        return self.n_obs_steps - 1

    @property
    def action_end(self) -> int:
        return self.action_start + self.n_action_steps

    @property
    def pad_before(self) -> int:
        return self.n_obs_steps - 1

    @property
    def pad_after(self) -> int:
        return self.n_action_steps - 1

    def executed(self, chunk):
        """The executed part ``chunk[..., To-1 : To-1+Ta, :]`` of ``[B, H, Da]`` chunks."""
        return chunk[:, self.action_start : self.action_end]
