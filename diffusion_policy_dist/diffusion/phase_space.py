"""Phase-space Langevin diffusion (PSLD) with an x0 model: closed-form Gaussians and samplers.

Per action coordinate the state is ``z = (x, m)`` (position, momentum) and, for t in [0, 1],

    dx = (beta/2)(M^-1 m - Gamma x) dt + sqrt(Gamma beta) dw
    dm = (beta/2)(-x - nu m) dt + sqrt(M nu beta) dw,     M^-1 = (Gamma - nu)^2 / 4

(critical damping). ``m_0 = 0`` and the initial momentum variance ``kappa M`` is folded into the
covariance, so ``z_0 | x0 ~ N((x0, 0), diag(0, kappa M))``; the prior is N(0, 1) x N(0, M).
Tensors carry the D position channels first and the D momentum channels last on the final axis,
so a chunk ``[B, H, Da]`` becomes ``[B, H, 2 Da]``.

Everything is linear-Gaussian per coordinate, so ``z_t | x0 ~ N(a_t x0, S_t)`` with ``a_t`` in
R^2 and ``S_t`` in R^{2x2} in closed form (see ``phase_space.md`` for the derivations). A model
``model(z_t, t, cond) -> x0_hat [B, ..., D]`` keeps the package contract; the score is
``-S_t^-1 (z_t - a_t x0_hat)``.

Samplers (:data:`METHODS`, entry point :func:`sample_phase_space`), all stateless; the last step
of every method goes to t = 0 and returns the model's x0 estimate at the last time > 0. The
splitting and conjugate schemes work with eps = L_t^-1 (z_t - a_t x0_hat) (score = -L_t^-T eps),
the quantity the PSLD paper's network predicts; "reduced" schemes reuse one eps per step.

- ``em``: Euler-Maruyama on the reverse SDE.  ``sscs``: Dockhorn et al.'s symmetric splitting.
- ``euler``: Euler on the probability-flow (PF) ODE.
- ``naive_se`` / ``reduced_se``: symplectic Euler on the PF ODE (2 / 1 NFE per step).
- ``naive_vv`` / ``reduced_vv`` [extrapolate]: velocity Verlet on the PF ODE (3 / 1 NFE).
- ``reduced_oba``: O (exact friction + noise), B (momentum kick), A (position drift); 1 NFE.
- ``lambda_ddim`` [lam, quad_points]: conjugate integrator with B = lam I (Pandey et al.
  2024); lam = 0 is the exponential-integrator ("DDIM") step with eps frozen.
- ``conjugate_se`` / ``conjugate_vv`` [lam, quad_points(, extrapolate)]: the conjugate-splitting
  hybrid: friction and the eps term in a conjugate frame, the x-m coupling split; 1 NFE.
- ``distributional`` [churn]: the Gaussian bridge for a posterior-sample model; churn 1 is the
  exact q(z_s | z_t, x0_hat), churn 0 the PF ODE solved exactly with x0_hat frozen.

Every method also takes ``clip_x0`` (clamp x0 estimates to [-c, c]; None by default).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

if TYPE_CHECKING:  # schedules.py lists PhaseSpace, so this module imports no sibling at load
    from .oracle import GaussianMixture

ModelFn = Callable[[Tensor, Tensor, Any], Tensor]
Callback = Callable[[int, float, Tensor, Tensor], None]
Mat = list[list[float]]

_F64 = torch.float64


def _t64(t: float | Tensor) -> Tensor:
    return torch.as_tensor(t, dtype=_F64)


def _expm_critical(K: Tensor, h: Tensor) -> Tensor:
    """exp(K h) for a 2x2 K with a repeated eigenvalue: K - lam I is nilpotent, so the series
    stops after the linear term. h: any shape; returns ``[*h.shape, 2, 2]``."""
    lam = 0.5 * torch.diagonal(K).sum()
    nil = K - lam * torch.eye(2, dtype=_F64)
    h = h[..., None, None]
    return torch.exp(lam * h) * (torch.eye(2, dtype=_F64) + nil * h)


def _sym(S: Tensor) -> Tensor:
    return 0.5 * (S + S.transpose(-1, -2))


def _psd_sqrt(S: Tensor) -> Tensor:
    """Symmetric square root of a PSD 2x2 matrix; tiny negative eigenvalues (rounding) -> 0."""
    w, V = torch.linalg.eigh(_sym(S))
    return (V * w.clamp_min(0.0).sqrt()[..., None, :]) @ V.transpose(-1, -2)


@dataclass
class PhaseSpace:
    """PSLD forward process with critical damping (defaults: the authors' CIFAR-10 config).

    ``t_min`` is the smallest time any score, sampler or ``perturb`` uses: S_t is singular at
    t = 0 (no position noise yet). At 1e-3 with the defaults, sqrt(S_xx) ~ 0.009 and
    cond(S_t) ~ 2e2, so S_t^-1 and its Cholesky factor are exact to ~1e-13 in float64.
    """

    beta: float = 8.0
    gamma: float = 0.01
    nu: float = 4.01
    kappa: float = 0.04
    t_min: float = 1e-3
    kind: str = "psld"

    def __post_init__(self) -> None:
        if not (self.beta > 0 and self.gamma > 0 and self.nu > 0):
            raise ValueError(
                f"PhaseSpace needs beta, gamma, nu > 0 (noise on both channels keeps S_t "
                f"invertible); got beta={self.beta}, gamma={self.gamma}, nu={self.nu}"
            )
        if self.gamma == self.nu:
            raise ValueError("PhaseSpace: gamma == nu gives M^-1 = 0 (infinite mass)")
        if self.kappa < 0:
            raise ValueError(f"PhaseSpace: kappa must be >= 0, got {self.kappa}")
        if not 0.0 < self.t_min < 1.0:
            raise ValueError(f"PhaseSpace: t_min must be in (0, 1), got {self.t_min}")

    # ----- constants -------------------------------------------------------------------------
    @property
    def mass_inv(self) -> float:
        """M^-1 = (Gamma - nu)^2 / 4 (critical damping)."""
        return (self.gamma - self.nu) ** 2 / 4.0

    @property
    def mass(self) -> float:
        return 1.0 / self.mass_inv

    def drift_matrix(self) -> Tensor:
        """F = (beta/2) [[-Gamma, M^-1], [-1, -nu]], ``[2, 2]`` float64."""
        b = 0.5 * self.beta
        return torch.tensor([[-b * self.gamma, b * self.mass_inv], [-b, -b * self.nu]], dtype=_F64)

    def diffusion_diag(self) -> Tensor:
        """Diagonal of G G^T = beta diag(Gamma, M nu), ``[2]``."""
        return torch.tensor([self.beta * self.gamma, self.beta * self.mass * self.nu], dtype=_F64)

    def stationary_cov(self) -> Tensor:
        """Sigma_inf = diag(1, M): the prior covariance (solves F S + S F^T + G G^T = 0)."""
        return torch.diag(torch.tensor([1.0, self.mass], dtype=_F64))

    def initial_cov(self) -> Tensor:
        """S_0 = diag(0, kappa M)."""
        return torch.diag(torch.tensor([0.0, self.kappa * self.mass], dtype=_F64))

    def log_snr(self, t: Tensor) -> Tensor:
        """log-SNR of the position channel, 2 log(a_x / sqrt(S_xx)) at the clamped time (what
        a time weighting sees); the dtype of ``t``."""
        t = torch.as_tensor(t)
        a, S = self.marginal(self.clamp(t))
        out = 2.0 * torch.log(a[..., 0]) - torch.log(S[..., 0, 0])
        return out.to(t.dtype if t.is_floating_point() else _F64)

    def channels(self, D: int) -> int:
        """Channels of z for D action dimensions (x and m)."""
        return 2 * D

    def clamp(self, t: float | Tensor) -> Tensor:
        """Time clamped to ``[t_min, 1]`` (float64)."""
        return _t64(t).clamp(self.t_min, 1.0)

    # ----- closed-form Gaussians -------------------------------------------------------------
    def transition(self, t: float | Tensor, s: float | Tensor = 0.0) -> Tensor:
        """Phi(t, s) = exp(F (t - s)), ``[*shape, 2, 2]`` (valid for either sign of t - s)."""
        return _expm_critical(self.drift_matrix(), _t64(t) - _t64(s))

    def transition_cov(self, t: float | Tensor, s: float | Tensor) -> Tensor:
        """Sigma(t, s) = Cov(z_t | z_s) for t >= s: Sigma_inf - Phi Sigma_inf Phi^T."""
        phi = self.transition(t, s)
        sinf = self.stationary_cov()
        return _sym(sinf - phi @ sinf @ phi.transpose(-1, -2))

    def marginal(self, t: float | Tensor) -> tuple[Tensor, Tensor]:
        """``(a_t, S_t)`` with z_t | x0 ~ N(a_t x0, S_t) per coordinate (no clamping).

        t: a float or 0-dim tensor -> ``[2]``, ``[2, 2]``; t ``[B]`` -> ``[B, 2]``, ``[B, 2, 2]``.
        """
        phi = self.transition(t)
        sinf = self.stationary_cov()
        # S_t = Sigma_inf - Phi (Sigma_inf - S_0) Phi^T: the Lyapunov solution started at S_0
        S = sinf - phi @ (sinf - self.initial_cov()) @ phi.transpose(-1, -2)
        return phi[..., :, 0], _sym(S)

    def marginal_batch(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """Batched :meth:`marginal` for t ``[B]`` -> ``([B, 2], [B, 2, 2])``."""
        return self.marginal(_t64(t).reshape(-1))

    def cholesky(self, t: float | Tensor) -> Tensor:
        """Lower Cholesky factor L_t of S_t at the clamped time, ``[*shape, 2, 2]``."""
        return torch.linalg.cholesky(self.marginal(self.clamp(t))[1])

    # ----- tensors of z --------------------------------------------------------------------
    def perturb(self, x0: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """z_t = a_t x0 + L_t eps per coordinate (training). x0 ``[B, ..., D]``, t ``[B]``
        (clamped to ``[t_min, 1]``), eps ``[B, ..., 2D]`` standard normal -> ``[B, ..., 2D]``."""
        if eps.shape[:-1] != x0.shape[:-1] or eps.shape[-1] != 2 * x0.shape[-1]:
            raise ValueError(f"perturb: eps {tuple(eps.shape)} does not fit x0 {tuple(x0.shape)}")
        tc = self.clamp(t).reshape(-1)
        a, S = self.marginal(tc)
        L = torch.linalg.cholesky(S)
        view = (-1,) + (1,) * (x0.dim() - 1)

        def c(v: Tensor) -> Tensor:
            return v.to(dtype=x0.dtype, device=x0.device).reshape(view)

        ex, em = _split(eps)
        x = c(a[:, 0]) * x0 + c(L[:, 0, 0]) * ex
        m = c(a[:, 1]) * x0 + c(L[:, 1, 0]) * ex + c(L[:, 1, 1]) * em
        return _join(x, m)

    def score(self, z: Tensor, t: float, x0_hat: Tensor) -> Tensor:
        """grad log p_t(z) = -S_t^-1 (z - a_t x0_hat) at one (clamped) time; ``[B, ..., 2D]``."""
        a, S = self.marginal(self.clamp(t))
        P = torch.linalg.inv(S)
        x, m = _split(z)
        rx, rm = x - float(a[0]) * x0_hat, m - float(a[1]) * x0_hat
        return _join(*_lin((-P).tolist(), rx, rm))

    def prior_sample(
        self,
        shape: tuple[int, ...] | torch.Size,
        generator: torch.Generator | None = None,
        *,
        dtype: torch.dtype | None = None,
        device: torch.device | str | None = None,
    ) -> Tensor:
        """z_T ~ N(0, 1) x N(0, M) for an x0 of ``shape`` -> ``[*shape[:-1], 2 * shape[-1]]``."""
        shape = tuple(shape)
        full = (*shape[:-1], 2 * shape[-1])
        z = torch.randn(full, generator=generator, dtype=dtype, device=device)
        x, m = _split(z)
        return _join(x, math.sqrt(self.mass) * m)


# ----- small helpers on z = (x, m) -----------------------------------------------------------
def _split(z: Tensor) -> tuple[Tensor, Tensor]:
    if z.shape[-1] % 2:
        raise ValueError(f"a phase-space tensor needs an even last axis, got {tuple(z.shape)}")
    D = z.shape[-1] // 2
    return z[..., :D], z[..., D:]


def _join(x: Tensor, m: Tensor) -> Tensor:
    return torch.cat([x, m], dim=-1)


def _lin(K: Mat, x: Tensor, m: Tensor) -> tuple[Tensor, Tensor]:
    """Apply a 2x2 matrix (nested python floats) to every coordinate's (x, m)."""
    return K[0][0] * x + K[0][1] * m, K[1][0] * x + K[1][1] * m


def _noise(z: Tensor, generator: torch.Generator | None) -> Tensor:
    return torch.randn(z.shape, generator=generator, dtype=z.dtype, device=z.device)


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


class _Denoiser:
    """Counts and checks model calls; clips x0 estimates; turns them into eps."""

    def __init__(self, model: ModelFn, cond: Any, clip: float | None, callback: Callback | None):
        self.model, self.cond, self.clip, self.callback = model, cond, clip, callback
        self.nfe, self.step = 0, 0

    def __call__(self, z: Tensor, u: float) -> Tensor:
        """The model's x0 estimate at (z, u)."""
        t_vec = torch.full((z.shape[0],), u, dtype=z.dtype, device=z.device)
        x0 = self.model(z, t_vec, self.cond)
        self.nfe += 1
        want = (*z.shape[:-1], z.shape[-1] // 2)
        if tuple(x0.shape) != want:
            raise ValueError(
                f"model returned {tuple(x0.shape)} for z {tuple(z.shape)}; want {want}"
            )
        if self.clip is not None:
            x0 = x0.clamp(-float(self.clip), float(self.clip))
        if self.callback is not None:
            self.callback(self.step, u, z, x0)
        return x0

    def eps(self, ps: PhaseSpace, z: Tensor, u: float) -> tuple[Tensor, Tensor]:
        """The eps implied by the model's x0 estimate at (z, u)."""
        return _eps(ps, u, *_split(z), self(z, u))


@dataclass
class _Run:
    """What one sampling run shares across its steps (the state holds the last step's eps for
    the extrapolating Verlet schemes)."""

    ps: PhaseSpace
    den: _Denoiser
    opts: dict[str, Any]
    generator: torch.Generator | None
    state: dict[str, Any]


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
def _step_em(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """Euler-Maruyama on dz = [F z - G G^T score] dt + G dw_bar, from t down to s."""
    ps, den, g = r.ps, r.den, r.generator
    h = t - s
    x, m = _split(z)
    bx, bm = _vel(ps, t, x, m, den.eps(ps, z, t), k=2.0)
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


def _step_sscs(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """Symmetric splitting CLD sampler (Dockhorn et al. 2022): exact half step, Euler score kick
    at the midpoint time, exact half step."""
    ps, den, g = r.ps, r.den, r.generator
    h, mid = t - s, t - 0.5 * (t - s)
    z = _ou(ps, z, 0.5 * h, g)
    x, m = _split(z)
    kx, km = _kick(ps, mid, x, m, den.eps(ps, z, mid))
    return _ou(ps, _join(x + h * kx, m + h * km), 0.5 * h, g)


def _step_oba(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """Reduced OBA. O: friction + noise, -(beta/2) D z dtau + G dw, exact (diagonal OU).
    B: momentum kick (beta/2) x + [G G^T (score + Sigma_inf^-1 z)]_m. A: position drift
    -(beta/2) M^-1 m + [G G^T (score + Sigma_inf^-1 z)]_x with the updated m and B's eps."""
    ps, den, g = r.ps, r.den, r.generator
    h, b = t - s, 0.5 * ps.beta
    fx, fm = math.exp(-b * ps.gamma * h), math.exp(-b * ps.nu * h)
    nx, nm = _split(_noise(z, g))
    x, m = _split(z)
    x = fx * x + math.sqrt(1.0 - fx * fx) * nx
    m = fm * m + math.sqrt(ps.mass * (1.0 - fm * fm)) * nm
    # every sub-step is Euler from the left end of [s, t]; the model sees the post-O state there
    e = den.eps(ps, _join(x, m), t)
    m = m + h * (b * x + _kick(ps, t, x, m, e)[1])
    x = x + h * (-b * ps.mass_inv * m + _kick(ps, t, x, m, e)[0])
    return _join(x, m)


# ----- deterministic PF-ODE integrators in (x, m) ----------------------------------------------
def _step_euler(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """z_s = z_t - h v(z_t, t): explicit Euler on the PF ODE."""
    ps, den = r.ps, r.den
    h = t - s
    x, m = _split(z)
    vx, vm = _vel(ps, t, x, m, den.eps(ps, z, t))
    return _join(x - h * vx, m - h * vm)


def _step_se(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """Symplectic Euler: x with the field at (x_t, m_t, t), then m with the field at the updated
    (x_s, m_t, s). Naive: a fresh model call there; reduced: eps reused (1 NFE)."""
    ps, den, o = r.ps, r.den, r.opts
    h = t - s
    x, m = _split(z)
    e = den.eps(ps, z, t)
    x_s = x - h * _vel(ps, t, x, m, e)[0]
    if o["naive"]:
        e = den.eps(ps, _join(x_s, m), s)
    return _join(x_s, m - h * _vel(ps, s, x_s, m, e)[1])


def _step_vv(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """Velocity Verlet B(h/2) A(h) B(h/2). The field of each variable depends on that variable
    itself (non-separable), so the A stage sits at the predicted midpoint position and the last
    B stage at the predicted end momentum: second order. Naive: a model call per stage (3 NFE);
    reduced: eps reused, extrapolated from the previous step when ``extrapolate`` (1 NFE)."""
    ps, den, o, st = r.ps, r.den, r.opts, r.state
    h, mid = t - s, t - 0.5 * (t - s)
    x, m = _split(z)
    e = den.eps(ps, z, t)
    vx, vm = _vel(ps, t, x, m, e)
    m_half, x_mid, m_pred = m - 0.5 * h * vm, x - 0.5 * h * vx, m - h * vm

    def stage(zx: Tensor, zm: Tensor, u: float) -> tuple[Tensor, Tensor]:
        if o["naive"]:
            return den.eps(ps, _join(zx, zm), u)
        return _eps_at(st, e, t, u, o["extrapolate"])

    x_s = x - h * _vel(ps, mid, x_mid, m_half, stage(x_mid, m_half, mid))[0]
    m_s = m_half - 0.5 * h * _vel(ps, s, x_s, m_pred, stage(x_s, m_pred, s))[1]
    st["prev"] = (t, e)
    return _join(x_s, m_s)


# ----- conjugate integrators (Pandey et al. 2024) -----------------------------------------------
def _simpson_sqrt(u0: float, u1: float, n: int) -> tuple[Tensor, Tensor]:
    """Nodes u and weights for int_{u0}^{u1} f(u) du, Simpson in w = sqrt(u) (the weight 2w is
    folded in): eps-weights carry L_u^-T ~ u^-1/2 near 0, smooth in w."""
    w = torch.linspace(math.sqrt(u0), math.sqrt(u1), n, dtype=_F64)
    simpson = torch.ones(n, dtype=_F64)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    dw = (math.sqrt(u1) - math.sqrt(u0)) / (n - 1)
    return w * w, (dw / 3.0) * simpson * 2.0 * w


def _gain_path(ps: PhaseSpace, u: Tensor) -> Tensor:
    """1/2 G G^T L_u^-T at many times, ``[n, 2, 2]``."""
    Linv = torch.linalg.inv(torch.linalg.cholesky(ps.marginal(u)[1]))
    return 0.5 * ps.diffusion_diag()[:, None] * Linv.transpose(-1, -2)


def _step_lambda_ddim(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """Conjugate integrator with B = lam I in the frame zh_u = e^{lam (u-t)} Phi(t, u) z_u
    (F absorbed): Euler on lam zh, the eps term with its exact weight. Back in z:
    z_s = (1 - lam h) e^{lam h} Phi(s,t) z_t - [int_s^t e^{lam (u-s)} Phi(s,u) 1/2 G G^T
    L_u^-T du] eps_t."""
    ps, den, o = r.ps, r.den, r.opts
    lam, h = o["lam"], t - s
    u, wq = _simpson_sqrt(s, t, o["quad_points"])
    kern = torch.exp(lam * (u - s))[:, None, None] * ps.transition(s, u) @ _gain_path(ps, u)
    W = -(wq[:, None, None] * kern).sum(0)
    lin = (1.0 - lam * h) * math.exp(lam * h) * ps.transition(s, t)
    x, m = _split(z)
    lx, lm = _lin(lin.tolist(), x, m)
    ex, em = _lin(W.tolist(), *den.eps(ps, z, t))
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


def _step_conj_se(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """Symplectic Euler in the hybrid frame (1 NFE): xi from eta_t, then eta from the new xi,
    with the eps term of both from eps_t and the couplings with exact weights."""
    ps, den, o = r.ps, r.den, r.opts
    fr = _HybridFrame(ps, t, o["lam"], o["quad_points"])
    h = t - s
    x, m = _split(z)
    W, kxm, kmx = fr.weights(t, s)
    ex, em = _lin(W, *den.eps(ps, z, t))
    xi = (1.0 - fr.lam * h) * x + kxm * m + ex
    eta = (1.0 - fr.lam * h) * m + kmx * xi + em
    return _join(*fr.to_z(s, xi, eta))


def _step_conj_vv(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """Velocity Verlet in the hybrid frame (1 NFE): eta half step from xi_t and eps_t, xi full
    step from eta_half and eps at the midpoint, eta half step from xi_s and eps at s (stage
    eps extrapolated from the previous step when ``extrapolate``)."""
    ps, den, o, st = r.ps, r.den, r.opts, r.state
    fr = _HybridFrame(ps, t, o["lam"], o["quad_points"])
    h, mid = t - s, t - 0.5 * (t - s)
    x, m = _split(z)
    e = den.eps(ps, z, t)
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


# ----- the Gaussian bridge for posterior-sample models -----------------------------------------
def pf_transport(ps: PhaseSpace, t: float, s: float, quad_points: int = 129) -> Tensor:
    """T(s, t) with T S_t T^T = S_s that solves dT/du = (F + 1/2 G G^T S_u^-1) T, T(t) = I:
    the probability-flow map of z - a_u x0 when the data is a single point x0. ``[2, 2]``.

    In whitened coordinates eps = L_u^-1 (z - a_u x0) this flow is a pure rotation with angular
    velocity omega(u) = -(L_u^-1 K_u L_u)_01 = -K_01 L_11 / L_00, K_u = F + 1/2 G G^T S_u^-1,
    so T = L_s R(theta) L_t^-1 with theta = int_t^s omega du (quadrature, Simpson in sqrt u).
    """
    t, s = float(ps.clamp(t)), float(ps.clamp(s))
    u, wq = _simpson_sqrt(t, s, quad_points)
    S = ps.marginal(u)[1]
    L = torch.linalg.cholesky(S)
    k01 = ps.drift_matrix()[0, 1] + 0.5 * ps.diffusion_diag()[0] * torch.linalg.inv(S)[:, 0, 1]
    theta = float((wq * (-k01 * L[:, 1, 1] / L[:, 0, 0])).sum())
    c, sn = math.cos(theta), math.sin(theta)
    rot = torch.tensor([[c, -sn], [sn, c]], dtype=_F64)
    return ps.cholesky(s) @ rot @ torch.linalg.inv(ps.cholesky(t))


def bridge_coefs(ps: PhaseSpace, t: float, s: float, churn: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(T [2,2], k [2], C [2,2])`` of z_s = T z_t + k x0 + C xi for s < t (clamped to t_min).

    T = churn^2 K + (1 - churn^2) T_pf with K = S_s Phi(t,s)^T S_t^-1 (the gain of the exact
    bridge q(z_s | z_t, x0)) and T_pf = :func:`pf_transport`; k = a_s - T a_t and
    C C^T = S_s - T S_t T^T. Any such T keeps N(a_s x0, S_s) whenever z_t ~ N(a_t x0, S_t);
    churn 1 is the exact bridge, churn 0 the deterministic one (the PF-ODE solved exactly with
    x0 frozen: z_s = a_s x0 + T_pf (z_t - a_t x0)).
    """
    t, s = float(ps.clamp(t)), float(ps.clamp(s))
    a_t, S_t = ps.marginal(t)
    a_s, S_s = ps.marginal(s)
    gain = S_s @ ps.transition(t, s).T @ torch.linalg.inv(S_t)
    c2 = churn * churn
    T = c2 * gain + (1.0 - c2) * pf_transport(ps, t, s)
    return T, a_s - T @ a_t, _psd_sqrt(S_s - T @ S_t @ T.T)


def _step_distributional(r: _Run, z: Tensor, t: float, s: float) -> Tensor:
    """z_s = T z_t + k x0_hat + C xi (:func:`bridge_coefs`); noise only when churn > 0."""
    ps, den, o, g = r.ps, r.den, r.opts, r.generator
    T, k, C = bridge_coefs(ps, t, s, o["churn"])
    x0 = den(z, t)
    x, m = _split(z)
    x, m = _lin(T.tolist(), x, m)
    x, m = x + float(k[0]) * x0, m + float(k[1]) * x0
    if o["churn"] > 0:
        cx, cm = _lin(C.tolist(), *_split(_noise(z, g)))
        x, m = x + cx, m + cm
    return _join(x, m)


# ----- options, grid and the entry point ---------------------------------------------------
_STEPS: dict[str, tuple[Callable[[_Run, Tensor, float, float], Tensor], dict[str, Any]]] = {
    "em": (_step_em, {}),
    "sscs": (_step_sscs, {}),
    "euler": (_step_euler, {}),
    "naive_se": (_step_se, {"naive": True}),
    "reduced_se": (_step_se, {"naive": False}),
    "naive_vv": (_step_vv, {"naive": True, "extrapolate": False}),
    "reduced_vv": (_step_vv, {"naive": False}),
    "reduced_oba": (_step_oba, {}),
    "lambda_ddim": (_step_lambda_ddim, {}),
    "conjugate_se": (_step_conj_se, {}),
    "conjugate_vv": (_step_conj_vv, {}),
    "distributional": (_step_distributional, {}),
}
_CONJ = {"lam": 0.0, "quad_points": 129}
#: Each method's own options and their defaults; every method also takes ``clip_x0``.
_OPTS: dict[str, dict[str, Any]] = {
    "em": {},
    "sscs": {},
    "euler": {},
    "naive_se": {},
    "reduced_se": {},
    "naive_vv": {},
    "reduced_vv": {"extrapolate": True},
    "reduced_oba": {},
    "lambda_ddim": dict(_CONJ),
    "conjugate_se": dict(_CONJ),
    "conjugate_vv": {**_CONJ, "extrapolate": True},
    "distributional": {"churn": 0.0},
}
METHODS: tuple[str, ...] = tuple(_OPTS)
#: Model calls per step (the final step to t = 0 always costs 1).
NFE_PER_STEP: dict[str, int] = {m: 1 for m in METHODS} | {"naive_se": 2, "naive_vv": 3}


def check_phase_space_opts(method: str, opts: dict[str, Any]) -> dict[str, Any]:
    """Validate ``opts`` for ``method`` and return them completed with the defaults.

    Raises ValueError for an unknown method, an option the method does not take, or a bad value.
    """
    if method not in _OPTS:
        raise ValueError(f"unknown phase-space sampler {method!r}; choose one of {list(METHODS)}")
    own = _OPTS[method]
    unknown = set(opts) - set(own) - {"clip_x0"}
    if unknown:
        raise ValueError(
            f"phase-space sampler {method!r} does not take option(s) {sorted(unknown)}; "
            f"its own options are {sorted(own)} (plus clip_x0)"
        )
    out = {"clip_x0": None, **own, **opts}
    if out["clip_x0"] is not None and not float(out["clip_x0"]) > 0:
        raise ValueError(f"clip_x0 must be > 0 or None, got {out['clip_x0']}")
    if "churn" in own and not 0.0 <= float(out["churn"]) <= 1.0:
        raise ValueError(f"churn must be in [0, 1], got {out['churn']}")
    if "lam" in own and not math.isfinite(float(out["lam"])):
        raise ValueError(f"lam must be finite, got {out['lam']}")
    if "quad_points" in own:
        n = out["quad_points"]
        if not isinstance(n, int) or n < 3 or n % 2 == 0:
            raise ValueError(f"quad_points must be an odd integer >= 3 (Simpson), got {n!r}")
    if "extrapolate" in own and not isinstance(out["extrapolate"], bool):
        raise ValueError(f"extrapolate must be a bool, got {out['extrapolate']!r}")
    return out


class _XChannel:
    """alpha/sigma of the position channel, so the ``edm`` and ``logsnr`` grids can space the
    steps by the x-marginal's signal-to-noise ratio (kept private: PhaseSpace itself must not
    look like a VP schedule to :func:`~.sampling.sample`)."""

    def __init__(self, ps: PhaseSpace):
        self.ps, self.t_min = ps, ps.t_min

    def alpha(self, t: Tensor) -> Tensor:
        return self.ps.marginal(self.ps.clamp(t))[0][..., 0]

    def sigma(self, t: Tensor) -> Tensor:
        return self.ps.marginal(self.ps.clamp(t))[1][..., 0, 0].sqrt()


def phase_space_grid(ps: PhaseSpace, grid: str | Tensor, steps: int, t_start: float) -> Tensor:
    """Descending float64 times ``[steps + 1]`` from t_start to exactly 0 (a name from
    :data:`~.grids.GRIDS` or an explicit tensor)."""
    from .grids import explicit_grid, time_grid  # grids -> schedules -> this module

    if isinstance(grid, str):
        return time_grid(grid, steps, t_start=t_start, schedule=_XChannel(ps))
    return explicit_grid(grid, steps)


#: Per-step growth rates of the conjugate schemes (phase_space.md §5, §7): lambda_ddim maps back
#: with Phi(s, t) ~ e^{beta (Gamma + nu) h / 4}; the hybrid frame's couplings grow like
#: e^{(beta/2)(nu - Gamma) h}. With an exact model both blew up once h x rate reached 2 and were
#: fine at 1 (benchmarks/results/psld_oracle.md).
_STIFF_RATE: dict[str, Callable[[PhaseSpace], float]] = {
    "lambda_ddim": lambda ps: ps.beta * (ps.gamma + ps.nu) / 4.0,
    "conjugate_se": lambda ps: 0.5 * ps.beta * abs(ps.nu - ps.gamma),
    "conjugate_vv": lambda ps: 0.5 * ps.beta * abs(ps.nu - ps.gamma),
}


def coarse_step_warning(ps: PhaseSpace, method: str, ts: Tensor) -> str | None:
    """Why ``method`` is likely to blow up on the descending grid ``ts``, or None.

    Only the conjugate schemes have a step-size limit: their largest integration step h (the
    final step to 0 is a model call, not an integration) must keep h x rate <= 1.5."""
    if method not in _STIFF_RATE or len(ts) < 3:
        return None
    h = float((ts[:-2] - ts[1:-1]).max())
    rate = _STIFF_RATE[method](ps)
    if h * rate <= 1.5:
        return None
    return (
        f"phase-space sampler {method!r} with steps of up to {h:.3g} is unstable for these "
        f"constants (h x {rate:.3g} = {h * rate:.2g} > 1.5): use at least "
        f"{math.ceil(rate / 1.5)} uniform steps, or 'distributional' / "
        f"'reduced_oba' / 'em' for coarse steps (phase_space.md §7)"
    )


@torch.no_grad()
def sample_phase_space(
    model: ModelFn,
    z_T: Tensor,
    *,
    schedule: PhaseSpace,
    method: str,
    steps: int,
    t_start: float = 1.0,
    grid: str | Tensor = "uniform",
    cond: Any = None,
    generator: torch.Generator | None = None,
    callback: Callback | None = None,
    **opts: Any,
) -> tuple[Tensor, int]:
    """Run ``steps`` reverse steps of ``method`` from ``z_T [B, ..., 2D]`` at ``t_start`` to 0.

    ``model(z_t, t [B], cond)`` returns an x0 estimate ``[B, ..., D]``. Times below
    ``schedule.t_min`` are clamped to it for every coefficient and model call. The final step
    returns the model's x0 estimate at the last grid time > 0. ``callback(i, t, z, x0_hat)`` is
    called after every model evaluation (i is the step index). Returns ``(x0 [B, ..., D], nfe)``.
    """
    if not isinstance(schedule, PhaseSpace):
        raise TypeError(f"schedule must be a PhaseSpace, got {type(schedule).__name__}")
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    o = check_phase_space_opts(method, opts)
    fn, fixed = _STEPS[method]
    o = {**o, **fixed}
    _split(z_T)  # validates the channel axis
    ts = phase_space_grid(schedule, grid, steps, t_start)
    why = coarse_step_warning(schedule, method, ts)
    if why is not None:
        warnings.warn(why, RuntimeWarning, stacklevel=3)
    den = _Denoiser(model, cond, o["clip_x0"], callback)
    run, z = _Run(schedule, den, o, generator, {}), z_T
    for i in range(steps):
        den.step = i
        t = float(schedule.clamp(float(ts[i])))
        s_raw = float(ts[i + 1])
        if s_raw == 0.0:
            return den(z, t), den.nfe
        s = float(schedule.clamp(s_raw))
        if s < t:
            z = fn(run, z, t, s)
    raise AssertionError("unreachable: the grid ends at 0")


# ----- exact posterior of a Gaussian mixture, as a model ----------------------------------------
def phase_space_mixture_model(
    gm: GaussianMixture,
    schedule: PhaseSpace,
    kind: str = "mean",
    generator: torch.Generator | None = None,
) -> ModelFn:
    """Exact E[x0 | z_t] (``kind="mean"``) or an exact draw from p(x0 | z_t) (``"sample"``) for
    x0 ~ ``gm`` (D = prod of the action shape), as a sampler ``model(z_t, t, cond)``.

    Per coordinate, log p(z | x0) = -gamma/2 (x0 - y)^2 + const with gamma = a^T S^-1 a and
    y = a^T S^-1 z / gamma, so the posterior is the usual one for y = x0 + gamma^-1/2 noise.
    """
    if kind not in ("mean", "sample"):
        raise ValueError(f"kind must be 'mean' or 'sample', got {kind!r}")

    def model(z_t: Tensor, t: Tensor, cond: Any = None) -> Tensor:
        x, m = _split(z_t)
        B = z_t.shape[0]
        tc = schedule.clamp(t.double()).reshape(-1)
        if bool((tc == tc[0]).all()):  # samplers pass one time: one 2x2 for the whole batch
            tc = tc[:1]
        a, S = schedule.marginal(tc)
        w = torch.linalg.solve(S, a.unsqueeze(-1)).squeeze(-1)  # S^-1 a, [B, 2]
        gam = (a * w).sum(-1)
        y = w[:, :1] * x.reshape(B, -1).double() + w[:, 1:] * m.reshape(B, -1).double()
        y = y / gam[:, None]
        one, sd = torch.ones_like(gam), gam.rsqrt()
        if kind == "mean":
            out = gm.posterior_mean(y, one, sd)
        else:
            out = gm.posterior_sample(y, one, sd, generator=generator)
        return out.to(z_t.dtype).reshape(x.shape)

    return model
