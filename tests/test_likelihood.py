"""Probability-flow likelihoods, encode/decode, bits/dim and the full-covariance Gaussian,
against answers computed independently (torch.distributions, closed-form flows, textbook
conditionals), never against the code's own output.

For Gaussian data N(mu, Sigma) every noised marginal is N(m_t mu, C_t), C_t = m_t^2 Sigma + s_t^2 I,
and the probability-flow ODE keeps each whitened coordinate fixed:
    x(T) = m_T mu + C_T^{1/2} C_eps^{-1/2} (x(eps) - m_eps mu).
The ODE's NLL of x (a sample of p_eps, with the prior standing in for p_T) is therefore
    -log p_eps(x) + [log p_T(z) - prior_logp(z)],   z = x(T),
and it differs from the data NLL -log N(x; mu, Sigma) by the eps shift (~1e-4 nats here) and the
prior mismatch in brackets (~|mu| / sigma_max for VE, ~m_T |mu| for VP: up to 0.03 nats in 2-D,
0.06 in 16-D with these means). The 1% check against the data NLL holds with that budget; the
solver itself is checked tightly against the bracketed expression.
"""
import importlib
import math

import pytest
import torch

import diffcore

# the module (diffcore.likelihood the attribute is the function)
L = importlib.import_module("diffcore.likelihood")
from diffcore.gaussian import Gaussian

SDES = [diffcore.VESDE(), diffcore.VPSDE(), diffcore.SubVPSDE()]
SDE_IDS = ["VE", "VP", "subVP"]


def _params(D, seed=0, mean_scale=0.5):
    """An anisotropic, randomly rotated covariance: eigenvalues log-spaced over [0.2, 3]."""
    g = torch.Generator().manual_seed(seed)
    Q, R = torch.linalg.qr(torch.randn(D, D, generator=g, dtype=torch.float64))
    Q = Q * torch.sign(torch.diagonal(R))
    lam = torch.exp(torch.linspace(math.log(0.2), math.log(3.0), D, dtype=torch.float64))
    cov = (Q * lam) @ Q.T
    cov = 0.5 * (cov + cov.T)
    mu = mean_scale * torch.randn(D, generator=g, dtype=torch.float64)
    return mu, cov


def _mvn(mu, cov):
    return torch.distributions.MultivariateNormal(mu, covariance_matrix=cov)


def _coeffs(sde, t):
    m, s = sde.marginal_coeffs(torch.tensor(t, dtype=torch.float64))
    return m.item(), s.item()


def _noised_cov(sde, cov, t):
    m, s = _coeffs(sde, t)
    return m, m * m * cov + s * s * torch.eye(cov.shape[0], dtype=torch.float64)


def _sqrtm(C, power=0.5):
    """C^power for SPD C by its own eigendecomposition (the test's, not Gaussian's)."""
    w, V = torch.linalg.eigh(C)
    return (V * w ** power) @ V.T


def _exact_latent(sde, mu, cov, x, eps):
    me, Ce = _noised_cov(sde, cov, eps)
    mT, CT = _noised_cov(sde, cov, sde.T)
    A = _sqrtm(CT) @ _sqrtm(Ce, -0.5)
    return mT * mu + (x - me * mu) @ A.T


def _ode_nll_expected(sde, mu, cov, x, z, eps):
    """-log p_eps(x) + log p_T(z) - prior_logp(z), from torch.distributions."""
    me, Ce = _noised_cov(sde, cov, eps)
    mT, CT = _noised_cov(sde, cov, sde.T)
    D = cov.shape[0]
    prior = _mvn(torch.zeros(D, dtype=torch.float64), sde.prior_std ** 2 * torch.eye(D, dtype=torch.float64))
    return -_mvn(me * mu, Ce).log_prob(x) + _mvn(mT * mu, CT).log_prob(z) - prior.log_prob(z)


