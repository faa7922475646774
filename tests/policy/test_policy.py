"""DiffusionPolicy construction, loss, inference API and the window rules."""

import copy

import numpy as np
import pytest
import torch

from diffusion_policy_dist.models.unet1d import ConditionalUnet1D
from diffusion_policy_dist.policy import DiffusionPolicy, PolicyConfig, Window
from diffusion_policy_dist.policy.config import policy_config

SHAPE_META = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}
TINY = {"down_dims": [16, 32], "kernel_size": 3, "n_groups": 8, "time_embed_dim": 16}


def make_policy(kind="distributional", **over):
    cfg = {
        "kind": kind,
        "network": TINY,
        "loss": {"kind": "energy", "m": 4} if kind == "distributional" else {"kind": "mse"},
    }
    if kind == "mean":
        cfg["sampler"] = {"kind": "ddim", "steps": 3, "eta": 0.0}
    cfg.update(over)
    pol = DiffusionPolicy(cfg, SHAPE_META, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit(
        {"state": rng.normal(size=(50, 3)), "action": rng.uniform(-2, 3, size=(50, 2))}
    )
    return pol


def batch(B=5):
    g = torch.Generator().manual_seed(0)
    return {
        "obs": {"state": torch.randn(B, 2, 3, generator=g)},
        "action": torch.randn(B, 8, 2, generator=g),
        "action_is_pad": torch.zeros(B, 8, dtype=torch.bool),
        "obs_is_pad": torch.zeros(B, 2, dtype=torch.bool),
    }


@pytest.mark.parametrize("kind", ["distributional", "mean"])
def test_forward_returns_finite_loss_and_does_not_mutate_batch(kind):
    pol = make_policy(kind)
    b = batch()
    before = copy.deepcopy(b)
    loss, info = pol(b)
    assert loss.dim() == 0 and torch.isfinite(loss) and "loss" in info
    loss.backward()
    assert all(p.grad is not None for p in pol.net.parameters())
    for k in ("action", "action_is_pad"):
        assert torch.equal(b[k], before[k])
    assert torch.equal(b["obs"]["state"], before["obs"]["state"])


@pytest.mark.parametrize("injection,shape", [("concat", (40,)), ("late", (5, 8))])
def test_encoder_runs_once_per_example_not_per_generator_sample(injection, shape):
    pol = make_policy("distributional", loss={"kind": "energy", "m": 8}, noise_injection=injection)
    calls = []
    pol.obs_encoder.register_forward_hook(lambda mod, inp, out: calls.append(out.shape[0]))
    rows = []
    pol.net.register_forward_hook(lambda mod, inp, out: rows.append(tuple(out.shape[: len(shape)])))
    pol(batch(B=5))
    assert calls == [5]  # one encoder call, on the 5 examples
    # concat: the network sees 5 x 8 generator rows; late: 5 rows, 8 samples of each
    assert rows == [shape]


def test_predict_action_shapes_and_window_slice():
    pol = make_policy("mean")
    obs = {"state": torch.randn(3, 2, 3)}
    out = pol.predict_action(obs, generator=torch.Generator().manual_seed(0), return_info=True)
    assert out["action_pred"].shape == (3, 8, 2) and out["action"].shape == (3, 4, 2)
    assert torch.equal(out["action"], out["action_pred"][:, 1:5])
    assert out["nfe"] == 3


def test_fixed_generator_reproduces_actions_and_sampler_override():
    pol = make_policy("distributional")
    obs = {"state": torch.randn(4, 2, 3)}
    a = pol.predict_action(obs, generator=torch.Generator().manual_seed(7))["action_pred"]
    b = pol.predict_action(obs, generator=torch.Generator().manual_seed(7))["action_pred"]
    c = pol.predict_action(obs, generator=torch.Generator().manual_seed(8))["action_pred"]
    assert torch.equal(a, b) and not torch.equal(a, c)
    out = pol.predict_action(
        obs, sampler={"kind": "distributional", "steps": 3, "churn": 1.0}, return_info=True
    )
    assert out["nfe"] == 3


def test_select_action_queues():
    pol = make_policy("mean")
    calls = []
    orig = pol.predict_action
    pol.predict_action = lambda o, **k: (calls.append(o["state"].clone()), orig(o, **k))[1]
    obs = [{"state": torch.full((2, 3), float(i))} for i in range(6)]
    actions = [pol.select_action(o) for o in obs]
    assert all(a.shape == (2, 2) for a in actions)
    assert len(calls) == 2  # Ta = 4: replan at steps 0 and 4
    # first plan: history padded by repeating the first observation
    assert calls[0][:, :, 0].tolist() == [[0.0, 0.0], [0.0, 0.0]]
    assert calls[1][:, :, 0].tolist() == [[3.0, 4.0], [3.0, 4.0]]
    pol.reset()
    pol.select_action(obs[5])
    assert len(calls) == 3 and calls[2][:, :, 0].tolist() == [[5.0, 5.0], [5.0, 5.0]]


def test_window_validation_messages():
    with pytest.raises(ValueError, match=r"divisible by 2\*\*len\(down_dims\) = 8"):
        DiffusionPolicy({"network": {"down_dims": [16, 32, 64]}}, SHAPE_META, Window(12, 2, 4))
    with pytest.raises(ValueError, match="n_action_steps=8 must be <= horizon - n_obs_steps"):
        Window(8, 2, 8)


def test_config_refuses_unknown_and_invalid_options():
    with pytest.raises(ValueError, match=r"policy\.loss: unknown option\(s\) \['bta'\]"):
        policy_config({"loss": {"kind": "energy", "bta": 1.0}})
    with pytest.raises(ValueError, match="beta must be in"):
        policy_config({"loss": {"kind": "energy", "beta": 2.5}})
    with pytest.raises(ValueError, match=r"policy\.sampler: unknown option\(s\) \['churn'\]"):
        policy_config({"sampler": {"kind": "ddim", "churn": 0.5}})
    with pytest.raises(ValueError, match="kind=mean is trained with loss=mse"):
        policy_config({"kind": "mean"})
    assert isinstance(policy_config({}), PolicyConfig)


def test_unet_shapes_and_cond_check():
    net = ConditionalUnet1D(
        4, 2, cond_dim=6, down_dims=(16, 32, 64), kernel_size=3, time_embed_dim=16
    )
    y = net(torch.randn(3, 16, 4), torch.rand(3), torch.randn(3, 6))
    assert y.shape == (3, 16, 2)
    with pytest.raises(ValueError, match=r"expected cond \[3, 6\]"):
        net(torch.randn(3, 16, 4), torch.rand(3), torch.randn(3, 5))
    with pytest.raises(ValueError, match=r"expects x \[B, H, 4\]"):
        net(torch.randn(3, 16, 3), torch.rand(3), torch.randn(3, 6))


def test_film_noise_injection_and_truncation_prior():
    pol = make_policy(
        "distributional", noise_injection="film", prior={"alpha": 0.5, "components": 3}
    )
    loss, info = pol(batch())
    assert "prior_nll" in info and torch.isfinite(loss)
    out = pol.predict_action({"state": torch.randn(2, 2, 3)}, return_info=True)
    assert out["action"].shape == (2, 4, 2) and out["nfe"] == 1 and out["prior_ms"] > 0
    assert abs(float(pol.process.alpha(torch.tensor(pol.t_prime))) - 0.5) < 1e-4
