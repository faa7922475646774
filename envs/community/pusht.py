"""Push-T (gym-pusht ``gym_pusht/PushT-v0``) as a two-mode task with a scripted expert.

A disc agent (radius 15) pushes a T-shaped block into a fixed goal pose on a 512 x 512 table.
The action is the absolute target of the agent's PD controller, at 10 Hz. The physics is
quasi-static: pymunk's damping 0 zeroes the block's velocity every substep, and the agent-block
contact has no friction, so a push moves the block along the contact normal only.

The T has no rotational symmetry, so it must turn by the angle error modulo a full turn, and
either way round reaches the goal: mode 0 ("cw") turns it clockwise as seen in rendered frames
(pymunk's angle increases: y points down on screen), mode 1 ("ccw") counter-clockwise. The
expert turns the T its mode's way, the long way round if need be; the two strategies are equally
valid, and their average (not turning) fails.

What the wrapper (:func:`make_env`) adds to gym-pusht, and why:

- Dict observations like the built-in tasks: ``{"state": float32[5]}`` (agent x, y, block x, y,
  block angle in [0, 2 pi)); ``{"agent_pos": float32[2], "keypoints": float32[18]}``, the
  agent and nine points of the T (:data:`KEYPOINTS`) in the table's pixels, which is Diffusion
  Policy's low-dim Push-T observation (20 numbers, continuous where the angle wraps from 2 pi to
  0); or ``{"image": uint8[S, S, 3], "agent_pos": float32[2]}`` rendered as Diffusion Policy
  does (the 512 px scene resized to S with OpenCV, no action marker);
- ``info["coverage"]`` (fraction of the goal T the block covers), ``info["is_success"]``
  (coverage >= 0.95 now), ``info["score"]`` (Diffusion Policy's Push-T score of the episode so
  far: the running max over steps of clip(coverage / 0.95, 0, 1), 0 at reset) and
  ``info["mode"]`` (the way the block turned, see :class:`TurnDirectionClassifier`; -1 until
  decided), on every reset and step;
- actions are clipped to [0, 512] (gym-pusht uses any action as the PD target);
- the episode terminates on success (as in gym-pusht) and is truncated after 300 steps.

``reset(seed=...)`` fully determines the initial state (gym-pusht samples it from the env's
``np_random``). Note that gym-pusht's sampler differs from Diffusion Policy's legacy one (a
``RandomState`` and a Gaussian angle), so the same seed does not give the same initial state as
in Diffusion Policy's evaluation (50 seeds from 100000).
"""

from __future__ import annotations

import math
import os
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..base import TaskSpec
from ..experts import ScriptedExpert, toward

# pygame prints a banner on import; gym-pusht imports it.
os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")

import gym_pusht  # noqa: F401  (registers gym_pusht/PushT-v0)

TASK = TaskSpec(
    name="pusht",
    env_id="gym_pusht/PushT-v0",
    mode_names=("cw", "ccw"),
    mode_probs=(0.5, 0.5),
    max_episode_steps=300,
    control_hz=10.0,
    action_dim=2,
    description=(
        "A disc pushes a T-shaped block into a goal pose (gym-pusht); the expert turns the T "
        "clockwise or counter-clockwise, either of which works, while their average does not."
    ),
    obs_types=("state", "keypoints", "image"),
)

# ---------------------------------------------------------------------------- gym-pusht geometry
# Constants of gym-pusht 0.1.8 (checked against the live env by the expert's first reset).

WORKSPACE = 512.0  # actions and positions are pixels in [0, 512]
SUCCESS_COVERAGE = 0.95
AGENT_RADIUS = 15.0
# The T in its body frame: a 120 x 30 bar and a 30 x 90 stem below it; the body origin is the
# middle of the bar's outer edge. Rectangles as (x_min, y_min, x_max, y_max).
T_RECTS = np.array([[-60.0, 0.0, 60.0, 30.0], [-15.0, 30.0, 15.0, 120.0]])
T_OUTLINE = np.array(
    [[-60, 0], [60, 0], [60, 30], [15, 30], [15, 120], [-15, 120], [-15, 30], [-60, 30]], float
)
T_COG = np.array([0.0, 45.0])  # centre of gravity in the body frame
# The keypoint observation: the T's eight outline corners and its cog (body frame)
KEYPOINTS = np.concatenate([T_OUTLINE, T_COG[None]])
T_MASS = 1.0
T_MOMENT = 3000.0  # gym-pusht counts the bar's moment twice (its stem uses the bar's vertices)
T_REACH = 77.0  # every point of the T lies within this distance of its cog
WALL_INNER = (7.0, 504.0)  # the walls' inner faces (segments at 5 and 506, radius 2)
# Positions may leave [0, 512] a little: the PD-driven agent overshoots a target at the border
# (by < 70 px even at full speed), so the state bounds of the agent carry a margin.
AGENT_MARGIN = 128.0


