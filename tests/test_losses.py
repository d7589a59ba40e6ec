"""Training objectives (diffcore.losses) against exact or external answers.

Every expected value is derived here independently of the code under test: closed forms for
Gaussian data (whose noised scores and optimal denoisers are known exactly), torch.distributions
for KLs and normal CDFs, and schedules recomputed from the betas. Monte-Carlo checks use seeded
generators, float64, and tolerances of a few standard errors estimated from the same draws.
"""
import math

import pytest
import torch

import diffcore
from diffcore import losses, schedules

F64 = torch.float64
LOG2 = math.log(2.0)
Normal = torch.distributions.Normal
kl_divergence = torch.distributions.kl_divergence


def gen(seed):
    return torch.Generator().manual_seed(seed)


def assert_mc(samples, expected, n_se=4.0, what=""):
    """The mean of i.i.d. per-sample values equals `expected` within n_se standard errors."""
    mean = samples.mean().item()
    se = samples.std().item() / math.sqrt(samples.numel())
    assert abs(mean - expected) < n_se * se, f"{what}: MC mean {mean} vs exact {expected} (se {se})"


# ---- score_matching_loss (Hyvarinen) -------------------------------------------------------
D3 = 3


def _linear_problem(seed):
    g = gen(seed)
    A = torch.randn(D3, D3, generator=g, dtype=F64) + 2.0 * torch.eye(D3, dtype=F64)  # not symmetric
    assert (A - A.T).abs().max() > 0.1
    mu = torch.randn(D3, generator=g, dtype=F64)
    return A, mu, g


def _linear_score(A, mu):
    return lambda x: -(x - mu) @ A.T  # s(x) = -A (x - mu), Jacobian -A, divergence -tr(A)


def test_score_matching_exact_linear_score():
    A, mu, g = _linear_problem(0)
    x = torch.randn(64, D3, generator=g, dtype=F64) * 2
    got = losses.score_matching_loss(_linear_score(A, mu), x, method="exact")
    expected = -torch.trace(A) + 0.5 * ((x - mu) @ A.T).pow(2).sum(1)
    assert got.shape == (64,)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def test_score_matching_exact_on_image_shaped_input():
    """[B, C, H] data: the trace runs over every flattened dimension. s(x) = -x * c (elementwise c)
    has divergence -sum(c)."""
    g = gen(1)
    c = torch.rand(2, 3, generator=g, dtype=F64) + 0.5
    x = torch.randn(16, 2, 3, generator=g, dtype=F64)
    got = losses.score_matching_loss(lambda y: -y * c, x, method="exact")
    expected = -c.sum() + 0.5 * (x * c).pow(2).flatten(1).sum(1)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-10)


def _slice_variance(A, kind):
    """Exact variance of one projection's v^T (-A) v. Gaussian v: 2 |S|_F^2 with S = (A + A^T)/2.
    Rademacher v (v_i^2 = 1): sum_{i<j} (A_ij + A_ji)^2 -- the diagonal contributes no noise."""
    S = 0.5 * (A + A.T)
    if kind == "gaussian":
        return 2.0 * S.pow(2).sum().item()
    return sum((A[i, j] + A[j, i]).item() ** 2 for i in range(D3) for j in range(i + 1, D3))


@pytest.mark.parametrize("kind", ["gaussian", "rademacher"])
def test_score_matching_sliced_is_unbiased_with_the_exact_variance(kind):
    """sliced - exact = (mean over projections of v^T J v) - tr(J), zero-mean with variance
    var_1 / projections (var_1 above, in closed form). Check the mean within 5 standard errors
    of that exact variance, and the empirical variance within 10% (n = 40k and 20k draws: the
    relative SE of a sample variance is ~sqrt((kurtosis - 1) / n) < 2.5% here). The two kinds'
    variances differ by 2 sum_i A_ii^2 (> 30% here), so a wrong kind fails the variance check."""
    A, mu, g = _linear_problem(2)
    A = A + 1.5 * torch.eye(D3, dtype=F64)  # a heavy diagonal separates the two kinds' variances
    var1 = _slice_variance(A, kind)
    other = _slice_variance(A, "rademacher" if kind == "gaussian" else "gaussian")
    assert abs(var1 - other) > 0.3 * max(var1, other)
    score = _linear_score(A, mu)
    for n, projections in [(40_000, 1), (20_000, 8)]:
        x = torch.randn(n, D3, generator=g, dtype=F64)
        exact = losses.score_matching_loss(score, x, method="exact")
        sliced = losses.score_matching_loss(score, x, method="sliced", projections=projections, kind=kind,
                                            generator=g)
        diff = sliced - exact
        var = var1 / projections
        assert abs(diff.mean().item()) < 5 * math.sqrt(var / n), (kind, projections, diff.mean())
        assert abs(diff.var().item() / var - 1) < 0.10, (kind, projections, diff.var().item(), var)


