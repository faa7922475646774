"""Everything about environments (installed as ``diffusion_policy_dist.envs``).

- :mod:`.registry`: the one task registry (built-in MuJoCo tasks with multimodal scripted
  experts; community tasks behind optional extras).
- :mod:`.spec`: env specs kept in datasets and checkpoints, ``make_env``, seed bases and the
  rules on what a file may make the package import.
- :mod:`.gym_adapter`: any gymnasium env as named observations plus a success flag.
- :mod:`.safe`: the wrapper that turns an env's failures into failed episodes.

Built-in tasks, each with two equally good strategies whose average fails:

- ``obstacle_avoid`` (``dpd/ObstacleAvoid-v0``): point mass passes an obstacle left or right.
- ``block_push`` (``dpd/BlockPush-v0``): pusher goes around a block left or right, then pushes it.
- ``pick_place`` (``dpd/PickPlace-v0``): gantry arm puts a cube in the left or the right bin.

Importing this package registers the built-in envs with gymnasium (``register_envs``).
"""

from __future__ import annotations

from .base import MujocoTaskEnv, SimulationUnstableError, TaskSpec
from .experts import ScriptedExpert, rollout_expert
from .gym_adapter import GymAdapter
from .registry import BUILTIN_TASKS, Task, get_task, register_envs, task_names
from .safe import FAILURE_REASONS, SafeEnv
from .spec import (
    EVAL_SEED_BASE,
    VALIDATION_SEED_BASE,
    Trust,
    UntrustedEnvError,
    gym_env_spec,
    make_env,
    migrate_spec,
    task_env_spec,
)

register_envs()

__all__ = [
    "BUILTIN_TASKS",
    "EVAL_SEED_BASE",
    "FAILURE_REASONS",
    "VALIDATION_SEED_BASE",
    "GymAdapter",
    "MujocoTaskEnv",
    "SafeEnv",
    "ScriptedExpert",
    "SimulationUnstableError",
    "Task",
    "TaskSpec",
    "Trust",
    "UntrustedEnvError",
    "get_task",
    "gym_env_spec",
    "make_env",
    "migrate_spec",
    "register_envs",
    "rollout_expert",
    "task_env_spec",
    "task_names",
]