def rotation(theta: float) -> np.ndarray:
    """2D rotation matrix, shape [2, 2]."""
    c, s = math.cos(theta), math.sin(theta)
    return np.array([[c, -s], [s, c]])


def wrap_angle(angle: float) -> float:
    """``angle`` wrapped into [-pi, pi)."""
    return (angle + math.pi) % (2.0 * math.pi) - math.pi


def distance_to_t(points: np.ndarray) -> np.ndarray:
    """Distance from body-frame points [..., 2] to the T (0 inside), shape [...]."""
    dist = np.full(points.shape[:-1], np.inf)
    for x0, y0, x1, y1 in T_RECTS:
        dx = np.maximum(np.maximum(x0 - points[..., 0], points[..., 0] - x1), 0.0)
        dy = np.maximum(np.maximum(y0 - points[..., 1], points[..., 1] - y1), 0.0)
        dist = np.minimum(dist, np.hypot(dx, dy))
    return dist


def coverage_score(coverage: float) -> float:
    """Diffusion Policy's per-step Push-T reward: clip(coverage / 0.95, 0, 1)."""
    return float(np.clip(coverage / SUCCESS_COVERAGE, 0.0, 1.0))


def keypoints(x: float, y: float, angle: float) -> np.ndarray:
    """World positions of :data:`KEYPOINTS` for a block at body origin (``x``, ``y``) (gym-pusht's
    block position) turned by ``angle``: float32[18], (x, y) per point."""
    world = np.array([x, y]) + KEYPOINTS @ rotation(angle).T
    return world.reshape(-1).astype(np.float32)


# ---------------------------------------------------------------------------- mode classifier


class TurnDirectionClassifier:
    """Which way the block turned, decided from its angle trajectory alone.

    The classifier integrates the block's rotation since reset (wrapped per step, so turns of
    any size count). The mode is fixed the first time the block has turned ``decide_angle``
    either way, or else at the end of the episode if it turned at least ``min_turn``: 0 ("cw",
    pymunk's angle increased) or 1 ("ccw"). Until then it is -1.
    """

    decide_angle = math.radians(90.0)  # beyond the incidental turning of a translating push
    min_turn = math.radians(2.0)  # below this (within the success tolerance) it is noise

    def __init__(self) -> None:
        self.turn = 0.0
        self.mode = -1
        self._last = 0.0

    def reset(self, angle: float) -> int:
        """Start a trajectory at block angle ``angle`` (radians); returns -1."""
        self.turn, self.mode, self._last = 0.0, -1, float(angle)
        return self.mode

    def update(self, angle: float, done: bool = False) -> int:
        """Add the block angle of the next step; ``done`` on the episode's last step."""
        self.turn += wrap_angle(float(angle) - self._last)
        self._last = float(angle)
        if self.mode < 0:
            threshold = self.min_turn if done else self.decide_angle
            if abs(self.turn) >= threshold:
                self.mode = 0 if self.turn > 0 else 1
        return self.mode


# ---------------------------------------------------------------------------- wrapper


def observation_space(obs_mode: str, image_size: int) -> spaces.Dict:
    """The wrapper's observation space for ``obs_mode`` (one of ``TASK.obs_types``)."""
    lo, hi = -AGENT_MARGIN, WORKSPACE + AGENT_MARGIN
    if obs_mode == "state":
        low = np.array([lo, lo, 0.0, 0.0, 0.0], np.float32)
        high = np.array([hi, hi, WORKSPACE, WORKSPACE, 2.0 * np.pi], np.float32)
        return spaces.Dict({"state": spaces.Box(low, high, dtype=np.float32)})
    if obs_mode == "keypoints":
        return spaces.Dict(
            {
                "agent_pos": spaces.Box(lo, hi, (2,), np.float32),
                "keypoints": spaces.Box(0.0, WORKSPACE, (2 * len(KEYPOINTS),), np.float32),
            }
        )
    return spaces.Dict(
        {
            "image": spaces.Box(0, 255, (image_size, image_size, 3), np.uint8),
            "agent_pos": spaces.Box(lo, hi, (2,), np.float32),
        }
    )


