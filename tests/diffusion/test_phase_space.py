"""PSLD (phase-space Langevin diffusion) maths and samplers, checked against independent numbers.

Everything the tests compare against is computed here from the raw SDE (beta, Gamma, nu, kappa)
with generic matrix algebra: RK4 on the moment ODEs, Van Loan's matrix exponential for
(Phi, Sigma), 4x4 Gaussian conditioning for the bridge, and one-step reference schemes written
on (x, m) pairs. None of it calls the module's coefficient helpers.
"""

import math

import pytest
import torch

from diffusion_policy_dist.diffusion.oracle import GaussianMixture
from diffusion_policy_dist.diffusion.processes.phase_space import (
    PhaseSpace,
    bridge_coefs,
    pf_transport,
)
from diffusion_policy_dist.diffusion.samplers import sample, sampler_config, samplers_for

METHODS = tuple(samplers_for("phase_space"))

# coarse conjugate steps are tested on purpose (their warning: test_phase_space_plumbing.py)
pytestmark = [
    pytest.mark.usefixtures("one_thread"),
    pytest.mark.filterwarnings("ignore:phase-space sampler .* is unstable:RuntimeWarning"),
]
F64 = torch.float64
DEFAULT = {"beta": 8.0, "gamma": 0.01, "nu": 4.01, "kappa": 0.04}
OTHER = {"beta": 4.0, "gamma": 0.5, "nu": 2.0, "kappa": 0.2}
DETERMINISTIC = (
    "euler",
    "naive_se",
    "reduced_se",
    "naive_vv",
    "reduced_vv",
    "lambda_ddim",
    "conjugate_se",
    "conjugate_vv",
)


# ----- independent reference maths -----------------------------------------------------------
def ref_sde(p: dict) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """(F, G G^T, S_0, M) straight from the SDE with critical damping."""
    b, g, n = p["beta"], p["gamma"], p["nu"]
    M = 1.0 / ((g - n) / 2.0) ** 2
    F = 0.5 * b * torch.tensor([[-g, 1.0 / M], [-1.0, -n]], dtype=F64)
    Q = torch.diag(torch.tensor([g * b, M * n * b], dtype=F64))
    S0 = torch.diag(torch.tensor([0.0, p["kappa"] * M], dtype=F64))
    return F, Q, S0, M


def van_loan(F: torch.Tensor, Q: torch.Tensor, h) -> tuple[torch.Tensor, torch.Tensor]:
    """exp(F h) and int_0^h e^{F u} Q e^{F^T u} du from one 4x4 matrix exponential (h: a float
    or a 1-D tensor for a batch)."""
    h = torch.as_tensor(h, dtype=F64)
    C = torch.zeros(4, 4, dtype=F64)
    C[:2, :2], C[:2, 2:], C[2:, 2:] = -F, Q, F.T
    E = torch.linalg.matrix_exp(C * h[..., None, None])
    phi = E[..., 2:, 2:].transpose(-1, -2)
    return phi, phi @ E[..., :2, 2:]


def ref_marginal(p: dict, t) -> tuple[torch.Tensor, torch.Tensor]:
    F, Q, S0, _ = ref_sde(p)
    phi, sig = van_loan(F, Q, t)
    return phi[..., :, 0], phi @ S0 @ phi.transpose(-1, -2) + sig


def rk4_moments(p: dict, t: float, n: int = 4000) -> tuple[torch.Tensor, torch.Tensor]:
    """Integrate dmu/dt = F mu (mu_0 = (1, 0)) and dS/dt = F S + S F^T + G G^T (S_0)."""
    F, Q, S, _ = ref_sde(p)
    mu, h = torch.tensor([1.0, 0.0], dtype=F64), t / n

    def f(mu, S):
        return F @ mu, F @ S + S @ F.T + Q

    for _ in range(n):
        k1 = f(mu, S)
        k2 = f(mu + h / 2 * k1[0], S + h / 2 * k1[1])
        k3 = f(mu + h / 2 * k2[0], S + h / 2 * k2[1])
        k4 = f(mu + h * k3[0], S + h * k3[1])
        mu = mu + h / 6 * (k1[0] + 2 * k2[0] + 2 * k3[0] + k4[0])
        S = S + h / 6 * (k1[1] + 2 * k2[1] + 2 * k3[1] + k4[1])
    return mu, S


def simpson(y: torch.Tensor, us: torch.Tensor) -> torch.Tensor:
    """Composite Simpson on a uniform grid (odd length) along dim 0."""
    w = torch.ones(len(us), dtype=F64)
    w[1:-1:2], w[2:-1:2] = 4.0, 2.0
    w = w * (us[1] - us[0]) / 3.0
    return (w.reshape(-1, *([1] * (y.dim() - 1))) * y).sum(0)


def pairs(z: torch.Tensor) -> torch.Tensor:
    """[N, 2D] with x channels first -> [N, D, 2] (x, m) pairs."""
    D = z.shape[-1] // 2
    return torch.stack([z[..., :D], z[..., D:]], -1)


def unpairs(Z: torch.Tensor) -> torch.Tensor:
    return torch.cat([Z[..., 0], Z[..., 1]], -1)


def two_modes() -> GaussianMixture:
    """Unequal weights and variances (the same toy as test_sampling.py)."""
    means = torch.tensor([[-1.0, 0.3], [1.2, -0.2]])
    covs = torch.stack(
        [torch.diag(torch.tensor([0.02, 0.05])), torch.diag(torch.tensor([0.04, 0.01]))]
    )
    return GaussianMixture(torch.tensor([0.3, 0.7]), means, covs)


