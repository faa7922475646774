"""Hydra composition: the config store, and command lines turned into validated config objects.

Every command's schema is a dataclass (defaults and validation live there, once); the registries
of schedules, losses and samplers become config groups (``sampler=ddim``), each option its own
dataclass, so ``sampler=ddim sampler.churn=1`` fails: DDIM takes no churn. The YAML files under
``configs/`` only pick presets (network sizes, the two policy kinds, benchmark presets).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

_REGISTERED = False


def _choice_groups() -> dict[str, dict[str, Any]]:
    """Config group -> option name -> dataclass instance, from the registries."""
    from ..diffusion.losses import LOSSES, KernelLoss
    from ..diffusion.processes import PROCESS_CONFIGS
    from ..diffusion.samplers import SAMPLERS

    losses = {name: cls() for name, cls in LOSSES.items() if name != "kernel"}
    losses.update(kernel_rbf=KernelLoss(kernel="rbf"), kernel_imq=KernelLoss(kernel="imq"))
    return {
        "schedule": {name: cls() for name, cls in PROCESS_CONFIGS.items()},
        "loss": losses,
        "sampler": {name: cls() for name, cls in SAMPLERS.items()},
    }


def _schemas() -> dict[str, Any]:
    from ..benchmarks.config import BenchRun, DemoRun
    from ..training.config import TrainRun
    from .schemas import (
        CollectRun,
        EvalRun,
        ExportLeRobotRun,
        ExportRun,
        ImportLeRobotRun,
        ImportRobomimicRun,
        InfoRun,
        TuneRun,
    )

    return {
        "train": TrainRun,
        "eval": EvalRun,
        "collect": CollectRun,
        "bench": BenchRun,
        "demo": DemoRun,
        "info": InfoRun,
        "repair": InfoRun,
        "tune": TuneRun,
        "export": ExportRun,
        "import-lerobot": ImportLeRobotRun,
        "export-lerobot": ExportLeRobotRun,
        "import-robomimic": ImportRobomimicRun,
    }


def register_configs() -> None:
    """Put every schema and group option in hydra's ConfigStore (once per process)."""
    global _REGISTERED
    if _REGISTERED:
        return
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    groups = _choice_groups()
    for command, cls in _schemas().items():
        node = OmegaConf.structured(cls)
        for group in groups:  # a default object is chosen by the defaults list instead
            if group in node and OmegaConf.is_config(node[group]):
                node[group] = "???"
        cs.store(name=f"{command}_schema", node=node)
    for group, options in groups.items():
        for name, obj in options.items():
            cs.store(group=group, name=name, node=obj)
    _REGISTERED = True


def _hydra_compose(command: str, overrides: Sequence[str]):
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_module("diffusion_policy_dist.configs", version_base=None):
        return compose(config_name=command, overrides=list(overrides))


def _override_value(v: Any) -> str:
    return "null" if v is None else json.dumps(v)


def checkpoint_sampler_overrides(overrides: Sequence[str]) -> list[str]:
    """For ``dpd eval`` without ``sampler=<kind>``: the checkpoint's default sampler, as
    overrides placed before the user's (so ``sampler.steps=2`` changes one of its settings)."""
    if any(o.split("=", 1)[0] == "sampler" for o in overrides):
        return []
    ckpt = next((o.split("=", 1)[1] for o in overrides if o.startswith("checkpoint=")), None)
    if not ckpt:
        return []
    from ..policy.config import to_dict
    from ..policy.diffusion_policy import sampler_options
    from ..training.checkpoint import read_meta

    try:
        sampler = sampler_options(read_meta(ckpt)["policy"]["sampler"])
    except Exception as e:  # without sampler.* overrides, the command reports it later
        if any(o.startswith("sampler.") for o in overrides):
            raise ValueError(
                f"sampler.* settings change the checkpoint's default sampler, but {ckpt} gives "
                f"none ({e}); pick a sampler with sampler=<kind>"
            ) from e
        return []
    values = to_dict(sampler)
    kind = values.pop("kind")
    return [f"sampler={kind}", *(f"sampler.{k}={_override_value(v)}" for k, v in values.items())]


def compose_config(command: str, overrides: Sequence[str]):
    """The composed, unvalidated DictConfig of ``command`` (what ``--cfg`` prints)."""
    overrides = list(overrides)
    if command == "eval":
        overrides = checkpoint_sampler_overrides(overrides) + overrides
    return _hydra_compose(command, overrides)


def compose(command: str, overrides: Sequence[str] = ()) -> Any:
    """The validated config object of ``command`` (``TrainRun``, ``EvalRun`` ...) for
    command-line style ``overrides``."""
    from omegaconf import OmegaConf

    return OmegaConf.to_object(compose_config(command, overrides))


def describe_error(e: BaseException) -> str:
    """One readable line for a composition error, with hydra's underlying cause."""
    text = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    cause = e.__cause__ or e.__context__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text