# ---- likelihood against exact Gaussian NLLs ------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("D,n", [(2, 8), (16, 4)])
def test_exact_divergence_nll_matches_gaussian(sde, D, n):
    mu, cov = _params(D)
    g = Gaussian(mu, cov)
    x = g.sample(n, seed=3)
    nll, info = L.likelihood(g.model(sde), sde, x, divergence="exact", rtol=1e-6, atol=1e-6, return_info=True)
    assert nll.dtype == torch.float64 and nll.shape == (n,)
    data_nll = -_mvn(mu, cov).log_prob(x)
    rel = ((nll - data_nll) / data_nll).abs().max().item()
    assert rel < 0.01, rel                                        # measured: 0.9% VE 2-D, <= 0.3% otherwise
    # The solver part, without the eps shift and prior mismatch: tight.
    z_exact = _exact_latent(sde, mu, cov, x, sde.eps)
    expected = _ode_nll_expected(sde, mu, cov, x, z_exact, sde.eps)
    assert (nll - expected).abs().max().item() < 1e-4            # measured <= 1.3e-5
    assert (info["z"] - z_exact).abs().max().item() < 1e-4 * sde.prior_std
    assert (info["nfe_per_sample"] >= 7).all() and info["nfe"] >= info["nfe_per_sample"].max()


@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
@pytest.mark.parametrize("D", [2, 16])
def test_hutchinson_nll_mean_matches_gaussian(sde, D):
    # The probe error for sample i is (1/8) sum_k (v^T A v - tr A), A = int J dt (fixed for
    # Gaussian data); its std over the 2048 probes is ~1.2% of the mean NLL in 2-D (the
    # check is a ~2.5 sigma one there) and ~0.1% in 16-D. Measured: -1.0% (2-D), +0.05% (16-D).
    mu, cov = _params(D)
    g = Gaussian(mu, cov)
    x = g.sample(256, seed=5)
    nll = L.likelihood(g.model(sde), sde, x, divergence="hutchinson", probes=8, seed=1)
    exact = -_mvn(mu, cov).log_prob(x)
    rel = abs((nll.mean() - exact.mean()) / exact.mean()).item()
    assert rel < 0.03, rel


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_uses_fixed_probes_along_the_trajectory(probe):
    """For Gaussian data J(t) = U diag(a(t)) U^T for all x, so with probes v_k held fixed the
    integrated estimate is exactly (1/P) sum_k v_k^T A v_k, A = U diag(1/2 log(c_T / c_eps)) U^T.
    Redrawing probes per step, or a batch-dependent draw, would not match."""
    sde = diffcore.VPSDE()
    D, n, P = 4, 6, 3
    mu, cov = _params(D, seed=4)
    g = Gaussian(mu, cov)
    x = g.sample(n, seed=2)
    nll, info = L.likelihood(g.model(sde), sde, x, probes=P, probe=probe, seed=7, start=10, rtol=1e-7,
                             atol=1e-7, return_info=True)
    _, Ce = _noised_cov(sde, cov, sde.eps)
    _, CT = _noised_cov(sde, cov, sde.T)
    trA = 0.5 * (torch.linalg.slogdet(CT)[1] - torch.linalg.slogdet(Ce)[1])  # the exact divergence integral
    w, V = torch.linalg.eigh(cov)
    me, se = _coeffs(sde, sde.eps)
    mT, sT = _coeffs(sde, sde.T)
    Amat = (V * (0.5 * torch.log((mT ** 2 * w + sT ** 2) / (me ** 2 * w + se ** 2)))) @ V.T
    assert abs(torch.trace(Amat).item() - trA.item()) < 1e-10
    v = L.probe_vectors(7, torch.arange(10, 10 + n), (D,), P, probe)            # [P, n, D]
    expected_delta = torch.einsum("pnd,de,pne->n", v, Amat, v) / P
    assert (info["delta_logp"] - expected_delta).abs().max().item() < 1e-5
    # and that is not the exact divergence (the probes matter)
    assert (expected_delta - trA).abs().max().item() > 1e-2
    if probe == "rademacher":
        assert set(v.unique().tolist()) == {-1.0, 1.0}


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_hutchinson_is_unbiased_for_a_linear_drift(probe):
    """500 samples x 8 probes each = 4000 independent draws of v^T A v; their mean is tr A
    within 4 standard errors (the variance is known in closed form)."""
    D, B, P = 6, 500, 8
    g = torch.Generator().manual_seed(11)
    A = torch.randn(D, D, generator=g, dtype=torch.float64)
    x = torch.randn(1, D, generator=g, dtype=torch.float64).expand(B, D)
    fn = lambda xx: xx @ A.T  # noqa: E731
    v = L.probe_vectors(3, torch.arange(B), (D,), P, probe)                      # [P, B, D]
    _, div_exact = L.divergence(fn, x, "exact")
    assert (div_exact - torch.trace(A)).abs().max().item() < 1e-12
    _, div_h = L.divergence(fn, x, "hutchinson", v)
    S = 0.5 * (A + A.T)
    # Var(v^T A v): 2 ||S||_F^2 (gaussian); 2 (||S||_F^2 - sum S_ii^2) (rademacher).
    var = 2 * (S ** 2).sum() - (2 * (torch.diagonal(S) ** 2).sum() if probe == "rademacher" else 0.0)
    tol = 4 * math.sqrt(var.item() / (B * P))
    assert abs(div_h.mean().item() - torch.trace(A).item()) < tol, (div_h.mean().item(), torch.trace(A).item(), tol)
    # and the draws really vary (so the check above is about averaging, not a constant)
    assert div_h.std().item() > 0.1 * math.sqrt(var.item() / P)
    # per sample, the estimate is the mean of v^T A v over its own probes
    expected = torch.einsum("pbd,de,pbe->b", v, A, v) / P
    assert torch.allclose(div_h, expected, rtol=0, atol=1e-10)