def test_score_matching_rademacher_single_projection_is_exact_for_diagonal_jacobian():
    """With Rademacher v, v^T J v = tr(J) exactly when J is diagonal: no statistics needed."""
    g = gen(3)
    c = torch.rand(D3, generator=g, dtype=F64) + 0.5
    x = torch.randn(32, D3, generator=g, dtype=F64)
    got = losses.score_matching_loss(lambda y: -y * c, x, method="sliced", kind="rademacher", generator=g)
    torch.testing.assert_close(got, -c.sum() + 0.5 * (x * c).pow(2).sum(1), rtol=0, atol=1e-12)


def test_score_matching_expectation_is_minimised_by_the_true_score():
    """Data N(mu, Sigma). For s = -A (x - mu): E[loss] = -tr(A) + 1/2 tr(A^T A Sigma), and
    E[loss(A)] - E[loss(Sigma^-1)] = 1/2 tr((A - P)^T (A - P) Sigma) >= 0 with P = Sigma^-1."""
    g = gen(4)
    M = torch.randn(D3, D3, generator=g, dtype=F64)
    Sigma = M @ M.T + 0.5 * torch.eye(D3, dtype=F64)
    P = torch.linalg.inv(Sigma)
    mu = torch.randn(D3, generator=g, dtype=F64)
    A_bad = P + 0.3 * torch.randn(D3, D3, generator=g, dtype=F64)
    n = 100_000
    x = mu + torch.randn(n, D3, generator=g, dtype=F64) @ torch.linalg.cholesky(Sigma).T

    def closed(A):
        return (-torch.trace(A) + 0.5 * torch.trace(A.T @ A @ Sigma)).item()

    l_true = losses.score_matching_loss(_linear_score(P, mu), x)
    l_bad = losses.score_matching_loss(_linear_score(A_bad, mu), x)
    assert_mc(l_true, closed(P), what="true score")
    assert abs(closed(P) + 0.5 * torch.trace(P).item()) < 1e-10  # -1/2 tr(Sigma^-1) at the optimum
    assert_mc(l_bad, closed(A_bad), what="perturbed score")
    gap = 0.5 * torch.trace((A_bad - P).T @ (A_bad - P) @ Sigma).item()
    assert gap > 0.01
    assert_mc(l_bad - l_true, gap, what="gap (paired)")
    assert l_bad.mean() > l_true.mean()


# ---- dsm_loss (NCSN) ------------------------------------------------------------------------
SIGMAS = [8.0, 2.0, 0.6, 0.1, 0.01]


def _gaussian_score(s0):
    """Score of N(0, s0^2 I) convolved with N(0, sigma^2 I), from the level the model is given."""
    return lambda x, sigma: -x / (s0 ** 2 + sigma.reshape(-1, *([1] * (x.dim() - 1))) ** 2)


def test_dsm_loss_gaussian_data_exact_expectation():
    """x~ = x + sigma z, s* = -x~ / (s0^2 + sigma^2): sigma s* + z = (-sigma x + s0^2 z) / V with
    V = s0^2 + sigma^2, per-dim variance s0^2 / V, so E[loss] = 1/2 D s0^2 / V. A score scaled by
    c: per-dim variance (c^2 sigma^2 s0^2 + (V - c sigma^2)^2) / V^2, larger for c != 1."""
    s0, D, n = 1.3, 4, 20_000
    ncsn = diffcore.NCSN(SIGMAS)
    g = gen(5)
    levels = torch.arange(ncsn.L).repeat_interleave(n)
    x0 = s0 * torch.randn(levels.numel(), 2, 2, generator=g, dtype=F64)
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    seen = []

    def model(x, sigma):
        seen.append(sigma)
        return _gaussian_score(s0)(x, sigma)

    c = 1.2
    exact = losses.dsm_loss(model, ncsn, x0, levels=levels, noise=z)
    wrong = losses.dsm_loss(lambda x, sigma: c * model(x, sigma), ncsn, x0, levels=levels, noise=z)
    torch.testing.assert_close(seen[0], torch.tensor(SIGMAS, dtype=F64)[levels], rtol=0, atol=0)
    for i, sigma in enumerate(SIGMAS):
        sel = levels == i
        V = s0 ** 2 + sigma ** 2
        assert_mc(exact[sel], 0.5 * D * s0 ** 2 / V, what=f"sigma={sigma}")
        expected_wrong = 0.5 * D * (c ** 2 * sigma ** 2 * s0 ** 2 + (V - c * sigma ** 2) ** 2) / V ** 2
        assert_mc(wrong[sel], expected_wrong, what=f"scaled score, sigma={sigma}")
        assert wrong[sel].mean() > exact[sel].mean()


