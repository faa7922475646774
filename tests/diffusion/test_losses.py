"""Scoring-rule losses against brute-force formulas and their defining properties."""

import itertools
import math

import pytest
import torch

from diffusion_policy_dist.diffusion.losses import energy_score, kernel_score, mse_loss, time_weight
from diffusion_policy_dist.diffusion.schedules import log_snr, make_schedule


def brute_energy(samples, target, beta, lam, mask=None):
    B, m = samples.shape[:2]
    out = torch.zeros(B, dtype=torch.float64)
    for i in range(B):
        x = samples[i].double()
        y = target[i].double()
        if mask is not None:
            mk = mask[i].double().reshape(*mask[i].shape, *([1] * (y.dim() - mask[i].dim())))
            x, y = x * mk, y * mk
        conf = sum(torch.linalg.vector_norm(x[j] - y) ** beta for j in range(m)) / m
        inter = sum(
            torch.linalg.vector_norm(x[j] - x[k]) ** beta
            for j, k in itertools.product(range(m), range(m))
            if j != k
        )
        out[i] = conf - lam / (2 * m * (m - 1)) * inter
    return out


@pytest.mark.parametrize("beta,lam", [(1.0, 1.0), (0.5, 1.0), (1.5, 0.5), (2.0, 1.0), (1.0, 0.0)])
def test_energy_score_matches_double_loop(beta, lam):
    g = torch.Generator().manual_seed(0)
    samples = torch.randn(4, 5, 6, 2, generator=g)
    target = torch.randn(4, 6, 2, generator=g)
    got = energy_score(samples, target, beta=beta, lam=lam)
    assert got.shape == (4,)
    assert torch.allclose(got.double(), brute_energy(samples, target, beta, lam), atol=1e-4)


def test_energy_score_mask_matches_double_loop():
    g = torch.Generator().manual_seed(1)
    samples = torch.randn(3, 4, 8, 2, generator=g)
    target = torch.randn(3, 8, 2, generator=g)
    mask = torch.ones(3, 8, dtype=torch.bool)
    mask[0, 5:] = False
    mask[2, :2] = False
    got = energy_score(samples, target, beta=1.0, lam=1.0, mask=mask)
    assert torch.allclose(got.double(), brute_energy(samples, target, 1.0, 1.0, mask), atol=1e-4)
    # the masked steps really are ignored
    samples2 = samples.clone()
    samples2[0, :, 5:] += 100.0
    assert torch.allclose(energy_score(samples2, target, mask=mask), got)


def test_energy_score_lambda0_beta2_is_sample_averaged_squared_error():
    g = torch.Generator().manual_seed(2)
    samples = torch.randn(6, 4, 16, 3, generator=g)
    target = torch.randn(6, 16, 3, generator=g)
    got = energy_score(samples, target, beta=2.0, lam=0.0)
    want = ((samples - target[:, None]) ** 2).flatten(2).sum(-1).mean(1)
    assert torch.allclose(got, want, rtol=1e-6)


def test_energy_score_gradient_is_finite_for_identical_samples():
    samples = torch.zeros(2, 4, 3, requires_grad=True)
    energy_score(samples, torch.zeros(2, 3), beta=1.0, lam=1.0).sum().backward()
    assert torch.isfinite(samples.grad).all()


@pytest.mark.parametrize("score", ["energy", "rbf", "imq"])
def test_expected_score_is_lowest_at_the_true_distribution(score):
    """Sampled propriety check on a bimodal target: the truth beats the collapsed mean,
    a single mode, an over-dispersed and an under-dispersed fit."""
    g = torch.Generator().manual_seed(3)
    n, m = 4000, 8

    def bimodal(k, scale=0.1, sep=1.0):
        sign = torch.randint(0, 2, (k,), generator=g) * 2 - 1
        return sign[:, None] * sep + scale * torch.randn(k, 2, generator=g)

    target = bimodal(n)
    candidates = {
        "true": bimodal(n * m).reshape(n, m, 2),
        "mean": 0.02 * torch.randn(n, m, 2, generator=g),
        "one_mode": 1.0 + 0.1 * torch.randn(n, m, 2, generator=g),
        "wide": bimodal(n * m, scale=0.4).reshape(n, m, 2),
        "narrow_far": bimodal(n * m, scale=0.1, sep=1.4).reshape(n, m, 2),
    }

    def expected(s):
        if score == "energy":
            return energy_score(s, target, beta=1.0, lam=1.0).mean().item()
        return kernel_score(s, target, kernel=score, bandwidth=0.5).mean().item()

    values = {k: expected(v) for k, v in candidates.items()}
    best = min(values, key=values.get)
    assert best == "true", values


def brute_kernel(samples, target, kind, h):
    B, m = samples.shape[:2]
    out = torch.zeros(B, dtype=torch.float64)

    def k(a, b):
        d2 = ((a - b) ** 2).sum()
        return torch.exp(-d2 / (2 * h * h)) if kind == "rbf" else (1 + d2 / (h * h)) ** -0.5

    for i in range(B):
        x, y = samples[i].double().flatten(1), target[i].double().flatten()
        t1 = sum(k(x[j], y) for j in range(m)) * 2 / m
        t2 = sum(k(x[j], x[l]) for j in range(m) for l in range(m) if j != l) / (m * (m - 1))
        out[i] = -t1 + t2
    return out