def assert_matches_mixture(x, gm, w_tol=0.02, m_tol=0.03, v_rel=0.15):
    right = x[:, 0] > 0.1
    assert abs(right.double().mean().item() - gm.weights[1].item()) < w_tol, right.double().mean()
    for k, sel in ((0, ~right), (1, right)):
        assert torch.allclose(x[sel].mean(0), gm.means[k], atol=m_tol), (k, x[sel].mean(0))
        true_var = torch.diagonal(gm.covs[k])
        rel = (x[sel].var(0) - true_var).abs() / true_var
        assert (rel < v_rel).all(), (k, x[sel].var(0), true_var)


# ----- 1. closed-form Gaussians --------------------------------------------------------------
@pytest.mark.parametrize("p", [DEFAULT, OTHER], ids=["default", "other"])
@pytest.mark.parametrize("t", [1e-3, 0.05, 0.3, 1.0])
def test_marginal_matches_moment_ode(p, t):
    ps = PhaseSpace(**p)
    a, S = ps.marginal(t)
    mu, S_ode = rk4_moments(p, t, n=max(200, int(4000 * t)))
    assert a.dtype == F64 and a.shape == (2,) and S.shape == (2, 2)
    torch.testing.assert_close(a, mu, atol=1e-11, rtol=1e-9)
    torch.testing.assert_close(S, S_ode, atol=1e-11, rtol=1e-9)


def test_marginal_endpoints_and_the_gap_to_the_prior():
    """a_0 = (1, 0), S_0 = diag(0, kappa M). At t = 1 (defaults) the measured gap to the prior
    N(0, diag(1, M)) is a_1 = (2.9e-3, -1.3e-3) and max |S_1 - diag(1, M)| = 1.5e-5."""
    ps = PhaseSpace()
    a0, S0 = ps.marginal(0.0)
    torch.testing.assert_close(a0, torch.tensor([1.0, 0.0], dtype=F64), atol=1e-15, rtol=0)
    torch.testing.assert_close(S0, torch.diag(torch.tensor([0.0, 0.04 * 0.25], dtype=F64)))
    prior = torch.diag(torch.tensor([1.0, 0.25], dtype=F64))
    gaps = []
    for t in (0.6, 0.8, 1.0):
        a, S = ps.marginal(torch.tensor(t))
        gaps.append((a.abs().max().item(), (S - prior).abs().max().item()))
    assert gaps[0][0] > gaps[1][0] > gaps[2][0] and gaps[0][1] > gaps[1][1] > gaps[2][1]
    assert 2.5e-3 < gaps[2][0] < 3.5e-3 and gaps[2][1] < 2e-5
    assert ps.mass == pytest.approx(0.25) and ps.channels(7) == 14


def test_transition_semigroup_and_covariance_composition():
    ps = PhaseSpace(**OTHER)
    F, Q, _, _ = ref_sde(OTHER)
    t, s, u = 0.9, 0.4, 0.05
    torch.testing.assert_close(ps.transition(t, s) @ ps.transition(s, u), ps.transition(t, u))
    phi_ref, sig_ref = van_loan(F, Q, t - s)
    torch.testing.assert_close(ps.transition(t, s), phi_ref)
    torch.testing.assert_close(ps.transition_cov(t, s), sig_ref)
    phi = ps.transition(t, s)
    comp = phi @ ps.transition_cov(s, u) @ phi.T + ps.transition_cov(t, s)
    torch.testing.assert_close(ps.transition_cov(t, u), comp)
    S_t = phi @ ps.marginal(s)[1] @ phi.T + ps.transition_cov(t, s)
    torch.testing.assert_close(ps.marginal(t)[1], S_t)
    # Sigma(t, s) is the moment ODE started from zero covariance
    _, S_ode = rk4_moments({**OTHER, "kappa": 0.0}, t - s, n=2000)
    torch.testing.assert_close(ps.transition_cov(t, s), S_ode, atol=1e-11, rtol=1e-9)


def test_batched_marginal_perturb_and_prior():
    ps = PhaseSpace()
    ts = torch.tensor([0.002, 0.1, 0.7])
    a, S = ps.marginal_batch(ts)
    assert a.shape == (3, 2) and S.shape == (3, 2, 2)
    for i, t in enumerate(ts.tolist()):
        a_ref, S_ref = ref_marginal(DEFAULT, t)
        torch.testing.assert_close(a[i], a_ref)
        torch.testing.assert_close(S[i], S_ref)
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(3, 4, 2, generator=g, dtype=F64)
    eps = torch.randn(3, 4, 4, generator=g, dtype=F64)
    z = ps.perturb(x0, ts, eps)
    for i, t in enumerate(ts.tolist()):
        a_ref, S_ref = ref_marginal(DEFAULT, t)
        L = torch.linalg.cholesky(S_ref)
        want = a_ref * x0[i][..., None] + pairs(eps[i]) @ L.T
        torch.testing.assert_close(pairs(z[i]), want)
    zT = ps.prior_sample((50000, 3), generator=g, dtype=F64)
    assert zT.shape == (50000, 6)
    var = zT.var(0)
    assert torch.allclose(var[:3], torch.ones(3, dtype=F64), rtol=0.03)
    assert torch.allclose(var[3:], torch.full((3,), 0.25, dtype=F64), rtol=0.03)


