"""Bad input gets a ValueError that names the argument and what is accepted."""
import math

import pytest
import torch

import diffcore
from diffcore import schedules

GM = diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])
DDPM = diffcore.DDPM(schedules.linear_betas(100))
VP = diffcore.VPSDE(N=50)
VE = diffcore.VESDE(N=50)
NCSN = diffcore.NCSN(schedules.geometric_sigmas(8.0, 0.1, 3))


def _sample(**kw):
    args = dict(model=GM.model(VP), process=VP, n=4, shape=(2,), method="pc", steps=5)
    args.update(kw)
    return diffcore.sample(**args)


NAN_X = torch.tensor([[0.0, float("nan")]] * 4)

CASES = {
    # diffcore.sample
    "unknown method": (lambda: _sample(method="dpm"), r"method must be one of \['ancestral', 'annealed_langevin', 'ddim', 'langevin', 'ode', 'pc'\]"),
    "steps zero": (lambda: _sample(steps=0), r"steps must be >= 1"),
    "steps negative": (lambda: _sample(steps=-3), r"steps must be >= 1"),
    "steps float": (lambda: _sample(steps=2.5), r"steps must be an integer"),
    "n zero": (lambda: _sample(n=0), r"n must be >= 1"),
    "bad shape": (lambda: _sample(shape=(2, 0)), r"shape must be a tuple of positive ints"),
    "negative seed": (lambda: _sample(seed=-1), r"seed must be >= 0"),
    "batch_size zero": (lambda: _sample(batch_size=0), r"batch_size must be >= 1"),
    "model not callable": (lambda: _sample(model=3), r"model must be callable"),
    "process wrong type": (lambda: _sample(process="vp"), r"process must be an NCSN, DDPM, VESDE, VPSDE or SubVPSDE"),
    "x_init NaN": (lambda: _sample(x_init=NAN_X), r"x_init contains NaN or Inf"),
    "x_init wrong shape": (lambda: _sample(x_init=torch.zeros(3, 2)), r"x_init must have shape \[n, \*shape\] = \(4, 2\)"),
    "unknown option": (lambda: _sample(predictr="euler_maruyama"), r"unknown option\(s\) \['predictr'\] for method='pc'; accepted: "),
    "unknown predictor": (lambda: _sample(predictor="heun"), r"predictor must be one of \['ancestral', 'euler_maruyama', 'none', 'reverse_diffusion'\]"),
    "unknown corrector": (lambda: _sample(corrector="mala"), r"corrector must be one of \['ald', 'langevin', 'none'\]"),
    "snr zero": (lambda: _sample(snr=0.0), r"snr must be finite and > 0"),
    "unknown norm": (lambda: _sample(norm="global"), r"norm must be one of \['batch', 'per_sample'\]"),
    "unknown solver": (lambda: _sample(method="ode", steps=None, solver="rk4"), r"solver must be one of \['euler', 'heun', 'rk45'\]"),
    "rk45 with steps": (lambda: _sample(method="ode", steps=10), r"solver='rk45' chooses its own steps"),
    "ddim needs ddpm": (lambda: _sample(method="ddim"), r"method='ddim' needs a DDPM process; got process=VPSDE"),
    "pc needs sde": (lambda: _sample(method="pc", process=DDPM, model=GM.model(DDPM)), r"method='pc' needs a VESDE, VPSDE or SubVPSDE"),
    "annealed needs ncsn": (lambda: _sample(method="annealed_langevin"), r"method='annealed_langevin' needs an NCSN process"),
    "ancestral subvp": (lambda: _sample(process=diffcore.SubVPSDE(N=50), predictor="ancestral"), r"predictor='ancestral' needs a VESDE or VPSDE"),
    "eta negative": (lambda: _sample(method="ddim", process=DDPM, model=GM.model(DDPM), eta=-0.5), r"eta must be finite and >= 0"),
    "ddim steps > T": (lambda: _sample(method="ddim", process=DDPM, model=GM.model(DDPM), steps=500), r"steps must be <= 100"),
    "unknown spacing": (lambda: _sample(method="ancestral", process=DDPM, model=GM.model(DDPM), spacing="log"), r"spacing must be one of \['even', 'leading', 'trailing'\]"),
    "unknown init": (lambda: _sample(method="annealed_langevin", process=NCSN, model=GM.model(NCSN), init="zeros"), r"init must be one of \['prior', 'uniform'\]"),
    "bad init_range": (lambda: _sample(method="langevin", process=NCSN, model=GM.model(NCSN), init_range=(1, -1)), r"init_range must be \(low, high\) with low < high"),
    "model returns non-tensor": (lambda: _sample(model=lambda x, t: 0.0), r"model must return a tensor"),
    "learned_range output shape": (lambda: _sample(method="ancestral", process=diffcore.DDPM(schedules.linear_betas(100), "learned_range"),
                                                   model=GM.model(DDPM)), r"variance='learned_range' needs model output \[B, 2C, \.\.\.\]"),
    "eta above 1": (lambda: _sample(method="ddim", process=DDPM, model=GM.model(DDPM), eta=3.0), r"eta must lie in \[0, 1\]"),
    "h0 negative": (lambda: _sample(method="ode", steps=None, h0=-0.1), r"h0 must be finite and > 0"),
    "loss eps negative": (lambda: diffcore.losses.sde_score_loss(GM.model(VP), VP, torch.zeros(2, 2), eps=-0.5), r"eps must be finite and > 0"),
    "constant ladder": (lambda: schedules.geometric_sigmas(1.0, 1.0, 5), r"need sigma_min < sigma_max for more than one level"),
    # processes
    "unknown variance": (lambda: diffcore.DDPM(schedules.linear_betas(10), variance="fixed"), r"variance must be one of \['fixed_large', 'fixed_small', 'learned_range'\]"),
    "betas out of range": (lambda: diffcore.DDPM([0.1, 1.2]), r"betas must all lie in \(0, 1\)"),
    "sigmas increasing": (lambda: diffcore.NCSN([0.1, 1.0]), r"sigmas must be strictly decreasing"),
    "sigmas negative": (lambda: diffcore.NCSN([1.0, -0.1]), r"sigmas must all be > 0"),
    "ve sigma order": (lambda: diffcore.VESDE(sigma_min=5.0, sigma_max=1.0), r"need sigma_min < sigma_max"),
    "vp negative beta": (lambda: diffcore.VPSDE(beta_min=-0.1), r"beta_min must be finite and > 0"),
    "sde N zero": (lambda: diffcore.VPSDE(N=0), r"N must be >= 1"),
    "t above T": (lambda: VP.marginal_prob(torch.zeros(2, 3), torch.tensor([0.5, 1.5])), r"t must lie in \[0.0, 1.0\]"),
    "t below 0": (lambda: VE.marginal_prob(torch.zeros(2, 3), -0.1), r"t must lie in \[0.0, 1.0\]"),
    "t wrong shape": (lambda: VP.marginal_prob(torch.zeros(2, 3), torch.zeros(3)), r"t must have shape \[B\] = \[2\]"),
    "t NaN": (lambda: VP.marginal_prob(torch.zeros(2, 3), torch.tensor([0.5, math.nan])), r"t contains NaN or Inf"),
    "x0 NaN": (lambda: VP.marginal_prob(NAN_X, 0.5), r"x0 contains NaN or Inf"),
    "ddpm t out of range": (lambda: DDPM.q_sample(torch.zeros(2, 3), torch.tensor([0, 100]), torch.zeros(2, 3)), r"t must lie in \[0, 99\]"),
    "ddpm t float": (lambda: DDPM.q_sample(torch.zeros(2, 3), torch.tensor([0.5, 1.0]), torch.zeros(2, 3)), r"t must be integer timesteps in \[0, 99\]"),
    "ddpm noise shape": (lambda: DDPM.q_sample(torch.zeros(2, 3), torch.tensor([0, 1]), torch.zeros(2, 4)), r"noise must have x0's shape"),
    "respace unsorted": (lambda: DDPM.respace([5, 3]), r"timesteps must be strictly increasing"),
    "respace out of range": (lambda: DDPM.respace([0, 100]), r"timesteps must be a non-empty subset of \[0, 99\]"),
    # closed form
    "gm wrong D": (lambda: GM.log_prob(torch.zeros(3, 5)), r"x must hold D = 2 values per sample"),
    "gm model v": (lambda: GM.model(DDPM, v=2.0), r"v must lie in \[-1, 1\]"),
    "gm model process": (lambda: GM.model("vp"), r"process must be an NCSN, DDPM or SDE"),
    "gm sample n": (lambda: GM.sample(0), r"n must be >= 1"),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_value_error_naming_the_argument(case):
    call, pattern = CASES[case]
    with pytest.raises(ValueError, match=pattern):
        call()

