"""Real time: the latency-aware rollout and the threaded controller execute each chunk in
step with the world (checked with a policy whose actions name the step they are for)."""

import functools
import time

import numpy as np
import pytest
import torch
from diffusion_policy_dist.envs.workers import EnvSource
from envs_for_tests import ClockEnv, ClockPolicy

from diffusion_policy_dist.control import Controller
from diffusion_policy_dist.evaluation.pool import EnvPool
from diffusion_policy_dist.evaluation.realtime import Clock, RealtimeRollout, realtime_metrics
from diffusion_policy_dist.evaluation.rollout import Rollout


def clock_env(render=False, **kw):
    return ClockEnv(**kw)


def run(transition, latency, policy=None, episodes=3, n_envs=2, slack=0, hz=10.0):
    policy = policy or ClockPolicy()
    src = EnvSource(functools.partial(clock_env, slack=slack), {"kind": "test"}, (), hz)
    with EnvPool(src, n_envs, processes=False) as pool:
        args = (policy, pool, None, list(range(episodes)), torch.Generator())
        if transition == "sync":
            ro = Rollout(*args)
            clock = None
        else:
            clock = Clock(hz, latency, transition)
            ro = RealtimeRollout(*args, clock=clock)
        records = ro.run()
    return records, realtime_metrics(ro, clock, records), policy


@pytest.mark.parametrize("transition", ["naive", "blend", "prefix"])
@pytest.mark.parametrize("d", [1, 2, 4, 7])
def test_every_action_runs_at_the_step_it_was_planned_for(transition, d):
    records, m, _ = run(transition, ("steps", d))
    assert all(r["success"] for r in records), records  # ClockEnv checks action == step
    assert m["stale_step_rate"] == 0 and m["deadline_miss_rate"] == 0
    assert m["delay_steps"] == {"p50": d, "max": d}
    assert m["boundary_jerk"] == 0.0  # chunks join without a jump
    assert all(r["chunks"] >= 40 // 8 for r in records)


def test_sync_is_the_zero_delay_reference():
    records, m, _ = run("sync", None)
    assert all(r["success"] for r in records)
    assert m["delay_steps"] == {"p50": 0.0, "max": 0} and m["boundary_jerk"] == 0.0


def test_a_delay_longer_than_the_chunk_holds_actions_and_counts_misses():
    # 12 steps of delay, 15 planned actions from the request: the queue (8) runs out first
    records, m, _ = run("naive", ("steps", 12), slack=12)
    assert all(r["success"] for r in records)  # held actions lag, never lead
    # by hand: first chunk runs steps 0-7; asked at 1, it arrives at 13 (5 held steps) with 3
    # usable actions (15 planned - 12 elapsed); asked again at 14 -> 26 (10 held), 27 -> 39 (10)
    assert [r["stale_steps"] for r in records] == [25, 25, 25]
    assert m["stale_step_rate"] == 25 / 40 and m["deadline_miss_rate"] == 1.0


def test_prefix_hands_the_queued_actions_to_the_policy():
    _, _, pol = run("prefix", ("steps", 3))
    p = pol.prefixes[-1]
    assert p.shape[1] == 3  # the 3 actions still queued at the request
    np.testing.assert_array_equal(np.diff(p[0, :, 0].numpy()), [1.0, 1.0])  # consecutive steps


def test_measured_latency_turns_into_delay_steps():
    _, m, _ = run("naive", ("measured", float("nan")), ClockPolicy(sleep_s=0.05), hz=100.0,
                  episodes=2, slack=3)  # fmt: skip
    assert m["delay_steps"]["p50"] >= 5  # 50 ms at 100 Hz is at least 5 steps


def test_controller_asks_when_the_queue_holds_just_the_delay():
    pol = ClockPolicy()  # fast: any latency under one period (200 ms) is a delay of 1 step
    env = ClockEnv(length=10**6)
    obs, _ = env.reset()
    with Controller(pol, control_hz=5, transition="naive") as ctrl:
        for _ in range(8):
            obs, *_ = env.step(ctrl.step(obs))
        # the first chunk (asked at step 0) covers steps 0-7; with 1 step of delay the next is
        # asked for when step 7 takes the last queued action
        assert ctrl.requests == [0, 7]
    with Controller(pol, control_hz=5, transition="blend", blend_steps=2) as ctrl:
        obs, _ = env.reset()
        for _ in range(8):
            obs, *_ = env.step(ctrl.step(obs))
        assert ctrl.requests == [0, 5]  # two steps earlier, to overlap


def test_controller_never_waits_for_the_network_and_stays_in_step():
    pol = ClockPolicy(sleep_s=0.2)  # 200 ms per chunk at 50 Hz: 10 steps of delay
    env = ClockEnv(length=10**6)
    obs, _ = env.reset()
    with Controller(pol, control_hz=50, transition="naive", margin_steps=2) as ctrl:
        for _ in range(60):
            obs, *_ = env.step(ctrl.step(obs))
            time.sleep(0.02)
        s = ctrl.stats()
    assert s["chunks"] >= 3
    assert max(ctrl.step_ms) < 100 and len(ctrl.start_ms) == 1  # only the start waits
    lag = np.arange(len(env.log)) - np.array(env.log)
    assert (lag >= 0).all()  # an action never runs before its step
    assert (lag[s["stale_steps"] + 1 :] == 0).sum() > 0


def test_quiet_gc_collects_only_where_told_and_restores_the_collector():
    import gc

    from diffusion_policy_dist.control import steady

    assert gc.isenabled()
    with steady.quiet_gc():
        assert not gc.isenabled() and gc.get_freeze_count() > 0
        steady.collect()
    assert gc.isenabled() and gc.get_freeze_count() == 0
    gc.disable()
    try:
        with steady.quiet_gc():
            pass
        assert not gc.isenabled()  # left as it was
    finally:
        gc.enable()
    with pytest.raises(ValueError, match="is not one of this machine's"):
        steady.pin_this_thread(10_000)
    steady.pin_this_thread(None)
