"""diffusion_policy_dist: diffusion policies trained with the distributional energy loss."""

__version__ = "0.1.0"
