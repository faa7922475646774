"""Phase-space Langevin diffusion (PSLD): the forward process, its Gaussians and its bridge.

Per action coordinate the state is ``z = (x, m)`` (position, momentum) and, for t in [0, 1],

    dx = (beta/2)(M^-1 m - Gamma x) dt + sqrt(Gamma beta) dw
    dm = (beta/2)(-x - nu m) dt + sqrt(M nu beta) dw,     M^-1 = (Gamma - nu)^2 / 4

(critical damping). ``m_0 = 0`` and the initial momentum variance ``kappa M`` is folded into the
covariance, so ``z_0 | x0 ~ N((x0, 0), diag(0, kappa M))``; the prior is N(0, 1) x N(0, M).
Tensors carry the D position channels first and the D momentum channels last on the final axis,
so a chunk ``[B, H, Da]`` becomes ``[B, H, 2 Da]``.

Everything is linear-Gaussian per coordinate, so ``z_t | x0 ~ N(a_t x0, S_t)`` with ``a_t`` in
R^2 and ``S_t`` in R^{2x2} in closed form (see ``../phase_space.md`` for the derivations). A
model ``model(z_t, t, cond) -> x0_hat [B, ..., D]`` keeps the package contract; the score is
``-S_t^-1 (z_t - a_t x0_hat)``. :class:`PhaseSpace` is a :class:`~.Process`; its samplers are
in :mod:`..samplers.phase_space` (and the ``distributional`` bridge, :func:`bridge_coefs`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from ... import noise, shard
from ..grids import explicit_grid, time_grid

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
        z = noise.normal(full, generator, dtype=dtype, device=device)
        x, m = _split(z)
        return _join(x, math.sqrt(self.mass) * m)

    # ----- the process interface (see processes/__init__.py) ---------------------------------
    family = "phase_space"

    def x0_shape(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """The shape of an x0 estimate for a state of ``shape`` (half the channels)."""
        if shape[-1] % 2:
            raise ValueError(f"a phase-space tensor needs an even last axis, got {tuple(shape)}")
        return (*shape[:-1], shape[-1] // 2)

    def clamp_time(self, t: float) -> float:
        """A sampler's time as used for every coefficient and model call (>= t_min)."""
        return float(self.clamp(t))

    def training_draw(self, x0: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(t [B], eps [B, ..., 2D], z_t)``: one time in [t_min, 1] per example (drawn before
        eps) and the perturbed state."""
        t = shard.rand(x0.shape[0], device=x0.device)
        t = self.t_min + (1.0 - self.t_min) * t
        eps = shard.randn(*x0.shape[:-1], 2 * x0.shape[-1], device=x0.device, dtype=x0.dtype)
        return t, eps, self.perturb(x0, t, eps)

    def target(self, prediction: str, x0: Tensor, eps: Tensor, t: Tensor) -> Tensor:
        """A mean model's regression target: x0 (the only prediction in phase space)."""
        _only_sample(prediction)
        return x0

    def to_x0(self, prediction: str, out: Tensor, x_t: Tensor, t: Tensor) -> Tensor:
        _only_sample(prediction)
        return out

    def check_policy(self, kind: str, prediction: str, prior_alpha: float | None) -> None:
        """Refuse what phase-space diffusion does not support, saying why."""
        if kind == "mean" and prediction != "sample":
            raise ValueError("a phase-space mean model predicts x0: set policy.prediction=sample")
        if prior_alpha is not None:
            raise ValueError("policy.prior (truncated diffusion) is for VP schedules, not psld")

    def grid(self, grid: str | Tensor, steps: int, t_start: float) -> Tensor:
        """Descending float64 times ``[steps + 1]`` from t_start to exactly 0 (a grid name,
        spaced by the position channel's SNR for ``edm``/``logsnr``, or an explicit tensor)."""
        if isinstance(grid, str):
            return time_grid(grid, steps, t_start=t_start, schedule=_XChannel(self))
        return explicit_grid(grid, steps)

    def churn_bridge(
        self, z: Tensor, x0_hat: Tensor, t: float, s: float, churn: float, generator
    ) -> Tensor:
        """z_s = T z_t + k x0_hat + C xi (:func:`bridge_coefs`); noise only when churn > 0."""
        T, k, C = bridge_coefs(self, t, s, churn)
        x, m = _split(z)
        x, m = _lin(T.tolist(), x, m)
        x, m = x + float(k[0]) * x0_hat, m + float(k[1]) * x0_hat
        if churn > 0:
            cx, cm = _lin(C.tolist(), *_split(_noise(z, generator)))
            x, m = x + cx, m + cm
        return _join(x, m)

    def observation(self, z_t: Tensor, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """``(y [B, D], a, s)``: what z_t tells about x0, as y = a x0 + s noise per coordinate
        (float64; a, s of one row when every row has the same time). Per coordinate
        log p(z | x0) = -gamma/2 (x0 - y)^2 + const with gamma = a^T S^-1 a and
        y = a^T S^-1 z / gamma: a = 1, s = gamma^-1/2."""
        x, m = _split(z_t)
        B = z_t.shape[0]
        tc = self.clamp(t.double()).reshape(-1)
        if bool((tc == tc[0]).all()):  # samplers pass one time: one 2x2 for the whole batch
            tc = tc[:1]
        a, S = self.marginal(tc)
        w = torch.linalg.solve(S, a.unsqueeze(-1)).squeeze(-1)  # S^-1 a, [B, 2]
        gam = (a * w).sum(-1)
        y = w[:, :1] * x.reshape(B, -1).double() + w[:, 1:] * m.reshape(B, -1).double()
        return y / gam[:, None], torch.ones_like(gam), gam.rsqrt()


def _only_sample(prediction: str) -> None:
    if prediction != "sample":
        raise ValueError(f"phase-space models predict x0 (sample), not {prediction!r}")


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
    return noise.normal(z.shape, generator, dtype=z.dtype, device=z.device)


def _simpson_sqrt(u0: float, u1: float, n: int) -> tuple[Tensor, Tensor]:
    """Nodes u and weights for int_{u0}^{u1} f(u) du, Simpson in w = sqrt(u) (the weight 2w is
    folded in): eps-weights carry L_u^-T ~ u^-1/2 near 0, smooth in w."""
    w = torch.linspace(math.sqrt(u0), math.sqrt(u1), n, dtype=_F64)
    simpson = torch.ones(n, dtype=_F64)
    simpson[1:-1:2], simpson[2:-1:2] = 4.0, 2.0
    dw = (math.sqrt(u1) - math.sqrt(u0)) / (n - 1)
    return w * w, (dw / 3.0) * simpson * 2.0 * w


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


class _XChannel:
    """alpha/sigma of the position channel, so the ``edm`` and ``logsnr`` grids can space the
    steps by the x-marginal's signal-to-noise ratio."""

    def __init__(self, ps: PhaseSpace):
        self.ps, self.t_min = ps, ps.t_min

    def alpha(self, t: Tensor) -> Tensor:
        return self.ps.marginal(self.ps.clamp(t))[0][..., 0]

    def sigma(self, t: Tensor) -> Tensor:
        return self.ps.marginal(self.ps.clamp(t))[1][..., 0, 0].sqrt()