# ----- 2. the Gaussian-mixture oracle ---------------------------------------------------------
def test_mixture_posterior_matches_importance_weighting():
    """Exact posterior mean/sampler against self-normalised importance weights with the prior
    as proposal, for a full-covariance mixture at t = 0.12."""
    ps, t = PhaseSpace(), 0.12
    covs = torch.tensor([[[0.05, 0.03], [0.03, 0.04]], [[0.03, -0.01], [-0.01, 0.02]]])
    gm = GaussianMixture(torch.tensor([0.4, 0.6]), torch.tensor([[-0.8, 0.2], [0.9, -0.3]]), covs)
    g = torch.Generator().manual_seed(1)
    prop = gm.sample(400000, generator=g)
    a, S = ref_marginal(DEFAULT, t)
    z = torch.tensor([[0.2, -0.1, 0.05, 0.1], [-0.6, 0.3, -0.02, 0.0]], dtype=F64)
    tt = torch.full((2,), t, dtype=F64)
    mean = gm.as_model(ps, "mean")(z, tt)
    draws = gm.as_model(ps, "sample", generator=g)(z.repeat(20000, 1), tt)
    for j in range(2):
        r = pairs(z[j : j + 1]) - a * prop[..., None]  # [P, D, 2]
        logw = -0.5 * (r @ torch.linalg.inv(S) * r).sum((-1, -2))
        w = torch.softmax(logw, 0)[:, None]
        is_mean = (w * prop).sum(0)
        is_var = (w * (prop - is_mean) ** 2).sum(0)
        torch.testing.assert_close(mean[j], is_mean, atol=4e-3, rtol=0)
        d = draws[j::2]
        torch.testing.assert_close(d.mean(0), is_mean, atol=6e-3, rtol=0)
        torch.testing.assert_close(d.var(0), is_var, atol=0, rtol=0.06)


# ----- 3. one-step references for every sampler (an affine toy model keeps them exact) --------
def toy_model(z, t, cond=None):
    """x0_hat = 0.2 + 0.5 t + 0.6 x - 0.3 m per coordinate: depends on the state and the time,
    so a stage evaluated at the wrong point or time changes the result."""
    Z = pairs(z)
    tt = t.reshape(-1, *([1] * (Z.dim() - 2)))
    return 0.2 + 0.5 * tt + 0.6 * Z[..., 0] - 0.3 * Z[..., 1]


class Ref:
    """PF velocity, eps and the toy model on (x, m) pairs, from the raw SDE (no module code)."""

    def __init__(self, p: dict):
        self.p = p
        self.F, self.Q, _, self.M = ref_sde(p)

    def aSL(self, u):
        a, S = ref_marginal(self.p, u)
        return a, S, torch.linalg.cholesky(S)

    def x0(self, Z, u):
        return toy_model(unpairs(Z), torch.full((Z.shape[0],), u, dtype=F64))

    def eps(self, Z, u):
        a, _, L = self.aSL(u)
        r = Z - a * self.x0(Z, u)[..., None]
        return r @ torch.linalg.inv(L).T

    def vel(self, Z, u, E, k=1.0):
        """F z + k/2 G G^T L_u^-T eps, row-vector form."""
        Linv = torch.linalg.inv(self.aSL(u)[2])
        return Z @ self.F.T + k * 0.5 * E @ Linv @ self.Q


def extrap(E, t, hist, u):
    if hist is None:
        return E
    t_prev, E_prev = hist
    return E + (u - t) / (t_prev - t) * (E_prev - E)


def ref_step(r: Ref, method: str, Z, t, s, hist, opts):
    """One step of each deterministic scheme, written from its definition."""
    h, mid = t - s, (t + s) / 2
    E = r.eps(Z, t)
    x, m = Z[..., 0], Z[..., 1]
    if method == "euler":
        return Z - h * r.vel(Z, t, E), hist
    if method in ("naive_se", "reduced_se"):
        x_s = x - h * r.vel(Z, t, E)[..., 0]
        Zp = torch.stack([x_s, m], -1)
        E2 = r.eps(Zp, s) if method == "naive_se" else E
        return torch.stack([x_s, m - h * r.vel(Zp, s, E2)[..., 1]], -1), hist
    if method in ("naive_vv", "reduced_vv"):
        v = r.vel(Z, t, E)
        m_half, x_mid, m_pred = m - h / 2 * v[..., 1], x - h / 2 * v[..., 0], m - h * v[..., 1]
        Zb, naive = torch.stack([x_mid, m_half], -1), method == "naive_vv"
        Eb = r.eps(Zb, mid) if naive else extrap(E, t, hist, mid)
        x_s = x - h * r.vel(Zb, mid, Eb)[..., 0]
        Zc = torch.stack([x_s, m_pred], -1)
        Ec = r.eps(Zc, s) if naive else extrap(E, t, hist, s)
        return torch.stack([x_s, m_half - h / 2 * r.vel(Zc, s, Ec)[..., 1]], -1), (t, E)
    if method == "lambda_ddim":
        return ref_lambda_ddim(r, Z, t, s, E, opts.get("lam", 0.0)), hist
    return ref_hybrid(r, method, Z, t, s, E, hist, opts.get("lam", 0.0))


