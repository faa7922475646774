"""Golden outputs: checkpoints written by commit 9dd44c0 still load, and give the same actions.

``tests/fixtures/v1`` holds tiny checkpoints and the ``predict_action`` outputs they gave at
that commit, with a fixed generator. A refactor that changes a number (the order of random
draws, a coefficient, the normalizer) fails here.
"""

import json
from pathlib import Path

import pytest
import torch

from diffusion_policy_dist.training.build import policy_from_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "v1"
GOLDEN = json.loads((FIXTURES / "golden_v1.json").read_text())


@pytest.mark.parametrize(
    "case",
    GOLDEN["cases"],
    ids=[
        f"{c['checkpoint']}-{c['sampler']['method']}-{c['sampler']['steps']}"
        for c in GOLDEN["cases"]
    ],
)
def test_v1_checkpoint_gives_the_golden_actions(case):
    policy, _ = policy_from_checkpoint(FIXTURES / case["checkpoint"])
    obs = {"state": torch.tensor(GOLDEN["obs"])}
    out = policy.predict_action(
        obs, sampler=case["sampler"], generator=torch.Generator().manual_seed(123), return_info=True
    )
    assert out["nfe"] == case["nfe"]
    want = torch.tensor(case["action_pred"], dtype=torch.float64)
    torch.testing.assert_close(out["action_pred"].double(), want, rtol=1e-4, atol=1e-4)
