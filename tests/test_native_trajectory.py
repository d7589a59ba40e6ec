"""Whole-trajectory GMM integration in one native op (diffcore.trajectory.integrate_gmm)
against the reference sampler with the same noise, and RK45 against the exact
probability-flow map of a Gaussian."""
import pytest
import torch

import diffcore

native = pytest.importorskip("diffcore.native", reason="the native extension did not build here")
from diffcore.trajectory import integrate_gmm  # noqa: E402

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
SDES = [diffcore.VESDE(), diffcore.VPSDE(), diffcore.SubVPSDE()]


def need(device):
    if device == "cuda" and not (torch.cuda.is_available() and native.available("cuda")):
        pytest.skip("needs CUDA and a CUDA build of the extension")
    return device


@pytest.fixture(scope="module")
def gm5():
    """K = 3, D = 5 (two Philox groups per step, the last one partial), diagonal stds."""
    g = torch.Generator().manual_seed(0)
    means = torch.randn(3, 5, generator=g, dtype=torch.float64) * 3
    stds = 0.3 + torch.rand(3, 5, generator=g, dtype=torch.float64)
    return diffcore.GaussianMixture(means, stds, [0.5, 0.3, 0.2])


CASES = [  # (options, float64 tolerance): Langevin's step sizes amplify the noise's float32 ulps
    (dict(method="pc", steps=30, predictor="euler_maruyama", corrector="none"), 1e-5),
    (dict(method="pc", steps=40, predictor="reverse_diffusion", corrector="langevin", corrector_steps=2, snr=0.1), 1e-3),
    (dict(method="pc", steps=40, predictor="ancestral", corrector="none", denoise=False), 1e-5),
    (dict(method="pc", steps=25, predictor="none", corrector="langevin"), 1e-3),
    (dict(method="ode", solver="euler", steps=20), 1e-6),
    (dict(method="ode", solver="heun", steps=20, denoise=False), 1e-6),
    (dict(method="ode", solver="rk45", rtol=1e-4, atol=1e-4), 1e-6),
]


def _applicable(sde, opts):
    if opts.get("predictor") == "ancestral" and isinstance(sde, diffcore.SubVPSDE):
        return False
    return True


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
@pytest.mark.parametrize("opts, tol", CASES, ids=lambda v: str(v) if not isinstance(v, dict) else
                         f"{v['method']}-{v.get('solver', v.get('predictor'))}-{v.get('corrector', '')}")
def test_matches_reference_sampler_float64(device, sde, opts, tol, gm5):
    need(device)
    if not _applicable(sde, opts):
        pytest.skip("predictor not defined for this SDE")
    seed = 2**40 + 3
    ref, ri = diffcore.sample(gm5.model(sde), sde, n=7, shape=(5,), seed=seed, dtype=torch.float64,
                              return_info=True, **opts)
    got, gi = integrate_gmm(gm5, sde, 7, seed=seed, dtype=torch.float64, device=device, **opts)
    assert got.dtype == torch.float64 and got.shape == (7, 5) and got.device.type == device
    torch.testing.assert_close(got.cpu(), ref, atol=tol, rtol=tol)
    assert gi["nfe"] == ri["nfe"]
    if "nfe_per_sample" in ri:
        assert torch.equal(gi["nfe_per_sample"].cpu(), ri["nfe_per_sample"])


@pytest.mark.parametrize("opts", [CASES[0][0], CASES[4][0], CASES[5][0]], ids=["pc-em", "ode-euler", "ode-heun"])
def test_matches_reference_sampler_float32(opts, gm2):
    sde = diffcore.VPSDE()
    ref = diffcore.sample(gm2.model(sde), sde, n=33, shape=(2,), seed=5, **opts)
    got, _ = integrate_gmm(gm2, sde, 33, seed=5, **opts)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, ref, atol=2e-5, rtol=2e-5)


