"""Scripted, multimodal experts for the three tasks, and a helper that records one demonstration.

Each expert picks a strategy ("mode") per episode with the task's ``mode_probs`` from its own
generator; everything else is deterministic. Actions are absolute position targets a bounded
distance ahead of the agent, so they change smoothly:

- obstacle_avoid and block_push use state-feedback laws: the action is a function of the
  current simulator state and the mode only, which keeps ~100 demonstrations enough to imitate
  and makes the expert correct drift the way a learned policy would need to;
- pick_place follows a "carrot" (a target that walks through waypoints at bounded speed, with
  holds while the gripper closes or opens) planned at reset.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import gymnasium as gym
import numpy as np

from .base import TaskSpec
from .block_push import BLOCK_HALF, BLOCK_PUSH, PUSHER_RADIUS, BlockPushEnv
from .obstacle_avoid import AGENT_RADIUS, OBSTACLE_AVOID, OBSTACLE_RADIUS, ObstacleAvoidEnv
from .pick_place import BIN_X, PICK_PLACE, PickPlaceEnv


@dataclass
class _Waypoint:
    point: np.ndarray  # target of the moving dimensions
    speed: float  # max carrot displacement per env step (metres)
    hold: int = 0  # env steps to wait once the carrot has arrived
    grip: float = -1.0  # gripper command while heading here (pick_place only)


class _Carrot:
    """A target point that walks through waypoints at bounded speed (the expert's action)."""

    def __init__(self, start: np.ndarray) -> None:
        self.pos = np.asarray(start, dtype=np.float64).copy()
        self.queue: list[_Waypoint] = []
        self.grip = -1.0
        self._held = 0

    def add(self, point: np.ndarray, speed: float, hold: int = 0, grip: float = -1.0) -> None:
        self.queue.append(_Waypoint(np.asarray(point, dtype=np.float64), speed, hold, grip))

    @property
    def done(self) -> bool:
        return not self.queue

    def advance(self) -> np.ndarray:
        """Move at most ``speed`` towards the current waypoint; return the new position."""
        if not self.queue:
            return self.pos.copy()
        wp = self.queue[0]
        self.grip = wp.grip
        delta = wp.point - self.pos
        dist = float(np.linalg.norm(delta))
        if dist > wp.speed:
            self.pos = self.pos + delta * (wp.speed / dist)
        else:
            self.pos = wp.point.copy()
            self._held += 1
            if self._held > wp.hold:
                self.queue.pop(0)
                self._held = 0
        return self.pos.copy()


class ScriptedExpert:
    """Base expert: owns the mode generator; subclasses plan and act from privileged state."""

    task: TaskSpec

    def __init__(self, seed: int | None = None) -> None:
        self.rng = np.random.default_rng(seed)
        self.mode = -1

    def reset(self, env: gym.Env, mode: int | None = None) -> int:
        """Choose this episode's mode (random with ``mode_probs`` unless forced) and plan."""
        if mode is None:
            mode = int(self.rng.choice(len(self.task.mode_probs), p=self.task.mode_probs))
        if not 0 <= mode < len(self.task.mode_names):
            raise ValueError(f"{self.task.name}: mode {mode} out of range")
        self.mode = int(mode)
        self._plan(env.unwrapped)
        return self.mode

    def act(self, env: gym.Env) -> np.ndarray:
        """Next action (float32, inside the action space) for the current state of ``env``."""
        base = env.unwrapped
        action = self._act(base)
        space = base.action_space
        return np.clip(action, space.low, space.high).astype(np.float32)

    def _plan(self, env: Any) -> None:
        raise NotImplementedError

    def _act(self, env: Any) -> np.ndarray:
        raise NotImplementedError


# ---------------------------------------------------------------------------- obstacle_avoid


def toward(pos: np.ndarray, target: np.ndarray, lead: float) -> np.ndarray:
    """Action of a feedback expert: a point at most ``lead`` from ``pos`` on the way to ``target``
    (any dimension; every scripted expert here steers with it).

    The position servo lags behind its target, so ``lead`` sets the travel speed (about
    ``lead`` / 0.2 s for the planar agents); the target itself is returned once within reach.
    """
    delta = target - pos
    dist = float(np.linalg.norm(delta))
    return target.copy() if dist <= lead else pos + delta * (lead / dist)


class ObstacleAvoidExpert(ScriptedExpert):
    """Heads for the obstacle, then swerves past it on the chosen side (0: left / -x, 1: right).

    Both modes share the approach to a point just in front of the obstacle and split only
    there, with a sharp sidestep. So the modes are indistinguishable until the split, and the
    average of the split (straight on) hits the obstacle within a few steps, before a policy
    that regresses to the mean could break the tie by feedback on its own small drift.

    A state-feedback law (no memory besides the mode): the subgoal is picked from the agent's
    progress in y, so a policy that drifts off the demonstrated path gets the corrective actions
    the expert would give.
    """

    task = OBSTACLE_AVOID
    lead = 0.03  # metres between agent and action; ~0.15 m/s travel
    split_gap = 0.04  # surface gap in front of the obstacle where the modes split
    lateral = 0.16  # x offset of the passing line from the obstacle centre
    flank = 0.06  # the passing segment runs from oy - flank to oy + flank
    switch = 0.02  # move on to the next subgoal this far (in y) before reaching it

    def _plan(self, env: ObstacleAvoidEnv) -> None:
        self.side = -1.0 if self.mode == 0 else 1.0

    def _act(self, env: ObstacleAvoidEnv) -> np.ndarray:
        agent = env.agent_xy
        ox, oy = env.obstacle_xy
        split_y = oy - OBSTACLE_RADIUS - AGENT_RADIUS - self.split_gap
        side_x = ox + self.side * self.lateral
        if agent[1] < split_y - self.switch:
            target = np.array([ox, split_y])
        elif agent[1] < oy - self.flank - self.switch:
            target = np.array([side_x, oy - self.flank])
        elif agent[1] < oy + self.flank - self.switch:
            target = np.array([side_x, oy + self.flank])
        else:
            target = env.goal_xy
        return toward(agent, target, self.lead)


# ---------------------------------------------------------------------------- block_push


def _support_distance(yaw: float, direction: np.ndarray, half: float) -> float:
    """Distance from a square's centre to its boundary along the unit vector ``direction``."""
    local = np.array(
        [
            np.cos(yaw) * direction[0] + np.sin(yaw) * direction[1],
            -np.sin(yaw) * direction[0] + np.cos(yaw) * direction[1],
        ]
    )
    # The ray leaves the square through the face its largest local component points at.
    return half / max(abs(local[0]), abs(local[1]))


class BlockPushExpert(ScriptedExpert):
    """Goes around the block on the chosen side (0: left / -x, 1: right / +x), then pushes it.

    A state-feedback law in the frame of the push axis ``u`` (block -> target): ``along`` is how
    far the pusher is behind the block (negative: between block and target), ``lat`` its offset
    from the axis. Subgoals: beside the block, behind it on the chosen side, on the axis behind
    it; once there, the action is a point just inside the block's back face, recomputed from the
    block pose every step, so a drifting or turning block is steered back onto the axis. If the
    pusher slips off the face it backs off to the axis and lines up again.
    """

    task = BLOCK_PUSH
    lead = 0.02  # metres between pusher and action while travelling (~0.2 m/s)
    side_clearance = 0.11  # lateral offset of the detour (> half-diagonal + pusher radius)
    front = 0.02  # the detour starts level with a point this far in front of the block centre
    standoff = 0.025  # gap between pusher and block while lining up behind it
    switch = 0.015  # move on to the next subgoal this far before reaching it
    align_tol = 0.015  # max |lat| for pushing
    push_step = 0.008  # progress asked for per step while pushing; slow keeps the block steady
    push_depth = 0.004  # extra depth inside the face so that the pusher keeps pressing

    def _plan(self, env: BlockPushEnv) -> None:
        self.side = -1.0 if self.mode == 0 else 1.0

    def _act(self, env: BlockPushEnv) -> np.ndarray:
        pusher, block = env.pusher_xy, env.block_xy
        to_target = env.target_xy - block
        remaining = float(np.linalg.norm(to_target))
        u = to_target / max(remaining, 1e-9)
        n = np.array([-u[1], u[0]])  # lateral axis; +x when pushing towards -y
        along, lat = float(-(pusher - block) @ u), float((pusher - block) @ n)
        contact = _support_distance(env.block_yaw, u, BLOCK_HALF) + PUSHER_RADIUS
        lineup = contact + self.standoff

        def point(a: float, l: float) -> np.ndarray:
            return block - a * u + l * n

        behind = along >= contact - 0.005
        if behind and abs(lat) < self.align_tol:
            return point(contact - min(remaining, self.push_step) - self.push_depth, 0.0)
        if along >= lineup - self.switch or (behind and abs(lat) < 0.5 * self.side_clearance):
            target = point(lineup, 0.0)
        elif along >= -self.front - self.switch:
            target = point(lineup, self.side * self.side_clearance)
        else:
            target = point(-self.front, self.side * self.side_clearance)
        return toward(pusher, target, self.lead)


# ---------------------------------------------------------------------------- pick_place


class PickPlaceExpert(ScriptedExpert):
    """Top grasp of the cube, lift, carry to the chosen bin (0: left, 1: right), lower, release."""

    task = PICK_PLACE
    speed = 0.02  # m per step in free space
    slow = 0.012  # m per step when descending onto the cube / into the bin
    hover = 0.08  # height of the approach point above the table
    carry = 0.13  # carrying height: cube bottom clears the 5 cm bin walls with margin
    release = 0.075  # end-effector height at release: cube bottom just below the bin rim

    def _plan(self, env: PickPlaceEnv) -> None:
        ox, oy, oz = env.object_pos
        bx = BIN_X[self.mode]
        self.carrot = _Carrot(env.eef_pos)
        open_, close = -1.0, 1.0
        self.carrot.add(np.array([ox, oy, self.hover]), self.speed, grip=open_)
        self.carrot.add(np.array([ox, oy, oz]), self.slow, hold=1, grip=open_)
        # Hold still while the fingers close (~0.3 s) before lifting.
        self.carrot.add(np.array([ox, oy, oz]), self.slow, hold=3, grip=close)
        self.carrot.add(np.array([ox, oy, self.carry]), self.speed, grip=close)
        self.carrot.add(np.array([bx, 0.0, self.carry]), self.speed, grip=close)
        self.carrot.add(np.array([bx, 0.0, self.release]), self.slow, grip=close)
        # Open and stay put; the env terminates with success once the cube rests in the bin.
        self.carrot.add(np.array([bx, 0.0, self.release]), self.slow, hold=100, grip=open_)

    def _act(self, env: PickPlaceEnv) -> np.ndarray:
        pos = self.carrot.advance()
        return np.array([*pos, self.carrot.grip])


# ---------------------------------------------------------------------------- recording


def rollout_expert(
    env: gym.Env, expert: ScriptedExpert, seed: int, max_steps: int | None = None
) -> dict[str, Any]:
    """Run one expert episode from ``env.reset(seed=seed)`` until termination or truncation.

    Returns ``{"obs": {key: [T, ...]}, "action": float32[T, Da], "success", "mode" (classified by
    the env), "expert_mode", "length": T}``; ``obs[t]`` is the observation ``action[t]`` was taken
    on. ``max_steps`` (default: the expert's task's ``max_episode_steps``, else no cut: the env's
    TimeLimit ends the episode) cuts an env that has no TimeLimit wrapper.
    """
    task = getattr(expert, "task", None)
    limit = max_steps or (task.max_episode_steps if task is not None else 1_000_000)
    obs, info = env.reset(seed=seed)
    expert_mode = expert.reset(env)
    observations: dict[str, list[np.ndarray]] = {k: [] for k in obs}
    actions: list[np.ndarray] = []
    for _ in range(limit):
        action = expert.act(env)
        for key, value in obs.items():
            observations[key].append(value)
        actions.append(action)
        obs, _, terminated, truncated, info = env.step(action)
        if terminated or truncated:
            break
    return {
        "obs": {k: np.stack(v) for k, v in observations.items()},
        "action": np.stack(actions).astype(np.float32),
        "success": bool(info.get("is_success", False)),
        "mode": int(info.get("mode", -1)),
        "expert_mode": -1 if expert_mode is None else int(expert_mode),
        "length": len(actions),
    }
