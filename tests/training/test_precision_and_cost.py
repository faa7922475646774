"""bf16 autocast training and the FLOP count of a training step."""

import json

import pytest
import torch
from helpers import fast_cfg
from torch import nn

from diffusion_policy_dist.precision import autocast
from diffusion_policy_dist.training.build import train_from_config
from diffusion_policy_dist.training.checkpoint import read_meta
from diffusion_policy_dist.training.config import TrainConfig
from diffusion_policy_dist.training.cost import train_step_flops


class LinearLoss(nn.Module):
    """``policy(batch) -> (loss, info)`` with one [in, out] linear map and no bias."""

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.lin = nn.Linear(n_in, n_out, bias=False)

    def forward(self, batch):
        return self.lin(batch["x"]).square().mean() + 0.0 * torch.randn(()), {}


def test_flops_of_a_linear_map_by_hand():
    """Forward 2BIO; backward 2BIO for the input's gradient and 2BIO for the weight's."""
    B, n_in, n_out = 8, 4, 3
    model = LinearLoss(n_in, n_out)
    batch = {"x": torch.randn(B, n_in, requires_grad=True)}
    assert train_step_flops(model, batch) == 3 * 2 * B * n_in * n_out
    # without an input gradient only the weight's is computed
    assert train_step_flops(model, {"x": torch.randn(B, n_in)}) == 2 * 2 * B * n_in * n_out


def test_counting_flops_leaves_no_trace():
    model = LinearLoss(4, 3)
    torch.manual_seed(5)
    train_step_flops(model, {"x": torch.randn(2, 4)})
    after = torch.randn(3)
    torch.manual_seed(5)
    torch.randn(2, 4)
    assert torch.equal(after, torch.randn(3))  # the counting step drew nothing from the stream
    assert all(p.grad is None for p in model.parameters())


def test_autocast_contexts():
    x, w = torch.randn(4, 4), torch.randn(4, 4)
    with autocast("bf16", "cpu"):
        assert (x @ w).dtype == torch.bfloat16
    with autocast("fp32", "cpu"):
        assert (x @ w).dtype == torch.float32
    with pytest.raises(ValueError, match="unknown precision 'fp16'"):
        autocast("fp16", "cpu")
    with pytest.raises(ValueError, match=r"training.precision must be one of \['fp32', 'bf16'\]"):
        TrainConfig(precision="half")


@pytest.mark.parametrize("policy", ["ddpm", "distributional"])
def test_bf16_training_learns_like_fp32_and_says_so(bimodal_zarr, tmp_path, policy):
    runs = {}
    for precision in ("fp32", "bf16"):
        out = tmp_path / precision
        extra = ["policy.noise_injection=late"] if policy == "distributional" else []
        cfg = fast_cfg(bimodal_zarr, out, f"policy={policy}", "training.steps=60",
                       f"training.precision={precision}", *extra)  # fmt: skip
        train_from_config(cfg)
        lines = [json.loads(x) for x in open(out / "metrics.jsonl")]
        runs[precision] = ([r["loss"] for r in lines if "loss" in r], read_meta(out))
    (l32, m32), (l16, m16) = runs["fp32"], runs["bf16"]
    assert m32["precision"] == "fp32" and m16["precision"] == "bf16"
    assert m32["train_flops_per_step"] == m16["train_flops_per_step"] > 0
    # the same data and noise: the first loss agrees to bf16's precision, and both learn
    assert abs(l16[0] - l32[0]) <= 0.05 * abs(l32[0])
    assert l16[-1] < l16[0] and l32[-1] < l32[0]
    assert abs(l16[-1] - l32[-1]) <= 0.25 * abs(l32[-1])
