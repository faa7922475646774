"""FetchPush (gymnasium-robotics ``FetchPush-v4``) as a two-mode task with a scripted expert.

The robot pushes a 5 cm cube to a goal on the table. To push it the gripper has to get behind the
cube (on the far side from the goal), and it can go around the cube on either side: mode 0
("left") passes the cube on its left, mode 1 ("right") on its right, where left/right are seen
looking along the push direction cube -> goal. Both detours are collision-free arcs around the
cube (equally long when the gripper starts straight in front of it, one longer otherwise); their
average runs into the cube from the front and pushes it away from the goal.

What the wrapper (:func:`make_env`) changes, and why:

- observations keep the env's Dict keys (``observation`` [25], ``achieved_goal`` [3],
  ``desired_goal`` [3]) and their (infinite) bounds, cast to float32;
- ``info["is_success"]`` is a bool (the env reports a float32 0/1) and the episode terminates on
  the first success: FetchPush is a continuing task that never terminates by itself, and the
  built-in tasks of this package end on success too, so demonstrations stop when the job is done;
- ``info["mode"]`` classifies the side on which the gripper passed the cube (see
  :class:`PassSideClassifier`), -1 until the gripper first gets behind the cube;
- initial states are rejection-sampled from the env's own sampler, redraws continuing its seeded
  generator (so still determined by the reset seed; 1.3 draws on average): the cube must start
  at least ``MIN_PUSH_DISTANCE`` from the goal (22% of the env's draws do not; ~16% start within
  8 cm, i.e. (nearly) solved without any push), and the gripper must start in front of the cube,
  within ``MAX_START_ANGLE_DEG`` of the push direction (rejects another 3%), so that getting
  behind the cube means passing it on one side.
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import mujoco
import numpy as np
from gymnasium import spaces

from ..base import TaskSpec
from ..experts import ScriptedExpert, toward

ENV_KWARGS: dict[str, Any] = {}
TASK = TaskSpec(
    name="fetch_push",
    env_id="FetchPush-v4",
    mode_names=("left", "right"),
    mode_probs=(0.5, 0.5),
    max_episode_steps=100,
    control_hz=25.0,  # 1 / (0.002 s timestep x 20 substeps)
    action_dim=4,
    description=(
        "Fetch arm pushes a cube to a goal on the table; the gripper goes around the cube on its "
        "left or right to get behind it. Either detour works; their average hits the cube."
    ),
    obs_types=("state",),
)

MIN_PUSH_DISTANCE = 0.1  # metres between cube and goal at reset (success threshold: 0.05)
MAX_START_ANGLE_DEG = 75.0  # max angle between push direction and cube -> gripper at reset
MAX_RESET_TRIES = 1000

OBJECT_HALF = 0.025  # half side of the cube (geom size)
# Half extents in x and y of the closed fingers' footprint (the gripper keeps a fixed orientation).
GRIPPER_HALF = (0.015, 0.016)
ACTION_SCALE = 0.05  # metres of end-effector displacement per unit action (the env's constant)


# ---------------------------------------------------------------------------- geometry


def push_frame(
    gripper_xy: np.ndarray, object_xy: np.ndarray, goal_xy: np.ndarray
) -> tuple[float, float, np.ndarray, np.ndarray]:
    """Gripper position in the push frame of the cube.

    Returns ``(fwd, lat, u, n)``: ``u`` [2] is the unit push direction cube -> goal, ``n`` [2] its
    left normal (``u`` turned +90 degrees), ``fwd`` = (gripper - cube) . u (positive: between cube
    and goal) and ``lat`` = (gripper - cube) . n (positive: on the cube's left).
    """
    to_goal = np.asarray(goal_xy, dtype=np.float64) - object_xy
    u = to_goal / max(float(np.linalg.norm(to_goal)), 1e-9)
    n = np.array([-u[1], u[0]])
    rel = np.asarray(gripper_xy, dtype=np.float64) - object_xy
    return float(rel @ u), float(rel @ n), u, n


def cube_support(yaw: float, direction: np.ndarray, half: float = OBJECT_HALF) -> float:
    """Distance from the cube's centre to its boundary along the unit vector ``direction`` [2]."""
    c, s = math.cos(yaw), math.sin(yaw)
    local = (c * direction[0] + s * direction[1], -s * direction[0] + c * direction[1])
    return half / max(abs(local[0]), abs(local[1]))


def gripper_support(direction: np.ndarray) -> float:
    """Distance from the gripper's centre to its footprint's edge along ``direction`` [2]."""
    # The footprint is a nearly square, axis-aligned box: its support function is a good enough
    # stand-in for the ray distance at the 2 mm level.
    return GRIPPER_HALF[0] * abs(direction[0]) + GRIPPER_HALF[1] * abs(direction[1])


class FetchState:
    """Privileged state of the unwrapped Fetch env: gripper, cube pose and goal (metres)."""

    def __init__(self, env: Any) -> None:
        model = env.model
        self._env = env
        self._grip = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "robot0:grip")
        self._object = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_SITE, "object0")

    @property
    def gripper(self) -> np.ndarray:
        """Gripper (grip site) position, shape [3]."""
        return self._env.data.site_xpos[self._grip].copy()

    @property
    def object(self) -> np.ndarray:
        """Cube centre, shape [3]."""
        return self._env.data.site_xpos[self._object].copy()

    @property
    def object_yaw(self) -> float:
        """Rotation of the cube about the vertical axis (radians)."""
        mat = self._env.data.site_xmat[self._object].reshape(3, 3)
        return math.atan2(mat[1, 0], mat[0, 0])

    @property
    def goal(self) -> np.ndarray:
        """Goal position, shape [3]."""
        return np.asarray(self._env.goal, dtype=np.float64).copy()


