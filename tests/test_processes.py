"""Processes against exact answers: forward marginals vs simulation, Gaussian posteriors,
chains vs their SDEs, prior densities vs torch.distributions."""
import math

import pytest
import torch

import diffcore
from diffcore import schedules

SDES = [diffcore.VESDE(), diffcore.VPSDE(), diffcore.SubVPSDE()]


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_marginal_prob_matches_euler_maruyama_simulation(sde):
    """Simulate dx = f dt + g dw from t = 0 with 1000 steps; compare mean and std at several t."""
    g = torch.Generator().manual_seed(0)
    n, steps = 20_000, 1000
    x0 = torch.tensor([1.5, -2.0], dtype=torch.float64)
    x = x0.expand(n, 2).clone()
    if isinstance(sde, diffcore.VESDE):  # score_sde's VE: p_0 is the data perturbed by sigma_min
        x = x + sde.sigma_min * torch.randn(n, 2, generator=g, dtype=torch.float64)
    checkpoints = {250: None, 500: None, 1000: None}
    dt = sde.T / steps
    for i in range(steps):
        t = torch.full((n,), i * dt, dtype=torch.float64)
        drift, diffusion = sde.sde(x, t)
        x = x + drift * dt + diffusion[:, None] * math.sqrt(dt) * torch.randn(n, 2, generator=g, dtype=torch.float64)
        if i + 1 in checkpoints:
            checkpoints[i + 1] = x.clone()
    for k, xs in checkpoints.items():
        t = k * dt
        mean, std = sde.marginal_prob(x0[None], torch.tensor([t], dtype=torch.float64))
        emp_mean, emp_std = xs.mean(0), xs.std(0)
        scale = max(std.item(), mean.abs().max().item())
        assert (emp_mean - mean[0]).abs().max().item() < 0.02 * scale, (t, emp_mean, mean)
        assert ((emp_std / std.item()) - 1).abs().max().item() < 0.02, (t, emp_std, std)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_prior_logp_matches_torch_distributions(sde):
    z = torch.randn(6, 3, 4, dtype=torch.float64) * sde.prior_std
    ref = torch.distributions.Normal(0.0, sde.prior_std).log_prob(z).flatten(1).sum(1)
    torch.testing.assert_close(sde.prior_logp(z), ref)


def test_vp_discretize_is_the_ddpm_chain():
    sde = diffcore.VPSDE()
    ddpm = sde.to_ddpm()
    x = torch.randn(5, 3, dtype=torch.float64)
    idx = torch.tensor([0, 10, 500, 998, 999])
    t = idx.double() / (sde.N - 1)
    f, G = sde.discretize(x, t)
    beta = ddpm.betas[idx]
    torch.testing.assert_close(x + f, torch.sqrt(1 - beta)[:, None] * x)
    torch.testing.assert_close(G, torch.sqrt(beta))


def test_ve_discretize_is_the_smld_chain():
    sde = diffcore.VESDE()
    ncsn = sde.to_ncsn()
    x = torch.randn(4, 2, dtype=torch.float64)
    idx = torch.tensor([0, 1, 500, 999])
    f, G = sde.discretize(x, idx.double() / (sde.N - 1))
    sig = ncsn.sigmas.flip(0)
    expect = torch.sqrt(sig[idx] ** 2 - torch.where(idx > 0, sig[(idx - 1).clamp(min=0)], torch.zeros(4, dtype=torch.float64)) ** 2)
    assert torch.equal(f, torch.zeros_like(x))
    torch.testing.assert_close(G, expect)


def test_subvp_variance_below_vp_and_same_mean():
    vp, sub = diffcore.VPSDE(), diffcore.SubVPSDE()
    t = torch.linspace(1e-3, 1, 50, dtype=torch.float64)
    (m1, s1), (m2, s2) = vp.marginal_coeffs(t), sub.marginal_coeffs(t)
    torch.testing.assert_close(m1, m2)
    assert (s2 <= s1).all()
    torch.testing.assert_close(s2, s1 ** 2)


@pytest.mark.parametrize("sde", SDES, ids=repr)
def test_reverse_sde_and_probability_flow(sde):
    x = torch.randn(3, 4, dtype=torch.float64)
    t = torch.tensor([0.1, 0.5, 0.9], dtype=torch.float64)
    score = torch.randn(3, 4, dtype=torch.float64)
    f, g = sde.sde(x, t)
    rev = sde.reverse(lambda xx, tt: score)
    drift, diffusion = rev.sde(x, t)
    torch.testing.assert_close(drift, f - g[:, None] ** 2 * score)
    torch.testing.assert_close(diffusion, g)
    ode_drift, ode_diff = sde.reverse(lambda xx, tt: score, probability_flow=True).sde(x, t)
    torch.testing.assert_close(ode_drift, f - 0.5 * g[:, None] ** 2 * score)
    assert torch.equal(ode_diff, torch.zeros_like(g))


