"""ObstacleAvoid: a planar point mass must reach a goal that sits behind a round obstacle.

The start, the obstacle and the goal are nearly collinear, so there are two equally good routes
(left or right of the obstacle) and their average runs straight into it. Touching the obstacle
ends the episode as a failure.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from .base import MujocoTaskEnv, TaskSpec

OBSTACLE_AVOID = TaskSpec(
    name="obstacle_avoid",
    env_id="dpd/ObstacleAvoid-v0",
    mode_names=("left", "right"),
    mode_probs=(0.5, 0.5),
    max_episode_steps=80,
    control_hz=10.0,
    action_dim=2,
    description=(
        "Planar point mass reaches a goal past a round obstacle; passing left or right are "
        "equally good, their average collides."
    ),
)

AGENT_RADIUS = 0.02
OBSTACLE_RADIUS = 0.08
GOAL_TOLERANCE = 0.02
# Initial-state ranges (x range, y range). Start and goal x vary by less than the obstacle radius,
# so a straight line from start to goal always hits the obstacle.
START_RANGE = ((-0.05, 0.05), (-0.25, -0.21))
GOAL_RANGE = ((-0.05, 0.05), (0.21, 0.25))
OBSTACLE_RANGE = ((-0.02, 0.02), (-0.02, 0.02))


class ObstacleAvoidEnv(MujocoTaskEnv):
    """Point mass to goal past an obstacle.

    state (6): agent xy, obstacle xy, goal xy. image obs: top view + agent xy (2).
    action (2): absolute target xy in [-0.3, 0.3]^2. info also has ``"collision"``.
    """

    task: ClassVar[TaskSpec] = OBSTACLE_AVOID
    xml_file: ClassVar[str] = "obstacle_avoid.xml"
    camera_name: ClassVar[str] = "top"
    state_dim: ClassVar[int] = 6
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
        self._obstacle_mocap = int(self.model.body_mocapid[self._body_id("obstacle")])
        self._goal_mocap = int(self.model.body_mocapid[self._body_id("goal")])
        self._collided = False

    # ------------------------------------------------------------------ privileged state

    @property
    def agent_xy(self) -> np.ndarray:
        """Agent position, shape [2] (the slide joints start at the world origin)."""
        return self.data.qpos[:2].copy()

    @property
    def obstacle_xy(self) -> np.ndarray:
        """Obstacle centre, shape [2]."""
        return self.data.mocap_pos[self._obstacle_mocap, :2].copy()

    @property
    def goal_xy(self) -> np.ndarray:
        """Goal centre, shape [2]."""
        return self.data.mocap_pos[self._goal_mocap, :2].copy()

    # ------------------------------------------------------------------ hooks

    def _sample_initial_state(self) -> None:
        rng = self.np_random

        def sample(r: tuple[tuple[float, float], tuple[float, float]]) -> np.ndarray:
            return np.array([rng.uniform(*r[0]), rng.uniform(*r[1])])

        start = sample(START_RANGE)
        self.data.mocap_pos[self._goal_mocap, :2] = sample(GOAL_RANGE)
        self.data.mocap_pos[self._obstacle_mocap, :2] = sample(OBSTACLE_RANGE)
        self.data.qpos[:2] = start
        # Start at rest, with the actuator already holding the start position.
        self.data.ctrl[:2] = start
        self._collided = False

    def _set_control(self, action: np.ndarray) -> None:
        self.data.ctrl[:2] = action

    def _state_vector(self) -> np.ndarray:
        return np.concatenate([self.agent_xy, self.obstacle_xy, self.goal_xy])

    def _agent_pos(self) -> np.ndarray:
        return self.agent_xy

    def _update_mode(self) -> None:
        agent, obstacle = self.agent_xy, self.obstacle_xy
        # The route is decided by the side the agent is on when it first draws level with the
        # obstacle centre; left (-x) is mode 0.
        if self.mode < 0 and agent[1] >= obstacle[1]:
            self.mode = 0 if agent[0] < obstacle[0] else 1
        gap = np.linalg.norm(agent - obstacle) - (AGENT_RADIUS + OBSTACLE_RADIUS)
        # 2 mm tolerance: the contact solver keeps a pressed agent a hair outside the surface.
        if gap < 0.002:
            self._collided = True

    def _is_success(self) -> bool:
        return (not self._collided) and bool(
            np.linalg.norm(self.agent_xy - self.goal_xy) < GOAL_TOLERANCE
        )

    def _is_failure(self) -> bool:
        return self._collided

    def _extra_info(self) -> dict[str, Any]:
        return {"collision": self._collided}