def ref_lambda_ddim(r: Ref, Z, t, s, E, lam):
    """lam = 0: the plain exponential-integrator step, i.e. dz/du = F z + 1/2 G G^T L_u^-T eps_t
    with eps frozen, integrated by RK4. lam != 0: the conjugate update with the global frame
    A_u = e^{lam u} exp(-F u) of Pandey et al. and the eps integral by Simpson in u."""
    if lam == 0.0:
        n, z = 1000, Z.clone()
        hh = (s - t) / n
        us = t + hh / 2 * torch.arange(2 * n + 1, dtype=F64)
        gains = 0.5 * torch.linalg.inv(torch.linalg.cholesky(ref_marginal(r.p, us)[1])) @ r.Q
        drift = [E @ g for g in gains]  # the frozen-eps forcing at every half step

        def f(zz, j):
            return zz @ r.F.T + drift[j]

        for i in range(n):
            k1 = f(z, 2 * i)
            k2 = f(z + hh / 2 * k1, 2 * i + 1)
            k3 = f(z + hh / 2 * k2, 2 * i + 1)
            k4 = f(z + hh * k3, 2 * i + 2)
            z = z + hh / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
        return z

    def A(u):
        u = torch.as_tensor(u, dtype=F64)
        return torch.exp(lam * u)[..., None, None] * torch.linalg.matrix_exp(
            -r.F * u[..., None, None]
        )

    us = torch.linspace(t, s, 401, dtype=F64)
    Linv = torch.linalg.inv(torch.linalg.cholesky(ref_marginal(r.p, us)[1]))
    integral = simpson(A(us) @ (0.5 * r.Q) @ Linv.transpose(-1, -2), us)
    zh = (1 - lam * (t - s)) * Z @ A(t).T + E @ integral.T
    return zh @ torch.linalg.inv(A(s)).T


def hybrid_weights(r: Ref, t, u0, u1, lam, n=401):
    """(int W, int c_xm, int c_mx, A_u1) over [u0 -> u1] for the frame A_u = exp((B - F)(u - t)),
    B = lam I + (beta/2) J, by Simpson in u on generic matrices."""
    b = r.p["beta"]
    J = torch.tensor([[0.0, 1.0 / r.M], [-1.0, 0.0]], dtype=F64)
    B = lam * torch.eye(2, dtype=F64) + 0.5 * b * J
    us = torch.linspace(u0, u1, n, dtype=F64)
    A = torch.linalg.matrix_exp((B - r.F) * (us - t)[:, None, None])
    C = A @ (0.5 * b * J) @ torch.linalg.inv(A)
    Linv = torch.linalg.inv(torch.linalg.cholesky(ref_marginal(r.p, us)[1]))
    W = A @ (0.5 * r.Q) @ Linv.transpose(-1, -2)
    return (
        simpson(W, us),
        simpson(C[:, 0, 1], us).item(),
        simpson(C[:, 1, 0], us).item(),
        A[-1],
    )


def ref_hybrid(r: Ref, method, Z, t, s, E, hist, lam):
    h, mid = t - s, (t + s) / 2
    x, m = Z[..., 0], Z[..., 1]
    W, kxm, kmx, A_s = hybrid_weights(r, t, t, s, lam)
    if method == "conjugate_se":
        xi = (1 - lam * h) * x + kxm * m + (E @ W.T)[..., 0]
        eta = (1 - lam * h) * m + kmx * xi + (E @ W.T)[..., 1]
    else:
        W1, _, kmx1, _ = hybrid_weights(r, t, t, mid, lam)
        W2, _, kmx2, _ = hybrid_weights(r, t, mid, s, lam)
        eta = (1 - lam * h / 2) * m + kmx1 * x + (E @ W1.T)[..., 1]
        xi = (1 - lam * h) * x + kxm * eta + (extrap(E, t, hist, mid) @ W.T)[..., 0]
        eta = (1 - lam * h / 2) * eta + kmx2 * xi + (extrap(E, t, hist, s) @ W2.T)[..., 1]
    return torch.stack([xi, eta], -1) @ torch.linalg.inv(A_s).T, (t, E)


@pytest.mark.parametrize(
    "method,opts",
    [(m, {}) for m in DETERMINISTIC]
    + [
        ("lambda_ddim", {"lam": 0.7}),
        ("conjugate_se", {"lam": -0.4}),
        ("conjugate_vv", {"lam": 0.3}),
    ],
)
@pytest.mark.parametrize("p", [DEFAULT, OTHER], ids=["default", "other"])
def test_deterministic_step_matches_reference(method, opts, p):
    """Three steps 0.6 -> 0.35 -> 0.15 (the third has history to extrapolate from), compared
    with the reference schemes; lambda_ddim with lam = 0 is the plain exponential integrator."""
    ps, r = PhaseSpace(**p), Ref(p)
    grid = torch.tensor([0.6, 0.35, 0.15, 0.0], dtype=F64)
    z = torch.randn(5, 4, generator=torch.Generator().manual_seed(3), dtype=F64)
    seen = []
    x0, nfe = sample(
        toy_model,
        z,
        process=ps,
        method=method,
        steps=3,
        grid=grid,
        callback=lambda i, t, zz, xx: seen.append((i, t, zz)),
        **opts,
    )
    Z, hist = pairs(z), None
    for t, s in ((0.6, 0.35), (0.35, 0.15)):
        Z, hist = ref_step(r, method, Z, t, s, hist, opts)
    i, t_last, z_last = seen[-1]
    assert i == 2 and t_last == 0.15
    # the conjugate weights come from the module's quadrature (Simpson in sqrt u)
    tol = 1e-6 if method in ("lambda_ddim", "conjugate_se", "conjugate_vv") else 1e-9
    torch.testing.assert_close(pairs(z_last), Z, atol=tol, rtol=tol)
    torch.testing.assert_close(x0, toy_model(z_last, torch.full((5,), 0.15, dtype=F64)))
    per_step = {"naive_se": 2, "naive_vv": 3}.get(method, 1)
    assert nfe == 2 * per_step + 1 == len(seen)


