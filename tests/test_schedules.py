"""Schedules against diffusers' published formulas and the papers' defining equations."""
import math

import numpy as np
import pytest
import torch

from diffcore import schedules

diffusers = pytest.importorskip("diffusers")


def test_linear_betas_match_diffusers():
    ours = schedules.linear_betas(1000, 1e-4, 0.02)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear").betas
    assert ours.dtype == torch.float64 and ours.shape == (1000,)
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-6, atol=0)
    assert ours[0].item() == 1e-4 and ours[-1].item() == pytest.approx(0.02, rel=1e-15)


@pytest.mark.parametrize("T", [1000, 4000, 17])
def test_cosine_betas_match_diffusers(T):
    ours = schedules.cosine_betas(T)
    theirs = diffusers.DDPMScheduler(num_train_timesteps=T, beta_schedule="squaredcos_cap_v2").betas
    torch.testing.assert_close(ours.float(), theirs, rtol=1e-5, atol=1e-7)
    assert ours.max().item() <= 0.999


def test_cosine_alpha_bar_is_the_papers_formula():
    T, s = 1000, 0.008
    abar = torch.cumprod(1 - schedules.cosine_betas(T, s), 0)
    f = lambda t: math.cos((t / T + s) / (1 + s) * math.pi / 2) ** 2  # noqa: E731
    for t in (1, 10, 500, 900):  # the cap at 0.999 only bites at the very end
        assert abar[t - 1].item() == pytest.approx(f(t) / f(0), rel=1e-10)


def test_geometric_sigmas():
    s = schedules.geometric_sigmas(50.0, 0.01, 232)
    assert s[0].item() == pytest.approx(50.0) and s[-1].item() == pytest.approx(0.01)
    ratios = s[:-1] / s[1:]
    torch.testing.assert_close(ratios, torch.full_like(ratios, (5000.0) ** (1 / 231)), rtol=1e-12, atol=0)


def test_sigma_max_from_data_is_largest_pairwise_distance():
    rng = np.random.default_rng(1)
    data = rng.normal(size=(1500, 3, 2, 2))
    flat = data.reshape(len(data), -1)
    brute = max(np.sqrt(((flat[i] - flat) ** 2).sum(1)).max() for i in range(len(flat)))
    assert schedules.sigma_max_from_data(torch.tensor(data)) == pytest.approx(brute, rel=1e-12)


@pytest.mark.parametrize("dim", [5, 64, 3072, 12288])
def test_gamma_rule_root(dim):
    gamma = schedules.gamma_for_dim(dim)
    # Independent evaluation of Phi(sqrt(2D)(g-1) + 3g) - Phi(sqrt(2D)(g-1) - 3g) with torch's ndtr.
    a = torch.tensor(math.sqrt(2 * dim) * (gamma - 1), dtype=torch.float64)
    value = (torch.special.ndtr(a + 3 * gamma) - torch.special.ndtr(a - 3 * gamma)).item()
    assert value == pytest.approx(0.5, abs=1e-9)
    assert gamma > 1


def test_num_levels_covers_the_range_with_ratio_at_most_gamma():
    dim, smax, smin = 3072, 50.0, 0.01
    gamma = schedules.gamma_for_dim(dim)
    L = schedules.num_levels_for(smax, smin, dim)
    assert gamma ** (L - 1) >= smax / smin > gamma ** (L - 2)
    ladder = schedules.geometric_sigmas(smax, smin, L)
    assert (ladder[:-1] / ladder[1:]).max().item() <= gamma * (1 + 1e-12)


@pytest.mark.parametrize("call,match", [
    (lambda: schedules.linear_betas(0), "T"),
    (lambda: schedules.linear_betas(10, 0.5, 0.1), "beta_start"),
    (lambda: schedules.cosine_betas(10, max_beta=1.5), "max_beta"),
    (lambda: schedules.geometric_sigmas(1.0, 2.0, 5), "sigma_min"),
    (lambda: schedules.geometric_sigmas(2.0, 1.0, 0), "num_levels"),
    (lambda: schedules.gamma_for_dim(2), "dim"),
    (lambda: schedules.sigma_max_from_data(torch.zeros(1, 3)), "data"),
])
def test_bad_schedule_arguments(call, match):
    with pytest.raises(ValueError, match=match):
        call()
