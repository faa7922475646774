"""PickPlace: a gantry arm picks a cube from the middle of the table and puts it in a bin.

Either bin counts as success, and the two bins sit symmetrically left and right of the cube, so
the average of the two strategies carries the cube to the middle of the table, between the bins.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import MujocoTaskEnv, TaskSpec

PICK_PLACE = TaskSpec(
    name="pick_place",
    env_id="dpd/PickPlace-v0",
    mode_names=("left_bin", "right_bin"),
    mode_probs=(0.5, 0.5),
    max_episode_steps=100,
    control_hz=10.0,
    action_dim=4,
    description=(
        "Cartesian arm with a parallel gripper picks a cube and places it in the left or the "
        "right bin; their average puts it back between the bins."
    ),
)

CUBE_HALF = 0.02
BIN_X = (-0.2, 0.2)  # bin centres (y = 0), index = mode
BIN_INNER_HALF = 0.06
BIN_WALL_HEIGHT = 0.05
FINGER_OPEN = 0.045  # finger joint target for gripper command -1 (inner faces 9 cm apart)
FINGER_CLOSED = 0.0  # target for +1; inside the cube, so a grasp squeezes
RELEASED_OPENING = 0.03  # per-finger opening above which the cube is surely not held
OBJECT_RANGE = ((-0.05, 0.05), (-0.06, 0.06))
EEF_START_RANGE = ((-0.06, 0.06), (-0.08, 0.0), (0.10, 0.14))


class PickPlaceEnv(MujocoTaskEnv):
    """Pick a cube, place it in either bin.

    state (7): end-effector xyz, finger opening (metres per finger), cube xyz.
    image obs: front oblique view + agent_pos (4) = end-effector xyz, finger opening.
    action (4): absolute end-effector target xyz, gripper command in [-1 open, +1 close].
    """

    task: ClassVar[TaskSpec] = PICK_PLACE
    xml_file: ClassVar[str] = "pick_place.xml"
    camera_name: ClassVar[str] = "front"
    state_dim: ClassVar[int] = 7
    agent_pos_dim: ClassVar[int] = 4
    action_low: ClassVar[tuple[float, ...]] = (-0.3, -0.2, 0.01, -1.0)
    action_high: ClassVar[tuple[float, ...]] = (0.3, 0.2, 0.25, 1.0)

    def __init__(
        self,
        obs: str = "state",
        render_mode: str | None = None,
        image_size: int = 96,
    ) -> None:
        super().__init__(obs=obs, render_mode=render_mode, image_size=image_size)
        self._eef_adr = self._joint_qpos_adr("gantry_x")  # x, y, z are consecutive
        self._finger_adr = (
            self._joint_qpos_adr("finger_left"),
            self._joint_qpos_adr("finger_right"),
        )
        self._object_adr = self._joint_qpos_adr("object")  # free joint: xyz, quat

    # ------------------------------------------------------------------ privileged state

    @property
    def eef_pos(self) -> np.ndarray:
        """Point between the fingertips, shape [3]."""
        return self.data.qpos[self._eef_adr : self._eef_adr + 3].copy()

    @property
    def finger_opening(self) -> float:
        """Mean distance of the inner finger faces from the gripper centre (metres)."""
        return float(np.mean(self.data.qpos[list(self._finger_adr)]))

    @property
    def object_pos(self) -> np.ndarray:
        """Cube centre, shape [3]."""
        return self.data.qpos[self._object_adr : self._object_adr + 3].copy()

    # ------------------------------------------------------------------ hooks

    def _sample_initial_state(self) -> None:
        rng = self.np_random
        eef = np.array([rng.uniform(*r) for r in EEF_START_RANGE])
        obj = np.array([rng.uniform(*r) for r in OBJECT_RANGE])
        self.data.qpos[self._eef_adr : self._eef_adr + 3] = eef
        for adr in self._finger_adr:
            self.data.qpos[adr] = FINGER_OPEN
        self.data.qpos[self._object_adr : self._object_adr + 3] = [*obj, CUBE_HALF]
        self.data.qpos[self._object_adr + 3 : self._object_adr + 7] = [1.0, 0.0, 0.0, 0.0]
        self.data.ctrl[:] = [*eef, FINGER_OPEN, FINGER_OPEN]

    def _set_control(self, action: np.ndarray) -> None:
        # Gripper command g in [-1, 1] interpolates the finger targets linearly (open -> closed).
        finger = FINGER_OPEN + (action[3] + 1.0) * 0.5 * (FINGER_CLOSED - FINGER_OPEN)
        self.data.ctrl[:] = [action[0], action[1], action[2], finger, finger]

    def _state_vector(self) -> np.ndarray:
        return np.concatenate([self.eef_pos, [self.finger_opening], self.object_pos])

    def _agent_pos(self) -> np.ndarray:
        return np.concatenate([self.eef_pos, [self.finger_opening]])

    def _bin_of_object(self) -> int:
        """Index of the bin whose interior contains the cube centre, or -1."""
        pos = self.object_pos
        if pos[2] > BIN_WALL_HEIGHT + CUBE_HALF or abs(pos[1]) > BIN_INNER_HALF:
            return -1
        for i, bx in enumerate(BIN_X):
            if abs(pos[0] - bx) < BIN_INNER_HALF:
                return i
        return -1

    def _update_mode(self) -> None:
        # The mode is the first bin the cube is lowered into (it cannot get out again).
        if self.mode < 0:
            self.mode = self._bin_of_object()

    def _is_success(self) -> bool:
        # Resting on the bin floor and let go of; 5 mm slack for contact penetration/tilt.
        return (
            self._bin_of_object() >= 0
            and self.object_pos[2] < CUBE_HALF + 0.005
            and self.finger_opening > RELEASED_OPENING
        )

    def _extra_info(self) -> dict[str, Any]:
        return {"object_height": float(self.object_pos[2])}
