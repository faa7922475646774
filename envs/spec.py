"""Env specs: the small JSON description of an environment kept in datasets and checkpoints.

A spec names registered things only, so evaluation can rebuild the env from a checkpoint alone
without running code the checkpoint chose::

    {"kind": "task", "task": "obstacle_avoid", "obs": "state", "image_size": 96, ...}
    {"kind": "gym", "env_id": "FetchReach-v4", "module": "gymnasium_robotics",
     "obs_keys": ["observation", "desired_goal"], "flatten": false, ...}

``kind: task`` is a task of the registry. ``kind: gym`` is any registered gymnasium id; its
``module`` (imported first, to register the id) must be a known env package or be trusted on the
command line. ``kind: python`` (``"factory": "module:function"``) is never run from a file: only
a factory the user named on the command line (:class:`Trust`) is called.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import gymnasium as gym

from .gym_adapter import GymAdapter
from .registry import get_task

# Evaluation seeds live far above collection seeds (collection refuses seeds >= EVAL_SEED_BASE);
# validation seeds (for tuning samplers) are disjoint from both.
EVAL_SEED_BASE = 1_000_000_000
VALIDATION_SEED_BASE = 2_000_000_000

# Env packages whose import registers their gymnasium ids; importing them is as safe as having
# installed them. Anything else must be named by the user on the command line.
KNOWN_ENV_MODULES = frozenset(
    {"gymnasium_robotics", "gym_pusht", "gym_aloha", "gym_xarm", "ale_py"}
)

SPEC_KINDS = ("task", "gym", "python")


class UntrustedEnvError(ValueError):
    """A spec (from a dataset or checkpoint) asks to import or call code nobody allowed."""


@dataclass(frozen=True)
class Trust:
    """What the user allowed on the command line: modules to import (``env.module=``) and env
    factories to call (``env.factory=module:function``)."""

    modules: frozenset[str] = frozenset()
    factories: frozenset[str] = frozenset()


def task_env_spec(task: str, obs: str = "state", image_size: int = 96) -> dict[str, Any]:
    """The spec of a registry task (``obs``: one of the task's observation types)."""
    t = get_task(task).spec
    if obs not in t.obs_types:
        raise ValueError(f"task {task!r} offers obs in {list(t.obs_types)}, got {obs!r}")
    return {
        "kind": "task",
        "task": task,
        "env_id": t.env_id,
        "obs": obs,
        "image_size": int(image_size),
        "max_episode_steps": t.max_episode_steps,
        "control_hz": t.control_hz,
        "mode_names": list(t.mode_names),
        "mode_probs": list(t.mode_probs),
    }


def gym_env_spec(
    env_id: str,
    obs_keys: list[str] | None = None,
    success_key: str | None = None,
    module: str | None = None,
    kwargs: Mapping[str, Any] | None = None,
    max_episode_steps: int | None = None,
    flatten: bool = False,
) -> dict[str, Any]:
    """The spec of a registered gymnasium env (see :class:`GymAdapter` for ``obs_keys`` and
    ``flatten``)."""
    return {
        "kind": "gym",
        "env_id": env_id,
        "module": module,
        "obs_keys": list(obs_keys) if obs_keys else None,
        "flatten": bool(flatten),
        "success_key": success_key,
        "kwargs": dict(kwargs or {}),
        "max_episode_steps": max_episode_steps,
        "control_hz": None,
        "mode_names": None,
    }


def migrate_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """A spec written by version 0.1 (``type``/``obs_mode``, ``dpd`` tasks, gym envs flattened
    into ``state``) in today's form; today's specs pass through unchanged."""
    s = dict(spec)
    if "type" in s and "kind" not in s:
        s["kind"] = {"dpd": "task"}.get(s["type"], s["type"])
        del s["type"]
        if s["kind"] == "gym":
            s.setdefault("flatten", True)  # 0.1's adapter always flattened into "state"
    if "obs_mode" in s:
        s["obs"] = {"lowdim": "state"}.get(s["obs_mode"], s["obs_mode"])
        del s["obs_mode"]
    return s


def spec_label(spec: Mapping[str, Any]) -> str:
    """A short name for messages: the task name, the gym id or the factory."""
    return str(spec.get("task") or spec.get("env_id") or spec.get("factory") or spec.get("kind"))


def check_trusted(spec: Mapping[str, Any], trust: Trust | None = None) -> None:
    """Raise :class:`UntrustedEnvError` (saying how to allow it) when building the env would
    import a module or call a factory that neither the package nor the user named."""
    spec, trust = migrate_spec(spec), trust or Trust()
    if spec.get("kind") == "python" and str(spec.get("factory")) not in trust.factories:
        factory = spec.get("factory")
        raise UntrustedEnvError(
            f"the env spec asks to call {factory!r}; a dataset or checkpoint never makes the "
            f"package run code. If you trust it, pass env.factory={factory} on the command line"
        )
    module = spec.get("module") if spec.get("kind") == "gym" else None
    if module and module not in KNOWN_ENV_MODULES and module not in trust.modules:
        raise UntrustedEnvError(
            f"env {spec.get('env_id')!r} needs module {module!r}, which is not a known env "
            f"package ({sorted(KNOWN_ENV_MODULES)}); a dataset or checkpoint never makes the "
            f"package import code. If you trust it, pass env.module={module} on the command line"
        )


def make_env(spec: Mapping[str, Any], render: bool = False, trust: Trust | None = None) -> gym.Env:
    """Build the env a spec describes. Imports only registry tasks, known env packages and what
    ``trust`` allows; raises :class:`UntrustedEnvError` (saying how to allow it) otherwise."""
    spec = migrate_spec(spec)
    check_trusted(spec, trust)
    kind = spec.get("kind")
    render_mode = "rgb_array" if render else None
    if kind == "task":
        task = get_task(spec["task"])
        return task.make_env(
            spec.get("obs", "state"), render_mode=render_mode, image_size=spec.get("image_size", 96)
        )
    if kind == "gym":
        return _make_gym(spec, render_mode)
    if kind == "python":
        module, _, fn = str(spec["factory"]).partition(":")
        return getattr(importlib.import_module(module), fn)(**dict(spec.get("kwargs") or {}))
    raise ValueError(f"unknown env spec kind {kind!r} (kinds: {SPEC_KINDS}) in {dict(spec)}")


def _make_gym(spec: Mapping[str, Any], render_mode: str | None) -> gym.Env:
    module = spec.get("module")
    if module:  # allowed by check_trusted
        mod = importlib.import_module(module)
        try:
            gym.register_envs(mod)
        except Exception:  # register_envs only exists to keep linters from pruning the import
            pass
    kwargs = dict(spec.get("kwargs") or {})
    if spec.get("max_episode_steps"):
        kwargs["max_episode_steps"] = int(spec["max_episode_steps"])
    if render_mode:
        kwargs["render_mode"] = render_mode
    env = gym.make(spec["env_id"], **kwargs)
    return GymAdapter(
        env, spec.get("obs_keys"), spec.get("success_key"), flatten=bool(spec.get("flatten"))
    )


def env_mismatch(
    obs_space: gym.Space, act_space: gym.Space, shape_meta: Mapping[str, Any]
) -> str | None:
    """Why an env cannot feed a policy with ``shape_meta`` (naming the key and both shapes), or
    None when it fits. Cameras may come HWC from the env and are CHW in shape_meta; a key defined
    as a slice (``source``, ``slice``) is checked against its source."""
    action_dim = int(shape_meta["action"]["shape"][0])
    if not isinstance(act_space, gym.spaces.Box) or act_space.shape != (action_dim,):
        return (
            f"action space {act_space} does not fit the policy's continuous actions of shape "
            f"({action_dim},)"
        )
    if not isinstance(obs_space, gym.spaces.Dict):
        return f"observation space {obs_space} is not a Dict of named observations"
    for key, spec in shape_meta["obs"].items():
        want = tuple(int(d) for d in spec["shape"])
        src = spec.get("source", key)
        if src not in obs_space.spaces:
            return (
                f"the policy needs observation {src!r} of shape {want}, the env provides "
                f"{sorted(obs_space.spaces)}"
            )
        got = tuple(obs_space.spaces[src].shape or ())
        if "slice" in spec:
            if len(got) != 1 or got[0] < spec["slice"][1]:
                return f"observation {src!r} has shape {got}; the policy takes {src}{spec['slice']}"
            continue
        hwc_ok = spec.get("type") == "rgb" and len(got) == 3 and (got[2], got[0], got[1]) == want
        if got != want and not hwc_ok:
            return f"observation {key!r} has shape {got}, the policy expects {want}"
    return None
