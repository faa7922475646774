"""Samplers of phase-space diffusion (PSLD; the process is :mod:`..processes.phase_space`).

All are stateless but for the extrapolating Verlet schemes (the previous step's eps); the last
step of every method goes to t = 0 and returns the model's x0 estimate at the last time > 0.
The splitting and conjugate schemes work with eps = L_t^-1 (z_t - a_t x0_hat) (score =
-L_t^-T eps), the quantity the PSLD paper's network predicts; "reduced" schemes reuse one eps
per step. Derivations and measured orders: ``../phase_space.md``.

- ``em``: Euler-Maruyama on the reverse SDE.  ``sscs``: Dockhorn et al.'s symmetric splitting.
- ``euler``: Euler on the probability-flow (PF) ODE.
- ``naive_se`` / ``reduced_se``: symplectic Euler on the PF ODE (2 / 1 NFE per step).
- ``naive_vv`` / ``reduced_vv`` [extrapolate]: velocity Verlet on the PF ODE (3 / 1 NFE).
- ``reduced_oba``: O (exact friction + noise), B (momentum kick), A (position drift); 1 NFE.
- ``lambda_ddim`` [lam, quad_points]: conjugate integrator with B = lam I (Pandey et al.
  2024); lam = 0 is the exponential-integrator ("DDIM") step with eps frozen.
- ``conjugate_se`` / ``conjugate_vv`` [lam, quad_points(, extrapolate)]: the conjugate-splitting
  hybrid: friction and the eps term in a conjugate frame, the x-m coupling split; 1 NFE.
- ``distributional`` [churn] (:mod:`.vp`): the process's Gaussian bridge for a posterior-sample
  model; churn 1 is the exact q(z_s | z_t, x0_hat), churn 0 the PF ODE solved exactly with
  x0_hat frozen.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from ..processes.phase_space import (
    _F64,
    Mat,
    PhaseSpace,
    _expm_critical,
    _join,
    _lin,
    _noise,
    _psd_sqrt,
    _simpson_sqrt,
    _split,
    _t64,
)
from .base import Denoise, SamplerConfig, StepContext, register


# ----- per-time coefficients (python floats; one set per step, shared by the batch) ----------
def _noise_gain(ps: PhaseSpace, u: float) -> Mat:
    """1/2 G G^T L_u^-T: how the PF velocity responds to eps (score = -L_u^-T eps)."""
    L = torch.linalg.cholesky(ps.marginal(u)[1])
    return (0.5 * ps.diffusion_diag()[:, None] * torch.linalg.inv(L).T).tolist()


def _eps(ps: PhaseSpace, u: float, x: Tensor, m: Tensor, x0: Tensor) -> tuple[Tensor, Tensor]:
    """eps = L_u^-1 (z - a_u x0): the noise an x0 estimate implies."""
    a, S = ps.marginal(u)
    Linv = torch.linalg.inv(torch.linalg.cholesky(S))
    return _lin(Linv.tolist(), x - float(a[0]) * x0, m - float(a[1]) * x0)


def _vel(
    ps: PhaseSpace, u: float, x: Tensor, m: Tensor, e: tuple[Tensor, Tensor], k: float = 1.0
) -> tuple[Tensor, Tensor]:
    """F z + k/2 G G^T L_u^-T eps: the PF-ODE velocity (k = 1) or the reverse-SDE drift (k = 2)
    in forward time."""
    fx, fm = _lin(ps.drift_matrix().tolist(), x, m)
    gx, gm = _lin(_noise_gain(ps, u), *e)
    return fx + k * gx, fm + k * gm


def _eps_at(st: dict, e: tuple[Tensor, Tensor], t: float, u: float, extrapolate: bool):
    """eps at a stage time u <= t from this step's value, linearly extrapolated in time from the
    previous step's when allowed (keeps the reduced Verlet schemes second order at 1 NFE)."""
    prev = st.get("prev")
    if not extrapolate or prev is None or u == t:
        return e
    t_prev, e_prev = prev
    w = (u - t) / (t_prev - t)
    return e[0] + w * (e_prev[0] - e[0]), e[1] + w * (e_prev[1] - e[1])


