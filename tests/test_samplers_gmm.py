"""Every sampler against the exact answer: samples of a Gaussian mixture drawn with its
exact score must reproduce the mixture's weights (+-0.02) and means (0.05) at n = 20 000."""
import pytest
import torch

import diffcore
from diffcore import schedules

from conftest import mixture_stats

N = 20_000


def _ncsn_for(gm):
    # Technique 1: sigma_1 = the largest pairwise distance of the data.
    smax = schedules.sigma_max_from_data(gm.sample(2000, seed=9))
    return diffcore.NCSN(schedules.geometric_sigmas(smax, 0.01, 20))


def _ddpm(variance="fixed_small"):
    return diffcore.DDPM(schedules.linear_betas(1000), variance)


CASES = {
    "annealed_langevin": (_ncsn_for, "annealed_langevin", dict(steps=100, eps=2e-5, init_range=(-8, 8))),
    "ancestral_fixed_small": (lambda gm: _ddpm(), "ancestral", {}),
    "ancestral_fixed_large": (lambda gm: _ddpm("fixed_large"), "ancestral", {}),
    "ancestral_learned_range": (lambda gm: _ddpm("learned_range"), "ancestral", {}),
    "ancestral_respaced_250": (lambda gm: _ddpm(), "ancestral", dict(steps=250, spacing="even")),
    "ddim_eta1": (lambda gm: _ddpm(), "ddim", dict(steps=250, eta=1.0)),
    "ddim_eta0": (lambda gm: _ddpm(), "ddim", dict(steps=100, eta=0.0)),
    "pc_ve_reverse_diffusion_langevin": (lambda gm: diffcore.VESDE(), "pc",
                                         dict(predictor="reverse_diffusion", corrector="langevin", norm="batch")),
    "pc_vp_euler_maruyama": (lambda gm: diffcore.VPSDE(), "pc", dict(predictor="euler_maruyama", corrector="none")),
    "pc_vp_ancestral_langevin": (lambda gm: diffcore.VPSDE(), "pc",
                                 dict(predictor="ancestral", corrector="langevin", norm="batch")),
    "pc_subvp_euler_maruyama_ald": (lambda gm: diffcore.SubVPSDE(), "pc",
                                    dict(predictor="euler_maruyama", corrector="ald", snr=0.1)),
    "pc_ve_corrector_only_ald": (lambda gm: diffcore.VESDE(), "pc",
                                 dict(predictor="none", corrector="ald", corrector_steps=2, snr=0.2)),
    "ode_vp_rk45": (lambda gm: diffcore.VPSDE(), "ode", dict(solver="rk45", rtol=1e-4, atol=1e-4)),
    "ode_subvp_heun": (lambda gm: diffcore.SubVPSDE(), "ode", dict(solver="heun", steps=100)),
}


@pytest.mark.slow
@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_recovers_mixture(case, gm2):
    make, method, options = CASES[case]
    process = make(gm2)
    x = diffcore.sample(gm2.model(process), process, n=N, shape=(2,), method=method, seed=2024, **options)
    weights, means, stds = mixture_stats(gm2, x)
    print(case, weights.tolist(), means.tolist(), stds.tolist())
    assert (weights - gm2.weights).abs().max().item() <= 0.02, weights
    assert (means - gm2.means).abs().max().item() <= 0.05, means
    assert (stds / gm2.vars.sqrt() - 1).abs().max().item() <= 0.1, stds


@pytest.mark.slow
def test_plain_langevin_gets_the_weights_wrong(gm2):
    """Started uniformly, unannealed Langevin chains stay in the basin they start in: the
    0.8 / 0.2 weights come out near the basins' shares of the start box (the classic failure)."""
    ncsn = _ncsn_for(gm2)
    x = diffcore.sample(gm2.model(ncsn), ncsn, n=N, shape=(2,), method="langevin", steps=1000,
                        step_size=0.01, init_range=(-8, 8), seed=2024)
    weights, means, _ = mixture_stats(gm2, x)
    assert (means - gm2.means).abs().max().item() <= 0.05  # each mode is found ...
    assert abs(weights[0].item() - 0.8) > 0.2  # ... but the mass between them is wrong


@pytest.mark.slow
def test_three_component_mixture_pc_vp(gm3):
    sde = diffcore.VPSDE()
    x = diffcore.sample(gm3.model(sde), sde, n=N, shape=(2,), method="pc", seed=7,
                        predictor="reverse_diffusion", corrector="langevin", norm="batch")
    weights, means, stds = mixture_stats(gm3, x)
    assert (weights - gm3.weights).abs().max().item() <= 0.02
    assert (means - gm3.means).abs().max().item() <= 0.05
    assert (stds / gm3.vars.sqrt() - 1).abs().max().item() <= 0.1
