"""Evaluation survives anything an env can do: exceptions, exits, crashes, hangs and NaN, in
reset or in step. The episode fails with its reason, its worker is replaced, the run goes on."""

import functools
import json

import pytest
from diffusion_policy_dist.envs.workers import EnvSource
from envs_for_tests import faulty
from helpers import tiny_policy

from diffusion_policy_dist.evaluation import evaluate

BASE = 500
FAULTS = {  # episode -> (where, what) -> the reason evaluation must report
    1: (("reset", "raise"), "reset_error"),
    2: (("step", "raise"), "step_error"),
    3: (("reset", "exit"), "worker_died"),
    4: (("step", "exit"), "worker_died"),
    5: (("step", "segv"), "worker_died"),
    6: (("reset", "hang"), "timeout"),
    7: (("step", "hang"), "timeout"),
    8: (("reset", "nan"), "non_finite"),
    9: (("step", "nan"), "non_finite"),
    10: (("step", "nan_reward"), "non_finite"),
}
IN_PROCESS_OK = {1, 2, 8, 9, 10}  # faults an in-process env can survive (no exit, crash, hang)


def run(episodes, vector, tmp_path):
    faults = {BASE + ep: f for ep, (f, _) in FAULTS.items() if ep < episodes}
    if vector == "sync":
        faults = {s: f for s, f in faults.items() if s - BASE in IN_PROCESS_OK}
    source = EnvSource(
        functools.partial(faulty, faults=faults), {"kind": "python"}, ("even", "odd"), 10.0
    )
    cfg = {
        "episodes": episodes,
        "n_envs": 3,
        "seed": BASE,
        "vector": vector,
        "latency_trials": 0,
        "progress": False,
        "env_timeout_s": 3.0,
    }
    return evaluate(tiny_policy(), source, cfg, output_dir=tmp_path), set(s - BASE for s in faults)


@pytest.mark.parametrize("vector", ["async", "sync"])
def test_every_fault_fails_only_its_episode(tmp_path, vector):
    res, bad = run(13, vector, tmp_path)
    eps = {r["seed"] - BASE: r for r in res["per_episode"]}
    assert sorted(eps) == list(range(13))
    for ep, r in eps.items():
        if ep in bad:
            assert not r["success"] and r["crashed"] and r["reason"] == FAULTS[ep][1], (ep, r)
        else:  # innocent episodes, including those after a replaced worker, succeed
            assert r["success"] and not r["crashed"], (ep, r)
    want = {}
    for ep in bad:
        want[FAULTS[ep][1]] = want.get(FAULTS[ep][1], 0) + 1
    saved = json.loads((tmp_path / "eval.json").read_text())
    assert saved["failures_by_reason"] == want and saved["crashed"] == len(bad)
