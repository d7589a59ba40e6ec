"""Probability-flow ODE solvers against the exact flow of Gaussian data.

For data N(mu, diag(s0^2)) the marginal at t is N(m_t mu, diag(m_t^2 s0^2 + s_t^2)) and the
probability-flow ODE keeps each coordinate's standardised value fixed, so
x(eps) = m_eps mu + sd(eps) / sd(T) * (x(T) - m_T mu) exactly.
"""
import pytest
import torch

import diffcore

MU = torch.tensor([1.0, -2.0, 0.5], dtype=torch.float64)
S0 = torch.tensor([0.3, 1.2, 0.7], dtype=torch.float64)
SDES = [diffcore.VESDE(), diffcore.VPSDE(), diffcore.SubVPSDE()]


def _exact_flow(sde, xT, t0, t1):
    def sd(t):
        m, s = sde.marginal_coeffs(torch.tensor(t, dtype=torch.float64))
        return m, torch.sqrt(m * m * S0 ** 2 + s * s)
    mT, sdT = sd(t0)
    me, sde_ = sd(t1)
    return me * MU + sde_ / sdT * (xT - mT * MU)


def _gaussian():
    return diffcore.GaussianMixture(MU[None], S0[None], [1.0])


@pytest.mark.parametrize("sde", SDES, ids=repr)
@pytest.mark.parametrize("solver,steps,tol", [("rk45", None, 1e-4), ("heun", 200, 2e-3), ("euler", 1000, 5e-2)])
def test_solver_follows_exact_gaussian_flow(sde, solver, steps, tol):
    g = torch.Generator().manual_seed(1)
    xT = torch.randn(16, 3, generator=g, dtype=torch.float64) * sde.prior_std
    opts = dict(rtol=1e-6, atol=1e-6) if solver == "rk45" else {}
    x, info = diffcore.sample(_gaussian().model(sde), sde, n=16, shape=(3,), method="ode", solver=solver, steps=steps,
                              x_init=xT, dtype=torch.float64, denoise=False, return_info=True, **opts)
    exact = _exact_flow(sde, xT, sde.T, sde.eps)
    err = ((x - exact).abs() / (1 + exact.abs())).max().item()
    assert err < tol, err
    if solver == "rk45":
        assert (info["nfe_per_sample"] >= 7).all() and info["nfe"] >= info["nfe_per_sample"].max()


def test_rk45_error_shrinks_with_tolerance():
    sde = diffcore.VPSDE()
    xT = torch.randn(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    exact = _exact_flow(sde, xT, sde.T, sde.eps)
    errs, nfes = [], []
    for tol in (1e-3, 1e-5, 1e-7):
        x, info = diffcore.sample(_gaussian().model(sde), sde, n=8, shape=(3,), method="ode", rtol=tol, atol=tol,
                                  x_init=xT, dtype=torch.float64, denoise=False, return_info=True)
        errs.append((x - exact).abs().max().item())
        nfes.append(info["nfe"])
    assert errs[0] > errs[1] > errs[2] and errs[2] < 1e-6
    assert nfes[0] < nfes[1] < nfes[2]


def test_rk45_integrates_a_known_ode_both_directions():
    """dx/dt = -x t per sample with different x(0): x(t) = x0 exp(-t^2 / 2)."""
    from diffcore.samplers.ode import rk45
    x0 = torch.tensor([[1.0], [3.0], [-2.0]], dtype=torch.float64)
    f = lambda x, t: -x * t[:, None]  # noqa: E731
    x1, _ = rk45(f, x0, 0.0, 2.0, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(x1, x0 * torch.exp(torch.tensor(-2.0, dtype=torch.float64)), rtol=1e-7, atol=0)
    back, _ = rk45(f, x1, 2.0, 0.0, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(back, x0, rtol=1e-7, atol=0)