def test_dsm_loss_is_half_squared_sigma_weighted_residual():
    """Per sample, exactly 1/2 |sigma s(x + sigma z, sigma) + z|^2 for an arbitrary model."""
    ncsn = diffcore.NCSN(SIGMAS)
    g = gen(6)
    x0 = torch.randn(10, 3, generator=g, dtype=F64)
    z = torch.randn(10, 3, generator=g, dtype=F64)
    levels = torch.randint(0, ncsn.L, (10,), generator=g)
    W = torch.randn(3, 3, generator=g, dtype=F64)
    model = lambda x, sigma: torch.sin(x @ W) * sigma[:, None]
    sig = torch.tensor(SIGMAS, dtype=F64)[levels][:, None]
    xt = x0 + sig * z
    expected = 0.5 * (sig * model(xt, sig[:, 0]) + z).pow(2).sum(1)
    torch.testing.assert_close(losses.dsm_loss(model, ncsn, x0, levels=levels, noise=z), expected,
                               rtol=1e-13, atol=0)


def test_dsm_loss_draws_levels_from_the_generator():
    ncsn = diffcore.NCSN(SIGMAS)
    x0 = torch.zeros(4000, 1, dtype=F64)
    seen = []
    losses.dsm_loss(lambda x, s: seen.append(s) or torch.zeros_like(x), ncsn, x0, generator=gen(7))
    counts = torch.stack([(seen[0] == s).sum() for s in SIGMAS])
    assert counts.sum() == 4000 and (counts > 650).all()  # ~ 800 each, uniform over the ladder


# ---- ddpm_simple_loss ------------------------------------------------------------------------
def _abar(betas):
    return torch.cumprod(1.0 - torch.as_tensor(betas, dtype=F64), 0)


def _optimal_eps(abar_trained, s0):
    """E[eps | x_t] for data N(0, s0^2 I), indexed by the trained chain's timestep the model sees."""
    def model(x, t):
        a = abar_trained[t].reshape(-1, *([1] * (x.dim() - 1)))
        return torch.sqrt(1 - a) * x / (a * s0 ** 2 + 1 - a)
    return model


@pytest.mark.parametrize("respaced", [False, True], ids=["full", "respaced"])
def test_ddpm_simple_loss_optimal_eps_residual(respaced):
    """Per-dim E(eps - E[eps|x_t])^2 = abar s0^2 / (abar s0^2 + 1 - abar). On a respaced chain the
    model is given the trained chain's timestep, and index i of the respaced chain has abar of
    the trained timestep ts[i]."""
    s0, n = 0.7, 20_000
    betas = schedules.linear_betas(1000)
    abar = _abar(betas)
    base = diffcore.DDPM(betas)
    if respaced:
        ts = torch.tensor([0, 5, 40, 250, 600, 999])
        ddpm, idx, trained = base.respace(ts), torch.arange(6), ts
    else:
        idx = torch.tensor([0, 10, 100, 500, 999])
        ddpm, trained = base, idx
    g = gen(8)
    t = idx.repeat_interleave(n)
    x0 = s0 * torch.randn(t.numel(), 3, generator=g, dtype=F64)
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    loss = losses.ddpm_simple_loss(_optimal_eps(abar, s0), ddpm, x0, t=t, noise=z)
    for i, tt in zip(idx.tolist(), trained.tolist()):
        a = abar[tt].item()
        assert_mc(loss[t == i], a * s0 ** 2 / (a * s0 ** 2 + 1 - a), what=f"t={i} (trained {tt})")


def test_ddpm_simple_loss_is_mean_squared_eps_error():
    """Exactly mean_dims (z - model(sqrt(abar) x0 + sqrt(1 - abar) z, t))^2 for an arbitrary model."""
    betas = schedules.cosine_betas(50)
    abar = _abar(betas)
    ddpm = diffcore.DDPM(betas)
    g = gen(9)
    x0 = torch.randn(12, 2, 3, generator=g, dtype=F64)
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    t = torch.randint(0, 50, (12,), generator=g)
    model = lambda x, tt: torch.tanh(x) * (tt[:, None, None] + 1.0) / 50
    a = abar[t][:, None, None]
    xt = a.sqrt() * x0 + (1 - a).sqrt() * z
    expected = (z - model(xt, t)).pow(2).flatten(1).mean(1)
    torch.testing.assert_close(losses.ddpm_simple_loss(model, ddpm, x0, t=t, noise=z), expected,
                               rtol=1e-13, atol=0)


# ---- normal_kl / discretized_gaussian_log_likelihood -----------------------------------------
def test_normal_kl_matches_torch_distributions():
    g = gen(10)
    m1, m2 = (torch.randn(6, 7, generator=g, dtype=F64) * 2 for _ in range(2))
    lv1, lv2 = ((torch.rand(6, 7, generator=g, dtype=F64) - 0.5) * 6 for _ in range(2))
    expected = kl_divergence(Normal(m1, torch.exp(0.5 * lv1)), Normal(m2, torch.exp(0.5 * lv2)))
    torch.testing.assert_close(losses.normal_kl(m1, lv1, m2, lv2), expected, rtol=1e-12, atol=1e-12)


