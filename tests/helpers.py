"""Helpers the test modules import (``from helpers import ...``): small synthetic datasets, fast
configs and a tiny policy. Fixtures live in conftest.py, which pytest loads itself."""

import numpy as np
import torch

from diffusion_policy_dist.cli.compose import compose
from diffusion_policy_dist.data import ReplayBuffer
from diffusion_policy_dist.policy import DiffusionPolicy, Window


def write_bimodal(path, n_obs_values=6, episodes_per_value=8, T=20, c=0.8, seed=0):
    """Conditional bimodal toy: o is one of a few values; for each o, half of the episodes
    have every action = +c and half = -c, so E[a | o] = 0 exactly."""
    rng = np.random.default_rng(seed)
    values = rng.uniform(-1, 1, size=(n_obs_values, 3)).astype(np.float32)
    buf = ReplayBuffer.create(path, overwrite=True, attrs={"toy": "bimodal"})
    for v in values:
        signs = np.array([1, -1] * (episodes_per_value // 2))
        rng.shuffle(signs)
        for s in signs:
            obs = np.repeat(v[None], T, 0) + 0.01 * rng.standard_normal((T, 3)).astype(np.float32)
            buf.add_episode(
                {"state": obs, "action": np.full((T, 2), s * c, np.float32)},
                info={"mode": int(s > 0)},
            )
    buf.close()
    return buf


def fast_cfg(dataset, output_dir, *overrides, m=4):
    """A composed train config sized for unit tests (tiny network, small batches; a
    distributional loss gets ``m`` samples unless the overrides set ``loss.m``)."""
    base = [
        f"dataset.path={dataset}",
        f"output_dir={output_dir}",
        "network=tiny",
        "training.batch_size=32",
        "training.progress=false",
        "training.warmup_steps=10",
        "training.val_every=0",
        "training.log_every=10",
    ]
    run = compose("train", [*base, *overrides])
    if hasattr(run.loss, "m") and not any(o.startswith("loss.m=") for o in overrides):
        run.loss.m = m
    return run


TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}


def tiny_policy(state_dim=3, action_dim=2, seed=0):
    """A tiny untrained distributional policy with a fitted normalizer (for runner tests)."""
    torch.manual_seed(seed)
    sm = {
        "obs": {"state": {"shape": [state_dim], "type": "low_dim"}},
        "action": {"shape": [action_dim]},
    }
    pol = DiffusionPolicy({"network": TINY, "loss": {"m": 2}}, sm, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit(
        {
            "state": rng.normal(size=(20, state_dim)),
            "action": rng.uniform(-0.3, 0.3, size=(20, action_dim)),
        }
    )
    return pol
