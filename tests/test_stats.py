"""Binomial intervals, behaviour-mode frequencies and percentiles (diffusion_policy_dist.stats)."""

import math

import pytest

from diffusion_policy_dist.stats import format_modes, mode_frequencies, percentiles, wilson_interval


def test_wilson_interval_known_values():
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.2775, abs=1e-3)
    lo, hi = wilson_interval(5, 10)
    assert lo == pytest.approx(0.2366, abs=1e-3) and hi == pytest.approx(0.7634, abs=1e-3)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    for n in (7, 50, 200):  # the ends are exact, so "rate - lo" and "hi - rate" are never < 0
        assert wilson_interval(n, n)[1] == 1.0 and wilson_interval(0, n)[0] == 0.0
        for k in range(n + 1):
            lo, hi = wilson_interval(k, n)
            assert lo <= k / n <= hi


def test_mode_frequencies():
    f = mode_frequencies([0, 1, 1, -1], ["a", "b"])
    assert f == {"a": pytest.approx(1 / 3), "b": pytest.approx(2 / 3), "undetermined": 0.25}
    assert mode_frequencies([0], None) is None
    assert format_modes(f) == "a 33%, b 67%" and format_modes(None) == "-"


def test_percentiles():
    p = percentiles([1.0, 2.0, 3.0, 4.0, 100.0])
    assert p["p50"] == 3.0 and p["mean"] == 22.0 and 80 < p["p95"] < 100
    assert p["p99"] == pytest.approx(4.0 + 0.96 * 96.0) and p["max"] == 100.0  # linear
    assert math.isnan(percentiles([])["p50"]) and math.isnan(percentiles([])["p99"])
