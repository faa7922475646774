"""Golden closed-loop results: the v1 fixture checkpoints rolled out in a deterministic test env
give the per-episode outcomes that commit 9dd44c0's runner gave (checked when the file was
written), so a change to the rollout loop, the batching or the noise stream fails here."""

import functools
import json
from pathlib import Path

import pytest
from diffusion_policy_dist.envs.workers import EnvSource
from envs_for_tests import reach

from diffusion_policy_dist.evaluation import evaluate
from diffusion_policy_dist.training.build import policy_from_checkpoint

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures"
GOLDEN = json.loads((FIXTURES / "golden_eval.json").read_text())


@pytest.mark.parametrize("case", GOLDEN, ids=[c["checkpoint"] for c in GOLDEN])
@pytest.mark.parametrize("vector", ["sync", "async"])
def test_rollouts_match_the_golden_episodes(case, vector):
    policy, _ = policy_from_checkpoint(FIXTURES / "v1" / case["checkpoint"])
    source = EnvSource(functools.partial(reach), {"kind": "python"}, ("low", "high"))
    cfg = {"episodes": 7, "n_envs": 3, "vector": vector, "latency_trials": 0, "progress": False}
    res = evaluate(policy, source, {**cfg, "seed": 5}, sampler=case["sampler"])
    keys = ("seed", "success", "return", "length", "mode")
    got = [{k: e[k] for k in keys} for e in res["per_episode"]]
    for g, want in zip(got, case["per_episode"], strict=True):
        assert g["return"] == pytest.approx(want["return"], rel=1e-5), (g, want)
        assert {k: g[k] for k in keys if k != "return"} == {
            k: want[k] for k in keys if k != "return"
        }