# ----- 4. the bridge and the stochastic samplers -----------------------------------------------
def ref_pf_transport(p: dict, t: float, s: float, n: int = 2000) -> torch.Tensor:
    """dT/du = (F + 1/2 G G^T S_u^-1) T from T(t) = I, RK4 in w = sqrt(u) (stiff near 0)."""
    F, Q, _, _ = ref_sde(p)
    ws = torch.linspace(math.sqrt(t), math.sqrt(s), 2 * n + 1, dtype=F64)
    K = 2 * ws[:, None, None] * (F + 0.5 * Q @ torch.linalg.inv(ref_marginal(p, ws * ws)[1]))
    T, hw = torch.eye(2, dtype=F64), float(ws[2] - ws[0])
    for i in range(n):
        k1 = K[2 * i] @ T
        k2 = K[2 * i + 1] @ (T + hw / 2 * k1)
        k3 = K[2 * i + 1] @ (T + hw / 2 * k2)
        k4 = K[2 * i + 2] @ (T + hw * k3)
        T = T + hw / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return T


def ref_bridge(p: dict, t: float, s: float):
    """q(z_s | z_t, x0) by conditioning the 4x4 joint of (z_s, z_t) given x0."""
    F, Q, _, _ = ref_sde(p)
    a_s, S_s = ref_marginal(p, s)
    a_t, S_t = ref_marginal(p, t)
    phi, _ = van_loan(F, Q, t - s)
    joint = torch.cat([torch.cat([S_s, S_s @ phi.T], 1), torch.cat([phi @ S_s, S_t], 1)], 0)
    gain = torch.linalg.solve(joint[2:, 2:], joint[2:, :2]).T
    cov = joint[:2, :2] - gain @ joint[2:, :2]
    return gain, a_s - gain @ a_t, cov


