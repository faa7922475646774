"""Closed-loop evaluation: the runner and its parts (env pool, rollout loop, latency, report)."""

from .config import EvalConfig
from .pool import EnvPool
from .report import format_summary
from .runner import env_source, evaluate

__all__ = ["EnvPool", "EvalConfig", "env_source", "evaluate", "format_summary"]
