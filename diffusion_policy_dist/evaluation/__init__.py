"""Closed-loop evaluation: env specs and adapters, the runner, metrics and videos."""

from .envs import (
    EVAL_SEED_BASE,
    VALIDATION_SEED_BASE,
    GymAdapter,
    SafeEnv,
    dpd_env_spec,
    gym_env_spec,
    make_env,
)
from .metrics import mode_frequencies, wilson_interval
from .runner import EnvPool, EvalConfig, evaluate, format_summary

__all__ = [
    "EVAL_SEED_BASE",
    "VALIDATION_SEED_BASE",
    "EnvPool",
    "EvalConfig",
    "GymAdapter",
    "SafeEnv",
    "dpd_env_spec",
    "evaluate",
    "format_summary",
    "gym_env_spec",
    "make_env",
    "mode_frequencies",
    "wilson_interval",
]
