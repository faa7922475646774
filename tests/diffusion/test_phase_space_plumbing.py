"""What the PSLD maths tests cannot see: randomness comes only from the caller's generator,
tensors keep their dtype and device, bad grids, noise and model outputs are refused with the
reason, the exact mixture model's defaults, and the Euler-Maruyama noise scale path by path.

Tensors on the ``meta`` device stand in for a GPU: a coefficient or noise tensor created on
the default device instead of the input's shows up as a CPU tensor.
"""

import math

import pytest
import torch

from diffusion_policy_dist.diffusion.oracle import GaussianMixture
from diffusion_policy_dist.diffusion.processes.phase_space import (
    PhaseSpace,
    _noise,
    _simpson_sqrt,
)
from diffusion_policy_dist.diffusion.samplers import sample, sampler_config, samplers_for
from diffusion_policy_dist.diffusion.samplers.phase_space import _reverse_linear

METHODS = tuple(samplers_for("phase_space"))

pytestmark = pytest.mark.usefixtures("one_thread")
F64 = torch.float64
STOCHASTIC = (("em", {}), ("sscs", {}), ("reduced_oba", {}), ("distributional", {"churn": 0.5}))


def zero_model(z, t, cond=None):
    return torch.zeros(*z.shape[:-1], z.shape[-1] // 2, dtype=z.dtype, device=z.device)


def half_model(z, t, cond=None):
    return 0.5 * torch.tanh(z[..., : z.shape[-1] // 2])


def _run(method, opts, seed, z, noise_in_between=0):
    torch.manual_seed(noise_in_between)  # the global RNG must not matter
    g = torch.Generator().manual_seed(seed)
    ps = PhaseSpace()
    return sample(half_model, z, process=ps, method=method, steps=3, generator=g, **opts)[0]


@pytest.mark.parametrize("method,opts", STOCHASTIC)
def test_stochastic_samplers_draw_only_from_the_callers_generator(method, opts):
    z = PhaseSpace().prior_sample((4, 3), generator=torch.Generator().manual_seed(1), dtype=F64)
    a = _run(method, opts, seed=7, z=z, noise_in_between=0)
    b = _run(method, opts, seed=7, z=z, noise_in_between=123)
    c = _run(method, opts, seed=8, z=z, noise_in_between=0)
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


def test_prior_sample_draws_only_from_the_generator_and_keeps_dtype_and_device():
    ps = PhaseSpace()
    torch.manual_seed(0)
    a = ps.prior_sample((5, 2), generator=torch.Generator().manual_seed(3))
    torch.manual_seed(1)
    b = ps.prior_sample((5, 2), generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)
    assert ps.prior_sample((5, 2), dtype=F64).dtype == F64
    meta = ps.prior_sample((5, 2), device="meta")
    assert meta.device.type == "meta" and meta.shape == (5, 4)


def test_deterministic_distributional_step_uses_no_randomness():
    """churn 0 adds no noise: the generator is left untouched and the result does not
    depend on it."""
    ps = PhaseSpace()
    z = ps.prior_sample((6, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    g = torch.Generator().manual_seed(5)
    before = g.get_state()
    out, _ = sample(
        half_model, z, process=ps, method="distributional", steps=4, churn=0.0, generator=g
    )
    assert torch.equal(g.get_state(), before)
    other, _ = sample(
        half_model, z, process=ps, method="distributional", steps=4, churn=0.0,
        generator=torch.Generator().manual_seed(99),
    )  # fmt: skip
    assert torch.equal(out, other)


def test_noise_and_coefficients_keep_dtype_and_device():
    z64 = torch.zeros(3, 4, dtype=F64)
    assert _noise(z64, torch.Generator().manual_seed(0)).dtype == F64
    assert _noise(torch.zeros(3, 4), None).dtype == torch.float32
    assert _noise(torch.empty(3, 4, device="meta"), None).device.type == "meta"
    assert _reverse_linear(PhaseSpace()).dtype == F64
    u, w = _simpson_sqrt(0.1, 0.9, 5)
    assert u.dtype == F64 and w.dtype == F64


@pytest.mark.filterwarnings("ignore:phase-space sampler .* is unstable:RuntimeWarning")
@pytest.mark.parametrize("method", METHODS)
def test_samplers_keep_the_inputs_device_for_the_model_and_the_output(method):
    """On 'meta' every tensor the sampler makes from z (times, noise, the result) must follow."""
    devices = []

    def model(z, t, cond=None):
        devices.append((t.device.type, t.dtype))
        return zero_model(z, t)

    z = torch.empty(2, 3, 4, device="meta")
    x0, _ = sample(model, z, schedule=PhaseSpace(), method=method, steps=2)
    assert x0.device.type == "meta" and x0.shape == (2, 3, 2)
    assert set(devices) == {("meta", torch.float32)}


def test_perturb_checks_eps_keeps_dtype_and_device_and_works_on_sequences():
    ps = PhaseSpace()
    x0 = torch.randn(4, 5, 2)  # [B, H, D] with H != 2D: the check must use the last axis
    t = torch.tensor([0.1, 0.4, 0.7, 1.0])
    eps = torch.randn(4, 5, 4)
    z = ps.perturb(x0, t, eps)
    assert z.shape == (4, 5, 4) and z.dtype == torch.float32
    for i in range(4):  # per example: z = a x0 + L eps, coordinate by coordinate
        a, S = ps.marginal(float(t[i]))
        L = torch.linalg.cholesky(S).float()
        want_x = float(a[0]) * x0[i] + L[0, 0] * eps[i, :, :2]
        want_m = float(a[1]) * x0[i] + L[1, 0] * eps[i, :, :2] + L[1, 1] * eps[i, :, 2:]
        torch.testing.assert_close(z[i], torch.cat([want_x, want_m], -1))
    meta = ps.perturb(x0.to("meta"), t, eps.to("meta"))
    assert meta.device.type == "meta"
    for bad in (torch.randn(4, 5, 3), torch.randn(4, 6, 4), torch.randn(3, 5, 4)):
        with pytest.raises(ValueError, match=r"eps \(\d+, \d+, \d+\) does not fit x0 \(4, 5, 2\)"):
            ps.perturb(x0, t, bad)


def test_log_snr_of_integer_times_is_float64():
    ps = PhaseSpace()
    out = ps.log_snr(torch.tensor([1]))
    assert out.dtype == F64
    assert float(out[0]) == pytest.approx(float(ps.log_snr(torch.tensor([1.0], dtype=F64))[0]))


def test_transition_cov_of_a_batch_of_times_matches_each_time():
    ps = PhaseSpace()
    t = torch.tensor([0.2, 0.5, 0.9], dtype=F64)
    batch = ps.transition_cov(t, 0.1)
    for i in range(3):
        torch.testing.assert_close(batch[i], ps.transition_cov(float(t[i]), 0.1))


@pytest.mark.parametrize(
    "grid,steps,msg",
    [
        ([1.0, 0.5, 0.0], 3, r"steps\+1=4 points ending at 0"),  # too short, ends at 0
        ([1.0, 0.5, 0.2], 2, r"steps\+1=3 points ending at 0"),  # right length, not at 0
        ([[1.0, 0.5, 0.0]], 2, r"steps\+1=3 points"),  # 2-D
        ([1.0, 0.5, 0.5, 0.0], 3, r"descend from at most 1, got \[1.0, 0.5, 0.5, 0.0\]"),
        ([1.0, 0.4, 0.6, 0.0], 3, "descend"),  # not descending in the middle
        ([0.4, 0.6, 0.0], 2, "descend"),  # not descending at the start
        ([1.5, 0.5, 0.0], 2, "descend from at most 1"),  # starts above 1
    ],
)
def test_explicit_grids_are_checked_with_the_reason(grid, steps, msg):
    with pytest.raises(ValueError, match=msg):
        PhaseSpace().grid(torch.tensor(grid, dtype=F64), steps, 1.0)


def test_explicit_grid_is_float64_and_may_start_at_one():
    ts = PhaseSpace().grid([1.0, 0.3, 0.0], 2, 1.0)
    assert ts.dtype == F64 and ts.tolist() == [1.0, 0.3, 0.0]


def _gm():
    covs = torch.eye(2, dtype=F64).expand(2, 2, 2) * 0.05
    return GaussianMixture(torch.tensor([0.3, 0.7]), torch.tensor([[-0.5, 0.2], [0.6, -0.1]]), covs)


def test_mixture_model_defaults_to_the_mean_and_keeps_dtype():
    ps, gm = PhaseSpace(), _gm()
    z = ps.prior_sample((3, 2), generator=torch.Generator().manual_seed(0))
    t = torch.full((3,), 0.3)
    default = gm.as_model(ps)(z, t)
    torch.testing.assert_close(default, gm.as_model(ps, "mean")(z, t))
    assert default.dtype == torch.float32
    one = gm.as_model(ps)(z[:1], t[:1])  # a batch of one example
    torch.testing.assert_close(one, default[:1])
    with pytest.raises(ValueError, match="kind must be 'mean' or 'sample', got 'mode'"):
        gm.as_model(ps, "mode")


def test_euler_maruyama_noise_enters_with_the_diffusion_scale():
    """z_s(g) - z_s(g') = sqrt(h G G^T) (n(g) - n(g')) path by path: the deterministic part
    cancels, and n is the generator's standard normal draw of z's shape."""
    ps = PhaseSpace()
    z = ps.prior_sample((5, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    grid = torch.tensor([0.6, 0.2, 0.0], dtype=F64)

    def one(seed):
        g = torch.Generator().manual_seed(seed)
        seen = []
        sample(
            zero_model, z, process=ps, method="em", steps=2, grid=grid, generator=g,
            callback=lambda i, t, zz, xx: seen.append(zz),
        )  # fmt: skip
        noise = torch.randn(z.shape, generator=torch.Generator().manual_seed(seed), dtype=F64)
        return seen[-1], noise

    (za, na), (zb, nb) = one(1), one(2)
    gg = ps.diffusion_diag()
    scale = torch.cat([torch.full((2,), math.sqrt(0.4 * float(gg[0]))),
                       torch.full((2,), math.sqrt(0.4 * float(gg[1])))]).to(F64)  # fmt: skip
    torch.testing.assert_close(za - zb, scale * (na - nb))


def test_model_output_shape_error_names_both_shapes():
    ps = PhaseSpace()
    z = torch.zeros(2, 3, 6)  # [B, H, 2D] with H != 2D

    def bad(zz, t, cond=None):
        return torch.zeros(2, 3, 2)

    with pytest.raises(
        ValueError, match=r"model returned \(2, 3, 2\) for x_t \(2, 3, 6\); want \(2, 3, 3\)$"
    ):
        sample(bad, z, process=ps, method="euler", steps=1)
    x0, _ = sample(zero_model, z, process=ps, method="euler", steps=1)
    assert x0.shape == (2, 3, 3)


def test_clip_bounds_the_estimate_on_both_sides():
    ps = PhaseSpace()
    z = torch.zeros(3, 2)

    def spread(zz, t, cond=None):
        return torch.tensor([[-3.0], [0.25], [3.0]])

    x0, _ = sample(spread, z, process=ps, method="euler", steps=1, clip_x0=1.0)
    assert x0.flatten().tolist() == [-1.0, 0.25, 1.0]


@pytest.mark.parametrize(
    "method,unstable,stable",
    [("conjugate_se", 8, 11), ("conjugate_vv", 8, 11), ("lambda_ddim", 4, 6), ("euler", None, 2)],
)
def test_conjugate_schemes_warn_on_steps_they_cannot_take(method, unstable, stable):
    """The limits measured with the exact model (benchmarks/results/psld_oracle.md): blown up at
    h x rate = 2, fine at 1; the warning sits at 1.5 and names the steps that suffice."""
    ps = PhaseSpace()
    z = ps.prior_sample((2, 1), dtype=F64)
    if unstable is not None:
        why = sampler_config(method).grid_warning(ps, ps.grid("uniform", unstable, 1.0))
        assert f"at least {stable} uniform steps" in why
        with pytest.warns(RuntimeWarning, match=f"'{method}' with steps of up to"):
            sample(zero_model, z, process=ps, method=method, steps=unstable)
    assert sampler_config(method).grid_warning(ps, ps.grid("uniform", stable, 1.0)) is None
    assert sampler_config(method).grid_warning(ps, torch.tensor([1.0, 0.0], dtype=F64)) is None
    slow = PhaseSpace(beta=1.0)  # a slower process takes the same steps without complaint
    assert sampler_config(method).grid_warning(slow, slow.grid("uniform", 4, 1.0)) is None


def test_coarse_step_warning_edges_and_message():
    ps = PhaseSpace()
    two = ps.grid("uniform", 2, 1.0)  # one integration step 1 -> 0.5, then x0
    assert "h x 16 = 8 > 1.5" in sampler_config("conjugate_se").grid_warning(ps, two)
    four = ps.grid("uniform", 4, 1.0)
    assert "steps of up to 0.25" in sampler_config("conjugate_vv").grid_warning(ps, four)
    assert "h x 16 = 4 > 1.5" in sampler_config("conjugate_vv").grid_warning(ps, four)
    edge = PhaseSpace(beta=2.0, gamma=0.5, nu=3.5)  # rate (beta/2)(nu - gamma) = 3, h = 0.5
    conj = sampler_config("conjugate_se")
    assert conj.grid_warning(edge, torch.tensor([1.0, 0.5, 0.0])) is None
    assert conj.grid_warning(edge, torch.tensor([1.0, 0.6, 0.0])) is None
    assert conj.grid_warning(edge, torch.tensor([1.0, 0.4, 0.0])) is not None


def test_oba_noise_enters_the_o_step_with_its_exact_scale():
    """With an x0 = 0 model the OBA step is linear in the post-O state (x', m') = (f_x x + c_x n_x,
    f_m m + c_m n_m), f = e^{-(beta/2) Gamma h}, e^{-(beta/2) nu h}, c_x = sqrt(1 - f_x^2),
    c_m = sqrt(M (1 - f_m^2)). Probing that linear map K with noise-free differences, the
    difference between two generators' results must be K (c_x dn_x, c_m dn_m), path by path."""
    ps, t, s = PhaseSpace(), 0.6, 0.45
    grid = torch.tensor([t, s, 0.0], dtype=F64)
    h, b = t - s, 0.5 * ps.beta
    fx, fm = math.exp(-b * ps.gamma * h), math.exp(-b * ps.nu * h)
    cx, cm = math.sqrt(1 - fx * fx), math.sqrt(ps.mass * (1 - fm * fm))

    def out(x, m, seed):
        seen = []
        sample(
            zero_model, torch.tensor([[x, m]], dtype=F64), process=ps, method="reduced_oba",
            steps=2, grid=grid, generator=torch.Generator().manual_seed(seed),
            callback=lambda i, u, zz, xx: seen.append(zz),
        )  # fmt: skip
        return seen[-1][0]

    base = out(0.0, 0.0, 1)
    K = torch.stack([out(1 / fx, 0.0, 1) - base, out(0.0, 1 / fm, 1) - base], dim=1)
    n1, n2 = (torch.randn(1, 2, generator=torch.Generator().manual_seed(k), dtype=F64)[0]
              for k in (1, 2))  # fmt: skip
    want = K @ (torch.tensor([cx, cm], dtype=F64) * (n1 - n2))
    torch.testing.assert_close(base - out(0.0, 0.0, 2), want)


def test_times_clamp_to_the_unit_interval():
    from diffusion_policy_dist.diffusion.processes.phase_space import _sym

    ps = PhaseSpace(t_min=1e-3)
    assert ps.clamp(torch.tensor([0.0, 0.5, 1.5])).tolist() == [1e-3, 0.5, 1.0]
    A = torch.tensor([[1.0, 2.0], [0.0, 3.0]], dtype=F64)
    want = torch.tensor([[1.0, 1.0], [1.0, 3.0]], dtype=F64)
    assert torch.equal(_sym(A), want) and torch.equal(_sym(A.expand(4, 2, 2)), want.expand(4, 2, 2))
