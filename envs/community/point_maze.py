"""PointMaze (gymnasium-robotics ``PointMaze_UMaze-v3`` with our own map) as a two-mode task.

A force-actuated ball must cross a maze whose middle row is a wall with a gap at each end::

    1 1 1 1 1 1 1        row 1: start (or goal) row
    1 . . . . . 1
    1 . 1 1 1 . 1        row 2: the wall; gaps at (2, 1) "left" and (2, 5) "right"
    1 . . . . . 1        row 3: goal (or start) row
    1 1 1 1 1 1 1

Start and goal are in the top and bottom rows at mirrored columns ``c`` and ``6 - c``
(``c`` in 2, 3, 4) so that the route through the left gap and the route through the right gap
are exactly equally short (6 cells) in every episode; their average runs into the wall. Which
row holds the start and which column ``c`` are drawn per reset seed; the env adds its own
uniform +-0.25 m noise to both positions.

Mode 0 ("left", -x) passes the left gap, mode 1 ("right", +x) the right one.

What the wrapper (:func:`make_env`) changes, and why:

- observations keep the env's Dict keys (``observation`` [4]: x, y, vx, vy; ``achieved_goal``
  [2]; ``desired_goal`` [2]) and (infinite) bounds, cast to float32;
- ``ENV_KWARGS`` sets ``continuing_task=False``: the env then terminates by itself on success
  (ball within 0.45 m of the goal); by default PointMaze never terminates (and with
  ``reset_target=True`` would even move the goal once reached);
- ``info["is_success"]`` is a bool copied from the env's own ``info["success"]``;
- ``info["mode"]`` is the gap the ball went through first (:class:`GapClassifier`), -1 before;
- ``reset`` fills the env's ``options`` ``reset_cell`` / ``goal_cell`` (kept when the caller
  passes them) from a generator seeded by the reset seed.
"""

from __future__ import annotations

import math
from collections import deque
from collections.abc import Sequence
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from ..base import TaskSpec
from ..experts import ScriptedExpert

Cell = tuple[int, int]

MAZE_MAP: list[list[int]] = [
    [1, 1, 1, 1, 1, 1, 1],
    [1, 0, 0, 0, 0, 0, 1],
    [1, 0, 1, 1, 1, 0, 1],
    [1, 0, 0, 0, 0, 0, 1],
    [1, 1, 1, 1, 1, 1, 1],
]
# The gap cell each mode's routes pass through (row, column).
GAP_CELLS: tuple[Cell, ...] = ((2, 1), (2, 5))
START_COLUMNS = (2, 3, 4)  # the other end sits at column 6 - c: both routes are 6 moves long
END_ROWS = (1, 3)

ENV_KWARGS: dict[str, Any] = {
    "maze_map": MAZE_MAP,
    "continuing_task": False,
    "reset_target": False,
}
TASK = TaskSpec(
    name="point_maze",
    env_id="PointMaze_UMaze-v3",  # its entry point and defaults; the map comes from ENV_KWARGS
    mode_names=("left", "right"),
    mode_probs=(0.5, 0.5),
    max_episode_steps=300,
    control_hz=100.0,  # 1 / (0.01 s timestep x frame_skip 1)
    action_dim=2,
    description=(
        "Force-actuated ball crosses a maze whose middle wall has a gap at each end; the routes "
        "through the left and the right gap are equally short, their average hits the wall."
    ),
    obs_types=("state",),
)

_SEED_SALT = 0x6D617A65  # keeps the cell draw independent of the env's own noise stream


# ---------------------------------------------------------------------------- grid planning


def _free(grid: Sequence[Sequence[Any]], cell: Cell) -> bool:
    i, j = cell
    return 0 <= i < len(grid) and 0 <= j < len(grid[0]) and grid[i][j] != 1


def _neighbours(grid: Sequence[Sequence[Any]], cell: Cell) -> list[Cell]:
    i, j = cell
    steps = ((i - 1, j), (i + 1, j), (i, j - 1), (i, j + 1))
    return [c for c in steps if _free(grid, c)]


def bfs_distances(grid: Sequence[Sequence[Any]], start: Cell) -> dict[Cell, int]:
    """Steps (4-connected moves) from ``start`` to every reachable free cell (1 marks walls)."""
    dist = {start: 0}
    queue = deque([start])
    while queue:
        cell = queue.popleft()
        for nxt in _neighbours(grid, cell):
            if nxt not in dist:
                dist[nxt] = dist[cell] + 1
                queue.append(nxt)
    return dist


