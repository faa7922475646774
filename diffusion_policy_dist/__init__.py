"""diffusion_policy_dist: diffusion policies trained with the distributional energy loss.

``from diffusion_policy_dist import load_policy``: a checkpoint directory (or a training run's
output directory) -> the policy, in eval mode with its EMA weights.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"
__all__ = ["__version__", "load_policy"]

if TYPE_CHECKING:
    from .training.build import load_policy


def __getattr__(name: str) -> Any:
    # imported on first use, so `import diffusion_policy_dist` stays cheap (no torch)
    if name == "load_policy":
        from .training.build import load_policy

        return load_policy
    raise AttributeError(f"module 'diffusion_policy_dist' has no attribute {name!r}")