class PushTWrapper(gym.Wrapper):
    """gym-pusht with Dict observations and the info keys of the module docstring.

    ``env`` must be gym-pusht inside a ``TimeLimit`` (see :func:`make_env`); ``render()``
    returns the inner env's view (``uint8[S, S, 3]``, with a cross at the last action if S >= 96)
    or None when ``render_mode`` is None.
    """

    def __init__(
        self, env: gym.Env, obs_mode: str, render_mode: str | None, image_size: int
    ) -> None:
        super().__init__(env)
        self.obs_mode = obs_mode
        self._render_mode = render_mode
        self.observation_space = observation_space(obs_mode, image_size)
        self.classifier = TurnDirectionClassifier()
        self.score = 0.0

    @property
    def render_mode(self) -> str | None:
        return self._render_mode

    def _obs(self, obs: Any) -> dict[str, np.ndarray]:
        if self.obs_mode == "state":
            return {"state": np.asarray(obs, dtype=np.float32)}
        if self.obs_mode == "keypoints":
            state = np.asarray(obs, dtype=np.float64)
            return {"agent_pos": state[:2].astype(np.float32), "keypoints": keypoints(*state[2:])}
        return {
            "image": np.ascontiguousarray(obs["pixels"], dtype=np.uint8),
            "agent_pos": np.asarray(obs["agent_pos"], dtype=np.float32),
        }

    def _info(self, info: dict[str, Any], coverage: float, mode: int) -> dict[str, Any]:
        info = dict(info)
        info.update(
            coverage=float(coverage),
            is_success=bool(coverage >= SUCCESS_COVERAGE),
            score=float(self.score),
            mode=int(mode),
        )
        return info

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        obs, info = self.env.reset(seed=seed, options=options)
        base = self.env.unwrapped
        self.score = 0.0  # Diffusion Policy's score is a max over the rewards of steps only
        mode = self.classifier.reset(base.block.angle)
        return self._obs(obs), self._info(info, base._get_coverage(), mode)

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        # gym-pusht uses any action as the PD target; clip to the action box like the built-in
        # tasks, so that a policy's stray output cannot fling the agent off the table.
        action = np.clip(np.asarray(action, dtype=np.float32), 0.0, WORKSPACE)
        obs, _, terminated, truncated, info = self.env.step(action)
        coverage = float(info["coverage"])
        reward = coverage_score(coverage)
        self.score = max(self.score, reward)
        # gym-pusht terminates on coverage > 0.95; success here is >= 0.95, so end on either.
        terminated = bool(terminated or coverage >= SUCCESS_COVERAGE)
        done = terminated or bool(truncated)
        mode = self.classifier.update(self.env.unwrapped.block.angle, done=done)
        return self._obs(obs), reward, terminated, bool(truncated), self._info(info, coverage, mode)

    def render(self) -> np.ndarray | None:
        if self._render_mode is None:
            return None
        base = self.env.unwrapped
        size = base.visualization_width
        # gym-pusht draws a cross at the last action whose line width, int(size / 96), is 0 below
        # 96 px, which OpenCV rejects: smaller frames go without the cross.
        return base._get_img(base._draw(), width=size, height=size, render_action=size >= 96)


def make_env(
    obs_mode: str = "state", render_mode: str | None = None, image_size: int = 96
) -> gym.Env:
    """gym-pusht with the task's time limit (300 steps) inside :class:`PushTWrapper`.

    ``image_size`` (S) sets the image observation and the ``render()`` frames, S x S pixels.
    """
    if obs_mode not in TASK.obs_types:
        raise ValueError(f"{TASK.name}: obs_mode must be one of {TASK.obs_types}, got {obs_mode!r}")
    if render_mode not in (None, "rgb_array"):
        raise ValueError(
            f"{TASK.name}: render_mode must be None or 'rgb_array', got {render_mode!r}"
        )
    if int(image_size) < 16:
        raise ValueError(f"{TASK.name}: image_size must be >= 16, got {image_size}")
    size = int(image_size)
    env = gym.make(
        TASK.env_id,
        obs_type="pixels_agent_pos" if obs_mode == "image" else "state",
        # gym-pusht renders pixel observations only in rgb_array mode; rendering costs nothing
        # until asked for.
        render_mode="rgb_array",
        observation_width=size,
        observation_height=size,
        visualization_width=size,
        visualization_height=size,
        max_episode_steps=TASK.max_episode_steps,
        # our wrapper changes the spaces; the inner env's float64 spaces would only warn
        disable_env_checker=True,
    )
    return PushTWrapper(env, obs_mode, render_mode, size)


