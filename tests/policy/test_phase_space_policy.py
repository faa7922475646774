"""Policies on phase-space diffusion (PSLD): both denoisers train and sample with every
phase-space sampler, and configurations that cannot work are refused."""

import numpy as np
import pytest
import torch

from diffusion_policy_dist.cli.compose import compose
from diffusion_policy_dist.diffusion.processes.phase_space import PhaseSpace
from diffusion_policy_dist.diffusion.samplers import SAMPLERS, samplers_for
from diffusion_policy_dist.policy import DiffusionPolicy, Window

SHAPE_META = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}
MODELS = {
    "mean": {"kind": "mean", "prediction": "sample", "loss": {"kind": "mse"}},
    "distributional": {"kind": "distributional", "loss": {"kind": "energy", "m": 4}},
}


def psld_policy(kind):
    torch.manual_seed(0)
    cfg = {**MODELS[kind], "network": TINY, "schedule": {"kind": "psld"}}
    cfg["sampler"] = {"kind": "distributional", "steps": 2}
    pol = DiffusionPolicy(cfg, SHAPE_META, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit({"state": rng.normal(size=(50, 3)), "action": rng.uniform(-1, 1, (50, 2))})
    return pol


# every method runs at a few steps here, the conjugate ones below their step limit on purpose
@pytest.mark.filterwarnings("ignore:phase-space sampler .* is unstable:RuntimeWarning")
@pytest.mark.parametrize("kind", ["mean", "distributional"])
def test_phase_space_policy_trains_and_samples_with_every_method(kind):
    pol = psld_policy(kind)
    assert pol.net.in_channels == 4  # (x, m) per action dimension; the noise enters late
    assert pol.net.noise_dim == (32 if kind == "distributional" else 0)
    batch = {"obs": {"state": torch.randn(6, 2, 3)}, "action": torch.rand(6, 8, 2) * 2 - 1}
    loss, _ = pol(batch)
    loss.backward()
    assert torch.isfinite(loss) and all(p.grad is not None for p in pol.net.parameters())
    obs = {"state": torch.randn(3, 2, 3)}
    for method in samplers_for("phase_space"):
        out = pol.predict_action(obs, sampler={"kind": method, "steps": 3}, return_info=True)
        assert out["action"].shape == (3, 4, 2) and torch.isfinite(out["action"]).all()
        assert out["nfe"] == 1 + 2 * SAMPLERS[method].nfe_per_step, method  # the last step costs 1


def test_the_network_is_trained_on_z_t_from_the_phase_space_marginal():
    pol = psld_policy("mean")
    seen = []
    pol.net.register_forward_hook(lambda mod, inp, out: seen.append((inp[0], inp[1])))
    action = torch.zeros(2000, 8, 2)  # normalized x0 = 0.0 (the range's centre)
    pol({"obs": {"state": torch.randn(2000, 2, 3)}, "action": action + 0.0})
    z, t = seen[0]
    ps = PhaseSpace()
    assert float(t.min()) >= ps.t_min
    _, S = ps.marginal(t.double())
    x0 = pol.normalizer.normalize("action", action)
    a, _ = ps.marginal(t.double())
    white = (z[..., :2].double() - a[:, None, None, 0] * x0.double()) / S[
        :, None, None, 0, 0
    ].sqrt()
    assert float(white.std()) == pytest.approx(1.0, rel=0.03)  # x_t - a_x x0 has var S_xx


def test_configurations_that_cannot_work_are_refused():
    with pytest.raises(ValueError, match="does not run phase-space diffusion"):
        compose("train", ["dataset.path=x", "policy=psld_distributional", "sampler=ddim"])
    with pytest.raises(ValueError, match=r"sampler=reduced_vv does not run vp diffusion \(sch"):
        compose("train", ["dataset.path=x", "sampler=reduced_vv"])
    with pytest.raises(ValueError, match="predicts x0"):
        compose("train", ["dataset.path=x", "policy=psld_mean", "policy.prediction=epsilon"])
    with pytest.raises(ValueError, match="not psld"):
        compose("train", ["dataset.path=x", "policy=psld_mean", "policy.prior.alpha=0.5"])
    run = compose("train", ["dataset.path=x", "policy=psld_mean"])
    assert isinstance(run.schedule, PhaseSpace) and run.sampler.kind == "reduced_vv"
