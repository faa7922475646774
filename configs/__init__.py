"""Hydra configs for dpd (YAML only; this file makes the folder importable as a config module)."""
