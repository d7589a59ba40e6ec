"""Controllable generation from an unconditional score, against exact conditionals."""
import math

import pytest
import torch

import diffcore
from diffcore.controllable import LinearObservation, guided

from conftest import mixture_stats

N = 20_000


@pytest.fixture
def gm3d():
    """Components separated mostly in the free coordinates; the known one (x_0) is only
    weakly informative, so the conditional weights are far from the prior's."""
    return diffcore.GaussianMixture([[0.0, 3.0, 0.0], [1.0, -3.0, 2.0], [-1.0, 0.0, -3.0]], 0.5, [0.4, 0.4, 0.2])


def _exact_conditional(gm, c):
    """p(x_1, x_2 | x_0 = c): a mixture with Bayes-updated weights (diagonal components)."""
    logw = torch.log(gm.weights) - 0.5 * (c - gm.means[:, 0]) ** 2 / gm.vars[:, 0] - 0.5 * torch.log(gm.vars[:, 0])
    return diffcore.GaussianMixture(gm.means[:, 1:], gm.vars[:, 1:].sqrt(), torch.softmax(logw, 0))


@pytest.mark.slow
@pytest.mark.parametrize("method,options", [
    ("ode", dict(rtol=1e-4, atol=1e-4)),
    ("pc", dict(steps=400, corrector="none")),
])
def test_inpainting_matches_exact_conditional_mixture(gm3d, method, options):
    c = 0.3
    sde = diffcore.VPSDE()
    obs = LinearObservation.inpainting(torch.tensor([1.0, 0.0, 0.0]), torch.tensor([c, 0.0, 0.0]))
    # Replacement keeps x_0 on the data; the exact likelihood p(x_0 = c | x_t) steers the rest.
    model = guided(gm3d.model(sde), gm3d.observation_log_likelihood(sde, [[1.0, 0.0, 0.0]], [c]), 1.0)
    x = diffcore.sample(model, sde, n=N, shape=(3,), method=method, seed=3, observation=obs, **options)
    assert torch.equal(x[:, 0], torch.full((N,), c))
    cond = _exact_conditional(gm3d, c)
    weights, means, _ = mixture_stats(cond, x[:, 1:])
    assert (weights - cond.weights).abs().max().item() <= 0.03, (weights, cond.weights)
    assert (means - cond.means).abs().max().item() <= 0.1, means


@pytest.mark.slow
def test_guided_sampling_toward_component(gm3d):
    sde = diffcore.VPSDE()
    k = 2  # the lightest component (weight 0.2)
    model = guided(gm3d.model(sde), gm3d.classifier(sde, k), 1.0)
    x = diffcore.sample(model, sde, n=N, shape=(3,), method="pc", steps=500, corrector="none", seed=5)
    comp = gm3d.assign(x.double())
    assert (comp == k).double().mean().item() >= 0.97
    sel = x[comp == k].double()
    assert ((sel.mean(0) - gm3d.means[k]).abs() <= 0.05 * gm3d.means[k].abs().clamp(min=1.0)).all(), sel.mean(0)
    assert ((sel.std(0) / gm3d.vars[k].sqrt() - 1).abs() <= 0.05).all(), sel.std(0)


def _colour_problem():
    """3-channel 2x2 'images', every pixel iid N(mu, diag(sd^2)) over (r, g, b)."""
    mu = torch.tensor([0.8, -0.2, -0.5], dtype=torch.float64)
    sd = torch.tensor([0.6, 0.3, 0.45], dtype=torch.float64)
    H = W = 2
    means = mu[:, None].expand(3, H * W).reshape(1, -1)
    stds = sd[:, None].expand(3, H * W).reshape(1, -1)
    gm = diffcore.GaussianMixture(means, stds, [1.0])
    grey = torch.tensor([[0.5, -0.3], [0.1, 0.9]], dtype=torch.float64)  # g . x per pixel
    return gm, mu, sd, grey


