"""Truncated diffusion with a learned prior (Franzese et al. 2023): the prior is trained on
x_t' = alpha_t' a0 + sigma_t' eps, and sampling starts at t' from it."""

import numpy as np
import pytest
import torch

from diffusion_policy_dist.policy import DiffusionPolicy, Window

SHAPE_META = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}


def truncated_policy(alpha):
    torch.manual_seed(0)
    cfg = {"network": TINY, "loss": {"m": 2}, "prior": {"alpha": alpha, "components": 2}}
    pol = DiffusionPolicy(cfg, SHAPE_META, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit({"state": rng.normal(size=(50, 3)), "action": rng.uniform(-1, 1, (50, 2))})
    return pol


@pytest.mark.parametrize("alpha", [0.4, 0.7])
def test_prior_training_target_is_alpha_a0_plus_sigma_eps(alpha):
    pol = truncated_policy(alpha)
    seen = {}
    nll = pol.prior.nll
    pol.prior.nll = lambda x, c: (seen.setdefault("x", x.detach()), nll(x, c))[1]
    B = 512
    g = torch.Generator().manual_seed(1)
    action = torch.rand(B, 8, 2, generator=g) * 2 - 1
    batch = {"obs": {"state": torch.randn(B, 2, 3, generator=g)}, "action": action}
    pol(batch)
    x0 = pol.normalizer.normalize("action", action).flatten(1)
    x = seen["x"]
    a = float(pol.process.alpha(torch.tensor(pol.t_prime)))
    s = float(pol.process.sigma(torch.tensor(pol.t_prime)))
    assert a == pytest.approx(alpha, abs=1e-4)
    slope = float((x * x0).sum() / (x0 * x0).sum())  # regression of x_t' on a0: alpha
    assert slope == pytest.approx(a, abs=0.03)
    assert float((x - a * x0).std()) == pytest.approx(s, rel=0.03)  # the rest: sigma eps


@pytest.mark.parametrize("alpha", [0.4, 0.7])
def test_sampling_starts_at_t_prime_from_the_prior(alpha):
    pol = truncated_policy(alpha)
    calls = []
    x0 = pol.denoiser.x0
    pol.denoiser.x0 = lambda x, t, c, generator=None: (
        calls.append((x, t)),
        x0(x, t, c, generator),
    )[1]
    draws = []
    prior_sample = pol.prior.sample
    pol.prior.sample = lambda c, generator=None: (
        draws.append(prior_sample(c, generator)) or draws[-1]
    )
    obs = {"state": torch.randn(4, 2, 3)}
    out = pol.predict_action(obs, generator=torch.Generator().manual_seed(0), return_info=True)
    assert out["nfe"] == 1 and len(calls) == 1 and len(draws) == 1
    x_start, t = calls[0]
    assert torch.allclose(t, torch.full_like(t, pol.t_prime))
    assert torch.equal(x_start, draws[0].view(4, 8, 2))  # the prior's draw, not N(0, I)
    calls.clear()
    pol.predict_action(obs, sampler={"kind": "distributional", "use_prior": False})
    assert torch.allclose(calls[0][1], torch.ones_like(calls[0][1]))  # without it: from t = 1
