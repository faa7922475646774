"""Benchmarks (imported as diffusion_policy_dist.benchmarks); results in benchmarks/results/."""
