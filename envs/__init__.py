"""Simulated MuJoCo tasks with multimodal scripted experts (imported as diffusion_policy_dist.envs).

Three tasks, each with two equally good strategies whose average fails:

- ``obstacle_avoid`` (``dpd/ObstacleAvoid-v0``): point mass passes an obstacle left or right.
- ``block_push`` (``dpd/BlockPush-v0``): pusher goes around a block left or right, then pushes it.
- ``pick_place`` (``dpd/PickPlace-v0``): gantry arm puts a cube in the left or the right bin.

Importing this package registers the envs with gymnasium (see ``register_envs``).
"""

from __future__ import annotations

import gymnasium as gym

from .base import MujocoTaskEnv, SimulationUnstableError, TaskSpec
from .block_push import BLOCK_PUSH, BlockPushEnv
from .experts import ScriptedExpert, make_expert, rollout_expert
from .obstacle_avoid import OBSTACLE_AVOID, ObstacleAvoidEnv
from .pick_place import PICK_PLACE, PickPlaceEnv

TASKS: dict[str, TaskSpec] = {spec.name: spec for spec in (OBSTACLE_AVOID, BLOCK_PUSH, PICK_PLACE)}

ENV_CLASSES: dict[str, type[MujocoTaskEnv]] = {
    "obstacle_avoid": ObstacleAvoidEnv,
    "block_push": BlockPushEnv,
    "pick_place": PickPlaceEnv,
}


def register_envs() -> None:
    """Register all tasks with gymnasium; calling it again is a no-op."""
    for name, spec in TASKS.items():
        if spec.env_id in gym.registry:
            continue
        cls = ENV_CLASSES[name]
        gym.register(
            id=spec.env_id,
            entry_point=f"{cls.__module__}:{cls.__name__}",
            max_episode_steps=spec.max_episode_steps,
        )


def make_env(task_name: str, **kwargs: object) -> gym.Env:
    """``gymnasium.make`` by task name; kwargs: obs_mode, render_mode, image_size."""
    if task_name not in TASKS:
        raise KeyError(f"unknown task {task_name!r}; choose from {sorted(TASKS)}")
    register_envs()
    return gym.make(TASKS[task_name].env_id, **kwargs)


register_envs()

__all__ = [
    "ENV_CLASSES",
    "TASKS",
    "BlockPushEnv",
    "MujocoTaskEnv",
    "ObstacleAvoidEnv",
    "PickPlaceEnv",
    "ScriptedExpert",
    "SimulationUnstableError",
    "TaskSpec",
    "make_env",
    "make_expert",
    "register_envs",
    "rollout_expert",
]