@pytest.mark.parametrize("p", [DEFAULT, OTHER], ids=["default", "other"])
@pytest.mark.parametrize("t,s", [(1.0, 0.3), (0.2, 0.01), (0.05, 0.001)])
def test_bridge_coefficients(p, t, s):
    ps = PhaseSpace(**p)
    gain, k_ref, cov_ref = ref_bridge(p, t, s)
    T, k, C = bridge_coefs(ps, t, s, churn=1.0)
    torch.testing.assert_close(T, gain, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(k, k_ref, atol=1e-10, rtol=1e-8)
    torch.testing.assert_close(C @ C.T, cov_ref, atol=1e-10, rtol=1e-7)
    T_pf = ref_pf_transport(p, t, s)
    torch.testing.assert_close(pf_transport(ps, t, s), T_pf, atol=2e-6, rtol=1e-5)
    T0, _, C0 = bridge_coefs(ps, t, s, churn=0.0)
    torch.testing.assert_close(T0, pf_transport(ps, t, s))
    assert C0.abs().max() < 1e-6  # deterministic: T_pf S_t T_pf^T = S_s
    Th, _, Ch = bridge_coefs(ps, t, s, churn=0.5)
    torch.testing.assert_close(Th, 0.25 * gain + 0.75 * T_pf, atol=2e-6, rtol=1e-5)
    S_s, S_t = ref_marginal(p, s)[1], ref_marginal(p, t)[1]
    torch.testing.assert_close(Th @ S_t @ Th.T + Ch @ Ch.T, S_s, atol=1e-9, rtol=1e-7)


def affine_map(f, dim=2):
    """(A, b) of an affine map on R^dim, read off by evaluating it at 0 and the unit vectors."""
    b = f(torch.zeros(dim, dtype=F64))
    A = torch.stack([f(e) - b for e in torch.eye(dim, dtype=F64)], 1)
    return A, b


def ref_stochastic_moments(r: Ref, method, z, t, s, churn=0.0):
    """Mean [D, 2] and covariance [D, 2, 2] of one step from the fixed state z ([2D]) with the
    affine toy model: every stage is affine, so Gaussian moments propagate exactly. The model
    acts the same way on every coordinate, so one (A, b, noise) serves all of them."""
    h, mid = t - s, (t + s) / 2
    zero = torch.zeros(2, 2, dtype=F64)

    def drift(u, k):  # the forward-time drift at time u as a function of one (x, m) pair
        return lambda v: r.vel(v[None, None], u, r.eps(v[None, None], u), k=k)[0, 0]

    if method == "em":
        A, b = affine_map(lambda v: v - h * drift(t, 2.0)(v))
        moments = [(A, b, zero, h * r.Q)]
    elif method == "sscs":
        b_, g_, n_ = r.p["beta"], r.p["gamma"], r.p["nu"]
        Frev = 0.5 * b_ * torch.tensor([[-g_, -1 / r.M], [1.0, -n_]], dtype=F64)
        E, Qh = van_loan(Frev, r.Q, h / 2)
        # kick G G^T (score + Sigma_inf^-1 z) = beta diag(Gamma, nu) z - 2 (PF drift - F z)
        Dg = torch.diag(torch.tensor([b_ * g_, b_ * n_], dtype=F64))
        pf = drift(mid, 1.0)
        A, b = affine_map(lambda v: v + h * (Dg @ v - 2 * (pf(v) - r.F @ v)))
        moments = [(E, torch.zeros(2, dtype=F64), zero, Qh), (A, b, zero, zero)]
        moments.append(moments[0])
    elif method == "reduced_oba":
        moments = ref_oba(r, t, h)
    else:
        gain, _, _ = ref_bridge(r.p, t, s)
        T = churn**2 * gain + (1 - churn**2) * ref_pf_transport(r.p, t, s)
        a_s, S_s = ref_marginal(r.p, s)
        a_t, S_t = ref_marginal(r.p, t)
        k = a_s - T @ a_t
        A, b = affine_map(lambda v: T @ v + k * r.x0(v[None, None], t)[0, 0])
        moments = [(A, b, zero, S_s - T @ S_t @ T.T)]
    out_mu, out_cov = [], []
    for mu in pairs(z[None])[0]:
        cov = zero
        for A, b, _, noise in moments:
            mu, cov = A @ mu + b, A @ cov @ A.T + noise
        out_mu.append(mu)
        out_cov.append(cov)
    return torch.stack(out_mu), torch.stack(out_cov)


def ref_oba(r: Ref, t, h):
    """O: each channel an exact OU step to N(0, Sigma_inf); then the B and A Euler updates
    with the eps of the post-O state reused."""
    b_, g_, n_ = r.p["beta"], r.p["gamma"], r.p["nu"]
    decay = torch.tensor([math.exp(-b_ * g_ * h / 2), math.exp(-b_ * n_ * h / 2)], dtype=F64)
    E = torch.diag(decay)
    O_noise = torch.diag(torch.tensor([1.0, r.M], dtype=F64) * (1 - decay**2))
    Dg = torch.diag(torch.tensor([b_ * g_, b_ * n_], dtype=F64))
    Linv = torch.linalg.inv(r.aSL(t)[2])

    def kick(v, e):  # G G^T (score + Sigma_inf^-1 v) with the score from the frozen eps
        return Dg @ v - (e[None, None] @ Linv @ r.Q)[0, 0]

    def step(v):
        e = r.eps(v[None, None], t)[0, 0]
        m = v[1] + h * (b_ / 2 * v[0] + kick(v, e)[1])
        x = v[0] + h * (-b_ / 2 / r.M * m + kick(torch.stack([v[0], m]), e)[0])
        return torch.stack([x, m])

    A, b = affine_map(step)
    zero = torch.zeros(2, 2, dtype=F64)
    return [(E, torch.zeros(2, dtype=F64), zero, O_noise), (A, b, zero, zero)]


@pytest.mark.parametrize(
    "method,opts",
    [
        ("em", {}),
        ("sscs", {}),
        ("reduced_oba", {}),
        ("distributional", {"churn": 1.0}),
        ("distributional", {"churn": 0.5}),
    ],
)
@pytest.mark.parametrize("p", [DEFAULT, OTHER], ids=["default", "other"])
def test_stochastic_step_moments_match_reference(method, opts, p):
    """One step 0.4 -> 0.2 from a fixed state, 20000 times: mean and covariance of z_s."""
    ps, r, N = PhaseSpace(**p), Ref(p), 20000
    t, s = 0.4, 0.2
    z = torch.tensor([0.3, -0.8, 0.2, 0.4], dtype=F64)
    seen = {}
    sample(
        toy_model,
        z.expand(N, 4).clone(),
        process=ps,
        method=method,
        steps=2,
        grid=torch.tensor([t, s, 0.0], dtype=F64),
        generator=torch.Generator().manual_seed(7),
        callback=lambda i, u, zz, xx: seen.update(z=zz) if i == 1 else None,
        **opts,
    )
    mu, cov = ref_stochastic_moments(r, method, z, t, s, opts.get("churn", 0.0))
    Z = pairs(seen["z"])  # [N, D, 2]
    sd = torch.diagonal(cov, dim1=-2, dim2=-1).sqrt()
    assert ((Z.mean(0) - mu).abs() <= 5 * sd / math.sqrt(N) + 1e-12).all(), (Z.mean(0), mu)
    R = Z - Z.mean(0)
    emp = torch.einsum("ndi,ndj->dij", R, R) / (N - 1)
    scale = sd[..., :, None] * sd[..., None, :]
    assert ((emp - cov).abs() <= 0.05 * scale + 1e-12).all(), (emp, cov)


# ----- 5. whole samplers against the Gaussian-mixture truth ------------------------------------
BRIDGE_GRIDS = {
    1: [1.0, 0.0],
    2: [1.0, 0.05, 0.0],
    4: [1.0, 0.3, 0.08, 0.01, 0.0],
}


@pytest.mark.parametrize("steps", [1, 2, 4])
@pytest.mark.parametrize("churn", [0.0, 0.5, 1.0])
def test_distributional_with_exact_posterior_sampler_reproduces_mixture(steps, churn):
    """The grids visit small times, where z_s is informative and a wrong bridge coefficient
    moves the next posterior draw."""
    ps, gm, N = PhaseSpace(), two_modes(), 20000
    g = torch.Generator().manual_seed(10 * steps + int(4 * churn))
    model = gm.as_model(ps, "sample", generator=g)
    zT = ps.prior_sample((N, 2), generator=g, dtype=F64)
    grid = torch.tensor(BRIDGE_GRIDS[steps], dtype=F64)
    x0, nfe = sample(
        model,
        zT,
        process=ps,
        method="distributional",
        steps=steps,
        grid=grid,
        churn=churn,
        generator=g,
    )
    assert nfe == steps and x0.shape == (N, 2)
    assert_matches_mixture(x0, gm)


def test_one_step_mean_sampler_collapses_to_the_data_mean():
    ps, gm = PhaseSpace(), two_modes()
    model = gm.as_model(ps, "mean")
    zT = ps.prior_sample((4000, 2), generator=torch.Generator().manual_seed(4), dtype=F64)
    data_mean = (gm.weights[:, None] * gm.means).sum(0)
    for method in METHODS:
        x0, nfe = sample(model, zT, process=ps, method=method, steps=1)
        assert nfe == 1
        assert (x0 - data_mean).norm(dim=1).max() < 0.05, method
        assert torch.cdist(x0, gm.means).min() > 0.5, method


def pf_reference(model, ps: PhaseSpace, zT, t_end: float, n: int = 512):
    """RK4 on the PF ODE dz/dt = F z + 1/2 G G^T S_t^-1 (z - a_t E[x0 | z_t]) from 1 to t_end,
    with (F, G G^T, a_t, S_t) from the reference maths."""
    F, Q, _, _ = ref_sde(DEFAULT)
    ts = torch.linspace(1.0, t_end, 2 * n + 1, dtype=F64)
    a, S = ref_marginal(DEFAULT, ts)
    P = 0.5 * Q @ torch.linalg.inv(S)

    def vel(z, j):
        Z = pairs(z)
        x0 = model(z, ts[j].expand(z.shape[0]))
        r = Z - a[j] * x0[..., None]
        return unpairs(Z @ F.T + r @ P[j].T)

    h, z = float(ts[2] - ts[0]), zT
    for i in range(n):
        k1 = vel(z, 2 * i)
        k2 = vel(z + h / 2 * k1, 2 * i + 1)
        k3 = vel(z + h / 2 * k2, 2 * i + 1)
        k4 = vel(z + h * k3, 2 * i + 2)
        z = z + h / 6 * (k1 + 2 * k2 + 2 * k3 + k4)
    return z


ORDERS = {  # method, opts -> accepted band for the fitted order (see phase_space.md)
    ("euler", ()): (0.9, 1.5),
    ("naive_se", ()): (0.85, 1.25),
    ("reduced_se", ()): (0.85, 1.25),
    ("naive_vv", ()): (1.7, 2.3),
    ("reduced_vv", ()): (1.7, 2.3),
    ("reduced_vv", (("extrapolate", False),)): (0.85, 1.25),
    ("lambda_ddim", ()): (0.85, 1.25),
    ("lambda_ddim", (("lam", 0.5),)): (0.85, 1.25),
    ("conjugate_se", ()): (0.85, 1.25, (32, 64, 128, 256)),  # unstable below ~24 steps
    ("conjugate_vv", ()): (1.7, 2.3),
    ("distributional", ()): (0.85, 1.25),
}


@pytest.fixture(scope="module")
def pf_problem():
    ps, gm = PhaseSpace(), two_modes()
    model = gm.as_model(ps, "mean")
    zT = ps.prior_sample((64, 2), generator=torch.Generator().manual_seed(5), dtype=F64)
    t_end = 0.1
    ref = pf_reference(model, ps, zT, t_end)
    ref_coarse = pf_reference(model, ps, zT, t_end, n=256)
    assert (ref - ref_coarse).norm(dim=1).mean() < 1e-6  # RK4 reference is converged
    return ps, model, zT, t_end, ref


@pytest.mark.parametrize(
    "key", list(ORDERS), ids=lambda k: k[0] + "".join(f"-{v}" for _, v in k[1])
)
def test_order_of_convergence_on_the_pf_ode(key, pf_problem):
    """Integrate from 1 to t_end = 0.1 on a uniform grid with K in {16, 32, 64, 128} steps
    (conjugate_se: 32 to 256) and fit the slope of log(mean error) against log K."""
    ps, model, zT, t_end, ref = pf_problem
    method, opts = key[0], dict(key[1])
    lo, hi, *rest = ORDERS[key]
    Ks, errs, seen = (rest[0] if rest else (16, 32, 64, 128)), [], {}
    for K in Ks:
        grid = torch.cat([torch.linspace(1.0, t_end, K + 1, dtype=F64), torch.zeros(1, dtype=F64)])
        sample(
            model,
            zT,
            process=ps,
            method=method,
            steps=K + 1,
            grid=grid,
            callback=lambda i, t, z, x: seen.update(z=z, t=t),
            **opts,
        )
        assert seen["t"] == pytest.approx(t_end)
        errs.append((seen["z"] - ref).norm(dim=1).mean().item())
    x = torch.log(torch.tensor(Ks, dtype=F64))
    y = torch.log(torch.tensor(errs, dtype=F64))
    slope = -(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum()).item()
    assert lo <= slope <= hi, (method, opts, slope, errs)


def w1(x: torch.Tensor, y: torch.Tensor) -> float:
    """Sum over coordinates of the 1-D Wasserstein-1 distance between equal-size samples."""
    return sum(
        (x[:, j].sort().values - y[:, j].sort().values).abs().mean().item()
        for j in range(x.shape[1])
    )


@pytest.fixture(scope="module")
def data_problem():
    ps, gm, N = PhaseSpace(), two_modes(), 2000
    g = torch.Generator().manual_seed(8)
    truth = gm.sample(N, generator=g)
    zT = ps.prior_sample((N, 2), generator=g, dtype=F64)
    floor = w1(gm.sample(N, generator=g), truth)  # two exact samples: ~0.04
    return ps, gm, truth, zT, floor


@pytest.mark.parametrize("method", [*DETERMINISTIC, "distributional"])
def test_deterministic_samplers_with_exact_mean_converge_to_the_data(method, data_problem):
    """logsnr grid. Euler on the PF ODE is stiff near t = 0 (the momentum channel relaxes at a
    rate ~ G G^T / S_mm ~ 200), so it gets 512 steps; the others 128."""
    ps, gm, truth, zT, floor = data_problem
    model = gm.as_model(ps, "mean")
    K = 512 if method == "euler" else 128
    dist = []
    for steps in (8, K):
        x, _ = sample(model, zT, process=ps, method=method, steps=steps, grid="logsnr")
        dist.append(w1(x, truth))
    assert dist[1] < (3 if method == "euler" else 2) * floor, (method, dist, floor)
    assert dist[1] < 0.5 * dist[0], (method, dist, floor)


@pytest.mark.parametrize(
    "method,opts",
    [("em", {}), ("sscs", {}), ("reduced_oba", {}), ("distributional", {"churn": 1.0})],
)
def test_stochastic_samplers_with_exact_mean_are_weakly_right(method, opts, data_problem):
    ps, gm, truth, zT, floor = data_problem
    model = gm.as_model(ps, "mean")
    g = torch.Generator().manual_seed(9)
    x, nfe = sample(
        model, zT, process=ps, method=method, steps=128, grid="logsnr", generator=g, **opts
    )
    assert nfe == 128
    assert w1(x, truth) < 3 * floor, (method, w1(x, truth), floor)
    assert abs((x[:, 0] > 0.1).double().mean().item() - 0.7) < 0.04


# ----- 6. the contract -------------------------------------------------------------------------
def test_contract_shapes_nfe_dtype_and_options():
    ps = PhaseSpace()
    z = ps.prior_sample((3, 5, 2), generator=torch.Generator().manual_seed(0))
    assert z.shape == (3, 5, 4) and z.dtype == torch.get_default_dtype()
    nfe_per_step = {"naive_se": 2, "naive_vv": 3}
    for method in METHODS:
        x0, nfe = sample(toy_model, z, process=ps, method=method, steps=4, grid="edm")
        assert x0.shape == (3, 5, 2) and x0.dtype == z.dtype and torch.isfinite(x0).all()
        assert nfe == 3 * nfe_per_step.get(method, 1) + 1, method
    calls = []
    sample(
        lambda zz, t, cond: calls.append((t, cond)) or toy_model(zz, t),
        z,
        process=ps,
        method="euler",
        steps=2,
        t_start=0.5,
        cond="obs",
    )
    assert [c[1] for c in calls] == ["obs", "obs"] and calls[0][0].shape == (3,)
    assert calls[0][0][0].item() == pytest.approx(0.5)
    assert calls[1][0][0].item() == pytest.approx(0.25)
    assert sampler_config("lambda_ddim", lam=0.2).opts() == {"lam": 0.2, "quad_points": 129}
    with pytest.raises(ValueError, match="does not take"):
        sample(toy_model, z, process=ps, method="euler", steps=2, churn=0.5)
    msg = r"sampler=ddim does not run phase-space diffusion \(schedule=psld\); its samplers"
    with pytest.raises(ValueError, match=msg):
        sample(toy_model, z, process=ps, method="ddim", steps=2)
    for bad in ({"churn": 1.5}, {"quad_points": 10}, {"clip_x0": 0.0}):
        method = "distributional" if "churn" in bad or "clip_x0" in bad else "lambda_ddim"
        with pytest.raises(ValueError):
            sampler_config(method, **bad)
    with pytest.raises(ValueError, match=r"sampler=euler does not run vp diffusion \(sched"):
        sample(toy_model, z, process="cosine", method="euler", steps=2)
    with pytest.raises(ValueError, match="even last axis"):
        sample(toy_model, z[..., :3], process=ps, method="euler", steps=2)


def test_clip_and_times_below_t_min_are_clamped():
    ps = PhaseSpace(t_min=1e-3)
    z = ps.prior_sample((4, 2), dtype=F64)
    seen = []
    grid = torch.tensor([0.01, 5e-4, 2e-4, 0.0], dtype=F64)
    x0, nfe = sample(
        toy_model,
        z,
        process=ps,
        method="reduced_vv",
        steps=3,
        grid=grid,
        clip_x0=0.1,
        callback=lambda i, t, zz, xx: seen.append((t, xx)),
    )
    # 5e-4 -> 2e-4 is a no-op after clamping (no model call); the last call sits at t_min
    assert [t for t, _ in seen] == [0.01, 1e-3] and nfe == 2
    assert x0.abs().max() <= 0.1 and all(xx.abs().max() <= 0.1 for _, xx in seen)
