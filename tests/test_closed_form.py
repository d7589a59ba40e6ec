"""GaussianMixture against torch.distributions and autograd."""
import math

import pytest
import torch

import diffcore
from diffcore import schedules


def _torch_mixture(gm, m=1.0, s=0.0):
    comp = torch.distributions.Independent(
        torch.distributions.Normal(m * gm.means, torch.sqrt(m * m * gm.vars + s * s)), 1)
    return torch.distributions.MixtureSameFamily(torch.distributions.Categorical(gm.weights), comp)


@pytest.mark.parametrize("m,s", [(1.0, 0.0), (0.6, 0.8), (1.0, 3.0), (0.01, 0.9999)])
def test_log_prob_matches_torch_distributions(gm3, m, s):
    x = torch.randn(50, 2, dtype=torch.float64) * 3
    torch.testing.assert_close(gm3.noised_log_prob(x, m, s), _torch_mixture(gm3, m, s).log_prob(x))


@pytest.mark.parametrize("m,s", [(1.0, 0.0), (0.6, 0.8), (1.0, 3.0)])
def test_score_is_gradient_of_log_prob(gm3, m, s):
    x = (torch.randn(40, 2, dtype=torch.float64) * 3).requires_grad_(True)
    lp = _torch_mixture(gm3, m, s).log_prob(x).sum()
    grad, = torch.autograd.grad(lp, x)
    torch.testing.assert_close(gm3.noised_score(x.detach(), m, s), grad)


def test_posterior_is_bayes_rule(gm3):
    x = torch.randn(30, 2, dtype=torch.float64) * 3
    comp = torch.distributions.Independent(torch.distributions.Normal(gm3.means, gm3.vars.sqrt()), 1)
    joint = comp.log_prob(x[:, None, :]) + torch.log(gm3.weights)
    torch.testing.assert_close(gm3.posterior(x), torch.softmax(joint, 1))


def test_sample_statistics(gm3):
    x = gm3.sample(60_000, seed=3)
    comp = gm3.assign(x)
    w = torch.stack([(comp == k).double().mean() for k in range(3)])
    assert (w - gm3.weights).abs().max() < 0.01
    for k in range(3):
        assert (x[comp == k].mean(0) - gm3.means[k]).abs().max() < 0.03


def test_sample_is_counter_based(gm3):
    assert torch.equal(gm3.sample(100, seed=5)[40:60], gm3.sample(20, seed=5, start=40))


def test_model_outputs_per_process(gm3):
    x = torch.randn(8, 2, dtype=torch.float64)
    ncsn = diffcore.NCSN(schedules.geometric_sigmas(10, 0.1, 5))
    sig = torch.full((8,), 0.7, dtype=torch.float64)
    torch.testing.assert_close(gm3.model(ncsn)(x, sig), gm3.noised_score(x, 1.0, 0.7))
    ddpm = diffcore.DDPM(schedules.linear_betas())
    t = torch.full((8,), 300)
    abar = ddpm.alphas_cumprod[300]
    eps = gm3.model(ddpm)(x, t)
    torch.testing.assert_close(eps, -math.sqrt(1 - abar) * gm3.noised_score(x, abar.sqrt(), (1 - abar).sqrt()))
    learned = diffcore.DDPM(schedules.linear_betas(), "learned_range")
    out = gm3.model(learned, v=0.25)(x, t)
    assert out.shape == (8, 4) and torch.equal(out[:, 2:], torch.full((8, 2), 0.25, dtype=torch.float64))
    vp = diffcore.VPSDE()
    tc = torch.full((8,), 0.3, dtype=torch.float64)
    m, s = vp.marginal_coeffs(tc)
    torch.testing.assert_close(gm3.model(vp)(x, tc), gm3.noised_score(x, m, s))


@pytest.mark.parametrize("kwargs,match", [
    (dict(means=[[0.0, 1.0]], stds=[1.0, 2.0]), "stds"),
    (dict(means=[[0.0], [1.0]], stds=[1.0, -1.0]), "stds"),
    (dict(means=[[0.0], [1.0]], stds=1.0, weights=[1.0]), "weights"),
    (dict(means=[[0.0], [1.0]], stds=1.0, weights=[1.0, 0.0]), "weights"),
    (dict(means=[[float("nan")]], stds=1.0), "means"),
])
def test_bad_mixture_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        diffcore.GaussianMixture(**kwargs)
