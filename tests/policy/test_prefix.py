"""The committed prefix: training-time conditioning and inference-time inpainting."""

import numpy as np
import pytest
import torch
from helpers import TINY

from diffusion_policy_dist.policy import DiffusionPolicy, Window
from diffusion_policy_dist.policy.prefix import inpaint, known_from_prefix, random_known

SM = {"obs": {"state": {"shape": [3], "type": "low_dim"}}, "action": {"shape": [2]}}


def policy(kind="distributional", prefix_steps=0):
    torch.manual_seed(0)
    cfg = {"kind": kind, "network": TINY, "prefix_steps": prefix_steps}
    if kind == "mean":
        cfg |= {"loss": {"kind": "mse"}, "sampler": {"kind": "ddim", "steps": 4}}
    else:
        cfg |= {"loss": {"m": 2}}
    pol = DiffusionPolicy(cfg, SM, Window(8, 2, 4))
    rng = np.random.default_rng(0)
    pol.normalizer.fit({"state": rng.normal(size=(20, 3)), "action": rng.uniform(-1, 1, (20, 2))})
    return pol


def test_random_known_masks_d_steps_from_the_current_one():
    torch.manual_seed(0)
    x0 = torch.randn(500, 8, 2)
    known = random_known(x0, max_steps=3, start=1)
    mask = known[..., -1]
    d = mask.sum(1)
    assert set(d.long().tolist()) == {0, 1, 2, 3}  # d uniform in 0..3
    for row, n in zip(mask, d.long(), strict=True):
        assert row.tolist() == [0.0] + [1.0] * n + [0.0] * (7 - n)
    torch.testing.assert_close(known[..., :2], x0 * mask[..., None])


def test_known_from_prefix_and_inpaint():
    prefix = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 6.0], [7.0, 8.0]]])
    known = known_from_prefix(prefix, torch.tensor([2, 1]), horizon=6, start=1)
    assert known[0, :, 2].tolist() == [0, 1, 1, 0, 0, 0]
    assert known[1, :, 2].tolist() == [0, 1, 0, 0, 0, 0]
    out = inpaint(torch.zeros(2, 6, 2), known)
    assert out[0, 1:3].tolist() == [[1, 2], [3, 4]] and out[1, 1].tolist() == [5, 6]
    assert out[1, 2].tolist() == [0, 0]
    with pytest.raises(ValueError, match="horizon"):
        known_from_prefix(torch.zeros(1, 6, 2), None, horizon=6, start=1)


@pytest.mark.parametrize("kind", ["mean", "distributional"])
@pytest.mark.parametrize("prefix_steps", [0, 3])
def test_a_planned_chunk_continues_the_committed_actions(kind, prefix_steps):
    pol = policy(kind, prefix_steps)
    obs = {"state": torch.randn(2, 2, 3)}
    prefix = torch.tensor([[[0.5, -0.5], [0.4, -0.4]]]).repeat(2, 1, 1)
    g = torch.Generator().manual_seed(0)
    out = pol.predict_action(obs, generator=g, prefix=prefix)["action_pred"]
    torch.testing.assert_close(out[:, 1:3], prefix, atol=1e-5, rtol=1e-5)


def test_prefix_conditioning_trains_and_the_network_sees_the_prefix():
    pol = policy("distributional", prefix_steps=3)
    batch = {"obs": {"state": torch.randn(8, 2, 3)}, "action": torch.rand(8, 8, 2) * 2 - 1}
    loss, _ = pol.compute_loss(batch)
    loss.backward()
    obs = {"state": torch.randn(1, 2, 3)}
    outs = []
    for value in (0.9, -0.9):
        g = torch.Generator().manual_seed(0)
        prefix = torch.full((1, 2, 2), value)
        outs.append(pol.predict_action(obs, generator=g, prefix=prefix)["action_pred"][0, 4:])
    assert not torch.allclose(*outs)  # beyond the prefix the chunk depends on it
    plain = policy("distributional")
    g1, g2 = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    prefix = torch.full((1, 2, 2), 0.9)
    a = plain.predict_action(obs, generator=g1, prefix=prefix)["action_pred"][0, 4:]
    b = plain.predict_action(obs, generator=g2, prefix=-prefix)["action_pred"][0, 4:]
    torch.testing.assert_close(a, b)  # one step, no conditioning: inpainting alone can't see it
