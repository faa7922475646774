"""The one task registry: every task the package can collect, train on and evaluate by name.

A :class:`Task` bundles a task's static description (:class:`TaskSpec`), how to build its env and
its scripted expert. Built-in MuJoCo tasks are always available; community tasks live in
``envs/community/`` and are imported only when asked for, because each needs an optional extra.

Tasks are resolved from names in our own code only: a dataset or a checkpoint can name a task,
never a module or a function to import.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass

import gymnasium as gym

from .base import MujocoTaskEnv, TaskSpec
from .block_push import BLOCK_PUSH, BlockPushEnv
from .experts import BlockPushExpert, ObstacleAvoidExpert, PickPlaceExpert, ScriptedExpert
from .obstacle_avoid import OBSTACLE_AVOID, ObstacleAvoidEnv
from .pick_place import PICK_PLACE, PickPlaceEnv


@dataclass(frozen=True)
class Task:
    """A task: ``make_env(obs, render_mode=None, image_size=96) -> gym.Env`` (Dict observations,
    ``info["is_success"]`` and ``info["mode"]`` every step) and ``expert(seed) -> ScriptedExpert``.
    ``extra`` names the pip extra a community task needs."""

    spec: TaskSpec
    make_env: Callable[..., gym.Env]
    expert: Callable[..., ScriptedExpert]
    extra: str | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    def make_expert(self, seed: int | None = None) -> ScriptedExpert:
        """The task's scripted expert; ``seed`` seeds its per-episode mode choice."""
        return self.expert(seed=seed)


def _builtin(spec: TaskSpec, env_cls: type[MujocoTaskEnv], expert: type[ScriptedExpert]) -> Task:
    def make_env(obs: str = "state", render_mode: str | None = None, image_size: int = 96):
        register_envs()
        return gym.make(spec.env_id, obs=obs, render_mode=render_mode, image_size=int(image_size))

    make_env.env_class = env_cls  # type: ignore[attr-defined]  (what register_envs registers)
    return Task(spec, make_env, expert)


_BUILTIN: dict[str, Task] = {
    t.name: t
    for t in (
        _builtin(OBSTACLE_AVOID, ObstacleAvoidEnv, ObstacleAvoidExpert),
        _builtin(BLOCK_PUSH, BlockPushEnv, BlockPushExpert),
        _builtin(PICK_PLACE, PickPlaceEnv, PickPlaceExpert),
    )
}

# name -> (our module defining ``TASK`` (a TaskSpec) and ``make_env``, its expert class, the pip
# extra it needs)
_COMMUNITY: dict[str, tuple[str, str, str]] = {
    "pusht": ("diffusion_policy_dist.envs.community.pusht", "PushTExpert", "pusht"),
    "fetch_push": ("diffusion_policy_dist.envs.community.fetch_push", "FetchPushExpert", "fetch"),
    "point_maze": ("diffusion_policy_dist.envs.community.point_maze", "PointMazeExpert", "fetch"),
}

BUILTIN_TASKS: tuple[str, ...] = tuple(_BUILTIN)


def task_names() -> list[str]:
    """Every task name, built-in first."""
    return [*_BUILTIN, *_COMMUNITY]


def get_task(name: str) -> Task:
    """The task called ``name``; a community task whose extra is missing gets a clear error."""
    if name in _BUILTIN:
        return _BUILTIN[name]
    if name not in _COMMUNITY:
        raise ValueError(f"unknown task {name!r}; tasks are {task_names()}")
    module, expert, extra = _COMMUNITY[name]
    try:
        mod = importlib.import_module(module)
        return Task(mod.TASK, mod.make_env, getattr(mod, expert), extra)
    except ImportError as e:
        raise ImportError(
            f"task {name!r} needs the {extra!r} extra ({e}); install it with "
            f"pip install -e '.[{extra}]'"
        ) from e


def register_envs() -> None:
    """Register the built-in tasks with gymnasium (``gym.make("dpd/ObstacleAvoid-v0")``);
    calling it again is a no-op."""
    for task in _BUILTIN.values():
        spec = task.spec
        if spec.env_id in gym.registry:
            continue
        cls = task.make_env.env_class  # type: ignore[attr-defined]
        gym.register(
            id=spec.env_id,
            entry_point=f"{cls.__module__}:{cls.__name__}",
            max_episode_steps=spec.max_episode_steps,
        )