# ---------------------------------------------------------------------------- mode classifier


class PassSideClassifier:
    """Which side of the cube the gripper passed, decided from the trajectory alone.

    The gripper starts in front of the cube (``fwd`` > 0, guaranteed by the reset). The mode is
    fixed the first time it crosses the line through the cube perpendicular to the push
    direction (``fwd`` <= 0): 0 ("left") if it is on the cube's left then (``lat`` > 0), else 1.
    """

    def __init__(self) -> None:
        self.mode = -1

    def reset(self) -> int:
        """Forget the episode; returns the undecided mode -1."""
        self.mode = -1
        return self.mode

    def update(self, gripper_xy: np.ndarray, object_xy: np.ndarray, goal_xy: np.ndarray) -> int:
        """Feed the state after a step (xy positions, shape [2] each); returns the mode."""
        if self.mode < 0:
            fwd, lat, _, _ = push_frame(gripper_xy, object_xy, goal_xy)
            if fwd <= 0.0:
                self.mode = 0 if lat > 0.0 else 1
        return self.mode


def start_is_valid(obs: dict[str, np.ndarray]) -> bool:
    """Whether an initial observation needs a detour: cube far enough from the goal, gripper in
    front of the cube (within ``MAX_START_ANGLE_DEG`` of the push direction)."""
    gripper, cube = obs["observation"][:2], obs["achieved_goal"][:2]
    goal = obs["desired_goal"][:2]
    if np.linalg.norm(goal - cube) < MIN_PUSH_DISTANCE:
        return False
    fwd, lat, _, _ = push_frame(gripper, cube, goal)
    return math.degrees(math.atan2(abs(lat), fwd)) <= MAX_START_ANGLE_DEG


# ---------------------------------------------------------------------------- wrapper


def _float32_space(space: spaces.Dict) -> spaces.Dict:
    """The same Dict of Boxes (keys, shapes, bounds) with float32 dtype."""
    return spaces.Dict(
        {
            key: spaces.Box(
                box.low.astype(np.float32), box.high.astype(np.float32), box.shape, np.float32
            )
            for key, box in space.spaces.items()
        }
    )


class FetchPushWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """float32 Dict observations, bool ``is_success`` (terminating), ``mode`` and checked resets.

    See the module docstring. ``info["reset_tries"]`` says how many of the env's own initial
    states the reset drew before one passed :func:`start_is_valid`.
    """

    def __init__(self, env: gym.Env) -> None:
        # Recorded (no arguments) so that env.spec can rebuild the wrapped env.
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.observation_space = _float32_space(env.observation_space)
        self.classifier = PassSideClassifier()

    @staticmethod
    def _obs(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {key: np.asarray(value, dtype=np.float32) for key, value in obs.items()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset; the first draw uses ``seed``, redraws continue the env's seeded generator."""
        obs, info = self.env.reset(seed=seed, options=options)
        tries = 1
        while not start_is_valid(obs):
            if tries >= MAX_RESET_TRIES:
                raise RuntimeError(f"{TASK.name}: no valid initial state in {tries} draws")
            obs, info = self.env.reset(options=options)
            tries += 1
        # Reset infos carry no success flag; ask the env's own test (False after the checks).
        base = self.env.unwrapped
        success = bool(base._is_success(obs["achieved_goal"], obs["desired_goal"]))
        info = {
            **info,
            "is_success": success,
            "mode": self.classifier.reset(),
            "reset_tries": tries,
        }
        return self._obs(obs), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Step the env; terminate on its success signal and update the mode."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        success = bool(info["is_success"])
        mode = self.classifier.update(
            obs["observation"][:2], obs["achieved_goal"][:2], obs["desired_goal"][:2]
        )
        info = {**info, "is_success": success, "mode": mode}
        return self._obs(obs), float(reward), bool(terminated) or success, bool(truncated), info


def make_env(
    obs_mode: str = "state", render_mode: str | None = None, image_size: int = 96
) -> gym.Env:
    """``FetchPush-v4`` with the task's time limit inside :class:`FetchPushWrapper`.

    ``image_size`` only sets the size of ``render()`` frames (rgb_array); observations are state.
    """
    if obs_mode not in TASK.obs_types:
        raise ValueError(f"{TASK.name}: obs_mode must be one of {TASK.obs_types}, got {obs_mode!r}")
    import gymnasium_robotics

    gym.register_envs(gymnasium_robotics)
    kwargs: dict[str, Any] = dict(ENV_KWARGS)
    if render_mode is not None:
        kwargs.update(width=int(image_size), height=int(image_size))
    env = gym.make(
        TASK.env_id, **kwargs, max_episode_steps=TASK.max_episode_steps, render_mode=render_mode
    )
    return FetchPushWrapper(env)


# ---------------------------------------------------------------------------- expert


class FetchPushExpert(ScriptedExpert):
    """Arcs around the cube on the chosen side (0: left, 1: right), lines up behind it, pushes.

    A state-feedback law in the push frame of the cube (see :func:`push_frame`), recomputed every
    step from the cube pose, so a cube that turns or drifts while pushed is steered back:

    - in front of or beside the cube: follow a circle of ``detour_radius`` round the cube, in the
      mode's direction (left: counter-clockwise), towards the back of the cube;
    - behind it: go to the line-up point on the push axis, ``standoff`` behind the contact;
    - behind and on the axis: aim just inside the back face, ``push_step`` ahead, so the gripper
      keeps pressing; leaving the axis sends it back to the line-up point.

    Actions are end-effector displacements towards that target (``lead`` at most), at a fixed
    height, with the (blocked) gripper commanded closed. The only memory is a slew-rate limit on
    the displacement commands (``max_change`` per step), which turns the corners between phases
    into a few steps of smooth turning; the gripper velocity in the observation reflects it.
    """

    task = TASK
    lead = 0.03  # metres between gripper and target while travelling (~0.5 m/s)
    detour_radius = 0.085  # > half-diagonals of cube (0.035) and fingers (0.022) with margin
    arc_step = 0.5  # radians the circle target runs ahead of the gripper
    standoff = 0.02  # gap between gripper and cube while lining up
    switch = 0.015  # move on to the line-up point this far before reaching it
    align_tol = (0.004, 0.016)  # |lat| range over which pushing gives way to lining up
    push_step = 0.012  # progress asked for per step while pushing
    push_depth = 0.004  # extra depth inside the face so that the gripper keeps pressing
    max_change = 0.2  # max change of an action component from one step to the next
    push_z = 0.42  # grip-site height: finger tips ~1 mm above the table, fingers cover the cube

    def _plan(self, env: Any) -> None:
        self.side = 1.0 if self.mode == 0 else -1.0
        self._last = np.zeros(3)  # the arm starts at rest

    def _target_xy(self, state: FetchState) -> np.ndarray:
        """Where the gripper should go next, shape [2] (world xy)."""
        grip, cube, goal = state.gripper[:2], state.object[:2], state.goal[:2]
        fwd, lat, u, n = push_frame(grip, cube, goal)
        remaining = float(np.linalg.norm(goal - cube))

        def point(f: float, l: float) -> np.ndarray:
            return cube + f * u + l * n

        cube_half = cube_support(state.object_yaw, u)
        contact = cube_half + gripper_support(u)
        lineup = contact + self.standoff
        if fwd <= -lineup + self.switch or (
            fwd <= -cube_half and abs(lat) < 0.5 * self.detour_radius
        ):
            # Behind the cube: push on the axis (aim just inside the back face), back off to the
            # line-up point off it; the weight w moves continuously between the two, so a small
            # slip slows the push while the gripper re-centres instead of aborting it.
            w = float(np.clip((abs(lat) - self.align_tol[0]) / np.ptp(self.align_tol), 0.0, 1.0))
            push = -contact + min(remaining, self.push_step) + self.push_depth
            # Far off the axis with the fingers level with the cube, sliding sideways would drag
            # the cube along: back off straight first.
            level = fwd > -contact
            side_target = lat * float(np.clip(2.0 * w - 1.0, 0.0, 1.0)) if level else 0.0
            target = point((1.0 - w) * push - w * lineup, side_target)
            return toward(grip, target, self.lead)
        # In front of or beside the cube: round it on the circle, in the mode's direction while
        # in front, then the short way to its back (after a slip too).
        direction = self.side if fwd > 0.0 else math.copysign(1.0, lat)
        angle = math.atan2(lat, fwd) + direction * self.arc_step
        angle = min(angle, math.pi) if direction > 0 else max(angle, -math.pi)
        r = self.detour_radius
        target = point(r * math.cos(angle), r * math.sin(angle))
        return toward(grip, target, self.lead)

    def _act(self, env: Any) -> np.ndarray:
        state = FetchState(env)
        target = np.append(self._target_xy(state), self.push_z)
        grip = state.gripper
        raw = (target - grip) / ACTION_SCALE
        # Slew-rate limit: turns at the phase changes take a few steps instead of one jump.
        raw = self._last + np.clip(raw - self._last, -self.max_change, self.max_change)
        self._last = np.clip(raw, -1.0, 1.0)
        return np.append(self._last, -1.0)