@pytest.mark.parametrize("kind", ["rbf", "imq"])
def test_kernel_score_matches_double_loop(kind):
    g = torch.Generator().manual_seed(4)
    samples = torch.randn(3, 5, 4, generator=g)
    target = torch.randn(3, 4, generator=g)
    got = kernel_score(samples, target, kernel=kind, bandwidth=1.3)
    assert torch.allclose(got.double(), brute_kernel(samples, target, kind, 1.3), atol=1e-5)


def test_kernel_score_median_bandwidth_is_scale_invariant():
    g = torch.Generator().manual_seed(5)
    samples = torch.randn(3, 6, 4, generator=g)
    target = torch.randn(3, 4, generator=g)
    a = kernel_score(samples, target, kernel="rbf")
    b = kernel_score(10 * samples, 10 * target, kernel="rbf")
    assert torch.allclose(a, b, atol=1e-5)


def test_mse_loss_mask():
    pred = torch.zeros(2, 4, 1)
    target = torch.ones(2, 4, 1)
    target[0, 3] = 5.0
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.allclose(mse_loss(pred, target, mask), torch.tensor([1.0, 1.0]))
    assert torch.allclose(mse_loss(pred, target), torch.tensor([7.0, 1.0]))


def test_shape_errors_are_clear():
    with pytest.raises(ValueError, match=r"samples .* target"):
        energy_score(torch.randn(2, 3, 4), torch.randn(2, 5))
    with pytest.raises(ValueError, match="beta"):
        energy_score(torch.randn(2, 3, 4), torch.randn(2, 4), beta=3.0)


@pytest.mark.parametrize("kind", ["rbf", "imq"])
def test_default_kernel_bandwidth_keeps_the_score_proper(kind):
    """Targets y ~ N(0, I_4), candidates N(0, s^2 I): the expected score, with the default
    bandwidth, is lowest at the true s = 1 (a bandwidth taken from the samples' own spread
    made it keep falling as s grows)."""
    g = torch.Generator().manual_seed(11)
    n, m, d = 4000, 8, 4
    y = torch.randn(n, d, generator=g)
    z = torch.randn(n, m, d, generator=g)
    scores = {s: kernel_score(s * z, y, kernel=kind).mean().item() for s in (0.7, 1.0, 1.4, 2.0)}
    assert min(scores, key=scores.get) == 1.0, scores
    assert scores[2.0] > scores[1.0] + 0.01 and scores[0.7] > scores[1.0] + 0.005, scores


def test_default_bandwidth_is_the_median_distance_between_targets():
    g = torch.Generator().manual_seed(6)
    samples, target = torch.randn(5, 3, 2, generator=g), torch.randn(5, 2, generator=g)
    d2 = sorted(
        float(((target[i] - target[j]) ** 2).sum()) for i in range(5) for j in range(i + 1, 5)
    )
    h = math.sqrt((d2[4] + d2[5]) / 2)  # the median of the 10 pairwise squared distances
    got = kernel_score(samples, target, kernel="rbf")
    assert torch.allclose(got.double(), brute_kernel(samples, target, "rbf", h), atol=1e-5)
    far = kernel_score(3 * samples, target, kernel="rbf")  # the samples' spread doesn't move h
    assert torch.allclose(far.double(), brute_kernel(3 * samples, target, "rbf", h), atol=1e-5)


def test_sigmoid_weighting_is_kingma_and_gaos_in_every_loss_space():
    """sigmoid(b - lambda) on the eps-loss (Kingma & Gao), and the same objective on x0- and
    v-space losses: for any x0_hat, w_space * ||space - space_hat||^2 is the same number."""
    b = 1.5
    for name in ("cosine", "flow"):
        sched = make_schedule(name)
        t = torch.tensor([0.05, 0.3, 0.6, 0.95], dtype=torch.float64)
        lam = log_snr(sched, t).double()
        w_eps = time_weight("sigmoid", sched, t, b, "epsilon")
        assert torch.allclose(w_eps, torch.sigmoid(b - lam), rtol=1e-9)
        w_x0 = time_weight("sigmoid", sched, t, b, "sample")
        assert torch.allclose(w_x0, math.exp(b) * torch.sigmoid(lam - b), rtol=1e-9)
        a, s = sched.alpha(t).double(), sched.sigma(t).double()
        g = torch.Generator().manual_seed(0)
        x0, x0_hat, eps = (torch.randn(4, 3, generator=g, dtype=torch.float64) for _ in range(3))
        x_t = a[:, None] * x0 + s[:, None] * eps
        eps_hat = (x_t - a[:, None] * x0_hat) / s[:, None]
        v, v_hat = (a[:, None] * e - s[:, None] * x for e, x in ((eps, x0), (eps_hat, x0_hat)))
        ref = w_x0 * ((x0 - x0_hat) ** 2).sum(1)
        assert torch.allclose(w_eps * ((eps - eps_hat) ** 2).sum(1), ref, rtol=1e-9)
        w_v = time_weight("sigmoid", sched, t, b, "v")
        assert torch.allclose(w_v * ((v - v_hat) ** 2).sum(1), ref, rtol=1e-9)


def test_time_weights():
    sched = make_schedule("cosine")
    t = torch.tensor([0.01, 0.5, 0.99])
    assert torch.equal(time_weight("uniform", sched, t), torch.ones(3))
    w = time_weight("sigmoid", sched, t)  # on x0: clean times count, the noisiest hardly
    assert (w[1:] < w[:-1]).all() and w[0] > 0.99 and w[-1] < 0.01
    with pytest.raises(ValueError, match="weighting"):
        time_weight("exp", sched, t)