def test_reverse_diffusion_vp_with_langevin(gm2):
    sde = diffcore.VPSDE()
    opts = dict(method="pc", steps=50, predictor="reverse_diffusion", corrector="langevin")
    ref = diffcore.sample(gm2.model(sde), sde, n=6, shape=(2,), seed=1, dtype=torch.float64, **opts)
    got, _ = integrate_gmm(gm2, sde, 6, seed=1, dtype=torch.float64, **opts)
    torch.testing.assert_close(got, ref, atol=1e-3, rtol=1e-3)


def test_samples_do_not_depend_on_the_batch(gm3):
    sde = diffcore.VESDE()
    opts = dict(method="pc", steps=20, predictor="reverse_diffusion", corrector="langevin")
    full, _ = integrate_gmm(gm3, sde, 45, seed=9, **opts)
    part, _ = integrate_gmm(gm3, sde, 12, seed=9, start=33, **opts)
    assert torch.equal(full[33:], part)


def _gaussian_pf_map(sde, mu, s0, x_T, eps):
    """Exact probability-flow map of data N(mu, diag(s0^2)): (x - m mu) / sigma_marginal is
    constant along the flow, sigma_marginal(t)^2 = m(t)^2 s0^2 + s(t)^2 (all three SDEs)."""
    t = torch.tensor([sde.T, eps], dtype=torch.float64)
    m, s = sde.marginal_coeffs(t)
    sig = torch.sqrt(m[:, None] ** 2 * s0 ** 2 + s[:, None] ** 2)
    return m[1] * mu + sig[1] / sig[0] * (x_T - m[0] * mu)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("sde", SDES, ids=lambda s: type(s).__name__)
def test_rk45_hits_the_exact_gaussian_flow(device, sde):
    need(device)
    mu = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64)
    s0 = torch.tensor([0.4, 1.0, 0.7], dtype=torch.float64)
    gm = diffcore.GaussianMixture(mu[None], s0[None], [1.0])
    x_T = torch.randn(16, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * sde.prior_std
    eps = 1e-3
    got, info = integrate_gmm(gm, sde, 16, method="ode", solver="rk45", rtol=1e-7, atol=1e-7, eps=eps, denoise=False,
                              x_init=x_T.to(device), dtype=torch.float64)
    exact = _gaussian_pf_map(sde, mu, s0, x_T, eps)
    torch.testing.assert_close(got.cpu(), exact, atol=2e-5, rtol=2e-5)
    loose, linfo = integrate_gmm(gm, sde, 16, method="ode", solver="rk45", rtol=1e-3, atol=1e-3, eps=eps,
                                 denoise=False, x_init=x_T.to(device), dtype=torch.float64)
    assert linfo["nfe"] < info["nfe"]
    assert (got.cpu() - exact).abs().max() < (loose.cpu() - exact).abs().max() < 0.2


def test_recovers_mixture_weights(gm2):
    x, _ = integrate_gmm(gm2, diffcore.VPSDE(), 4000, method="pc", steps=200, predictor="euler_maruyama",
                         corrector="none", seed=3)
    w = (gm2.assign(x) == 0).double().mean().item()
    assert abs(w - 0.8) < 0.03


@pytest.mark.parametrize("kw, err, match", [
    (dict(method="pc", corrector="ald"), ValueError, "corrector"),
    (dict(method="ode", solver="rk45", steps=10), ValueError, "rk45"),
    (dict(method="pc", dtype=torch.float16), ValueError, "dtype"),
    (dict(method="ode", solver="rk45", max_steps=1), RuntimeError, "max_steps"),
    (dict(method="pc", x_init=torch.zeros(3, 3)), ValueError, "x_init"),
    (dict(method="sde"), ValueError, "method"),
])
def test_bad_arguments(kw, err, match, gm2):
    with pytest.raises(err, match=match):
        integrate_gmm(gm2, diffcore.VESDE(N=20), 4, **kw)


def test_non_sde_process_is_refused(gm2):
    with pytest.raises(ValueError, match="VESDE"):
        integrate_gmm(gm2, diffcore.DDPM(diffcore.schedules.linear_betas(10)), 4)
