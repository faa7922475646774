"""How a command names an environment: a registry task, or any gymnasium env (``task=gym``
with ``env.*``), or a Python factory the user trusts (``task=python env.factory=...``).

Light on purpose (no simulator import): the training and command schemas hold these options;
:func:`env_spec` builds the spec that datasets and checkpoints store.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OBS_ALIASES = {"lowdim": "state"}  # the spelling of version 0.1


@dataclass
class EnvOptions:
    """A gymnasium env (``task=gym``): ``id``; ``obs_keys`` (Dict keys to keep, under their own
    names; ``flatten`` concatenates them into one ``state``); ``success_key`` (null:
    ``info["is_success"]``, else ``info["success"]``); ``module`` to import first (a package you
    trust); ``factory`` (``module:function``, with ``task=python``); ``kwargs`` for the env or
    the factory; ``mode_names``: names of the behaviour modes ``info["mode"]`` reports."""

    id: str | None = None
    obs_keys: list[str] | None = None
    flatten: bool = False
    success_key: str | None = None
    module: str | None = None
    factory: str | None = None
    kwargs: dict[str, Any] = field(default_factory=dict)
    max_episode_steps: int | None = None
    mode_names: list[str] | None = None


def env_spec(
    task: str | None,
    obs: str | None,
    env: EnvOptions,
    recorded: Mapping[str, Any] | None = None,
) -> dict[str, Any] | None:
    """The env spec a command names (``recorded``: the one a dataset or checkpoint holds, used
    when ``task`` is null; ``obs`` then switches a registry task's observations)."""
    from .envs.spec import gym_env_spec, migrate_spec, task_env_spec

    obs = OBS_ALIASES.get(obs, obs) if obs else None
    if task is None:
        if not recorded:
            return None
        spec = migrate_spec(recorded)
        if obs and spec.get("kind") == "task":
            spec = task_env_spec(spec["task"], obs, spec.get("image_size", 96))
        return spec
    if task == "gym":
        if not env.id:
            raise ValueError("task=gym needs env.id=<registered gymnasium id>")
        args = (env.obs_keys, env.success_key, env.module, env.kwargs, env.max_episode_steps)
        spec = gym_env_spec(env.id, *args, flatten=env.flatten)
        spec["mode_names"] = list(env.mode_names) if env.mode_names else None
        return spec
    if task == "python":
        if not env.factory:
            raise ValueError("task=python needs env.factory=<module:function>")
        names = list(env.mode_names) if env.mode_names else None
        return {
            "kind": "python",
            "factory": env.factory,
            "kwargs": dict(env.kwargs),
            "mode_names": names,
        }
    base = migrate_spec(recorded or {})
    image_size = base.get("image_size", 96) if base.get("task") == task else 96
    return task_env_spec(task, obs or base.get("obs", "state"), image_size)


def trust_of(env: EnvOptions, expert: str | None = None):
    """What the command line allows to be imported or called."""
    from .envs.spec import Trust

    factories = [f for f in (env.factory, expert) if f]
    return Trust(frozenset([env.module] if env.module else []), frozenset(factories))
