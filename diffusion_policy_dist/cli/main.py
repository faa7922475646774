"""``dpd``: the command-line entry point.

``dpd <command> [key=value ...]`` composes the command's config with Hydra overrides
(``group=option`` picks a config group option, ``a.b=v`` sets a value) into its validated
schema object and runs the command. ``dpd <command> --cfg`` prints the composed config.
"""

from __future__ import annotations

import os
import shlex
import sys
from collections.abc import Sequence
from typing import Any

from .compose import compose, compose_config, describe_error

# command -> (function in .commands, one-line description)
COMMANDS: dict[str, tuple[str, str]] = {
    "train": ("train", "train a policy on a zarr dataset"),
    "collect": ("collect", "collect scripted-expert demos to zarr"),
    "eval": ("evaluate", "closed-loop evaluation of a checkpoint"),
    "bench": ("bench", "the sampler/NFE benchmark on built-in tasks"),
    "demo": ("demo", "collect, train, evaluate: the main job"),
    "import-robomimic": ("import_robomimic", "convert a robomimic HDF5 file to zarr"),
    "import-lerobot": ("import_lerobot", "decode a LeRobot dataset folder (v3.0, v2.1) to zarr"),
    "export-lerobot": ("export_lerobot", "write a zarr dataset as a LeRobot v3.0 folder"),
    "info": ("info", "describe a checkpoint or a dataset (and check it)"),
    "tune": ("tune", "pick the sampler that meets a control rate, as the checkpoint's default"),
    "repair": ("repair", "cut a dataset back to its committed episodes after a crash"),
    "export": ("export", "a checkpoint as one ONNX graph, for a robot without the training stack"),
}

USAGE = """usage: dpd <command> [key=value ...] [--cfg]

commands:
{commands}

examples:
  dpd collect task=obstacle_avoid episodes=100 output=data/obstacle_avoid.zarr
  dpd train dataset.path=data/obstacle_avoid.zarr policy=distributional output_dir=outputs/oa
  dpd eval checkpoint=outputs/oa sampler=distributional sampler.steps=1 eval.episodes=50
  dpd tune checkpoint=outputs/oa control_hz=50
  dpd demo
"""

__all__ = ["COMMANDS", "compose", "main"]


def _print_usage() -> None:
    width = max(map(len, COMMANDS))
    cmds = "\n".join(f"  {k:<{width}}  {v[1]}" for k, v in COMMANDS.items())
    print(USAGE.format(commands=cmds))


def _compose_or_exit(command: str, overrides: list[str], show: bool) -> Any:
    """The command's config object; prints the config and returns None for ``--cfg``."""
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    try:
        if show:
            print(OmegaConf.to_yaml(compose_config(command, overrides)))
            return None
        return compose(command, overrides)
    except (HydraException, OmegaConfBaseException) as e:
        print(f"dpd {command}: bad override: {describe_error(e)}", file=sys.stderr)
        raise SystemExit(2) from None
    except (ValueError, TypeError) as e:  # a value a schema's validation refused
        print(f"dpd {command}: bad setting: {e}", file=sys.stderr)
        raise SystemExit(2) from None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help", "help"):
        _print_usage()
        return 0
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        print(
            f"dpd: unknown command {command!r}; choose one of {', '.join(COMMANDS)}",
            file=sys.stderr,
        )
        return 2
    os.environ.setdefault("MUJOCO_GL", "egl")
    show = bool({"--cfg", "-h", "--help"} & set(rest))
    if "-h" in rest or "--help" in rest:
        print(f"dpd {command}: {COMMANDS[command][1]}\nconfig (override any key with key=value):\n")
    overrides = [a for a in rest if a not in ("--cfg", "-h", "--help")]
    try:
        cfg = _compose_or_exit(command, overrides, show)
    except SystemExit as e:
        return int(e.code)
    if cfg is None:
        return 0
    from . import commands

    command_line = "dpd " + shlex.join(argv)
    return commands.run(COMMANDS[command][0], cfg, command_line)


if __name__ == "__main__":
    sys.exit(main())
