"""BlockPush: a planar disk pusher must push a square block onto a target disk.

The pusher starts below the block and the target lies between them, so the block has to be pushed
back towards the pusher's start: the pusher must first travel around the block, on its left or on
its right. Both detours are equally good; their average pushes the block straight away from the
target.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import MujocoTaskEnv, TaskSpec

BLOCK_PUSH = TaskSpec(
    name="block_push",
    env_id="dpd/BlockPush-v0",
    mode_names=("left", "right"),
    mode_probs=(0.5, 0.5),
    max_episode_steps=120,
    control_hz=10.0,
    action_dim=2,
    description=(
        "Disk pusher pushes a square block onto a target on its own side; it must go around the "
        "block on the left or the right, and their average pushes the block away."
    ),
)

PUSHER_RADIUS = 0.015
BLOCK_HALF = 0.04
TARGET_TOLERANCE = 0.02
BLOCK_RANGE = ((-0.05, 0.05), (0.02, 0.08))
BLOCK_YAW_RANGE = (-0.5, 0.5)
TARGET_RANGE = ((-0.05, 0.05), (-0.16, -0.12))
PUSHER_RANGE = ((-0.05, 0.05), (-0.26, -0.22))


class BlockPushEnv(MujocoTaskEnv):
    """Push a block onto a target.

    state (8): pusher xy, block xy, block (sin, cos) yaw, target xy.
    image obs: top view + pusher xy (2). action (2): absolute pusher target in [-0.3, 0.3]^2.
    """

    task: ClassVar[TaskSpec] = BLOCK_PUSH
    xml_file: ClassVar[str] = "block_push.xml"
    camera_name: ClassVar[str] = "top"
    state_dim: ClassVar[int] = 8
    agent_pos_dim: ClassVar[int] = 2
    action_low: ClassVar[tuple[float, ...]] = (-0.3, -0.3)
    action_high: ClassVar[tuple[float, ...]] = (0.3, 0.3)

    def __init__(
        self,
        obs: str = "state",
        render_mode: str | None = None,
        image_size: int = 96,
    ) -> None:
        super().__init__(obs=obs, render_mode=render_mode, image_size=image_size)
        self._target_mocap = int(self.model.body_mocapid[self._body_id("target")])
        self._block_adr = self._joint_qpos_adr("block_x")  # block_x, block_y, block_yaw follow

    # ------------------------------------------------------------------ privileged state

    @property
    def pusher_xy(self) -> np.ndarray:
        """Pusher position, shape [2]."""
        return self.data.qpos[:2].copy()

    @property
    def block_xy(self) -> np.ndarray:
        """Block centre, shape [2]."""
        return self.data.qpos[self._block_adr : self._block_adr + 2].copy()

    @property
    def block_yaw(self) -> float:
        """Block yaw in radians (the square looks the same every pi/2)."""
        return float(self.data.qpos[self._block_adr + 2])

    @property
    def target_xy(self) -> np.ndarray:
        """Target centre, shape [2]."""
        return self.data.mocap_pos[self._target_mocap, :2].copy()

    # ------------------------------------------------------------------ hooks

    def _sample_initial_state(self) -> None:
        rng = self.np_random

        def sample(r: tuple[tuple[float, float], tuple[float, float]]) -> np.ndarray:
            return np.array([rng.uniform(*r[0]), rng.uniform(*r[1])])

        pusher = sample(PUSHER_RANGE)
        self.data.qpos[:2] = pusher
        self.data.ctrl[:2] = pusher
        self.data.qpos[self._block_adr : self._block_adr + 2] = sample(BLOCK_RANGE)
        self.data.qpos[self._block_adr + 2] = rng.uniform(*BLOCK_YAW_RANGE)
        self.data.mocap_pos[self._target_mocap, :2] = sample(TARGET_RANGE)

    def _set_control(self, action: np.ndarray) -> None:
        self.data.ctrl[:2] = action

    def _state_vector(self) -> np.ndarray:
        yaw = self.block_yaw
        return np.concatenate(
            [self.pusher_xy, self.block_xy, [np.sin(yaw), np.cos(yaw)], self.target_xy]
        )

    def _agent_pos(self) -> np.ndarray:
        return self.pusher_xy

    def _update_mode(self) -> None:
        pusher, block = self.pusher_xy, self.block_xy
        # The detour is decided by the side the pusher is on when it first gets past the block
        # centre (in +y); left (-x) is mode 0.
        if self.mode < 0 and pusher[1] > block[1]:
            self.mode = 0 if pusher[0] < block[0] else 1

    def _is_success(self) -> bool:
        return bool(np.linalg.norm(self.block_xy - self.target_xy) < TARGET_TOLERANCE)

    def _extra_info(self) -> dict[str, Any]:
        return {"block_to_target": float(np.linalg.norm(self.block_xy - self.target_xy))}