# ---------------------------------------------------------------------------- expert model
# A push on a frictionless point contact of a quasi-static block moves the block along one
# fixed body-frame twist per unit push (the contact point's normal speed is 1), so pushing one
# contact for a distance s moves the block along a circular arc. The expert scores every contact
# by the best pose on its arc; the tables below hold those arcs, which do not depend on the state.


def _contact_table(spacing: float, approach: float) -> tuple[np.ndarray, ...]:
    """Candidate contacts on the T's outline (body frame), ``spacing`` px apart.

    Returns points [N, 2], outward normals [N, 2] and the block's twist per unit push [N, 3]
    (cog velocity in the body frame, angular velocity). A contact is kept only if the agent can
    come in along the normal from ``approach`` px away without touching the T elsewhere (this
    drops the concave corners under the bar).
    """
    points, normals = [], []
    for a, b in zip(T_OUTLINE, np.roll(T_OUTLINE, -1, axis=0)):
        length = float(np.linalg.norm(b - a))
        tangent = (b - a) / length
        for s in np.arange(spacing / 2.0, length, spacing):
            points.append(a + s * tangent)
            normals.append([tangent[1], -tangent[0]])
    pts, nrm = np.array(points), np.array(normals)
    nrm[distance_to_t(pts + nrm) == 0.0] *= -1.0  # make every normal point outwards
    keep = np.ones(len(pts), bool)
    for d in np.linspace(AGENT_RADIUS + 0.5, AGENT_RADIUS + approach, 20):
        keep &= distance_to_t(pts + d * nrm) >= AGENT_RADIUS + 0.25
    pts, nrm = pts[keep], nrm[keep]
    lever = pts - T_COG
    push = -nrm  # the agent pushes along the inward normal
    cross = lever[:, 0] * push[:, 1] - lever[:, 1] * push[:, 0]
    impulse = 1.0 / (1.0 / T_MASS + cross**2 / T_MOMENT)
    twist = np.column_stack([impulse[:, None] * push / T_MASS, impulse * cross / T_MOMENT])
    return pts, nrm, twist


def _arc_table(twist: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, ...]:
    """Block motion after pushing each contact by each length: the cog's displacement (x [N, K]
    and y [N, K], in the body frame of the start pose) and the rotation [N, K]."""
    vx, vy, omega = (twist[:, k : k + 1] for k in range(3))
    angle = omega * lengths[None]
    small = np.abs(omega) < 1e-9
    safe = np.where(small, 1.0, omega)
    # Integral of the rotated body velocity: sin(wt)/w and (1 - cos(wt))/w, limits for w -> 0.
    along = np.where(small, lengths[None], np.sin(angle) / safe)
    across = np.where(small, 0.0, (1.0 - np.cos(angle)) / safe)
    return along * vx - across * vy, across * vx + along * vy, angle


CONTACT_SPACING = 4.0  # px between candidate contacts (~100 of them)
APPROACH = 35.0  # px: the agent comes in along the contact normal from this far out
CONTACTS, NORMALS, TWISTS = _contact_table(CONTACT_SPACING, APPROACH)
# Push lengths, denser near 0 where the final adjustments need precision; 300 px of push is
# more than a full turn of the T.
PUSH_LENGTHS = 300.0 * np.linspace(0.0, 1.0, 49) ** 2
ARC_DX, ARC_DY, ARC_TURN = _arc_table(TWISTS, PUSH_LENGTHS)
# Where the agent's centre is when it touches each contact, relative to the cog (body frame).
TOUCH = CONTACTS + NORMALS * AGENT_RADIUS - T_COG


