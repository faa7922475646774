"""Chunk transitions: known answers for the arithmetic shared by the controller and the
latency-aware evaluation."""

import numpy as np
import pytest

from diffusion_policy_dist.control import delay_steps, next_queue, parse_latency, request_lead
from diffusion_policy_dist.control.transitions import boundary_jerk, interior_jerk


def test_delay_is_the_ceiling_of_latency_times_rate():
    assert delay_steps(4.0, 50) == 1  # 0.2 of a period still costs a step
    assert delay_steps(20.0, 50) == 1 and delay_steps(20.1, 50) == 2
    assert delay_steps(350.0, 10) == 4 and delay_steps(350.0, 50) == 18
    assert delay_steps(1000 / 30, 30) == 1  # exactly one period, despite rounding (1.0000000002)


def test_parse_latency():
    assert parse_latency("measured")[0] == "measured"
    assert parse_latency("35ms") == ("ms", 35.0) and parse_latency(12.5) == ("ms", 12.5)
    assert parse_latency("3steps") == ("steps", 3.0) and parse_latency("1 step") == ("steps", 1.0)
    for bad in ("fast", "-3ms", "1.5steps"):
        with pytest.raises(ValueError, match="latency"):
            parse_latency(bad)


def test_request_lead_per_transition():
    assert request_lead("sync", 3) == 0
    assert request_lead("naive", 3) == 3 and request_lead("prefix", 3) == 3
    assert request_lead("blend", 3, blend_steps=2) == 5


def test_naive_and_prefix_drop_the_past_and_keep_n_action_steps():
    plan = np.arange(10, dtype=np.float32)[:, None]  # action j is for step request + j
    old = np.array([[-1.0], [-2.0]])
    for kind in ("naive", "prefix", "sync"):
        out = next_queue(kind, old, plan, elapsed=3, n_action_steps=4)
        np.testing.assert_array_equal(out[:, 0], [3, 4, 5, 6])
    assert len(next_queue("naive", old, plan, elapsed=8, n_action_steps=4)) == 2  # plan ran out


def test_blend_cross_fades_linearly_over_the_overlap():
    plan = np.full((10, 1), 1.0)
    old = np.zeros((2, 1))
    out = next_queue("blend", old, plan, elapsed=2, n_action_steps=4)
    np.testing.assert_allclose(out[:, 0], [1 / 3, 2 / 3, 1.0, 1.0])  # old weights 2/3, 1/3
    same = next_queue("blend", np.ones((2, 1)), plan, elapsed=2, n_action_steps=4)
    np.testing.assert_allclose(same, 1.0)  # agreeing chunks blend to themselves


def test_boundary_jerk_sees_a_jump_only_at_the_boundary():
    a = np.arange(12, dtype=np.float64)[:, None]  # constant velocity: no jerk anywhere
    assert boundary_jerk(a, [4, 8]) == 0.0 and interior_jerk(a, [4, 8]) == 0.0
    b = a.copy()
    b[8] += 2.0  # a spike at the boundary step 8: second differences +2 (centred on 7), -4 (on
    # 8) and +2 (on 9, an interior step)
    assert boundary_jerk(b, [4, 8]) == pytest.approx((0 + 0 + 4 + 16) / 4)
    assert interior_jerk(b, [4, 8]) == pytest.approx(4 / 6)  # centres 1, 2, 5, 6, 9, 10
    assert boundary_jerk(b, [0]) is None  # an episode's first chunk has no boundary
