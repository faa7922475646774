"""``dpd``: the command-line entry point.

``dpd <command> [key=value ...]`` composes ``configs/<command>.yaml`` with Hydra overrides
(``group=option`` picks a config group option, ``a.b=v`` sets a value, ``+a.b=v`` adds one) and
runs the command. ``dpd <command> --cfg`` prints the composed config without running.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import Any

COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("diffusion_policy_dist.cli.commands:train", "train a policy on a zarr dataset"),
    "collect": (
        "diffusion_policy_dist.cli.commands:collect",
        "collect scripted-expert demos to zarr",
    ),
    "eval": (
        "diffusion_policy_dist.cli.commands:evaluate",
        "closed-loop evaluation of a checkpoint",
    ),
    "bench": (
        "diffusion_policy_dist.cli.commands:bench",
        "the sampler/NFE benchmark on built-in tasks",
    ),
    "demo": ("diffusion_policy_dist.cli.commands:demo", "collect, train, evaluate: the main job"),
    "import-robomimic": (
        "diffusion_policy_dist.cli.commands:import_robomimic",
        "convert a robomimic HDF5 file to zarr",
    ),
    "info": ("diffusion_policy_dist.cli.commands:info", "describe a checkpoint or a dataset"),
}

USAGE = """usage: dpd <command> [key=value ...] [--cfg]

commands:
{commands}

examples:
  dpd collect task=obstacle_avoid episodes=100 output=data/obstacle_avoid.zarr
  dpd train dataset.path=data/obstacle_avoid.zarr policy=distributional output_dir=outputs/oa
  dpd eval checkpoint=outputs/oa sampler=distributional sampler.steps=1 eval.episodes=50
  dpd demo
"""


def compose(command: str, overrides: Sequence[str]) -> dict[str, Any]:
    """The composed config of ``command`` as a plain dict (interpolations resolved)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    GlobalHydra.instance().clear()
    with initialize_config_module("diffusion_policy_dist.configs", version_base=None):
        cfg = hydra_compose(config_name=command, overrides=list(overrides))
    return OmegaConf.to_container(cfg, resolve=True)


def _load(target: str) -> Callable[[dict], Any]:
    import importlib

    module, fn = target.split(":")
    return getattr(importlib.import_module(module), fn)


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        width = max(map(len, COMMANDS))
        cmds = "\n".join(f"  {k:<{width}}  {v[1]}" for k, v in COMMANDS.items())
        print(USAGE.format(commands=cmds))
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"dpd: unknown command {command!r}; choose one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("MUJOCO_GL", "egl")
    show_cfg = "--cfg" in rest
    if "-h" in rest or "--help" in rest:
        show_cfg = True
        print(f"dpd {command}: {COMMANDS[command][1]}\nconfig (override any key with key=value):\n")
    overrides = [a for a in rest if a not in ("--cfg", "-h", "--help")]
    from hydra.errors import HydraException

    try:
        cfg = compose(command, overrides)
    except HydraException as e:
        print(f"dpd {command}: bad override: {e}", file=sys.stderr)
        return 2
    if show_cfg:
        import yaml

        print(yaml.safe_dump(cfg, sort_keys=False))
        return 0
    try:
        _load(COMMANDS[command][0])(cfg)
    except KeyboardInterrupt:
        print(f"dpd {command}: interrupted", file=sys.stderr)
        return 130
    except (ValueError, FileNotFoundError, FileExistsError, KeyError) as e:
        if os.environ.get("DPD_TRACEBACK"):
            raise
        print(f"dpd {command}: error: {e}", file=sys.stderr)
        print("(set DPD_TRACEBACK=1 for the full traceback)", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
