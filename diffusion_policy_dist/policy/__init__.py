"""Policies: the diffusion policy, its two denoisers, its typed configuration, and the
observation history and action queue of a policy running in a loop."""

from ..queues import ActionQueue, ObsHistory
from ..window import Window
from .config import NetworkConfig, PolicyConfig, PolicyOptions, policy_config
from .denoisers import DENOISERS, DistributionalDenoiser, MeanDenoiser
from .diffusion_policy import DiffusionPolicy, sampler_options

__all__ = [
    "DENOISERS",
    "ActionQueue",
    "DiffusionPolicy",
    "DistributionalDenoiser",
    "MeanDenoiser",
    "NetworkConfig",
    "ObsHistory",
    "PolicyConfig",
    "PolicyOptions",
    "Window",
    "policy_config",
    "sampler_options",
]