BIN_CENTRES = torch.arange(256, dtype=F64) / 255 * 2 - 1


def _bin_probs(mean, sd):
    """P(bin k) for every 8-bit bin centre under N(mean, sd^2): width 2/255, edges open."""
    d = Normal(mean[..., None], sd[..., None])
    upper = d.cdf(BIN_CENTRES + 1 / 255)
    lower = d.cdf(BIN_CENTRES - 1 / 255)
    p = upper - lower
    p[..., 0] = upper[..., 0]
    p[..., -1] = 1 - lower[..., -1]
    return p


def test_discretized_gaussian_bins_sum_to_one_and_match_normal_cdf():
    g = gen(11)
    M = 40
    mean = (torch.rand(M, generator=g, dtype=F64) - 0.5) * 2.4
    log_scale = -5 * torch.rand(M, generator=g, dtype=F64)  # sd from 0.0067 to 1
    x = BIN_CENTRES.expand(M, 256)
    lp = losses.discretized_gaussian_log_likelihood(x, mean[:, None].expand(M, 256),
                                                    log_scale[:, None].expand(M, 256))
    torch.testing.assert_close(lp.exp().sum(1), torch.ones(M, dtype=F64), rtol=0, atol=1e-6)
    expected = _bin_probs(mean, log_scale.exp())
    torch.testing.assert_close(lp.exp(), expected, rtol=0, atol=2e-12)  # the code floors p at 1e-12
    big = expected > 1e-8
    torch.testing.assert_close(lp[big], expected[big].log(), rtol=0, atol=1e-7)


