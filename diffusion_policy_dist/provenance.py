"""Where a result came from: the code's commit, library versions and the machine. One header
for checkpoints and every benchmark results file."""

from __future__ import annotations

import os
import platform
import subprocess
import time
from pathlib import Path
from typing import Any

from . import __version__


def git_commit() -> str | None:
    """The checkout's HEAD commit, with ``+dirty`` when tracked files differ from it (results
    made from uncommitted code say so); None outside a git checkout."""

    def git(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).resolve().parent,
        )

    try:
        sha = git("rev-parse", "HEAD").stdout.strip()
        if not sha:
            return None
        return sha + ("+dirty" if git("diff", "--quiet", "HEAD").returncode == 1 else "")
    except Exception:
        return None


def versions() -> dict[str, str]:
    """Versions of this package and the libraries that change its numbers."""
    import numpy
    import torch
    import zarr

    out = {
        "diffusion_policy_dist": __version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "zarr": zarr.__version__,
        "python": platform.python_version(),
    }
    try:
        import mujoco

        out["mujoco"] = mujoco.__version__
    except ImportError:
        pass
    return out


def machine(device: Any = None) -> str:
    """``"Linux x86_64, 2 CPUs"`` (plus the GPU's name for a CUDA device)."""
    text = f"{platform.system()} {platform.machine()}, {os.cpu_count()} CPUs"
    if device is not None and str(device).startswith("cuda"):
        import torch

        text += f", {torch.cuda.get_device_name(device)}"
    return text


def header(command: str | None, device: Any = None) -> dict[str, Any]:
    """The provenance block every results file starts with."""
    import torch

    return {
        "command": command,
        "git_commit": git_commit(),
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "machine": machine(device),
        "device": str(device) if device is not None else "cpu",
        "torch": torch.__version__,
        "versions": versions(),
    }