@pytest.mark.parametrize("betas", [schedules.linear_betas(1000), schedules.cosine_betas(1000), schedules.linear_betas(7, 0.05, 0.3)],
                         ids=["linear", "cosine", "short"])
def test_ddpm_posterior_is_exact_gaussian_conditioning(betas):
    """q(x_{t-1} | x_t, x_0) from Bayes' rule on N(sqrt(abar_{t-1}) x0, 1 - abar_{t-1}) and
    N(sqrt(alpha_t) x_{t-1}, beta_t), computed here independently in precision form."""
    ddpm = diffcore.DDPM(betas)
    abar = torch.cumprod(1 - betas, 0)
    for t in (1, ddpm.T // 2, ddpm.T - 1):
        x0, xt = torch.randn(1, 3, dtype=torch.float64), torch.randn(1, 3, dtype=torch.float64)
        prec_prior = 1 / (1 - abar[t - 1])
        prec_lik = (1 - betas[t]) / betas[t]
        var = 1 / (prec_prior + prec_lik)
        mean = var * (prec_prior * abar[t - 1].sqrt() * x0 + prec_lik / (1 - betas[t]).sqrt() * xt)
        got_mean, got_var, _ = ddpm.q_posterior(x0, xt, torch.tensor([t]))
        torch.testing.assert_close(got_mean, mean, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(got_var.flatten(), var.reshape(1), rtol=1e-10, atol=1e-14)


def test_ddpm_variances():
    betas = schedules.linear_betas(1000)
    x = torch.zeros(3, 2, dtype=torch.float64)
    t = torch.tensor([0, 1, 999])
    small = diffcore.DDPM(betas, "fixed_small")
    large = diffcore.DDPM(betas, "fixed_large")
    learned = diffcore.DDPM(betas, "learned_range")
    pv = small.posterior_variance
    torch.testing.assert_close(small.log_variance(t, x).flatten(), torch.log(torch.stack([pv[1], pv[1], pv[999]])))
    torch.testing.assert_close(large.log_variance(t, x).flatten(), torch.log(torch.stack([pv[1], betas[1], betas[999]])))
    for v, expect in ((-1.0, small.log_variance(t, x)), (1.0, torch.log(betas[t])[:, None])):
        got = learned.log_variance(t, x, torch.full((3, 2), v, dtype=torch.float64))
        torch.testing.assert_close(got, expect.expand(3, 2))
    mid = learned.log_variance(t, x, torch.zeros(3, 2, dtype=torch.float64))
    torch.testing.assert_close(mid, (0.5 * (small.log_variance(t, x) + torch.log(betas[t])[:, None])).expand(3, 2))


def test_respaced_chain_keeps_the_marginals():
    ddpm = diffcore.DDPM(schedules.linear_betas(1000))
    ts = diffcore.discrete.spaced_timesteps(1000, 50, "even")
    spaced = ddpm.respace(ts)
    torch.testing.assert_close(spaced.alphas_cumprod, ddpm.alphas_cumprod[ts], rtol=1e-12, atol=0)
    assert torch.equal(spaced.timestep_map, ts)


@pytest.mark.parametrize("spacing,expect", [
    ("leading", [0, 100, 200, 300, 400, 500, 600, 700, 800, 900]),
    ("trailing", [99, 199, 299, 399, 499, 599, 699, 799, 899, 999]),
    ("even", [0, 111, 222, 333, 444, 555, 666, 777, 888, 999]),
])
def test_spaced_timesteps(spacing, expect):
    assert diffcore.discrete.spaced_timesteps(1000, 10, spacing).tolist() == expect


@pytest.mark.parametrize("T", [1000, 999, 37])
def test_trailing_spacing_has_steps_entries_ending_at_T_minus_1(T):
    for steps in range(1, min(T, 120) + 1):
        ts = diffcore.discrete.spaced_timesteps(T, steps, "trailing")
        assert ts.numel() == steps, (T, steps, ts)
        assert ts[-1].item() == T - 1 and ts[0].item() >= 0
        assert steps == 1 or (ts[1:] > ts[:-1]).all()


def test_trailing_spacing_matches_diffusers():
    diffusers = pytest.importorskip("diffusers")
    for steps in (10, 50, 61):
        sched = diffusers.DDIMScheduler(num_train_timesteps=1000, timestep_spacing="trailing")
        sched.set_timesteps(steps)
        theirs = sorted(sched.timesteps.tolist())
        ours = diffcore.discrete.spaced_timesteps(1000, steps, "trailing").tolist()
        if len(theirs) == steps:  # diffusers' float arange overshoots for some counts
            assert ours == theirs