def shortest_routes(
    grid: Sequence[Sequence[Any]], start: Cell, goal: Cell, limit: int = 10_000
) -> list[list[Cell]]:
    """Every shortest 4-connected route from ``start`` to ``goal`` (lists of cells, both ends
    included); empty if the goal is unreachable. Raises if there are more than ``limit``."""
    start, goal = tuple(start), tuple(goal)
    dist = bfs_distances(grid, start)
    if goal not in dist:
        return []
    routes: list[list[Cell]] = []
    # Walk back from the goal through cells one step closer to the start each time.
    stack: list[list[Cell]] = [[goal]]
    while stack:
        partial = stack.pop()
        head = partial[-1]
        if head == start:
            routes.append(partial[::-1])
            if len(routes) > limit:
                raise ValueError(f"more than {limit} shortest routes from {start} to {goal}")
            continue
        stack.extend(
            [*partial, prev] for prev in _neighbours(grid, head) if dist.get(prev) == dist[head] - 1
        )
    return sorted(routes)


def route_mode(route: Sequence[Cell], gaps: Sequence[Cell] = GAP_CELLS) -> int:
    """Index of the first gap cell ``route`` passes through, -1 if none."""
    for cell in route:
        if tuple(cell) in gaps:
            return gaps.index(tuple(cell))
    return -1


# ---------------------------------------------------------------------------- mode classifier


def xy_to_cell(xy: np.ndarray, grid: Sequence[Sequence[Any]] = MAZE_MAP) -> Cell:
    """The (row, column) cell holding the point ``xy`` [2] (1 m cells, map centred at 0)."""
    rows, cols = len(grid), len(grid[0])
    return (math.floor(rows / 2 - float(xy[1])), math.floor(float(xy[0]) + cols / 2))


def cell_to_xy(cell: Cell, grid: Sequence[Sequence[Any]] = MAZE_MAP) -> np.ndarray:
    """Centre of the cell ``(row, column)``, shape [2] (inverse of :func:`xy_to_cell`)."""
    rows, cols = len(grid), len(grid[0])
    return np.array([cell[1] + 0.5 - cols / 2, rows / 2 - cell[0] - 0.5])


class GapClassifier:
    """The mode of a trajectory: the gap cell the ball enters first (-1 until it does)."""

    def __init__(self) -> None:
        self.mode = -1

    def reset(self) -> int:
        """Forget the episode; returns the undecided mode -1."""
        self.mode = -1
        return self.mode

    def update(self, xy: np.ndarray) -> int:
        """Feed the ball position [2] after a step; returns the mode."""
        if self.mode < 0:
            cell = xy_to_cell(xy)
            if cell in GAP_CELLS:
                self.mode = GAP_CELLS.index(cell)
        return self.mode


# ---------------------------------------------------------------------------- wrapper


def sample_cells(rng: np.random.Generator) -> tuple[Cell, Cell]:
    """A (start, goal) cell pair with two equally short routes: mirrored columns, opposite rows."""
    column = int(rng.choice(START_COLUMNS))
    start_row = int(rng.choice(END_ROWS))
    goal_row = END_ROWS[1] if start_row == END_ROWS[0] else END_ROWS[0]
    return (start_row, column), (goal_row, 6 - column)