def test_discretized_gaussian_edge_bins_are_open_tails():
    """Far-off means: the edge bin's log-probability is log Phi / log(1 - Phi) to +-inf, not a
    width-2/255 interval (which would have probability ~0 here)."""
    x = torch.tensor([-1.0, 1.0, -1.0, 1.0], dtype=F64)
    means = torch.tensor([-3.0, 3.0, 0.5, -0.5], dtype=F64)
    log_scales = torch.log(torch.tensor([0.5, 0.5, 0.4, 0.4], dtype=F64))
    lp = losses.discretized_gaussian_log_likelihood(x, means, log_scales)
    d = Normal(means, log_scales.exp())
    expected = torch.stack([d.cdf(x - (-1 / 255))[0], 1 - d.cdf(x - 1 / 255)[1],
                            d.cdf(x + 1 / 255)[2], 1 - d.cdf(x - 1 / 255)[3]]).log()
    torch.testing.assert_close(lp, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bad", [1.01, -1.5, float("nan")])
def test_discretized_gaussian_rejects_data_outside_unit_interval(bad):
    x = torch.tensor([0.0, bad], dtype=F64)
    with pytest.raises(ValueError, match="x"):
        losses.discretized_gaussian_log_likelihood(x, torch.zeros(2, dtype=F64), torch.zeros(2, dtype=F64))


# ---- ddpm_vlb_terms -----------------------------------------------------------------------
SCHEDULES = {"linear1000": lambda: schedules.linear_betas(1000), "cosine60": lambda: schedules.cosine_betas(60)}


def _point_mass_setup(betas, seed, per_t=6):
    """x0 on the 8-bit grid (both edge values included), t covering 0, 1, 2, mid, T-1."""
    T = betas.numel()
    g = gen(seed)
    ts = torch.tensor([0, 1, 2, T // 2, T - 1])
    t = ts.repeat_interleave(per_t)
    k = torch.randint(0, 256, (t.numel(), 2, 3, 3), generator=g)
    k[:, 0, 0, 0], k[:, 0, 0, 1] = 0, 255
    x0 = k.to(F64) / 255 * 2 - 1
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    abar = _abar(betas)
    a = abar[t].reshape(-1, 1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * z
    exact_eps = (xt - a.sqrt() * x0) / (1 - a).sqrt()  # the point mass's eps model, indexed by t
    return t, x0, xt, exact_eps, g


def _posterior_var(betas):
    """beta~_t = beta_t (1 - abar_{t-1}) / (1 - abar_t) for t >= 1 (beta~_0 = 0)."""
    abar = _abar(betas)
    abar_prev = torch.cat([torch.ones(1, dtype=F64), abar[:-1]])
    return betas * (1 - abar_prev) / (1 - abar)


def _decoder_nll_bits(x0, var):
    """-mean_dims log P(x0's bin | N(x0, var)) / log 2 for a decoder centred on the true x0."""
    d = Normal(x0, torch.sqrt(var).expand_as(x0))
    upper, lower = d.cdf(x0 + 1 / 255), d.cdf(x0 - 1 / 255)
    p = torch.where(x0 < -0.999, upper, torch.where(x0 > 0.999, 1 - lower, upper - lower))
    return -p.log().flatten(1).mean(1) / LOG2


@pytest.mark.parametrize("sched", SCHEDULES)
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
def test_ddpm_vlb_terms_with_the_exact_eps_of_a_point_mass(sched, variance):
    """With the exact eps the model's mean is the true posterior mean, so for t >= 1 the term is the
    KL between two Gaussians of equal mean: 0 for fixed_small, KL(N(0, beta~_t) || N(0, beta_t))
    for fixed_large, and KL(N(0, beta~_t) || N(0, exp(f log beta_t + (1 - f) log beta~_t))) with
    f = (v + 1) / 2 for learned_range. At t = 0 it is the decoder's -log P(x0's bin) with
    variance beta~_1 (fixed_small and fixed_large) or exp(f log beta_0 + (1 - f) log beta~_1)."""
    betas = SCHEDULES[sched]()
    T = betas.numel()
    t, x0, xt, eps, g = _point_mass_setup(betas, seed=12)
    pv = _posterior_var(betas)
    f = None
    out = eps
    if variance == "learned_range":
        v = torch.rand(x0.shape, generator=g, dtype=F64) * 2 - 1
        f = (v + 1) / 2
        out = torch.cat([eps, v], dim=1)
    ddpm = diffcore.DDPM(betas, variance=variance)
    got = losses.ddpm_vlb_terms(out, ddpm, x0, xt, t)
    assert got.shape == t.shape

    tb = t.reshape(-1, 1, 1, 1).expand_as(x0)
    true_var = pv[tb.clamp(min=1)]
    if variance == "fixed_small":
        model_var = true_var
        dec_var = pv[1].expand_as(x0)
    elif variance == "fixed_large":
        model_var = betas[tb]
        dec_var = pv[1].expand_as(x0)
    else:
        model_var = torch.exp(f * betas[tb].log() + (1 - f) * true_var.log())
        dec_var = torch.exp(f * betas[0].log() + (1 - f) * pv[1].log())
    kl = kl_divergence(Normal(0.0, true_var.sqrt()), Normal(0.0, model_var.sqrt())).flatten(1).mean(1) / LOG2
    nll = _decoder_nll_bits(x0, dec_var)
    expected = torch.where(t == 0, nll, kl)
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-9)
    if variance == "fixed_small":
        assert got[t > 0].abs().max() < 1e-9
    assert (got[t == 0] > 0.1).all()  # the decoder term is a real, nonzero cost
    assert T > 2


def test_ddpm_vlb_terms_mean_error_matches_ddpm_eq_11():
    """With eps_hat = eps + delta, the reverse mean is mu = (x_t - beta_t / sqrt(1 - abar_t) eps_hat)
    / sqrt(alpha_t) (Ho et al. eq. 11), off the posterior mean by beta_t delta / (sqrt(alpha_t)
    sqrt(1 - abar_t)); with fixed_small the KL is (that)^2 / (2 beta~_t) per dim."""
    betas = schedules.linear_betas(1000)
    t, x0, xt, eps, g = _point_mass_setup(betas, seed=13)
    keep = t > 0
    t, x0, xt, eps = t[keep], x0[keep], xt[keep], eps[keep]
    delta = 0.1 * torch.randn(x0.shape, generator=g, dtype=F64)
    got = losses.ddpm_vlb_terms(eps + delta, diffcore.DDPM(betas), x0, xt, t)
    tb = t.reshape(-1, 1, 1, 1)
    beta, abar = betas[tb], _abar(betas)[tb]
    diff = beta * delta / ((1 - beta).sqrt() * (1 - abar).sqrt())
    expected = (diff ** 2 / (2 * _posterior_var(betas)[tb])).flatten(1).mean(1) / LOG2
    torch.testing.assert_close(got, expected, rtol=1e-9, atol=1e-12)


# ---- ddpm_prior_bpd --------------------------------------------------------------------------
@pytest.mark.parametrize("betas", [schedules.linear_betas(1000), schedules.linear_betas(10, 1e-3, 0.05)],
                         ids=["linear1000", "short10"])
def test_ddpm_prior_bpd_matches_torch_kl(betas):
    abar_T = _abar(betas)[-1]
    assert abar_T < 0.99
    g = gen(14)
    x0 = torch.rand(8, 3, 4, generator=g, dtype=F64) * 2 - 1
    expected = kl_divergence(Normal(abar_T.sqrt() * x0, (1 - abar_T).sqrt()),
                             Normal(torch.zeros_like(x0), torch.ones_like(x0))).flatten(1).mean(1) / LOG2
    torch.testing.assert_close(losses.ddpm_prior_bpd(diffcore.DDPM(betas), x0), expected, rtol=1e-12, atol=1e-15)


# ---- ddpm_hybrid_loss ------------------------------------------------------------------------
class TinyHybridModel(torch.nn.Module):
    """eps from (a, b), v from (w, c): separate parameters for the two halves of the output."""

    def __init__(self, C, seed):
        super().__init__()
        g = gen(seed)
        self.a = torch.nn.Parameter(torch.randn(C, generator=g, dtype=F64))
        self.b = torch.nn.Parameter(torch.randn(C, generator=g, dtype=F64))
        self.w = torch.nn.Parameter(torch.randn(C, generator=g, dtype=F64))
        self.c = torch.nn.Parameter(torch.randn(C, generator=g, dtype=F64))
        self.seen_t = []

    def forward(self, x, t):
        self.seen_t.append(t)
        tf = (t.to(F64) / 1000).reshape(-1, 1, 1)
        eps = x * self.a[:, None] + self.b[:, None] * tf
        v = torch.tanh(x * self.w[:, None] + self.c[:, None] * tf)
        return torch.cat([eps, v], dim=1)


def _hybrid_inputs(T, seed):
    g = gen(seed)
    x0 = torch.rand(16, 2, 5, generator=g, dtype=F64) * 2 - 1
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    t = torch.randint(0, T, (16,), generator=g)
    t[:2] = torch.tensor([0, T - 1])
    return x0, z, t


@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large"])
def test_ddpm_hybrid_loss_requires_learned_range(variance):
    ddpm = diffcore.DDPM(schedules.linear_betas(100), variance=variance)
    x0, z, t = _hybrid_inputs(100, 15)
    with pytest.raises(ValueError, match="variance"):
        losses.ddpm_hybrid_loss(lambda x, tt: torch.zeros_like(x), ddpm, x0, t=t, noise=z)


@pytest.mark.parametrize("respaced", [False, True], ids=["full", "respaced"])
@pytest.mark.parametrize("lambda_vlb", [None, 0.05])
def test_ddpm_hybrid_loss_value(lambda_vlb, respaced):
    """L_hybrid = L_simple + lambda T L_t (lambda = 0.001 by default, T the chain's own length),
    through the public pieces; the model always sees the trained chain's timestep."""
    base = diffcore.DDPM(schedules.linear_betas(200, 1e-3, 0.05), variance="learned_range")
    ddpm = base.respace(torch.arange(0, 200, 8)) if respaced else base
    T = ddpm.T
    tmap = torch.arange(0, 200, 8) if respaced else torch.arange(200)
    model = TinyHybridModel(2, seed=16)
    x0, z, t = _hybrid_inputs(T, 17)
    kw = {} if lambda_vlb is None else {"lambda_vlb": lambda_vlb}
    with torch.no_grad():
        got = losses.ddpm_hybrid_loss(model, ddpm, x0, t=t, noise=z, **kw)
        torch.testing.assert_close(model.seen_t[-1], tmap[t], rtol=0, atol=0)
        simple = losses.ddpm_simple_loss(model, ddpm, x0, t=t, noise=z)
        a = _abar(base.betas)[tmap[t]].reshape(-1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * z
        vb = losses.ddpm_vlb_terms(model(xt, tmap[t]), ddpm, x0, xt, t)
    lam = 0.001 if lambda_vlb is None else lambda_vlb
    assert (vb > 0).all()
    torch.testing.assert_close(got, simple + lam * T * vb, rtol=1e-12, atol=0)


def test_ddpm_hybrid_loss_gradients_vlb_trains_only_the_variance():
    T = 200
    ddpm = diffcore.DDPM(schedules.linear_betas(T, 1e-3, 0.05), variance="learned_range")
    model = TinyHybridModel(2, seed=18)
    x0, z, t = _hybrid_inputs(T, 19)
    eps_params, v_params = [model.a, model.b], [model.w, model.c]
    params = eps_params + v_params

    g_hybrid = torch.autograd.grad(losses.ddpm_hybrid_loss(model, ddpm, x0, t=t, noise=z).sum(), params,
                                   allow_unused=True)
    g_simple = torch.autograd.grad(losses.ddpm_simple_loss(model, ddpm, x0, t=t, noise=z).sum(), eps_params)
    # Without the stop-gradient, the VLB would reach the eps parameters (the test can tell):
    a = _abar(ddpm.betas)[t].reshape(-1, 1, 1)
    xt = a.sqrt() * x0 + (1 - a).sqrt() * z
    vb = losses.ddpm_vlb_terms(model(xt, t), ddpm, x0, xt, t)
    g_vb_eps = torch.autograd.grad(vb.sum(), eps_params)
    assert all(gv.abs().max() > 1e-3 for gv in g_vb_eps)

    for gh, gs in zip(g_hybrid[:2], g_simple):
        torch.testing.assert_close(gh, gs, rtol=1e-12, atol=1e-14)
    g_vb_v = torch.autograd.grad(losses.ddpm_vlb_terms(model(xt, t), ddpm, x0, xt, t).sum(), v_params)
    for gh, gv in zip(g_hybrid[2:], g_vb_v):
        assert gh is not None and gh.abs().max() > 1e-6
        torch.testing.assert_close(gh, 0.001 * T * gv, rtol=1e-10, atol=1e-14)


# ---- sde_score_loss --------------------------------------------------------------------------
def _sde_closed_form(sde, t):
    """(m, std, g^2) recomputed from the SDE definitions (score_sde's formulas)."""
    if isinstance(sde, diffcore.VESDE):
        std = sde.sigma_min * (sde.sigma_max / sde.sigma_min) ** t
        return torch.ones_like(t), std, std ** 2 * 2 * math.log(sde.sigma_max / sde.sigma_min)
    b0, b1 = sde.beta_0, sde.beta_1
    m = torch.exp(-0.25 * t ** 2 * (b1 - b0) - 0.5 * t * b0)
    beta = b0 + t * (b1 - b0)
    if isinstance(sde, diffcore.SubVPSDE):
        return m, 1 - m ** 2, beta * (1 - torch.exp(-2 * b0 * t - (b1 - b0) * t ** 2))
    return m, torch.sqrt(1 - m ** 2), beta


SDES = [diffcore.VPSDE(), diffcore.VESDE(), diffcore.SubVPSDE()]
SDE_TIMES = [0.02, 0.2, 0.5, 1.0]


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_sde_score_loss_gaussian_data_exact_expectation(sde):
    """Data N(0, s0^2 I), x_t = m x0 + std z, exact score -x_t / V with V = m^2 s0^2 + std^2:
    std s + z = (-std m x0 + m^2 s0^2 z) / V, per-dim variance m^2 s0^2 / V, so the sigma2-weighted
    sum over D dims has mean D (1 - std^2 / V). The likelihood weighting is g^2 |s + z / std|^2 =
    g^2 / std^2 times the sigma2 value on the same draws; reduce="mean" is the sum / D."""
    s0, D, n = 0.8, 3, 20_000
    g = gen(20)
    t = torch.tensor(SDE_TIMES, dtype=F64).repeat_interleave(n)
    x0 = s0 * torch.randn(t.numel(), D, generator=g, dtype=F64)
    z = torch.randn(x0.shape, generator=g, dtype=F64)

    def model(x, tt):
        m, std, _ = _sde_closed_form(sde, tt)
        return -x / (m ** 2 * s0 ** 2 + std ** 2)[:, None]

    sig2 = losses.sde_score_loss(model, sde, x0, t=t, noise=z)
    lik = losses.sde_score_loss(model, sde, x0, t=t, noise=z, weighting="likelihood")
    mean = losses.sde_score_loss(model, sde, x0, t=t, noise=z, reduce="mean")
    m, std, g2 = _sde_closed_form(sde, t)
    torch.testing.assert_close(lik, g2 / std ** 2 * sig2, rtol=1e-10, atol=0)
    torch.testing.assert_close(mean, sig2 / D, rtol=1e-13, atol=0)
    for tv in SDE_TIMES:
        sel = t == tv
        mm, ss, _ = _sde_closed_form(sde, torch.tensor(tv, dtype=F64))
        assert_mc(sig2[sel], D * (1 - ss.item() ** 2 / (mm.item() ** 2 * s0 ** 2 + ss.item() ** 2)),
                  what=f"{sde!r} t={tv}")


@pytest.mark.parametrize("sde", SDES, ids=repr)
@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
def test_sde_score_loss_is_weighted_squared_residual(sde, weighting):
    """Per sample, lambda(t) |s(x_t, t) + z / std|^2 with lambda = std^2 or g^2, arbitrary model."""
    g = gen(21)
    x0 = torch.randn(10, 2, 2, generator=g, dtype=F64)
    z = torch.randn(x0.shape, generator=g, dtype=F64)
    t = torch.rand(10, generator=g, dtype=F64) * 0.9 + 0.05
    model = lambda x, tt: torch.sin(x) * tt[:, None, None]
    m, std, g2 = _sde_closed_form(sde, t)
    xt = m[:, None, None] * x0 + std[:, None, None] * z
    lam = std ** 2 if weighting == "sigma2" else g2
    expected = lam * (model(xt, t) + z / std[:, None, None]).pow(2).flatten(1).sum(1)
    got = losses.sde_score_loss(model, sde, x0, t=t, noise=z, weighting=weighting)
    torch.testing.assert_close(got, expected, rtol=1e-10, atol=0)


@pytest.mark.parametrize("eps", [None, 0.3])
def test_sde_score_loss_draws_t_in_eps_to_T(eps):
    sde = diffcore.VPSDE()
    seen = []
    x0 = torch.zeros(5000, 1, dtype=F64)
    losses.sde_score_loss(lambda x, tt: seen.append(tt) or torch.zeros_like(x), sde, x0, generator=gen(22), eps=eps)
    lo = sde.eps if eps is None else eps
    tt = seen[0]
    assert tt.min() >= lo and tt.max() <= sde.T
    assert abs(tt.mean().item() - (lo + sde.T) / 2) < 4 * (sde.T - lo) / math.sqrt(12 * 5000)


# ---- bad inputs --------------------------------------------------------------------------------
def _bad_cases():
    x = torch.zeros(4, 3, dtype=F64)
    nan_x = x.clone()
    nan_x[1, 2] = float("nan")
    score = lambda y: -y
    ncsn = diffcore.NCSN(SIGMAS)
    ddpm = diffcore.DDPM(schedules.linear_betas(100))
    eps_model = lambda y, t: torch.zeros_like(y)
    sde = diffcore.VPSDE()
    sde_model = lambda y, t: torch.zeros_like(y)
    return [
        ("method", lambda: losses.score_matching_loss(score, x, method="trace")),
        ("kind", lambda: losses.score_matching_loss(score, x, method="sliced", kind="uniform")),
        ("projections", lambda: losses.score_matching_loss(score, x, method="sliced", projections=0)),
        ("x", lambda: losses.score_matching_loss(score, nan_x)),
        ("score_fn", lambda: losses.score_matching_loss(lambda y: y[:, :2], x)),
        ("levels", lambda: losses.dsm_loss(lambda y, s: y, ncsn, x, levels=torch.tensor([0, 1, 2, 5]))),
        ("levels", lambda: losses.dsm_loss(lambda y, s: y, ncsn, x, levels=torch.tensor([0, 1, -1, 2]))),
        ("levels", lambda: losses.dsm_loss(lambda y, s: y, ncsn, x, levels=torch.tensor([0.0, 1.0, 2.0, 3.0]))),
        ("levels", lambda: losses.dsm_loss(lambda y, s: y, ncsn, x, levels=torch.tensor([0, 1, 2]))),
        ("noise", lambda: losses.dsm_loss(lambda y, s: y, ncsn, x, noise=torch.zeros(4, 2, dtype=F64))),
        ("x0", lambda: losses.dsm_loss(lambda y, s: y, ncsn, nan_x)),
        ("t", lambda: losses.ddpm_simple_loss(eps_model, ddpm, x, t=torch.tensor([0, 1, 2, 100]))),
        ("t", lambda: losses.ddpm_simple_loss(eps_model, ddpm, x, t=torch.tensor([0, -1, 2, 3]))),
        ("t", lambda: losses.ddpm_simple_loss(eps_model, ddpm, x, t=torch.tensor([0.0, 1.0, 2.0, 3.0]))),
        ("noise", lambda: losses.ddpm_simple_loss(eps_model, ddpm, x, noise=torch.zeros(4, 4, dtype=F64))),
        ("x0", lambda: losses.ddpm_simple_loss(eps_model, ddpm, nan_x)),
        ("t", lambda: losses.ddpm_vlb_terms(x, ddpm, x, x, torch.tensor([0, 1, 2, 100]))),
        ("x0", lambda: losses.ddpm_vlb_terms(x, ddpm, nan_x, x, torch.tensor([0, 1, 2, 3]))),
        ("xt", lambda: losses.ddpm_vlb_terms(x, ddpm, x, nan_x, torch.tensor([0, 1, 2, 3]))),
        ("x0", lambda: losses.ddpm_prior_bpd(ddpm, nan_x)),
        ("noise", lambda: losses.ddpm_hybrid_loss(
            lambda y, t: torch.cat([y, y], 1), diffcore.DDPM(schedules.linear_betas(100), variance="learned_range"),
            x, noise=torch.zeros(3, 3, dtype=F64))),
        ("weighting", lambda: losses.sde_score_loss(sde_model, sde, x, weighting="uniform")),
        ("reduce", lambda: losses.sde_score_loss(sde_model, sde, x, reduce="max")),
        ("t", lambda: losses.sde_score_loss(sde_model, sde, x, t=torch.tensor([0.5, 0.5, 0.5, 1.5], dtype=F64))),
        ("noise", lambda: losses.sde_score_loss(sde_model, sde, x, noise=torch.zeros(4, 3, 1, dtype=F64))),
        ("x0", lambda: losses.sde_score_loss(sde_model, sde, nan_x)),
    ]


@pytest.mark.parametrize("name,call", _bad_cases(), ids=[f"{i}-{c[0]}" for i, c in enumerate(_bad_cases())])
def test_bad_inputs_raise_value_error_naming_the_argument(name, call):
    with pytest.raises(ValueError, match=name):
        call()
