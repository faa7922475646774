"""The fixed-shape sampler: the same actions as predict_action for the same noise, on every path
a CPU can run (CUDA graphs fall back with a warning here; torch.compile runs)."""

import numpy as np
import pytest
import torch

from diffusion_policy_dist.noise import NoiseTape, normal
from diffusion_policy_dist.policy import DiffusionPolicy, Window
from diffusion_policy_dist.policy.fast import FixedShapeSampler

TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}
SM = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
CONFIGS = {
    "distributional-1 late": {"kind": "distributional", "noise_injection": "late"},
    "distributional-2 churn 1": {
        "kind": "distributional",
        "sampler": {"kind": "distributional", "steps": 2, "churn": 1.0},
    },
    "ddim-4": {"kind": "mean", "loss": {"kind": "mse"}, "sampler": {"kind": "ddim", "steps": 4}},
    "psld distributional-2": {
        "kind": "distributional",
        "schedule": {"kind": "psld"},
        "sampler": {"kind": "distributional", "steps": 2, "churn": 0.5},
    },
}


def policy(cfg):
    torch.manual_seed(0)
    pol = DiffusionPolicy({**cfg, "network": TINY}, SM, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit({"state": rng.normal(size=(50, 3)), "action": rng.normal(size=(50, 2))})
    return pol.eval()


def obs(B=3):
    return {"state": torch.randn(B, 2, 3, generator=torch.Generator().manual_seed(1))}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_same_noise_same_actions_as_predict_action(name):
    pol = policy(CONFIGS[name])
    with pytest.warns(RuntimeWarning, match="CUDA graphs need a CUDA device"):
        fast = FixedShapeSampler(pol, batch=3, mode="graph")
    assert fast.mode == "eager"
    for seed in (5, 6):
        want = pol.predict_action(obs(), generator=torch.Generator().manual_seed(seed))
        got = fast(obs(), generator=torch.Generator().manual_seed(seed))
        assert torch.equal(got["action_pred"], want["action_pred"]), name
        assert torch.equal(got["action"], want["action"])


def test_compiled_network_gives_the_same_actions():
    pol = policy(CONFIGS["distributional-2 churn 1"])
    fast = FixedShapeSampler(pol, batch=2, mode="compile", compile_backend="aot_eager")
    want = pol.predict_action(obs(2), generator=torch.Generator().manual_seed(3))["action_pred"]
    got = fast(obs(2), generator=torch.Generator().manual_seed(3))["action_pred"]
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    assert pol.denoiser.net.__class__.__name__ == "ConditionalUnet1D"  # put back after each call


def test_bf16_is_close_and_shapes_and_priors_are_checked():
    pol = policy(CONFIGS["distributional-1 late"])
    fast = FixedShapeSampler(pol, batch=3, mode="eager", precision="bf16")
    want = pol.predict_action(obs(), generator=torch.Generator().manual_seed(3))["action_pred"]
    got = fast(obs(), generator=torch.Generator().manual_seed(3))["action_pred"]
    assert got.dtype == torch.float32 and 0 < (got - want).abs().max() < 0.1
    with pytest.raises(ValueError, match=r"built for \(3, 2, 3\)"):
        fast({"state": torch.zeros(1, 2, 3)})
    prior = policy({"kind": "distributional", "prior": {"alpha": 0.5, "components": 2}})
    with pytest.raises(ValueError, match="truncation prior"):
        FixedShapeSampler(prior, batch=1, mode="eager")
    FixedShapeSampler(prior, sampler={"kind": "distributional", "use_prior": False}, mode="eager")


def test_noise_tape_replays_in_order_and_names_what_is_wrong():
    g = torch.Generator().manual_seed(0)
    rec = NoiseTape(record_from=g)
    a, b = normal((2, 3), rec), normal((4,), rec)
    assert rec.shapes == [(2, 3), (4,)]
    tape = NoiseTape(rec.tensors)
    assert torch.equal(normal((2, 3), tape), a) and torch.equal(normal((4,), tape), b)
    with pytest.raises(ValueError, match=r"the noise tape holds 2 draws; draw 3 \(\[1\]\)"):
        normal((1,), tape)
    with pytest.raises(ValueError, match=r"draw 0: the tape holds \[2, 3\], the sampler asks"):
        normal((3, 2), NoiseTape(rec.tensors))
