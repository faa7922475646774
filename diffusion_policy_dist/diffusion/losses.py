"""Training losses: masked MSE, the generalized energy score and kernel (MMD) scores.

All functions return one value per example (shape ``[B]``); the caller applies a time
weighting and the batch mean. They know nothing about samplers or networks.

Each loss is also one options dataclass in :data:`LOSSES` (its ``kind`` is the loss name):
:class:`MSELoss` for mean models, :class:`EnergyLoss` and :class:`KernelLoss` (scoring rules over
``m`` generator samples per example) for distributional ones.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from .schedules import Schedule, log_snr

_SMOOTH = 1e-12  # keeps ||.||^beta differentiable at 0 for beta < 2


def _expand_mask(mask: Tensor | None, target: Tensor) -> Tensor | None:
    """Broadcast a mask ``[B, *prefix]`` (bool or float, 1 = keep) to ``target``'s shape."""
    if mask is None:
        return None
    mask = mask.to(target.dtype)
    while mask.dim() < target.dim():
        mask = mask.unsqueeze(-1)
    return mask.expand_as(target)


def mse_loss(pred: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-example mean squared error over the unmasked elements.

    pred, target: ``[B, *shape]``; mask: ``[B, *prefix]`` with 1 for elements that count
    (e.g. ``~action_is_pad`` of shape ``[B, H]``). Returns ``[B]``.
    """
    sq = (pred - target) ** 2
    m = _expand_mask(mask, target)
    if m is None:
        return sq.flatten(1).mean(1)
    return (sq * m).flatten(1).sum(1) / m.flatten(1).sum(1).clamp_min(1.0)


def _pow_norm(sq_dist: Tensor, beta: float) -> Tensor:
    """``||.||^beta`` from squared distances."""
    if beta == 2.0:
        return sq_dist
    return (sq_dist + _SMOOTH) ** (0.5 * beta)


def energy_score(
    samples: Tensor,
    target: Tensor,
    beta: float = 1.0,
    lam: float = 1.0,
    mask: Tensor | None = None,
) -> Tensor:
    """Empirical generalized energy score per example (DDM, De Bortoli et al. 2025).

    ``l_i = 1/m sum_j ||x_ij - y_i||^beta - lam / (2 m (m-1)) sum_{j != j'} ||x_ij - x_ij'||^beta``

    samples: ``[B, m, *shape]`` generator samples; target: ``[B, *shape]``; norms are over the
    flattened ``*shape`` after zeroing masked elements (mask ``[B, *prefix]``, 1 = keep).
    beta in (0, 2]; lam in [0, 1]. lam=1 with beta<2 is strictly proper; lam=0, beta=2 is the
    x0 squared error averaged over samples. Returns ``[B]`` (no time weighting, no batch mean).
    """
    if samples.dim() != target.dim() + 1 or samples.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"energy_score: samples must be [B, m, *shape] with target [B, *shape]; "
            f"got samples {tuple(samples.shape)} and target {tuple(target.shape)}"
        )
    if not 0.0 < beta <= 2.0:
        raise ValueError(f"energy_score: beta must be in (0, 2], got {beta}")
    B, m = samples.shape[:2]
    m_t = _expand_mask(mask, target)
    if m_t is not None:
        samples = samples * m_t.unsqueeze(1)
        target = target * m_t
    x = samples.reshape(B, m, -1)
    y = target.reshape(B, 1, -1)
    confinement = _pow_norm(((x - y) ** 2).sum(-1), beta).mean(1)
    if lam == 0.0 or m < 2:
        if lam != 0.0:
            raise ValueError("energy_score: the interaction term needs m >= 2 samples")
        return confinement
    diff = x.unsqueeze(2) - x.unsqueeze(1)  # [B, m, m, D]
    pair = _pow_norm((diff**2).sum(-1), beta)
    off_diag = ~torch.eye(m, dtype=torch.bool, device=x.device)
    interaction = (pair * off_diag).sum((1, 2)) / (m * (m - 1))
    return confinement - 0.5 * lam * interaction


KERNELS = ("rbf", "imq")


def _kernel(sq_dist: Tensor, kind: str, h2: Tensor) -> Tensor:
    if kind == "rbf":
        return torch.exp(-0.5 * sq_dist / h2)
    if kind == "imq":
        return torch.rsqrt(1.0 + sq_dist / h2)
    raise ValueError(f"unknown kernel {kind!r}; choose one of {KERNELS}")


def kernel_score(
    samples: Tensor,
    target: Tensor,
    kernel: str = "rbf",
    bandwidth: float | None = None,
    mask: Tensor | None = None,
) -> Tensor:
    """Kernel (MMD) scoring rule per example.

    ``l_i = -2/m sum_j k(x_ij, y_i) + 1/(m(m-1)) sum_{j != j'} k(x_ij, x_ij')``

    ``kernel`` is ``rbf`` (exp(-d^2 / 2h^2)) or ``imq`` ((1 + d^2/h^2)^-1/2). ``bandwidth`` h is
    fixed when given; otherwise :func:`data_bandwidth2` of the batch's targets. The bandwidth
    must not depend on the generator's samples: a median over the samples' own distances grows
    with their spread, and the score then rewards spread (it is no longer proper). Shapes as in
    :func:`energy_score`.
    """
    if samples.dim() != target.dim() + 1 or samples.shape[2:] != target.shape[1:]:
        raise ValueError(
            f"kernel_score: samples must be [B, m, *shape] with target [B, *shape]; "
            f"got samples {tuple(samples.shape)} and target {tuple(target.shape)}"
        )
    B, m = samples.shape[:2]
    if m < 2:
        raise ValueError("kernel_score needs m >= 2 samples per example")
    m_t = _expand_mask(mask, target)
    if m_t is not None:
        samples = samples * m_t.unsqueeze(1)
        target = target * m_t
    x = samples.reshape(B, m, -1)
    y = target.reshape(B, 1, -1)
    d_xy = ((x - y) ** 2).sum(-1)  # [B, m]
    d_xx = ((x.unsqueeze(2) - x.unsqueeze(1)) ** 2).sum(-1)  # [B, m, m]
    off_diag = ~torch.eye(m, dtype=torch.bool, device=x.device)
    h2_value = data_bandwidth2(y[:, 0]) if bandwidth is None else float(bandwidth) ** 2
    h2 = torch.full((B, 1), float(h2_value), dtype=x.dtype, device=x.device)
    k_xy = _kernel(d_xy, kernel, h2)
    k_xx = _kernel(d_xx, kernel, h2.unsqueeze(-1))
    return -2.0 * k_xy.mean(1) + (k_xx * off_diag).sum((1, 2)) / (m * (m - 1))


BANDWIDTH_TARGETS = 2048  # at most this many targets (about 2M pairs) set the bandwidth


def data_bandwidth2(targets: Tensor) -> float:
    """Squared kernel bandwidth from data only: the median squared distance between the
    batch's targets ``[B, D]`` (1.0 for a batch of one). A batch larger than
    :data:`BANDWIDTH_TARGETS` uses an evenly strided subset of that many targets (deterministic,
    so no random stream moves), which keeps the pairs' memory bounded."""
    B = targets.shape[0]
    if B < 2:
        return 1.0
    with torch.no_grad():
        y = targets.detach().double()
        if B > BANDWIDTH_TARGETS:
            y = y[torch.linspace(0, B - 1, BANDWIDTH_TARGETS, device=y.device).long()]
        d = torch.cdist(y, y) ** 2
        pairs = d[torch.triu(torch.ones_like(d, dtype=torch.bool), diagonal=1)].sort().values
        n = pairs.numel()  # the median, halfway between the middle two for an even count
        median = 0.5 * (pairs[(n - 1) // 2] + pairs[n // 2])
        return max(float(median), 1e-6)


WEIGHTINGS = ("uniform", "sigmoid")


def time_weight(
    kind: str, schedule: Schedule, t: Tensor, bias: float = 0.0, space: str = "sample"
) -> Tensor:
    """Per-example loss weight ``w(t)``, shape ``[B]``, for a loss measured in ``space``
    (``sample``: on x0, as the scoring rules and x0-MSE; ``epsilon`` or ``v``: a mean model's
    MSE on that prediction).

    ``uniform``: 1. ``sigmoid``: Kingma & Gao's weighting, ``sigmoid(bias - lambda)`` on the
    eps-loss with lambda = log-SNR(t). Since ``||eps - eps_hat||^2 = e^lambda ||x0 - x0_hat||^2``,
    the same objective on an x0-space loss is ``e^bias sigmoid(lambda - bias)``: it grows with the
    SNR, so nearly clean times count fully and the noisiest (t near 1) little. Every space gets
    the weight that makes its weighted loss equal that one objective.
    """
    if kind == "uniform":
        return torch.ones_like(t)
    if kind != "sigmoid":
        raise ValueError(f"unknown time weighting {kind!r}; choose one of {WEIGHTINGS}")
    lam = log_snr(schedule, t).double()
    w_x0 = math.exp(bias) * torch.sigmoid(lam - bias)
    # units of x0-space loss per unit of this loss, at fixed x_t:
    # eps = (x_t - a x0) / s gives a^2/s^2 = e^lambda; v = a eps - s x0 gives (a^2 + s^2)^2 / s^2
    if space == "sample":
        return w_x0.to(t.dtype)
    if space == "epsilon":
        return (w_x0 / torch.exp(lam)).to(t.dtype)
    if space == "v":
        a, s = schedule.alpha(t).double(), schedule.sigma(t).double()
        return (w_x0 * s**2 / (a**2 + s**2) ** 2).to(t.dtype)
    raise ValueError(f"time_weight: unknown loss space {space!r}")


@dataclass
class LossConfig:
    """Options every loss takes: the time weighting ``w(t)`` (:func:`time_weight`) and whether
    padded action steps (after an episode's end) count."""

    kind: str = ""
    weighting: str = "uniform"
    weight_bias: float = 0.0
    mask_padding: bool = False

    @classmethod
    def kind_name(cls) -> str:
        return cls.__dataclass_fields__["kind"].default

    @property
    def samples_per_example(self) -> int:
        """Generator samples (network rows) per training example."""
        return 1

    def __post_init__(self) -> None:
        if self.kind != self.kind_name():
            raise ValueError(
                f"loss.kind is {self.kind!r}, but these options are for {self.kind_name()!r}; "
                f"pick another loss with loss={self.kind}"
            )
        if self.weighting not in WEIGHTINGS:
            raise ValueError(
                f"loss.weighting must be one of {list(WEIGHTINGS)}, got {self.weighting!r}"
            )


@dataclass
class MSELoss(LossConfig):
    """Squared error of a mean model's prediction (eps, x0 or v)."""

    kind: str = "mse"


@dataclass
class _SampleLoss(LossConfig):
    # 4: with late noise injection, 1.29x DDPM's FLOPs per step (8: 1.66x); on Push-T a score
    # of 0.91 against m = 8's 0.94 (one seed; benchmarks/results/train_efficiency/)
    m: int = 4

    @property
    def samples_per_example(self) -> int:
        return self.m

    def _check_m(self, least: int, why: str) -> None:
        if not isinstance(self.m, int) or self.m < least:
            raise ValueError(f"loss.m must be an integer >= {least} ({why}), got {self.m!r}")


@dataclass
class EnergyLoss(_SampleLoss):
    """Generalized energy score; lam=0 with beta=2 is the x0-MSE ablation on the same path."""

    kind: str = "energy"
    beta: float = 1.0
    lam: float = 1.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0.0 < self.beta <= 2.0:
            raise ValueError(f"loss.beta must be in (0, 2], got {self.beta}")
        if not 0.0 <= self.lam <= 1.0:
            raise ValueError(f"loss.lam must be in [0, 1], got {self.lam}")
        if self.lam > 0:
            self._check_m(2, "the interaction term compares samples in pairs")
        else:
            self._check_m(1, "generator samples per example")

    def score(self, samples: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return energy_score(samples, target, beta=self.beta, lam=self.lam, mask=mask)


@dataclass
class KernelLoss(_SampleLoss):
    """Kernel (MMD) score with an ``rbf`` or ``imq`` kernel of bandwidth ``bandwidth``."""

    kind: str = "kernel"
    kernel: str = "rbf"
    bandwidth: float | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.kernel not in KERNELS:
            raise ValueError(f"loss.kernel must be one of {list(KERNELS)}, got {self.kernel!r}")
        if self.bandwidth is not None and self.bandwidth <= 0:
            raise ValueError(f"loss.bandwidth must be > 0 or null, got {self.bandwidth}")
        self._check_m(2, "the kernel score compares samples in pairs")

    def score(self, samples: Tensor, target: Tensor, mask: Tensor | None = None) -> Tensor:
        return kernel_score(samples, target, self.kernel, self.bandwidth, mask=mask)


LOSSES: dict[str, type[LossConfig]] = {c.kind_name(): c for c in (MSELoss, EnergyLoss, KernelLoss)}