def _check_geometry(env: Any) -> None:
    """Fail loudly if the gym-pusht version in use builds a different agent or T."""
    radius = next(iter(env.agent.shapes)).radius
    cog = tuple(env.block.center_of_gravity)
    if (
        abs(radius - AGENT_RADIUS) > 1e-6
        or np.abs(np.subtract(cog, T_COG)).max() > 1e-6
        or abs(env.block.moment - T_MOMENT) > 1e-6
        or abs(env.block.mass - T_MASS) > 1e-9
    ):
        raise RuntimeError(
            f"{TASK.name}: gym-pusht's geometry changed (agent radius {radius}, cog {cog}, "
            f"moment {env.block.moment}); the expert's model expects gym-pusht 0.1.8"
        )


def _t_corners(cx: np.ndarray, cy: np.ndarray, angle: np.ndarray) -> tuple[np.ndarray, ...]:
    """World x and y [..., 8] of the T's outline corners for cog ``cx``, ``cy`` and ``angle``."""
    c, s = np.cos(angle)[..., None], np.sin(angle)[..., None]
    rel = T_OUTLINE - T_COG
    x = cx[..., None] + c * rel[:, 0] - s * rel[:, 1]
    return x, cy[..., None] + s * rel[:, 0] + c * rel[:, 1]


def _arc_feasible(cx: np.ndarray, cy: np.ndarray, angle: np.ndarray) -> np.ndarray:
    """Whether each arc pose (cog ``cx``, ``cy`` and ``angle``, all [N, K]; column 0 is the pose
    now) keeps the T inside the walls and the pushing agent inside the action box; False from
    the first bad pose of an arc on."""
    ok = np.ones(cx.shape, bool)
    # Only poses whose cog is near a wall can fail: the T lies within T_REACH of its cog.
    near = (np.minimum(cx, WORKSPACE - cx) < T_REACH + 8.0) | (
        np.minimum(cy, WORKSPACE - cy) < T_REACH + 8.0
    )
    if near.any():
        # A T that already touches a wall may stay there, but go no further.
        x0, y0 = _t_corners(cx[0, 0], cy[0, 0], angle[0, 0])
        lo = min(WALL_INNER[0] + 1.0, float(x0.min()), float(y0.min()))
        hi = max(WALL_INNER[1] - 1.0, float(x0.max()), float(y0.max()))
        x, y = _t_corners(cx[near], cy[near], angle[near])
        inside = (x.min(1) >= lo) & (x.max(1) <= hi) & (y.min(1) >= lo) & (y.max(1) <= hi)
        c, s = np.cos(angle[near]), np.sin(angle[near])
        touch = TOUCH[np.nonzero(near)[0]]
        ax = cx[near] + c * touch[:, 0] - s * touch[:, 1]
        ay = cy[near] + s * touch[:, 0] + c * touch[:, 1]
        inside &= (ax > 0.0) & (ax < WORKSPACE) & (ay > 0.0) & (ay < WORKSPACE)
        ok[near] = inside
    ok = np.cumprod(ok, axis=1).astype(bool)
    ok[:, 0] = True  # not pushing is always possible
    return ok


# ---------------------------------------------------------------------------- expert