def test_likelihood_any_shape_batch_independent_and_dtype():
    sde = diffcore.VESDE()
    mu, cov = _params(16, seed=2)
    g = Gaussian(mu, cov)
    x = g.sample(5, seed=9)
    m = g.model(sde)
    nll, info = L.likelihood(m, sde, x, probes=2, seed=4, return_info=True)
    nll_img, info_img = L.likelihood(m, sde, x.reshape(5, 1, 4, 4), probes=2, seed=4, return_info=True)
    assert torch.allclose(nll, nll_img, rtol=0, atol=1e-9)
    assert info_img["z"].shape == (5, 1, 4, 4)
    part = L.likelihood(m, sde, x[2:4], probes=2, seed=4, start=2)
    assert torch.allclose(part, nll[2:4], rtol=0, atol=1e-9)
    other_seed = L.likelihood(m, sde, x[2:4], probes=2, seed=5, start=2)
    assert (other_seed - part).abs().max() > 1e-3
    nll32, info32 = L.likelihood(m, sde, x.float(), probes=2, seed=4, return_info=True)
    assert nll32.dtype == torch.float64 and info32["z"].dtype == torch.float32
    assert torch.allclose(nll32, nll, rtol=1e-4, atol=1e-3)


# ---- encode / decode ----------------------------------------------------------------------
@pytest.mark.parametrize("sde", SDES, ids=SDE_IDS)
def test_encode_follows_exact_flow_and_decode_inverts(sde):
    D = 5
    mu, cov = _params(D, seed=6)
    g = Gaussian(mu, cov)
    x = g.sample(12, seed=8)
    z, info = L.encode(g.model(sde), sde, x, rtol=1e-6, atol=1e-6, return_info=True)
    exact = _exact_latent(sde, mu, cov, x, sde.eps)
    err = ((z - exact).abs() / (1 + exact.abs())).max().item()
    assert err < 1e-4, err                                        # measured <= ~1e-6
    assert info["nfe"] >= 7
    xb = L.decode(g.model(sde), sde, z, rtol=1e-6, atol=1e-6)
    assert (xb - x).abs().max().item() < 1e-3                     # measured <= 2e-5
    assert z.dtype == x.dtype and xb.shape == x.shape


def test_encode_with_custom_eps_and_float32():
    sde = diffcore.VPSDE()
    mu, cov = _params(3, seed=1)
    g = Gaussian(mu, cov)
    x = g.sample(4, seed=1)
    z = L.encode(g.model(sde), sde, x.float(), eps=0.1, rtol=1e-6, atol=1e-6)
    assert z.dtype == torch.float32
    exact = _exact_latent(sde, mu, cov, x, 0.1)
    assert (z.double() - exact).abs().max().item() < 1e-4
    xb = L.decode(g.model(sde), sde, exact, eps=0.1, rtol=1e-6, atol=1e-6)
    assert xb.dtype == torch.float64 and (xb - x).abs().max().item() < 1e-4