@pytest.mark.slow
@pytest.mark.parametrize("method", ["ode", "pc"])
def test_colorization_matches_exact_gaussian_conditional(method):
    gm, mu, sd, grey = _colour_problem()
    sde = diffcore.VPSDE()
    g = torch.full((3,), 1 / math.sqrt(3), dtype=torch.float64)
    # y = A x: one row per pixel, g on that pixel's three channels (orthonormal rows).
    A = torch.zeros(4, 12, dtype=torch.float64)
    for p in range(4):
        A[p, [p, 4 + p, 8 + p]] = g
    obs = LinearObservation.colorization(grey[None].expand(N, 2, 2).float())
    model = guided(gm.model(sde), gm.observation_log_likelihood(sde, A, grey.flatten()), 1.0)
    options = dict(rtol=1e-4, atol=1e-4) if method == "ode" else dict(steps=400, corrector="none")
    x = diffcore.sample(model, sde, n=N, shape=(3, 2, 2), method=method, seed=8, observation=obs, **options)
    got_grey = (x.double() * g[None, :, None, None]).sum(1)
    assert (got_grey - grey).abs().max().item() <= 1e-5
    # Exact conditional of one pixel's colour given g . x = gamma (Sigma = diag(sd^2)).
    cov = torch.diag(sd ** 2)
    sg = cov @ g
    var_g = g @ sg
    cond_var = torch.diag(cov - torch.outer(sg, sg) / var_g)
    for p, gamma in enumerate(grey.flatten().tolist()):
        cond_mean = mu + sg * (gamma - g @ mu) / var_g
        pix = x.double()[:, :, p // 2, p % 2]
        assert ((pix.mean(0) - cond_mean).abs() <= 0.05 * cond_mean.abs().clamp(min=0.2)).all(), (p, pix.mean(0), cond_mean)
        assert ((pix.var(0) / cond_var - 1).abs() <= 0.05).all(), (p, pix.var(0), cond_var)


def test_replacement_keeps_known_entries_and_is_counter_based(gm3d):
    sde = diffcore.VPSDE(N=50)
    obs = LinearObservation.inpainting(torch.tensor([1.0, 0.0, 1.0]), torch.tensor([0.2, 0.0, -0.7]))
    a = diffcore.sample(gm3d.model(sde), sde, n=20, shape=(3,), method="pc", seed=1, observation=obs, corrector="none")
    b = diffcore.sample(gm3d.model(sde), sde, n=20, shape=(3,), method="pc", seed=1, observation=obs, corrector="none", batch_size=3)
    assert torch.equal(a, b)
    assert torch.equal(a[:, 0], torch.full((20,), 0.2)) and torch.equal(a[:, 2], torch.full((20,), -0.7))


def test_from_matrix_projector_equals_inpainting():
    A = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)
    y = torch.tensor([0.2, -0.7], dtype=torch.float64)
    x = torch.randn(5, 3, dtype=torch.float64)
    mat = LinearObservation.from_matrix(A, y)
    inp = LinearObservation.inpainting(torch.tensor([1.0, 0.0, 1.0], dtype=torch.float64), torch.tensor([0.2, 0.0, -0.7], dtype=torch.float64))
    torch.testing.assert_close(mat.project(x), inp.project(x))
    idx = torch.arange(5)
    torch.testing.assert_close(mat.known_for(x, idx), inp.known_for(x, idx))


def test_observation_likelihood_is_exact_for_one_gaussian():
    """One Gaussian component: y = x0_0 given x_t is Gaussian with the textbook posterior."""
    gm = diffcore.GaussianMixture([[0.5, -1.0]], [[0.7, 1.2]], [1.0])
    sde = diffcore.VPSDE()
    x = torch.randn(6, 2, dtype=torch.float64)
    t = torch.full((6,), 0.4, dtype=torch.float64)
    m, s = sde.marginal_coeffs(t)
    y = 0.9
    lp = gm.observation_log_likelihood(sde, [[1.0, 0.0]], [y])(x, t)
    v, mu = 0.49, 0.5
    post_var = 1 / (1 / v + m ** 2 / s ** 2)
    post_mean = post_var * (mu / v + m * x[:, 0] / s ** 2)
    torch.testing.assert_close(lp, torch.distributions.Normal(post_mean, post_var.sqrt()).log_prob(torch.tensor(y, dtype=torch.float64)))


@pytest.mark.parametrize("call,match", [
    (lambda: LinearObservation.inpainting(torch.tensor([0.5, 1.0]), torch.zeros(2)), "mask must be"),
    (lambda: LinearObservation.inpainting(torch.tensor([0.0, 1.0]), torch.tensor([float("nan"), 0.0])), "values contains NaN"),
    (lambda: LinearObservation.from_matrix(torch.tensor([[1.0, 1.0]]), torch.zeros(1)), "orthonormal rows"),
    (lambda: LinearObservation.from_matrix(torch.eye(2), torch.zeros(3)), "y must have"),
    (lambda: guided(lambda x, t: x, lambda x, t: x.sum(1), scale=-1.0), "scale must be"),
    (lambda: diffcore.sample(lambda x, t: x, diffcore.VPSDE(), n=2, shape=(2,), method="pc", observation="mask"), "observation must be"),
])
def test_bad_controllable_input(call, match):
    with pytest.raises(ValueError, match=match):
        call()


def test_guidance_of_an_eps_model_steers_toward_the_component(gm3d):
    """DDPM models return eps = -s * score: guidance must enter with the opposite sign."""
    ddpm = diffcore.DDPM(diffcore.schedules.linear_betas(1000))
    k = 2
    model = guided(gm3d.model(ddpm), gm3d.classifier(ddpm, k), 1.0, process=ddpm)
    x = diffcore.sample(model, ddpm, n=2000, shape=(3,), method="ancestral", steps=200, seed=4)
    assert (gm3d.assign(x.double()) == k).double().mean().item() >= 0.97


def test_per_sample_known_values_survive_chunking(gm3d):
    sde = diffcore.VPSDE(N=50)
    vals = torch.randn(12, 3)
    obs = LinearObservation.inpainting(torch.tensor([1.0, 0.0, 0.0]), vals)
    a = diffcore.sample(gm3d.model(sde), sde, n=12, shape=(3,), method="pc", corrector="none", seed=2, observation=obs)
    b = diffcore.sample(gm3d.model(sde), sde, n=12, shape=(3,), method="pc", corrector="none", seed=2, observation=obs, batch_size=5)
    assert torch.equal(a, b) and torch.equal(a[:, 0], vals[:, 0])


def test_inpainting_mask_must_have_one_samples_shape(gm3d):
    sde = diffcore.VPSDE(N=50)
    obs = LinearObservation.inpainting(torch.ones(4, 3), torch.zeros(4, 3))
    with pytest.raises(ValueError, match="mask must have one sample's shape"):
        diffcore.sample(gm3d.model(sde), sde, n=4, shape=(3,), method="pc", corrector="none", observation=obs)
