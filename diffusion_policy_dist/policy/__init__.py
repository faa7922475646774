"""Policies: the diffusion policy and its typed configuration."""

from ..window import Window
from .config import LossConfig, NetworkConfig, PolicyConfig, SamplerConfig
from .diffusion_policy import DiffusionPolicy

__all__ = [
    "DiffusionPolicy",
    "LossConfig",
    "NetworkConfig",
    "PolicyConfig",
    "SamplerConfig",
    "Window",
]