# ---- the Gaussian class -------------------------------------------------------------------
def test_gaussian_log_prob_and_noised_score():
    D = 7
    mu, cov = _params(D, seed=3)
    g = Gaussian(mu, cov)
    x = torch.randn(9, D, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert torch.allclose(g.log_prob(x), _mvn(mu, cov).log_prob(x), rtol=0, atol=1e-10)
    m = torch.linspace(0.3, 1.0, 9, dtype=torch.float64)
    s = torch.linspace(0.0, 2.0, 9, dtype=torch.float64)
    ref_lp, ref_score = [], []
    for i in range(9):
        C = m[i] ** 2 * cov + s[i] ** 2 * torch.eye(D, dtype=torch.float64)
        xi = x[i].clone().requires_grad_(True)
        lp = _mvn(m[i] * mu, C).log_prob(xi)
        (gr,) = torch.autograd.grad(lp, xi)
        ref_lp.append(lp.detach())
        ref_score.append(gr)
    assert torch.allclose(g.noised_log_prob(x, m, s), torch.stack(ref_lp), rtol=0, atol=1e-10)
    score = g.noised_score(x, m, s)
    assert torch.allclose(score, torch.stack(ref_score), rtol=0, atol=1e-10)
    # scalar m, s; image-shaped float32 input keeps shape and dtype
    s32 = g.noised_score(x.float().reshape(9, 7, 1), 0.5, 0.2)
    assert s32.shape == (9, 7, 1) and s32.dtype == torch.float32 and s32.is_contiguous()
    C = 0.25 * cov + 0.04 * torch.eye(D, dtype=torch.float64)
    ref = -(x - 0.5 * mu) @ torch.linalg.inv(C)
    assert torch.allclose(s32.double().reshape(9, 7), ref, rtol=1e-5, atol=1e-5)


def test_gaussian_model_is_the_sde_marginal_score():
    D = 3
    mu, cov = _params(D, seed=5)
    g = Gaussian(mu, cov)
    x = torch.randn(4, D, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    t = torch.tensor([0.01, 0.3, 0.6, 1.0], dtype=torch.float64)
    for sde in SDES:
        out = g.model(sde)(x, t)
        for i in range(4):
            m, C = _noised_cov(sde, cov, t[i].item())
            ref = -torch.linalg.solve(C, x[i] - m * mu)
            assert torch.allclose(out[i], ref, rtol=1e-9, atol=1e-9)
    with pytest.raises(ValueError, match="process"):
        g.model(diffcore.DDPM(torch.linspace(1e-4, 0.02, 10)))


def test_gaussian_sample_moments_and_counter():
    mu, cov = _params(3, seed=7)
    g = Gaussian(mu, cov)
    x = g.sample(40000, seed=1)
    assert (x.mean(0) - mu).abs().max() < 0.05
    assert (torch.cov(x.T) - cov).abs().max() < 0.08
    assert torch.equal(g.sample(5, seed=1, start=10), x[10:15])
    assert g.sample(3, seed=1, dtype=torch.float32).dtype == torch.float32


def _conditional_by_precision(mu, cov, known, values):
    """Textbook: with Lambda = Sigma^{-1}, x_f | x_k ~ N(mu_f - L_ff^{-1} L_fk (x_k - mu_k), L_ff^{-1})."""
    D = mu.shape[0]
    free = [i for i in range(D) if i not in known]
    Lam = torch.linalg.inv(cov)
    Lff = Lam[free][:, free]
    Lfk = Lam[free][:, known]
    Lff_inv = torch.linalg.inv(Lff)
    mean = mu[free] - (values - mu[known]) @ (Lff_inv @ Lfk).T
    return mean, Lff_inv


def test_gaussian_conditional_matches_precision_block_formula():
    D = 6
    mu, cov = _params(D, seed=9)
    g = Gaussian(mu, cov)
    known = [4, 0, 2]
    vals = torch.randn(5, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    mean, ccov = g.conditional(known, vals)
    ref_mean, ref_cov = _conditional_by_precision(mu, cov, known, vals)
    assert mean.shape == (5, 3) and ccov.shape == (3, 3)
    assert torch.allclose(mean, ref_mean, rtol=0, atol=1e-10)
    assert torch.allclose(ccov, ref_cov, rtol=0, atol=1e-10)
    assert g.free_index(known).tolist() == [1, 3, 5]
    # a boolean mask takes values in ascending coordinate order; 1-D values give a 1-D mean
    mask = torch.tensor([True, False, True, False, True, False])
    m1, c1 = g.conditional(mask, vals[0, [1, 2, 0]])
    assert torch.allclose(m1, ref_mean[0], rtol=0, atol=1e-10) and torch.allclose(c1, ref_cov, atol=1e-10)
    m32, _ = g.conditional(known, vals.float())
    assert m32.dtype == torch.float32
    # nothing known: the marginal
    m0, c0 = g.conditional([], torch.zeros(0, dtype=torch.float64))
    assert torch.allclose(m0, mu) and torch.allclose(c0, cov)


def test_gaussian_bad_inputs():
    mu, cov = _params(3)
    with pytest.raises(ValueError, match="mean"):
        Gaussian(torch.zeros(3, 1), cov)
    with pytest.raises(ValueError, match="cov"):
        Gaussian(mu, cov[:2])
    bad = cov.clone()
    bad[0, 1] += 0.1
    with pytest.raises(ValueError, match="cov must be symmetric"):
        Gaussian(mu, bad)
    with pytest.raises(ValueError, match="positive definite"):
        Gaussian(mu, torch.diag(torch.tensor([1.0, 0.0, 1.0])))
    with pytest.raises(ValueError, match="positive definite"):
        Gaussian(mu, torch.diag(torch.tensor([1.0, -1.0, 1.0])))
    with pytest.raises(ValueError, match="cov must be finite"):
        Gaussian(mu, torch.full((3, 3), float("nan")))
    g = Gaussian(mu, cov)
    with pytest.raises(ValueError, match="D = 3"):
        g.log_prob(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="x contains NaN"):
        g.log_prob(torch.tensor([[float("nan"), 0.0, 0.0]]))
    with pytest.raises(ValueError, match="m must"):
        g.noised_score(torch.zeros(2, 3), torch.ones(3), 0.1)
    with pytest.raises(ValueError, match="s must be >= 0"):
        g.noised_score(torch.zeros(2, 3), 1.0, -0.1)
    with pytest.raises(ValueError, match="m and s"):
        g.noised_score(torch.zeros(2, 3), 0.0, 0.0)
    with pytest.raises(ValueError, match="known_idx must lie"):
        g.conditional([3], torch.zeros(1))
    with pytest.raises(ValueError, match="known_idx must not repeat"):
        g.conditional([1, 1], torch.zeros(2))
    with pytest.raises(ValueError, match="known_idx"):
        g.conditional([0.5], torch.zeros(1))
    with pytest.raises(ValueError, match="at least one coordinate free"):
        g.conditional([0, 1, 2], torch.zeros(3))
    with pytest.raises(ValueError, match="values must have shape"):
        g.conditional([0], torch.zeros(2))
    with pytest.raises(ValueError, match="n must"):
        g.sample(0)


# ---- bits per dim and dequantization -----------------------------------------------------
@pytest.mark.parametrize("data_range", ["[0,1]", "[-1,1]"])
def test_bits_per_dim_is_exact_for_a_bin_constant_density(data_range):
    """Pixels iid from a categorical P over 256 levels; the dequantized density that is
    constant on each bin (p_y = 256 P(k) on [0,1], 128 P(k) on [-1,1]) makes the Jensen bound
    tight, so bpd must equal the discrete -sum log2 P(k) / D exactly, and 8 for uniform P."""
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(256, generator=g, dtype=torch.float64) * 2
    P = torch.softmax(logits, 0)
    B, shape = 6, (3, 4, 4)
    D = math.prod(shape)
    k = torch.multinomial(P, B * D, replacement=True, generator=g).reshape(B, *shape).to(torch.uint8)
    y = L.dequantize(k, seed=3, data_range=data_range, dtype=torch.float64)
    width = 1.0 if data_range == "[0,1]" else 2.0
    lo = 0.0 if data_range == "[0,1]" else -1.0
    bin_of_y = torch.floor((y - lo) / width * 256).long()
    assert torch.equal(bin_of_y, k.long())                       # y inside its own bin
    density = P[bin_of_y] * 256 / width
    nll_y = -torch.log(density).flatten(1).sum(1)
    expected = -torch.log2(P[k.long()]).flatten(1).sum(1) / D
    bpd = L.bits_per_dim(nll_y, shape, data_range=data_range)
    assert torch.allclose(bpd, expected, rtol=0, atol=1e-12)
    assert torch.allclose(L.bits_per_dim(nll_y, y, data_range=data_range), expected, rtol=0, atol=1e-12)
    # the uniform model: 8 bits per 8-bit dimension whatever the range
    uniform_nll = torch.full((B,), D * math.log(width), dtype=torch.float64)  # density width^-D
    assert torch.allclose(L.bits_per_dim(uniform_nll, D, data_range=data_range),
                          torch.full((B,), 8.0, dtype=torch.float64), rtol=0, atol=1e-12)


def test_bits_per_dim_offsets():
    nll = torch.tensor([10.0 * math.log(2.0)], dtype=torch.float64)
    assert L.bits_per_dim(nll, 5).item() == pytest.approx(2.0, abs=1e-12)
    assert L.bits_per_dim(nll, 5, data_range="[0,1]").item() == pytest.approx(10.0, abs=1e-12)
    assert L.bits_per_dim(nll, 5, data_range="[-1,1]").item() == pytest.approx(9.0, abs=1e-12)
    assert L.bits_per_dim(nll, (5,), offset=1.5).item() == pytest.approx(3.5, abs=1e-12)


def test_dequantize_is_counter_based_and_within_bins():
    k = torch.randint(0, 256, (10, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)
    k[0] = 255
    k[1] = 0
    y = L.dequantize(k, seed=5, data_range="[-1,1]", dtype=torch.float64)
    part = L.dequantize(k[4:7], seed=5, data_range="[-1,1]", start=4, dtype=torch.float64)
    assert torch.equal(part, y[4:7])
    assert not torch.equal(L.dequantize(k, seed=6, data_range="[-1,1]", dtype=torch.float64), y)
    u = (y + 1) / 2 * 256 - k.double()                            # the noise, in (0, 1)
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.02 and abs(u.var().item() - 1 / 12) < 0.01
    y01 = L.dequantize(k, seed=5, data_range="[0,1]", dtype=torch.float64)
    assert torch.allclose(y01 * 2 - 1, y, rtol=0, atol=1e-12)
    y32 = L.dequantize(k, seed=5)                                 # default [-1,1], float32
    assert y32.dtype == torch.float32
    lo = (2 * k.double() / 256 - 1).float()
    hi = (2 * (k.double() + 1) / 256 - 1).float()
    assert (y32 >= lo).all() and (y32 <= hi).all()


# ---- bad inputs ----------------------------------------------------------------------------
def test_likelihood_bad_inputs():
    sde = diffcore.VPSDE()
    mu, cov = _params(2)
    m = Gaussian(mu, cov).model(sde)
    x = torch.zeros(2, 2, dtype=torch.float64)
    cases = [
        (dict(divergence="trace"), "divergence must be one of"),
        (dict(probe="normal"), "probe must be one of"),
        (dict(probes=0), "probes must be >= 1"),
        (dict(probes=1.5), "probes must be an integer"),
        (dict(eps=0.0), "eps must be finite and > 0"),
        (dict(eps=1.0), r"eps must lie in \(0, T\)"),
        (dict(rtol=-1.0), "rtol"),
        (dict(atol=0.0), "atol"),
        (dict(seed=-1), "seed"),
    ]
    for kw, msg in cases:
        with pytest.raises(ValueError, match=msg):
            L.likelihood(m, sde, x, **kw)
    with pytest.raises(ValueError, match="x contains NaN"):
        L.likelihood(m, sde, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="x must have shape"):
        L.likelihood(m, sde, torch.zeros(3))
    with pytest.raises(ValueError, match="sde must be"):
        L.likelihood(m, diffcore.DDPM(torch.linspace(1e-4, 0.02, 10)), x)
    with pytest.raises(ValueError, match="model must return"):
        L.likelihood(lambda xx, tt: xx[:, :1], sde, x)
    with pytest.raises(ValueError, match="z contains NaN"):
        L.decode(m, sde, torch.tensor([[float("nan"), 0.0]]))
    with pytest.raises(ValueError, match="sde must be"):
        L.encode(m, "vp", x)
    with pytest.raises(ValueError, match="eps must lie"):
        L.encode(m, sde, x, eps=2.0)
    with pytest.raises(ValueError, match="data_range must be one of"):
        L.bits_per_dim(torch.zeros(2), 4, data_range="[0,255]")
    with pytest.raises(ValueError, match="not both"):
        L.bits_per_dim(torch.zeros(2), 4, data_range="[0,1]", offset=8.0)
    with pytest.raises(ValueError, match="x_shape_or_D"):
        L.bits_per_dim(torch.zeros(2), 0)
    with pytest.raises(ValueError, match="x_shape_or_D"):
        L.bits_per_dim(torch.zeros(2), (3, 0))
    with pytest.raises(ValueError, match="x must be an integer tensor"):
        L.dequantize(torch.zeros(2, 3), 0)
    with pytest.raises(ValueError, match=r"x must hold values in \[0, 255\]"):
        L.dequantize(torch.full((2, 3), 300, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match="data_range must be one of"):
        L.dequantize(torch.zeros(2, 3, dtype=torch.uint8), 0, data_range="0-1")