class PushTExpert(ScriptedExpert):
    """Turns the T its mode's way (0: clockwise on screen, 1: counter-clockwise) into the goal.

    A state-feedback law on the block pose. Every step it

    1. measures the pose error: the cog's offset from the goal's cog and the turn still to do,
       which goes the mode's way, the long way round if need be, unless the T is within ``band``
       of the goal angle (there an overshoot is corrected, not answered by a full turn);
    2. scores every contact of :data:`CONTACTS` by pushing it along its arc: the smallest error
       on the arc, sqrt(|cog error|^2 + (rho turn)^2), gives the push length s* and the gain,
       and the gain per step counts the travel to the contact, s* and a switching cost;
    3. keeps pushing its current contact while that still gains at ``keep`` times the best rate
       (hysteresis: switching contacts costs a trip round the T), else takes the best one;
    4. at the contact, pushes: the target is where the agent will be after pushing
       min(s*, ``push_max``) along the arc, a feed-forward that follows a turning T and slows
       down at the arc's best pose; elsewhere it travels to the contact's approach point, in a
       straight line if that is clear of the T, else via a point out along the contact's normal,
       else round the T on a circle;
    5. moves its target at most ``max_step`` px per step, as a teleoperator's hand would.

    Memory: the current contact and orbit direction (hysteresis), the last action (bounded
    steps) and one bit: if the T starts within ``band`` of the goal angle but on the other side
    of its mode's direction, the expert first turns it out of the band, so the mode always fixes
    the direction of the turn.
    """

    task = TASK
    rho = 61.0  # px per radian: 1 degree of angle error costs as much coverage as 1.07 px
    band = math.radians(90.0)  # angle errors below this are corrected the short way
    lead = 40.0  # px between agent and target while travelling (~20 px per step)
    gap = 6.0  # px between agent and T at a contact's approach point
    orbit_radius = 100.0  # px from the cog when going round the T (> T_REACH + agent radius)
    travel_speed = 20.0  # px per step while travelling, for the time estimate
    push_speed = 10.0  # px per step while pushing, for the time estimate
    switch_cost = 3.0  # steps lost when starting on a new contact
    keep = 0.6  # keep the current contact while its rate is at least this fraction of the best
    min_gain = 0.25  # px of error: a contact gaining less is done
    push_max = 20.0  # px of push asked for per step (the block then moves ~10 px per step)
    lateral_tol = 8.0  # px off the contact normal at which the agent still counts as there
    max_step = 20.0  # px: largest change of the action between steps

    def _plan(self, env: Any) -> None:
        _check_geometry(env)
        self.sign = 1.0 if self.mode == 0 else -1.0  # mode 0 increases pymunk's angle
        self.goal = np.asarray(env.goal_pose, dtype=np.float64)
        start = wrap_angle(self.goal[2] - env.block.angle)
        self._long_way = start * self.sign < 0 and abs(start) < self.band
        self.contact = -1
        self._orbit = 0.0
        self._last = np.array(env.agent.position, dtype=np.float64)

    def desired_turn(self, angle: float) -> float:
        """Turn (radians, + increases the angle) that brings the block to the goal angle."""
        short = wrap_angle(self.goal[2] - angle)
        full = short + self.sign * 2.0 * math.pi
        # The one bit ends once the T is out of the band, even if it was first pushed past the
        # goal: the turn then takes a little more than a full circle, but still the mode's way.
        if self._long_way and abs(short) >= self.band:
            self._long_way = False
        if self._long_way or (short * self.sign < 0 and abs(short) >= self.band):
            return full
        return short

    def _arc_errors(self, origin: np.ndarray, angle: float) -> tuple[np.ndarray, np.ndarray, float]:
        """Per contact: the best push length [N] and the error there [N] (inf for contacts the
        agent cannot reach); and the error now."""
        rot = rotation(angle)
        cog = origin + rot @ T_COG
        cx = cog[0] + rot[0, 0] * ARC_DX + rot[0, 1] * ARC_DY
        cy = cog[1] + rot[1, 0] * ARC_DX + rot[1, 1] * ARC_DY
        goal_cog = self.goal[:2] + rotation(self.goal[2]) @ T_COG
        turn = self.desired_turn(angle) - ARC_TURN
        err = np.sqrt((goal_cog[0] - cx) ** 2 + (goal_cog[1] - cy) ** 2 + (self.rho * turn) ** 2)
        now = float(err[0, 0])
        err = np.where(_arc_feasible(cx, cy, angle + ARC_TURN), err, np.inf)
        # The agent cannot come in from outside the action box (next to a wall, say).
        approach = origin + (CONTACTS + NORMALS * (AGENT_RADIUS + self.gap)) @ rot.T
        reachable = np.all((approach > 0.0) & (approach < WORKSPACE), axis=1)
        err[~reachable] = np.inf
        best = np.argmin(err, axis=1)
        return PUSH_LENGTHS[best], err[np.arange(len(err)), best], now

    def _clear(self, start: np.ndarray, end: np.ndarray) -> np.ndarray:
        """Whether the agent can move from ``start`` to ``end`` ([..., 2] body frame) without
        touching the T, shape [...]."""
        t = np.linspace(0.0, 1.0, 20)[:, None]
        path = start[..., None, :] + t * (end - start)[..., None, :]
        return distance_to_t(path).min(-1) >= AGENT_RADIUS + 0.25

    def _at_contact(self, agent: np.ndarray) -> np.ndarray:
        """Whether the agent (body frame) is in position to push each contact, shape [N]."""
        offset = agent - CONTACTS
        normal = np.sum(offset * NORMALS, axis=1)
        lateral = np.abs(offset[:, 0] * NORMALS[:, 1] - offset[:, 1] * NORMALS[:, 0])
        near = (normal > AGENT_RADIUS - 6.0) & (normal < AGENT_RADIUS + self.gap + 4.0)
        return near & (lateral < self.lateral_tol)

    def _travel(self, agent: np.ndarray) -> np.ndarray:
        """Estimated path length [N] from the agent (body frame) to each contact."""
        approach = CONTACTS + NORMALS * (AGENT_RADIUS + self.gap)
        staging = CONTACTS + NORMALS * (AGENT_RADIUS + self.gap + APPROACH)
        direct = np.linalg.norm(approach - agent, axis=1)
        rel, rel_staging = agent - T_COG, staging - T_COG
        bearing = np.arctan2(rel_staging[:, 1], rel_staging[:, 0]) - math.atan2(rel[1], rel[0])
        arc = np.abs(np.angle(np.exp(1j * bearing))) * self.orbit_radius
        around = arc + abs(float(np.linalg.norm(rel)) - self.orbit_radius) + APPROACH
        clear = self._clear(np.broadcast_to(agent, approach.shape), approach)
        travel = np.where(clear, direct, np.maximum(direct, around))
        # A pushing agent touches the T, so no path from it is "clear"; it needs no travel.
        return np.where(self._at_contact(agent), 0.0, travel)

    def _choose(self, agent: np.ndarray, length: np.ndarray, err: np.ndarray, now: float) -> int:
        """Index of the contact to work on (with hysteresis, see the class docstring)."""
        gain = now - err
        steps = self._travel(agent) / self.travel_speed + length / self.push_speed
        rate = gain / (steps + self.switch_cost)
        best = int(np.argmax(rate))
        cur = self.contact
        if cur < 0 or gain[cur] < self.min_gain or rate[cur] < self.keep * rate[best]:
            if cur != best:
                self._orbit = 0.0
            self.contact = best
        return self.contact

    def _approach(self, agent: np.ndarray, i: int) -> np.ndarray:
        """Travel target (body frame) on the way to contact ``i``'s approach point."""
        approach = CONTACTS[i] + NORMALS[i] * (AGENT_RADIUS + self.gap)
        staging = approach + NORMALS[i] * APPROACH
        for point in (approach, staging):
            if self._clear(agent, point):
                return toward(agent, point, self.lead)
        # Round the T on a circle about its cog, towards the staging point's bearing; the
        # direction is kept until the bearings nearly line up, so that it cannot dither.
        rel, rel_staging = agent - T_COG, staging - T_COG
        here = math.atan2(rel[1], rel[0])
        delta = wrap_angle(math.atan2(rel_staging[1], rel_staging[0]) - here)
        if self._orbit == 0.0 or abs(delta) < math.radians(150.0):
            self._orbit = 1.0 if delta > 0 else -1.0
        ahead = here + self._orbit * min(math.radians(35.0), abs(delta) + math.radians(10.0))
        carrot = T_COG + self.orbit_radius * np.array([math.cos(ahead), math.sin(ahead)])
        return toward(agent, carrot, self.lead)

    def _push_target(self, origin: np.ndarray, angle: float, i: int, length: float) -> np.ndarray:
        """Agent position (world) touching contact ``i`` after pushing it ``length`` px."""
        (dx,), (dy,), (turn,) = _arc_table(TWISTS[i : i + 1], np.array([length]))
        rot = rotation(angle)
        cog = origin + rot @ (T_COG + np.array([dx[0], dy[0]]))
        return cog + rotation(angle + turn[0]) @ TOUCH[i]

    def _act(self, env: Any) -> np.ndarray:
        agent = np.array(env.agent.position, dtype=np.float64)
        origin = np.array(env.block.position, dtype=np.float64)
        angle = float(env.block.angle)
        rot = rotation(angle)
        local = rot.T @ (agent - origin)
        length, err, now = self._arc_errors(origin, angle)
        i = self._choose(local, length, err, now)
        if self._at_contact(local)[i]:
            push = min(float(length[i]), self.push_max)
            target = self._push_target(origin, angle, i, push)
        else:
            target = origin + rot @ self._approach(local, i)
        target = np.clip(target, 0.0, WORKSPACE)
        step = target - self._last
        size = float(np.linalg.norm(step))
        if size > self.max_step:
            target = self._last + step * (self.max_step / size)
        self._last = target
        return target