class PointMazeWrapper(gym.Wrapper, gym.utils.RecordConstructorArgs):
    """float32 Dict observations, bool ``is_success``, ``mode`` and seeded start/goal cells.

    See the module docstring; ``info`` also has ``start_cell`` and ``goal_cell`` after a reset.
    """

    def __init__(self, env: gym.Env) -> None:
        # Recorded (no arguments) so that env.spec can rebuild the wrapped env.
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        self.observation_space = spaces.Dict(
            {
                key: spaces.Box(
                    box.low.astype(np.float32), box.high.astype(np.float32), box.shape, np.float32
                )
                for key, box in env.observation_space.spaces.items()
            }
        )
        self.classifier = GapClassifier()
        self._rng = np.random.default_rng()

    @staticmethod
    def _obs(obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {key: np.asarray(value, dtype=np.float32) for key, value in obs.items()}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
        """Reset with seeded start/goal cells (``options`` ``reset_cell``/``goal_cell`` win)."""
        if seed is not None:
            self._rng = np.random.default_rng([int(seed), _SEED_SALT])
        start, goal = sample_cells(self._rng)
        opts = dict(options or {})
        opts.setdefault("reset_cell", np.array(start))
        opts.setdefault("goal_cell", np.array(goal))
        obs, info = self.env.reset(seed=seed, options=opts)
        info = {
            **info,
            "is_success": bool(info.get("success", False)),
            "mode": self.classifier.reset(),
            "start_cell": tuple(int(v) for v in opts["reset_cell"]),
            "goal_cell": tuple(int(v) for v in opts["goal_cell"]),
        }
        return self._obs(obs), info

    def step(
        self, action: np.ndarray
    ) -> tuple[dict[str, np.ndarray], float, bool, bool, dict[str, Any]]:
        """Step the env; terminate on its success signal and update the mode."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        success = bool(info["success"])
        mode = self.classifier.update(obs["achieved_goal"])
        info = {**info, "is_success": success, "mode": mode}
        return self._obs(obs), float(reward), bool(terminated) or success, bool(truncated), info


def make_env(
    obs_mode: str = "state", render_mode: str | None = None, image_size: int = 96
) -> gym.Env:
    """Our maze on the ``PointMaze_UMaze-v3`` entry point, with the task's step limit as time
    limit, inside :class:`PointMazeWrapper`. ``image_size`` only sizes ``render()`` frames."""
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
    return PointMazeWrapper(env)


# ---------------------------------------------------------------------------- expert


class Polyline:
    """A piecewise-linear path through points [K, 2] with arc-length queries."""

    def __init__(self, points: np.ndarray) -> None:
        self.points = np.asarray(points, dtype=np.float64)
        seg = np.diff(self.points, axis=0)
        self.lengths = np.linalg.norm(seg, axis=1)
        self.cum = np.concatenate([[0.0], np.cumsum(self.lengths)])
        self.total = float(self.cum[-1])

    def project(self, p: np.ndarray, from_s: float = 0.0) -> float:
        """Arc length of the point of the path (at or after ``from_s``) closest to ``p`` [2]."""
        best_s, best_d = from_s, math.inf
        for k, length in enumerate(self.lengths):
            if self.cum[k + 1] < from_s or length <= 0.0:
                continue
            a = self.points[k]
            t = float(np.clip((p - a) @ (self.points[k + 1] - a) / length**2, 0.0, 1.0))
            s = max(self.cum[k] + t * length, from_s)
            d = float(np.linalg.norm(self.at(s) - p))
            if d < best_d:
                best_s, best_d = s, d
        return best_s

    def at(self, s: float) -> np.ndarray:
        """The point at arc length ``s`` (clamped to the path), shape [2]."""
        s = float(np.clip(s, 0.0, self.total))
        k = min(int(np.searchsorted(self.cum, s, side="right")) - 1, len(self.lengths) - 1)
        t = (s - self.cum[k]) / max(self.lengths[k], 1e-12)
        return self.points[k] + t * (self.points[k + 1] - self.points[k])


class PointMazeExpert(ScriptedExpert):
    """Plans on the maze grid, picks a shortest route of the chosen gap, follows it smoothly.

    At reset: all shortest routes from the ball's cell to the goal's cell (:func:`shortest_routes`),
    those through the mode's gap, one of them drawn with the expert's generator. The path is the
    ball's position, the centres of the route's inner cells and the goal. Each step: pure pursuit
    of a point ``lookahead`` ahead on the path at up to ``speed`` (less when the goal is near, so
    that it can brake), turned into a force by a velocity feedback (``gain``).
    """

    task = TASK
    speed = 2.5  # m/s cruise
    lookahead = 0.6  # metres ahead on the path that the ball heads for
    brake = 4.0  # m/s^2 planned deceleration towards the goal
    gain = 0.4  # action per m/s of velocity error (full force: ~24 m/s^2 on the 4.2 kg ball)

    def _plan(self, env: Any) -> None:
        grid = env.maze.maze_map
        ball, goal = env.data.qpos[:2].copy(), np.asarray(env.goal, dtype=np.float64)
        routes = shortest_routes(grid, xy_to_cell(ball, grid), xy_to_cell(goal, grid))
        family = [r for r in routes if route_mode(r) == self.mode]
        if not family:
            raise ValueError(
                f"{TASK.name}: no shortest route through the {TASK.mode_names[self.mode]} gap"
            )
        self.route = family[int(self.rng.integers(len(family)))]
        inner = [cell_to_xy(c, grid) for c in self.route[1:-1]]
        self.path = Polyline(np.array([ball, *inner, goal]))
        self._s = 0.0

    def _act(self, env: Any) -> np.ndarray:
        ball, vel = env.data.qpos[:2], env.data.qvel[:2]
        # Progress along the path never goes back, so the projection cannot jump to a parallel
        # corridor segment further on.
        self._s = self.path.project(ball, self._s)
        aim = self.path.at(self._s + self.lookahead)
        to_aim = aim - ball
        dist = float(np.linalg.norm(to_aim))
        remaining = dist + self.path.total - min(self._s + self.lookahead, self.path.total)
        v = min(self.speed, math.sqrt(2.0 * self.brake * remaining))
        desired = to_aim / max(dist, 1e-9) * v if dist > 1e-6 else np.zeros(2)
        return self.gain * (desired - vel)
