"""Exact posteriors of a Gaussian-mixture data distribution, for testing samplers.

For ``x0 ~ sum_k pi_k N(mu_k, S_k)`` and ``x_t = a x0 + s eps`` the posterior p(x0 | x_t) is a
Gaussian mixture with

- weights ``w_k ∝ pi_k N(x_t; a mu_k, a^2 S_k + s^2 I)``,
- means   ``m_k = mu_k + a S_k (a^2 S_k + s^2 I)^-1 (x_t - a mu_k)``,
- covs    ``C_k = S_k - a^2 S_k (a^2 S_k + s^2 I)^-1 S_k``.

Plugging the exact posterior mean or sampler in as the ``model`` of a sampler lets every
sampler's output distribution be checked against the truth at any number of steps, for any
process: each tells what its state says about x0 as a Gaussian observation ``y = a x0 + s n``
(``process.observation``; in phase space a and s come from the 2x2 marginal per coordinate).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from .processes import make_process


class GaussianMixture:
    """A mixture of K full-covariance Gaussians in D dimensions (float64 internally).

    weights: ``[K]``; means: ``[K, D]``; covs: ``[K, D, D]`` (symmetric positive definite).
    """

    def __init__(self, weights: Tensor, means: Tensor, covs: Tensor) -> None:
        self.weights = torch.as_tensor(weights, dtype=torch.float64)
        self.weights = self.weights / self.weights.sum()
        self.means = torch.as_tensor(means, dtype=torch.float64)
        self.covs = torch.as_tensor(covs, dtype=torch.float64)
        K, D = self.means.shape
        if self.weights.shape != (K,) or self.covs.shape != (K, D, D):
            raise ValueError(
                f"GaussianMixture: weights {tuple(self.weights.shape)}, means "
                f"{tuple(self.means.shape)}, covs {tuple(self.covs.shape)} do not agree"
            )
        self.K, self.D = K, D

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``[n, D]`` samples."""
        comp = torch.multinomial(self.weights, n, replacement=True, generator=generator)
        z = torch.randn(n, self.D, dtype=torch.float64, generator=generator)
        chol = torch.linalg.cholesky(self.covs)
        return self.means[comp] + (chol[comp] @ z.unsqueeze(-1)).squeeze(-1)

    def posterior(self, x_t: Tensor, a: Tensor, s: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Posterior of x0 given ``x_t [B, D]`` with per-example ``a, s [B]``.

        Returns ``(weights [B, K], means [B, K, D], covs [B, K, D, D])``.
        """
        x_t = x_t.double()
        a = torch.as_tensor(a, dtype=torch.float64).reshape(-1)
        s = torch.as_tensor(s, dtype=torch.float64).reshape(-1)
        if a.numel() > 1 and bool((a == a[0]).all() and (s == s[0]).all()):
            # samplers pass one time for the whole batch: factor the K covariances once
            a, s = a[:1], s[:1]
        a = a.reshape(-1, 1, 1, 1)
        s = s.reshape(-1, 1, 1, 1)
        eye = torch.eye(self.D, dtype=torch.float64)
        S = self.covs.unsqueeze(0)  # [1, K, D, D]
        marg_cov = a * a * S + s * s * eye  # [B or 1, K, D, D]
        diff = x_t[:, None, :] - a[..., 0] * self.means[None]  # [B, K, D]
        chol = torch.linalg.cholesky(marg_cov)
        inv = torch.cholesky_inverse(chol)  # [B or 1, K, D, D]
        sol = (inv @ diff.unsqueeze(-1)).squeeze(-1)  # (a^2 S + s^2 I)^-1 diff
        logdet = 2.0 * torch.log(torch.diagonal(chol, dim1=-2, dim2=-1)).sum(-1)
        log_2pi = torch.log(torch.tensor(2 * torch.pi, dtype=torch.float64))
        log_n = -0.5 * ((diff * sol).sum(-1) + logdet + self.D * log_2pi)
        log_w = torch.log(self.weights)[None] + log_n
        w = torch.softmax(log_w, dim=-1)
        means = self.means[None] + a[..., 0] * (S @ sol.unsqueeze(-1)).squeeze(-1)
        covs = S - a * a * (S @ inv @ S)
        covs = 0.5 * (covs + covs.transpose(-1, -2))
        return w, means, covs.expand(x_t.shape[0], -1, -1, -1)

    def posterior_mean(self, x_t: Tensor, a: Tensor, s: Tensor) -> Tensor:
        """E[x0 | x_t], ``[B, D]``."""
        w, means, _ = self.posterior(x_t, a, s)
        return (w.unsqueeze(-1) * means).sum(1)

    def posterior_sample(
        self, x_t: Tensor, a: Tensor, s: Tensor, generator: torch.Generator | None = None
    ) -> Tensor:
        """One exact draw from p(x0 | x_t) per row, ``[B, D]``."""
        w, means, covs = self.posterior(x_t, a, s)
        B = x_t.shape[0]
        comp = torch.multinomial(w, 1, generator=generator).squeeze(1)
        idx = torch.arange(B)
        jitter = 1e-12 * torch.eye(self.D, dtype=torch.float64)
        if covs.stride(0) == 0:  # shared covariances: factor K matrices, not B
            chol = torch.linalg.cholesky(covs[0] + jitter)[comp]
        else:
            chol = torch.linalg.cholesky(covs[idx, comp] + jitter)
        z = torch.randn(B, self.D, dtype=torch.float64, generator=generator)
        return means[idx, comp] + (chol @ z.unsqueeze(-1)).squeeze(-1)

    def as_model(
        self,
        process: Any,
        kind: str = "mean",
        generator: torch.Generator | None = None,
    ) -> Callable[[Tensor, Tensor, object], Tensor]:
        """A sampler-compatible ``model(x_t, t, cond)`` returning the exact posterior mean
        (``kind="mean"``) or an exact posterior sample (``kind="sample"``) for x0 ~ this
        mixture, under ``process`` (a process, schedule or config; see
        :func:`~.processes.make_process`).

        x_t may have any shape ``[B, *shape]`` whose x0 (``process.x0_shape``) has D numbers.
        """
        proc = make_process(process)
        if kind not in ("mean", "sample"):
            raise ValueError(f"kind must be 'mean' or 'sample', got {kind!r}")

        def model(x_t: Tensor, t: Tensor, cond: object = None) -> Tensor:
            y, a, s = proc.observation(x_t, t)
            if kind == "mean":
                out = self.posterior_mean(y, a, s)
            else:
                out = self.posterior_sample(y, a, s, generator=generator)
            return out.to(x_t.dtype).reshape(proc.x0_shape(tuple(x_t.shape)))

        return model