# ----- stochastic baselines -------------------------------------------------------------------
def _step_em(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """Euler-Maruyama on dz = [F z - G G^T score] dt + G dw_bar, from t down to s."""
    ps, den, g = r.process, r.model, r.generator
    h = t - s
    x, m = _split(z)
    bx, bm = _vel(ps, t, x, m, _den_eps(den, ps, z, t), k=2.0)
    gg = ps.diffusion_diag().tolist()
    nx, nm = _split(_noise(z, g))
    return _join(x - h * bx + math.sqrt(h * gg[0]) * nx, m - h * bm + math.sqrt(h * gg[1]) * nm)


def _reverse_linear(ps: PhaseSpace) -> Tensor:
    """Linear drift of the reverse SDE once its score term is written as
    G G^T (score + Sigma_inf^-1 z): (beta/2)(-J - D), J = [[0, M^-1], [-1, 0]], D = diag(Gamma,
    nu). With the noise G dw it keeps N(0, Sigma_inf) invariant, so its transition is exact."""
    b = 0.5 * ps.beta
    return torch.tensor([[-b * ps.gamma, -b * ps.mass_inv], [b, -b * ps.nu]], dtype=_F64)


def _ou(ps: PhaseSpace, z: Tensor, h: float, g: torch.Generator | None) -> Tensor:
    """Exact step h (reverse time) of dz = (beta/2)(-J - D) z + G dw (SSCS's analytic part)."""
    E = _expm_critical(_reverse_linear(ps), _t64(h))
    sinf = ps.stationary_cov()
    C = _psd_sqrt(sinf - E @ sinf @ E.T)
    x, m = _lin(E.tolist(), *_split(z))
    cx, cm = _lin(C.tolist(), *_split(_noise(z, g)))
    return _join(x + cx, m + cm)


def _kick(ps: PhaseSpace, u: float, x: Tensor, m: Tensor, e: tuple[Tensor, Tensor]):
    """G G^T (score + Sigma_inf^-1 z) = beta D z - G G^T L_u^-T eps."""
    gx, gm = _lin(_noise_gain(ps, u), *e)
    return ps.beta * ps.gamma * x - 2.0 * gx, ps.beta * ps.nu * m - 2.0 * gm


def _step_sscs(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """Symmetric splitting CLD sampler (Dockhorn et al. 2022): exact half step, Euler score kick
    at the midpoint time, exact half step."""
    ps, den, g = r.process, r.model, r.generator
    h, mid = t - s, t - 0.5 * (t - s)
    z = _ou(ps, z, 0.5 * h, g)
    x, m = _split(z)
    kx, km = _kick(ps, mid, x, m, _den_eps(den, ps, z, mid))
    return _ou(ps, _join(x + h * kx, m + h * km), 0.5 * h, g)


def _step_oba(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """Reduced OBA. O: friction + noise, -(beta/2) D z dtau + G dw, exact (diagonal OU).
    B: momentum kick (beta/2) x + [G G^T (score + Sigma_inf^-1 z)]_m. A: position drift
    -(beta/2) M^-1 m + [G G^T (score + Sigma_inf^-1 z)]_x with the updated m and B's eps."""
    ps, den, g = r.process, r.model, r.generator
    h, b = t - s, 0.5 * ps.beta
    fx, fm = math.exp(-b * ps.gamma * h), math.exp(-b * ps.nu * h)
    nx, nm = _split(_noise(z, g))
    x, m = _split(z)
    x = fx * x + math.sqrt(1.0 - fx * fx) * nx
    m = fm * m + math.sqrt(ps.mass * (1.0 - fm * fm)) * nm
    # every sub-step is Euler from the left end of [s, t]; the model sees the post-O state there
    e = _den_eps(den, ps, _join(x, m), t)
    m = m + h * (b * x + _kick(ps, t, x, m, e)[1])
    x = x + h * (-b * ps.mass_inv * m + _kick(ps, t, x, m, e)[0])
    return _join(x, m)


# ----- deterministic PF-ODE integrators in (x, m) ----------------------------------------------
def _step_euler(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """z_s = z_t - h v(z_t, t): explicit Euler on the PF ODE."""
    ps, den = r.process, r.model
    h = t - s
    x, m = _split(z)
    vx, vm = _vel(ps, t, x, m, _den_eps(den, ps, z, t))
    return _join(x - h * vx, m - h * vm)


def _step_se(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """Symplectic Euler: x with the field at (x_t, m_t, t), then m with the field at the updated
    (x_s, m_t, s). Naive: a fresh model call there; reduced: eps reused (1 NFE)."""
    ps, den, o = r.process, r.model, r.opts
    h = t - s
    x, m = _split(z)
    e = _den_eps(den, ps, z, t)
    x_s = x - h * _vel(ps, t, x, m, e)[0]
    if o["naive"]:
        e = _den_eps(den, ps, _join(x_s, m), s)
    return _join(x_s, m - h * _vel(ps, s, x_s, m, e)[1])


def _step_vv(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """Velocity Verlet B(h/2) A(h) B(h/2). The field of each variable depends on that variable
    itself (non-separable), so the A stage sits at the predicted midpoint position and the last
    B stage at the predicted end momentum: second order. Naive: a model call per stage (3 NFE);
    reduced: eps reused, extrapolated from the previous step when ``extrapolate`` (1 NFE)."""
    ps, den, o, st = r.process, r.model, r.opts, r.state
    h, mid = t - s, t - 0.5 * (t - s)
    x, m = _split(z)
    e = _den_eps(den, ps, z, t)
    vx, vm = _vel(ps, t, x, m, e)
    m_half, x_mid, m_pred = m - 0.5 * h * vm, x - 0.5 * h * vx, m - h * vm

    def stage(zx: Tensor, zm: Tensor, u: float) -> tuple[Tensor, Tensor]:
        if o["naive"]:
            return _den_eps(den, ps, _join(zx, zm), u)
        return _eps_at(st, e, t, u, o["extrapolate"])

    x_s = x - h * _vel(ps, mid, x_mid, m_half, stage(x_mid, m_half, mid))[0]
    m_s = m_half - 0.5 * h * _vel(ps, s, x_s, m_pred, stage(x_s, m_pred, s))[1]
    st["prev"] = (t, e)
    return _join(x_s, m_s)


# ----- conjugate integrators (Pandey et al. 2024) -----------------------------------------------
def _gain_path(ps: PhaseSpace, u: Tensor) -> Tensor:
    """1/2 G G^T L_u^-T at many times, ``[n, 2, 2]``."""
    Linv = torch.linalg.inv(torch.linalg.cholesky(ps.marginal(u)[1]))
    return 0.5 * ps.diffusion_diag()[:, None] * Linv.transpose(-1, -2)


def _step_lambda_ddim(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """Conjugate integrator with B = lam I in the frame zh_u = e^{lam (u-t)} Phi(t, u) z_u
    (F absorbed): Euler on lam zh, the eps term with its exact weight. Back in z:
    z_s = (1 - lam h) e^{lam h} Phi(s,t) z_t - [int_s^t e^{lam (u-s)} Phi(s,u) 1/2 G G^T
    L_u^-T du] eps_t."""
    ps, den, o = r.process, r.model, r.opts
    lam, h = o["lam"], t - s
    u, wq = _simpson_sqrt(s, t, o["quad_points"])
    kern = torch.exp(lam * (u - s))[:, None, None] * ps.transition(s, u) @ _gain_path(ps, u)
    W = -(wq[:, None, None] * kern).sum(0)
    lin = (1.0 - lam * h) * math.exp(lam * h) * ps.transition(s, t)
    x, m = _split(z)
    lx, lm = _lin(lin.tolist(), x, m)
    ex, em = _lin(W.tolist(), *_den_eps(den, ps, z, t))
    return _join(lx + ex, lm + em)


class _HybridFrame:
    """Conjugate frame of one step from t that absorbs only the dissipative drift:
    B = lam I + (beta/2) J, so A_u = exp((B - F)(u - t)) = diag(e^{(lam + beta Gamma/2)(u-t)},
    e^{(lam + beta nu/2)(u-t)}) and xi, eta stay position and momentum. In it
    d(xi, eta)/du = lam (xi, eta) + c(u) (eta, xi) + W_u eps with the conservative couplings
    c_xm = (beta/2) M^-1 A_x/A_m, c_mx = -(beta/2) A_m/A_x and W_u = A_u 1/2 G G^T L_u^-T."""

    def __init__(self, ps: PhaseSpace, t: float, lam: float, n: int):
        self.ps, self.t, self.lam, self.n = ps, t, lam, n
        self.rx, self.rm = lam + 0.5 * ps.beta * ps.gamma, lam + 0.5 * ps.beta * ps.nu

    def to_z(self, u: float, xi: Tensor, eta: Tensor) -> tuple[Tensor, Tensor]:
        return math.exp(-self.rx * (u - self.t)) * xi, math.exp(-self.rm * (u - self.t)) * eta

    def weights(self, u0: float, u1: float) -> tuple[Mat, float, float]:
        """(int W_u du, int c_xm du, int c_mx du) over [u0 -> u1] by quadrature."""
        u, wq = _simpson_sqrt(u0, u1, self.n)
        ax, am = torch.exp(self.rx * (u - self.t)), torch.exp(self.rm * (u - self.t))
        W = torch.stack([ax, am], -1)[:, :, None] * _gain_path(self.ps, u)
        b = 0.5 * self.ps.beta
        kxm = float((wq * b * self.ps.mass_inv * ax / am).sum())
        kmx = float((wq * -b * am / ax).sum())
        return (wq[:, None, None] * W).sum(0).tolist(), kxm, kmx


def _step_conj_se(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """Symplectic Euler in the hybrid frame (1 NFE): xi from eta_t, then eta from the new xi,
    with the eps term of both from eps_t and the couplings with exact weights."""
    ps, den, o = r.process, r.model, r.opts
    fr = _HybridFrame(ps, t, o["lam"], o["quad_points"])
    h = t - s
    x, m = _split(z)
    W, kxm, kmx = fr.weights(t, s)
    ex, em = _lin(W, *_den_eps(den, ps, z, t))
    xi = (1.0 - fr.lam * h) * x + kxm * m + ex
    eta = (1.0 - fr.lam * h) * m + kmx * xi + em
    return _join(*fr.to_z(s, xi, eta))


def _step_conj_vv(r: StepContext, z: Tensor, t: float, s: float) -> Tensor:
    """Velocity Verlet in the hybrid frame (1 NFE): eta half step from xi_t and eps_t, xi full
    step from eta_half and eps at the midpoint, eta half step from xi_s and eps at s (stage
    eps extrapolated from the previous step when ``extrapolate``)."""
    ps, den, o, st = r.process, r.model, r.opts, r.state
    fr = _HybridFrame(ps, t, o["lam"], o["quad_points"])
    h, mid = t - s, t - 0.5 * (t - s)
    x, m = _split(z)
    e = _den_eps(den, ps, z, t)
    W1, _, kmx1 = fr.weights(t, mid)
    W2, _, kmx2 = fr.weights(mid, s)
    W, kxm, _ = fr.weights(t, s)
    eta = (1.0 - 0.5 * fr.lam * h) * m + kmx1 * x + _lin(W1, *e)[1]
    e_mid = _eps_at(st, e, t, mid, o["extrapolate"])
    xi = (1.0 - fr.lam * h) * x + kxm * eta + _lin(W, *e_mid)[0]
    e_s = _eps_at(st, e, t, s, o["extrapolate"])
    eta = (1.0 - 0.5 * fr.lam * h) * eta + kmx2 * xi + _lin(W2, *e_s)[1]
    st["prev"] = (t, e)
    return _join(*fr.to_z(s, xi, eta))


def _den_eps(den: Denoise, ps: PhaseSpace, z: Tensor, u: float) -> tuple[Tensor, Tensor]:
    """The eps implied by the model's x0 estimate at (z, u)."""
    return _eps(ps, u, *_split(z), den(z, u))


@dataclass
class _Run:
    """What a phase-space step function reads: the run's context and the method's options."""

    process: PhaseSpace
    model: Denoise
    generator: torch.Generator | None
    state: dict[str, Any]
    opts: dict[str, Any]


@dataclass
class PhaseSpaceSampler(SamplerConfig):
    """A sampler of phase-space diffusion: its step function ``rule`` with this method's options
    (fields, plus the fixed ones in ``fixed``)."""

    steps: int = 10
    families = ("phase_space",)
    fixed: ClassVar[dict[str, Any]] = {}

    @staticmethod
    def rule(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
        raise NotImplementedError

    def step(self, ctx: StepContext, x: Tensor, t: float, s: float) -> Tensor:
        opts = {**self.opts(), **self.fixed}
        return self.rule(_Run(ctx.process, ctx.model, ctx.generator, ctx.state, opts), x, t, s)


class _Conjugate(PhaseSpaceSampler):
    """Options of the conjugate schemes, and the step size they cannot exceed."""

    #: growth rate of one step (phase_space.md §5, §7): lambda_ddim maps back with
    #: Phi(s, t) ~ e^{beta (Gamma + nu) h / 4}; the hybrid frame's couplings grow like
    #: e^{(beta/2)(nu - Gamma) h}. With an exact model both blew up once h x rate reached 2 and
    #: were fine at 1 (benchmarks/results/psld_oracle.md).
    @staticmethod
    def stiff_rate(ps: PhaseSpace) -> float:
        return 0.5 * ps.beta * abs(ps.nu - ps.gamma)

    def __post_init__(self) -> None:
        super().__post_init__()
        if not math.isfinite(float(self.lam)):
            raise ValueError(f"sampler.lam must be finite, got {self.lam}")
        n = self.quad_points
        if isinstance(n, bool) or not isinstance(n, int) or n < 3 or n % 2 == 0:
            raise ValueError(
                f"sampler.quad_points must be an odd integer >= 3 (Simpson), got {n!r}"
            )

    def grid_warning(self, process: PhaseSpace, ts: Tensor) -> str | None:
        """Why this scheme is likely to blow up on the descending grid ``ts``: its largest
        integration step h (the final step to 0 is a model call, not an integration) must keep
        h x rate <= 1.5."""
        if len(ts) < 3:
            return None
        h = float((ts[:-2] - ts[1:-1]).max())
        rate = self.stiff_rate(process)
        if h * rate <= 1.5:
            return None
        return (
            f"phase-space sampler {self.kind!r} with steps of up to {h:.3g} is unstable for these "
            f"constants (h x {rate:.3g} = {h * rate:.2g} > 1.5): use at least "
            f"{math.ceil(rate / 1.5)} uniform steps, or 'distributional' / "
            f"'reduced_oba' / 'em' for coarse steps (phase_space.md §7)"
        )


def _check_extrapolate(value: Any) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"sampler.extrapolate must be a bool, got {value!r}")


@register
@dataclass
class EMSampler(PhaseSpaceSampler):
    kind: str = "em"
    rule = staticmethod(_step_em)


@register
@dataclass
class SSCSSampler(PhaseSpaceSampler):
    kind: str = "sscs"
    rule = staticmethod(_step_sscs)


@register
@dataclass
class EulerSampler(PhaseSpaceSampler):
    kind: str = "euler"
    rule = staticmethod(_step_euler)


@register
@dataclass
class NaiveSESampler(PhaseSpaceSampler):
    kind: str = "naive_se"
    rule = staticmethod(_step_se)
    fixed: ClassVar[dict[str, Any]] = {"naive": True}
    nfe_per_step = 2


@register
@dataclass
class ReducedSESampler(PhaseSpaceSampler):
    kind: str = "reduced_se"
    rule = staticmethod(_step_se)
    fixed: ClassVar[dict[str, Any]] = {"naive": False}


@register
@dataclass
class NaiveVVSampler(PhaseSpaceSampler):
    kind: str = "naive_vv"
    rule = staticmethod(_step_vv)
    fixed: ClassVar[dict[str, Any]] = {"naive": True, "extrapolate": False}
    nfe_per_step = 3


@register
@dataclass
class ReducedVVSampler(PhaseSpaceSampler):
    kind: str = "reduced_vv"
    extrapolate: bool = True
    rule = staticmethod(_step_vv)
    fixed: ClassVar[dict[str, Any]] = {"naive": False}

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_extrapolate(self.extrapolate)


@register
@dataclass
class ReducedOBASampler(PhaseSpaceSampler):
    kind: str = "reduced_oba"
    rule = staticmethod(_step_oba)


@register
@dataclass
class LambdaDDIMSampler(_Conjugate):
    kind: str = "lambda_ddim"
    lam: float = 0.0
    quad_points: int = 129
    rule = staticmethod(_step_lambda_ddim)

    @staticmethod
    def stiff_rate(ps: PhaseSpace) -> float:
        return ps.beta * (ps.gamma + ps.nu) / 4.0


@register
@dataclass
class ConjugateSESampler(_Conjugate):
    kind: str = "conjugate_se"
    lam: float = 0.0
    quad_points: int = 129
    rule = staticmethod(_step_conj_se)


@register
@dataclass
class ConjugateVVSampler(_Conjugate):
    kind: str = "conjugate_vv"
    lam: float = 0.0
    quad_points: int = 129
    extrapolate: bool = True
    rule = staticmethod(_step_conj_vv)

    def __post_init__(self) -> None:
        super().__post_init__()
        _check_extrapolate(self.extrapolate)
