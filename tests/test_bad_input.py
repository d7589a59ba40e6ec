"""Bad input gets a ValueError that names the argument and what is accepted.

CASES maps a case name to (call, pattern) or (call, pattern, error type); the pattern is
matched against the message and names the argument. The CLI and model files are in
test_bad_input_cli.py."""
import importlib
import math

import pytest
import torch

import diffcore
from diffcore import controllable, data, losses, noise, ops, parameterization, schedules, train
from diffcore.controllable import LinearObservation
from diffcore.discrete import spaced_timesteps
from diffcore.models import UNet, UNetConfig, spec
from diffcore.models.mlp import MLP, MLPConfig
from diffcore.models.process_model import ProcessModel

lik = importlib.import_module("diffcore.likelihood")  # diffcore.likelihood is also the function

GM = diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])
DDPM = diffcore.DDPM(schedules.linear_betas(100))
VP = diffcore.VPSDE(N=50)
VE = diffcore.VESDE(N=50)
NCSN = diffcore.NCSN(schedules.geometric_sigmas(8.0, 0.1, 3))


def _sample(**kw):
    args = dict(model=GM.model(VP), process=VP, n=4, shape=(2,), method="pc", steps=25)  # N > beta_max: a valid VP chain
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


X = torch.randn(2, 4, 3, 3)        # [N, C, H, W] for group_norm_silu
XS = torch.randn(2, 3)             # [B, D] for the step ops
ONE = torch.ones(2)
IDX = torch.arange(2)


def _unet(**kw):
    cfg = dict(ch=8, ch_mult=[1], num_res_blocks=1, attn_resolutions=[], num_groups=4, resolution=8, in_channels=1)
    cfg.update(kw)
    return UNet(UNetConfig(**cfg))


def _affine(**kw):
    args = dict(x=XS, score=XS, a=ONE, b=ONE, std=ONE, noise=XS)
    args.update(kw)
    return ops.affine_step(args.pop("x"), args.pop("score"), args.pop("a"), args.pop("b"), args.pop("std"), **args)


def _trainer(data_=None, **kw):
    return train.Trainer(train.TrainConfig(steps=1), kw.pop("out", "unused-out"),
                         data=torch.ones(4, 2) if data_ is None else data_, progress=False, **kw)


ADDED = {
    # diffcore.ops.group_norm_silu
    "ops.group_norm_silu x int": (lambda: ops.group_norm_silu(X.long(), 2), r"x must be a floating-point tensor; got dtype torch.int64"),
    "ops.group_norm_silu x bool": (lambda: ops.group_norm_silu(X > 0, 2), r"x must be a floating-point tensor; got dtype torch.bool"),
    "ops.group_norm_silu x list": (lambda: ops.group_norm_silu([[1.0]], 1), r"x must be a torch.Tensor; got list"),
    "ops.group_norm_silu x 1-D": (lambda: ops.group_norm_silu(torch.randn(4), 2), r"x must be \[N, C, \*spatial\]"),
    "ops.group_norm_silu C % groups": (lambda: ops.group_norm_silu(X, 3), r"num_groups must be a positive integer dividing C = 4; got 3"),
    "ops.group_norm_silu groups 0": (lambda: ops.group_norm_silu(X, 0), r"num_groups must be a positive integer dividing C = 4; got 0"),
    "ops.group_norm_silu groups float": (lambda: ops.group_norm_silu(X, 2.0), r"num_groups must be a positive integer"),
    "ops.group_norm_silu weight shape": (lambda: ops.group_norm_silu(X, 2, torch.ones(3)), r"weight must have shape \[C\] = \[4\]; got \(3,\)"),
    "ops.group_norm_silu weight int": (lambda: ops.group_norm_silu(X, 2, torch.ones(4, dtype=torch.long)), r"weight must be a floating-point tensor"),
    "ops.group_norm_silu weight device": (lambda: ops.group_norm_silu(X, 2, torch.ones(4, device="meta")), r"weight must be on x's device cpu; got meta"),
    "ops.group_norm_silu bias shape": (lambda: ops.group_norm_silu(X, 2, None, torch.ones(5)), r"bias must have shape \[C\] = \[4\]"),
    "ops.group_norm_silu emb shape": (lambda: ops.group_norm_silu(X, 2, emb=torch.ones(2, 3)), r"emb must have shape \[N, C\] = \[2, 4\]"),
    "ops.group_norm_silu emb device": (lambda: ops.group_norm_silu(X, 2, emb=torch.ones(2, 4, device="meta")), r"emb must be on x's device"),
    "ops.group_norm_silu eps 0": (lambda: ops.group_norm_silu(X, 2, eps=0.0), r"eps must be > 0; got 0.0"),
    "ops.group_norm_silu eps NaN": (lambda: ops.group_norm_silu(X, 2, eps=math.nan), r"eps must be finite; got nan"),
    "ops.group_norm_silu eps str": (lambda: ops.group_norm_silu(X, 2, eps="small"), r"eps must be a real number"),
    "ops.group_norm_silu unknown backend": (lambda: ops.group_norm_silu(X, 2, backend="cuda"), r"backend must be one of \['auto', 'native', 'torch', 'triton'\]"),
    # diffcore.ops.residual_add
    "ops.residual_add shape": (lambda: ops.residual_add(torch.ones(2, 3), torch.ones(2, 4)), r"skip must have x's shape \(2, 4\); got \(2, 3\)"),
    "ops.residual_add skip int": (lambda: ops.residual_add(torch.ones(2, dtype=torch.long), torch.ones(2)), r"skip must be a floating-point tensor"),
    "ops.residual_add h int": (lambda: ops.residual_add(torch.ones(2), torch.ones(2, dtype=torch.long)), r"h must be a floating-point tensor"),
    "ops.residual_add device": (lambda: ops.residual_add(torch.ones(2, device="meta"), torch.ones(2)), r"skip must be on x's device cpu; got meta"),
    "ops.residual_add scale str": (lambda: ops.residual_add(torch.ones(2), torch.ones(2), "a"), r"scale must be a real number"),
    "ops.residual_add scale NaN": (lambda: ops.residual_add(torch.ones(2), torch.ones(2), math.nan), r"scale must be finite; got nan"),
    # diffcore.ops step functions
    "ops.affine_step x 0-d": (lambda: _affine(x=torch.tensor(1.0), score=torch.tensor(1.0), a=1.0, b=1.0, std=1.0, noise=torch.tensor(1.0)),
                              r"x must be \[B, \.\.\.\] \(one row per sample\); got shape \(\)"),
    "ops.affine_step x int": (lambda: _affine(x=XS.long()), r"x must be a floating-point tensor"),
    "ops.affine_step score shape": (lambda: _affine(score=torch.ones(2, 4)), r"score must have x's shape \(2, 3\); got \(2, 4\)"),
    "ops.affine_step score device": (lambda: _affine(score=XS.to("meta")), r"score must be on x's device cpu; got meta"),
    "ops.affine_step a shape": (lambda: _affine(a=torch.ones(3)), r"a must be a number or a tensor of shape \[B\] = \[2\]; got \(3,\)"),
    "ops.affine_step a str": (lambda: _affine(a="a"), r"a must be a real number"),
    "ops.affine_step b NaN": (lambda: _affine(b=math.nan), r"b must be a number, not NaN; got nan"),
    "ops.affine_step std bool": (lambda: _affine(std=torch.ones(2, dtype=torch.bool)), r"std must be a real tensor; got dtype torch.bool"),
    "ops.affine_step noise shape": (lambda: _affine(noise=torch.ones(3, 3)), r"noise must have x's shape \(2, 3\); got \(3, 3\)"),
    "ops.affine_step no noise": (lambda: _affine(noise=None), r"give either noise= \(a tensor like x\) or seed= and sample_idx="),
    "ops.affine_step sample_idx float": (lambda: _affine(noise=None, seed=0, sample_idx=torch.ones(2)), r"sample_idx must be an integer tensor of shape \[B\] = \[2\]; got torch.float32"),
    "ops.affine_step sample_idx shape": (lambda: _affine(noise=None, seed=0, sample_idx=torch.arange(3)), r"sample_idx must be an integer tensor of shape \[B\] = \[2\]"),
    "ops.affine_step seed negative": (lambda: _affine(noise=None, seed=-1, sample_idx=IDX), r"seed must be >= 0; got -1"),
    "ops.affine_step seed 2**64": (lambda: _affine(noise=None, seed=2**64, sample_idx=IDX), r"seed must be <= 18446744073709551615"),
    "ops.affine_step step negative": (lambda: _affine(noise=None, seed=0, sample_idx=IDX, step=-1), r"step must be >= 0; got -1"),
    "ops.affine_step stream 2**32": (lambda: _affine(noise=None, seed=0, sample_idx=IDX, stream=2**32), r"stream must be <= 4294967295"),
    "ops.heun_step x_pred shape": (lambda: ops.heun_step(XS, XS, torch.ones(3, 3), XS, ONE, ONE, ONE, ONE), r"x_pred must have x's shape \(2, 3\)"),
    "ops.heun_step d shape": (lambda: ops.heun_step(XS, XS, XS, XS, ONE, ONE, ONE, torch.ones(5)), r"d must be a number or a tensor of shape \[B\] = \[2\]; got \(5,\)"),
    "ops.heun_step x 0-d": (lambda: ops.heun_step(*[torch.tensor(1.0)] * 4, 1.0, 1.0, 1.0, 1.0), r"x must be \[B, \.\.\.\]"),
    "ops.ddpm_step v without log_var_max": (lambda: ops.ddpm_step(XS, XS, ONE, ONE, ONE, ONE, ONE, v=XS, noise=XS), r"v \(learned_range\) needs log_var_max"),
    "ops.ddpm_step eps shape": (lambda: ops.ddpm_step(XS, XS[:1], ONE, ONE, ONE, ONE, ONE, noise=XS), r"eps must have x's shape \(2, 3\); got \(1, 3\)"),
    "ops.ddpm_step v shape": (lambda: ops.ddpm_step(XS, XS, ONE, ONE, ONE, ONE, ONE, v=XS[:, :1], log_var_max=ONE, noise=XS), r"v must have x's shape"),
    "ops.ddpm_step log_var_max shape": (lambda: ops.ddpm_step(XS, XS, ONE, ONE, ONE, ONE, ONE, v=XS, log_var_max=torch.ones(4), noise=XS), r"log_var_max must be a number or a tensor of shape \[B\] = \[2\]"),
    "ops.ddim_step abar_t shape": (lambda: ops.ddim_step(XS, XS, torch.ones(3), ONE, 0.0, noise=XS), r"abar_t must be a number or a tensor of shape \[B\] = \[2\]"),
    "ops.ddim_step eta str": (lambda: ops.ddim_step(XS, XS, 0.5, 0.9, "zero", noise=XS), r"eta must be a real number"),
    "ops.langevin_step snr 0": (lambda: ops.langevin_step(XS, XS, ONE, 0.0, noise=XS), r"snr must be > 0; got 0.0"),
    "ops.langevin_step snr NaN": (lambda: ops.langevin_step(XS, XS, ONE, math.nan, noise=XS), r"snr must be finite; got nan"),
    "ops.langevin_step snr str": (lambda: ops.langevin_step(XS, XS, ONE, "a", noise=XS), r"snr must be a real number"),
    "ops.langevin_step norm": (lambda: ops.langevin_step(XS, XS, ONE, 0.1, norm="global", noise=XS), r"norm must be one of \['batch', 'per_sample'\]"),
    "ops.langevin_step alpha shape": (lambda: ops.langevin_step(XS, XS, torch.ones(3), 0.1, noise=XS), r"alpha must be a number or a tensor of shape \[B\] = \[2\]"),
    "ops.resolve unknown op": (lambda: ops.resolve("conv", torch.device("cpu")), r"op must be one of \['affine_step', "),
    "ops.resolve unknown backend": (lambda: ops.resolve("residual_add", torch.device("cpu"), "cuda"), r"backend must be one of"),
    # diffcore.noise
    "noise.normal seed negative": (lambda: noise.normal(-1, IDX, 0, (3,)), r"seed must be >= 0; got -1"),
    "noise.normal sample_idx float": (lambda: noise.normal(0, torch.ones(2), 0, (3,)), r"sample_idx must be an integer tensor; got torch.float32"),
    "noise.normal sample_idx 2-D": (lambda: noise.normal(0, torch.zeros(2, 2, dtype=torch.long), 0, (3,)), r"sample_idx must be a 1-D integer tensor"),
    "noise.normal step negative": (lambda: noise.normal(0, IDX, -1, (3,)), r"step must be >= 0; got -1"),
    "noise.normal stream 2**33": (lambda: noise.normal(0, IDX, 0, (3,), stream=2**33), r"stream must be <= 4294967295"),
    "noise.normal shape negative": (lambda: noise.normal(0, IDX, 0, (-3,)), r"shape entries must be >= 0; got -3"),
    "noise.normal shape int": (lambda: noise.normal(0, IDX, 0, 3), r"shape must be a tuple of ints"),
    "noise.uniform dtype int": (lambda: noise.uniform(0, IDX, 0, (3,), dtype=torch.int32), r"dtype must be a floating-point torch.dtype; got torch.int32"),
    "noise.NoiseSource seed": (lambda: noise.NoiseSource(-1, IDX, (3,)), r"seed must be >= 0; got -1"),
    # diffcore.parameterization
    "parameterization.x0_from_eps shape": (lambda: parameterization.x0_from_eps(torch.ones(2, 3), torch.ones(2, 4), 1.0, 0.5), r"eps must have x's shape \(2, 3\); got \(2, 4\)"),
    "parameterization.x0_from_score shape": (lambda: parameterization.x0_from_score(torch.ones(2, 3), torch.ones(3), 1.0, 0.5), r"score must have x's shape"),
    "parameterization.eps_from_v shape": (lambda: parameterization.eps_from_v(torch.ones(2, 3), torch.ones(1, 3), 1.0, 0.5), r"v must have x's shape"),
    # diffcore.losses
    "losses.ddpm_simple_loss process": (lambda: losses.ddpm_simple_loss(GM.model(DDPM), VP, XS[:, :2]), r"ddpm must be a DDPM; got VPSDE"),
    "losses.ddpm_simple_loss t range": (lambda: losses.ddpm_simple_loss(GM.model(DDPM), DDPM, XS[:, :2], t=torch.tensor([0, 100])), r"t must lie in \[0, 99\]"),
    "losses.ddpm_simple_loss x0 NaN": (lambda: losses.ddpm_simple_loss(GM.model(DDPM), DDPM, NAN_X), r"x0 contains NaN or Inf"),
    "losses.ddpm_hybrid_loss fixed variance": (lambda: losses.ddpm_hybrid_loss(GM.model(DDPM), DDPM, XS[:, :2]), r"ddpm_hybrid_loss needs variance='learned_range'"),
    "losses.ddpm_hybrid_loss process": (lambda: losses.ddpm_hybrid_loss(GM.model(VP), VP, XS[:, :2]), r"ddpm must be a DDPM; got VPSDE"),
    "losses.sde_score_loss process": (lambda: losses.sde_score_loss(GM.model(VP), DDPM, XS[:, :2]), r"sde must be a VESDE, VPSDE or SubVPSDE; got DDPM"),
    "losses.sde_score_loss weighting": (lambda: losses.sde_score_loss(GM.model(VP), VP, XS[:, :2], weighting="uniform"), r"weighting must be one of \['likelihood', 'sigma2'\]"),
    "losses.sde_score_loss reduce": (lambda: losses.sde_score_loss(GM.model(VP), VP, XS[:, :2], reduce="max"), r"reduce must be one of \['mean', 'sum'\]"),
    "losses.dsm_loss process": (lambda: losses.dsm_loss(GM.model(NCSN), VP, XS[:, :2]), r"ncsn must be an NCSN; got VPSDE"),
    "losses.dsm_loss levels": (lambda: losses.dsm_loss(GM.model(NCSN), NCSN, XS[:, :2], levels=torch.tensor([0, 3])), r"levels must be integer indices \[B\] = \[2\] in \[0, 2\]"),
    "losses.score_matching_loss method": (lambda: losses.score_matching_loss(lambda x: x, XS, method="ism"), r"method must be one of \['exact', 'sliced'\]"),
    "losses.score_matching_loss projections": (lambda: losses.score_matching_loss(lambda x: x, XS, method="sliced", projections=0), r"projections must be >= 1; got 0"),
    # diffcore.likelihood / encode / decode / bits_per_dim
    "likelihood divergence": (lambda: diffcore.likelihood(GM.model(VP), VP, XS[:, :2], divergence="trace"), r"divergence must be one of \['exact', 'hutchinson'\]"),
    "likelihood probes 0": (lambda: diffcore.likelihood(GM.model(VP), VP, XS[:, :2], probes=0), r"probes must be >= 1; got 0"),
    "likelihood probe": (lambda: diffcore.likelihood(GM.model(VP), VP, XS[:, :2], probe="sphere"), r"probe must be one of \['gaussian', 'rademacher'\]"),
    "likelihood sde is DDPM": (lambda: diffcore.likelihood(GM.model(DDPM), DDPM, XS[:, :2]), r"sde must be a VESDE, VPSDE or SubVPSDE \(an SDE\); got DDPM"),
    "likelihood x NaN": (lambda: diffcore.likelihood(GM.model(VP), VP, NAN_X), r"x contains NaN or Inf"),
    "likelihood x int": (lambda: diffcore.likelihood(GM.model(VP), VP, XS.long()), r"x must be a floating-point tensor"),
    "likelihood x 1-D": (lambda: diffcore.likelihood(GM.model(VP), VP, torch.ones(3)), r"x must have shape \[B, \.\.\.\]"),
    "likelihood rtol 0": (lambda: diffcore.likelihood(GM.model(VP), VP, XS[:, :2], rtol=0), r"rtol must be finite and > 0; got 0.0"),
    "likelihood atol Inf": (lambda: diffcore.likelihood(GM.model(VP), VP, XS[:, :2], atol=math.inf), r"atol must be finite and > 0; got inf"),
    "likelihood eps > T": (lambda: diffcore.likelihood(GM.model(VP), VP, XS[:, :2], eps=2.0), r"eps must lie in \(0, T\) = \(0, 1.0\); got 2.0"),
    "likelihood seed": (lambda: diffcore.likelihood(GM.model(VP), VP, XS[:, :2], seed=-1), r"seed must be >= 0; got -1"),
    "likelihood model": (lambda: diffcore.likelihood(3, VP, XS[:, :2]), r"model must be callable as model\(x, t\); got int"),
    "likelihood model output": (lambda: diffcore.likelihood(lambda x, t: x[:, :1], VP, XS[:, :2]), r"model must return a score shaped like x \(2, 2\); got \(2, 1\)"),
    "encode x int": (lambda: diffcore.encode(GM.model(VP), VP, XS.long()), r"x must be a floating-point tensor"),
    "decode z NaN": (lambda: diffcore.decode(GM.model(VP), VP, NAN_X), r"z contains NaN or Inf"),
    "bits_per_dim data_range": (lambda: diffcore.bits_per_dim(torch.ones(2), 3, data_range="[0,2]"), r"data_range must be one of \['\[-1,1\]', '\[0,1\]'\]"),
    "bits_per_dim D 0": (lambda: diffcore.bits_per_dim(torch.ones(2), 0), r"x_shape_or_D must be >= 1; got 0"),
    "likelihood.dequantize x float": (lambda: lik.dequantize(XS), r"x must be an integer tensor \(uint8\) with values in \[0, 255\]"),
    "likelihood.dequantize x range": (lambda: lik.dequantize(torch.tensor([[-1, 0]])), r"x must hold values in \[0, 255\]"),
    "likelihood.divergence method": (lambda: lik.divergence(lambda x: x, XS, method="trace"), r"divergence must be one of"),
    "likelihood.probe_vectors probes": (lambda: lik.probe_vectors(0, IDX, (3,), probes=0), r"probes must be >= 1; got 0"),
    # diffcore.controllable
    "controllable.inpainting mask values": (lambda: LinearObservation.inpainting(torch.full((2,), 0.5), torch.ones(2)), r"mask must be a tensor of 0s \(free\) and 1s \(known\)"),
    "controllable.inpainting values NaN": (lambda: LinearObservation.inpainting(torch.ones(2), torch.tensor([1.0, math.nan])), r"values contains NaN or Inf"),
    "controllable.inpainting broadcast": (lambda: LinearObservation.inpainting(torch.ones(2), torch.ones(3)), r"values \(3,\) must broadcast against mask \(2,\)"),
    "controllable.colorization grey NaN": (lambda: LinearObservation.colorization(torch.tensor([[math.nan]])), r"grey contains NaN or Inf"),
    "controllable.from_matrix A 1-D": (lambda: LinearObservation.from_matrix(torch.ones(3), torch.ones(1)), r"A must be a matrix \[M, D\]; got shape \(3,\)"),
    "controllable.from_matrix A not orthonormal": (lambda: LinearObservation.from_matrix(torch.ones(2, 3), torch.ones(2)), r"A must have orthonormal rows"),
    "controllable.from_matrix y rows": (lambda: LinearObservation.from_matrix(torch.eye(2, 3), torch.ones(3)), r"y must have A's 2 rows as its last dimension"),
    "controllable.from_matrix y NaN": (lambda: LinearObservation.from_matrix(torch.eye(2, 3), torch.tensor([1.0, math.nan])), r"known contains NaN or Inf"),
    "controllable.LinearObservation project": (lambda: LinearObservation(3, torch.ones(2)), r"project must be a callable"),
    "controllable.guided scale": (lambda: controllable.guided(GM.model(VP), lambda x, t: x.sum(1), scale=-1.0), r"scale must be finite and >= 0; got -1.0"),
    "controllable.guided process": (lambda: controllable.guided(GM.model(VP), lambda x, t: x.sum(1), process="vp"), r"process must be an NCSN, DDPM or SDE; got str"),
    "controllable.check_observation": (lambda: controllable.check_observation(3), r"observation must be a diffcore.controllable.LinearObservation; got int"),
    "sample observation type": (lambda: _sample(observation="x"), r"observation must be a diffcore.controllable.LinearObservation; got str"),
    "sample observation shape": (lambda: _sample(observation=LinearObservation.inpainting(torch.ones(3), torch.ones(3))),
                                 r"the observation's known values \(3,\) must hold one sample \(\(2,\)\)"),
    # diffcore.GaussianMixture and Gaussian
    "GaussianMixture means NaN": (lambda: diffcore.GaussianMixture([[math.nan, 0.0]], 1.0, [1.0]), r"means must be finite"),
    "GaussianMixture means 3-D": (lambda: diffcore.GaussianMixture(torch.zeros(1, 2, 2), 1.0), r"means must have shape \[K, D\]"),
    "GaussianMixture stds negative": (lambda: diffcore.GaussianMixture([[0.0, 0.0]], -1.0, [1.0]), r"stds must all be > 0"),
    "GaussianMixture stds shape": (lambda: diffcore.GaussianMixture([[0.0, 0.0]], [[1.0, 1.0, 1.0]], [1.0]), r"stds must have shape \[\], \[K\] = \[1\] or \[K, D\] = \[1, 2\]"),
    "GaussianMixture weights negative": (lambda: diffcore.GaussianMixture([[0.0], [1.0]], 1.0, [1.5, -0.5]), r"weights must all be > 0"),
    "GaussianMixture weights K": (lambda: diffcore.GaussianMixture([[0.0, 0.0]], 1.0, [0.5, 0.5]), r"weights must have shape \[K\] = \[1\]; got \(2,\)"),
    "GaussianMixture.log_prob x NaN": (lambda: GM.log_prob(torch.tensor([[math.nan, 0.0]])), r"x contains NaN or Inf"),
    "GaussianMixture.log_prob x int": (lambda: GM.log_prob(torch.zeros(2, 2, dtype=torch.long)), r"x must be a floating-point tensor"),
    "GaussianMixture.posterior s negative": (lambda: GM.posterior(XS[:, :2], 1.0, -1.0), r"s must be >= 0 \(a noise std\); got -1.0"),
    "GaussianMixture.noised_score D": (lambda: GM.noised_score(torch.zeros(2, 3), 1.0, 0.5), r"x must hold D = 2 values per sample"),
    "GaussianMixture.sample seed": (lambda: GM.sample(2, seed=-1), r"seed must be >= 0; got -1"),
    "GaussianMixture.sample n float": (lambda: GM.sample(2.5), r"n must be an integer; got 2.5"),
    "GaussianMixture.classifier k": (lambda: GM.classifier(VP, 5), r"k must be <= 1; got 5"),
    "GaussianMixture.observation_log_likelihood A": (lambda: GM.observation_log_likelihood(VP, torch.ones(3), torch.ones(1)), r"A must have shape \[M, D\] with D = 2"),
    "Gaussian cov not PD": (lambda: diffcore.Gaussian(torch.zeros(2), -torch.eye(2)), r"cov must be positive definite"),
    "Gaussian cov shape": (lambda: diffcore.Gaussian(torch.zeros(2), torch.eye(3)), r"cov must have shape \[D, D\] = \[2, 2\]"),
    # diffcore.schedules
    "schedules.linear_betas T 0": (lambda: schedules.linear_betas(0), r"T must be >= 1; got 0"),
    "schedules.linear_betas order": (lambda: schedules.linear_betas(10, 0.5, 0.1), r"need beta_start <= beta_end < 1"),
    "schedules.linear_betas beta_end > 1": (lambda: schedules.linear_betas(10, 0.1, 1.5), r"need beta_start <= beta_end < 1"),
    "schedules.cosine_betas T 0": (lambda: schedules.cosine_betas(0), r"T must be >= 1; got 0"),
    "schedules.cosine_betas s negative": (lambda: schedules.cosine_betas(10, s=-1), r"s must be finite and >= 0; got -1.0"),
    "schedules.cosine_betas max_beta": (lambda: schedules.cosine_betas(10, max_beta=1.5), r"max_beta must be < 1; got 1.5"),
    "schedules.geometric_sigmas levels 0": (lambda: schedules.geometric_sigmas(1.0, 0.1, 0), r"num_levels must be >= 1; got 0"),
    "schedules.geometric_sigmas sigma_min negative": (lambda: schedules.geometric_sigmas(1.0, -0.1, 3), r"sigma_min must be finite and > 0"),
    "schedules.geometric_sigmas sigma_max NaN": (lambda: schedules.geometric_sigmas(math.nan, 0.1, 3), r"sigma_max must be finite and > 0; got nan"),
    "schedules.sigma_max_from_data one example": (lambda: schedules.sigma_max_from_data(torch.ones(1, 2)), r"data must be a tensor \[N, \.\.\.\] with N >= 2"),
    "schedules.gamma_for_dim dim": (lambda: schedules.gamma_for_dim(0), r"dim must be >= 5; got 0"),
    "schedules.num_levels_for order": (lambda: schedules.num_levels_for(0.1, 1.0, 2), r"need sigma_min <= sigma_max"),
    # processes
    "VESDE N 0": (lambda: diffcore.VESDE(N=0), r"N must be >= 1; got 0"),
    "VESDE sigma_max NaN": (lambda: diffcore.VESDE(sigma_max=math.nan), r"sigma_max must be finite and > 0; got nan"),
    "VPSDE beta order": (lambda: diffcore.VPSDE(beta_min=5.0, beta_max=1.0), r"need beta_min <= beta_max"),
    "SubVPSDE beta order": (lambda: diffcore.SubVPSDE(beta_min=5.0, beta_max=1.0), r"need beta_min <= beta_max"),
    "VPSDE.discretize t > T": (lambda: VP.discretize(XS, torch.tensor([2.0, 0.5])), r"t must lie in \[0, 1.0\] \(the discrete chain's 50 steps\); got values in \[0.5, 2.0\]"),
    "VESDE.discretize t < 0": (lambda: VE.discretize(XS, torch.tensor([-0.5, 0.5])), r"t must lie in \[0, 1.0\]"),
    "VPSDE.with_steps 0": (lambda: VP.with_steps(0), r"N must be >= 1; got 0"),
    "VPSDE.check_eps negative": (lambda: VP.check_eps(-1.0), r"eps must be finite and > 0; got -1.0"),
    "VPSDE.to_ddpm variance": (lambda: VP.to_ddpm("fixed"), r"variance must be one of \['fixed_large', 'fixed_small', 'learned_range'\]"),
    "DDPM betas 2-D": (lambda: diffcore.DDPM(torch.full((2, 2), 0.1)), r"betas must be a non-empty 1-D sequence; got shape \(2, 2\)"),
    "DDPM betas empty": (lambda: diffcore.DDPM([]), r"betas must be a non-empty 1-D sequence; got shape \(0,\)"),
    "DDPM betas NaN": (lambda: diffcore.DDPM([0.1, math.nan]), r"betas must be finite"),
    "DDPM betas str": (lambda: diffcore.DDPM("linear"), r"betas must be a non-empty 1-D sequence of numbers; got str"),
    "DDPM.q_posterior shape": (lambda: DDPM.q_posterior(XS, torch.ones(2, 4), torch.tensor([0, 1])), r"x0 must have x_t's shape \(2, 4\); got \(2, 3\)"),
    "NCSN sigmas empty": (lambda: diffcore.NCSN([]), r"sigmas must be a non-empty 1-D sequence"),
    "NCSN sigmas NaN": (lambda: diffcore.NCSN([1.0, math.nan]), r"sigmas must be finite"),
    "NCSN.perturb sigma shape": (lambda: NCSN.perturb(XS, torch.ones(3), XS), r"sigma must be a tensor \[B\] = \[2\]; got \(3,\)"),
    "NCSN.perturb noise shape": (lambda: NCSN.perturb(XS, ONE, torch.ones(2, 4)), r"noise must have x's shape \(2, 3\)"),
    "spaced_timesteps steps 0": (lambda: spaced_timesteps(100, 0), r"steps must be >= 1; got 0"),
    "spaced_timesteps spacing": (lambda: spaced_timesteps(100, 10, "log"), r"spacing must be one of \['even', 'leading', 'trailing'\]"),
    # diffcore.models
    "UNetConfig ch 0": (lambda: UNetConfig(ch=0), r"ch must be >= 1; got 0"),
    "UNetConfig channels % groups": (lambda: UNetConfig(ch=30, num_groups=8), r"every ch \* ch_mult \(30 \* 1\) must be divisible by num_groups \(8\)"),
    "UNetConfig unknown key": (lambda: UNetConfig.from_dict({"chanels": 1}), r"unknown U-Net config key\(s\) \['chanels'\]"),
    "UNetConfig conditioning": (lambda: UNetConfig(conditioning="time"), r"conditioning must be one of \['continuous', 'discrete', 'sigma'\]"),
    "UNetConfig dropout": (lambda: UNetConfig(dropout=1.5), r"dropout must lie in \[0, 1\); got 1.5"),
    "UNetConfig ch_mult empty": (lambda: UNetConfig(ch_mult=[]), r"ch_mult must be a non-empty tuple of positive integers"),
    "UNetConfig resolution": (lambda: UNetConfig(resolution=7, ch_mult=[1, 2]), r"resolution 7 must be divisible by 2\^\(len\(ch_mult\) - 1\) = 2"),
    "UNet config dict": (lambda: UNet({"ch": 8}), r"config must be a UNetConfig \(UNetConfig.from_dict for a dict\); got dict"),
    "UNet config and kwargs": (lambda: UNet(UNetConfig(), ch=8), r"give either a UNetConfig or keyword options, not both"),
    "UNet.forward x channels": (lambda: _unet()(torch.ones(2, 3, 8, 8), ONE), r"x must be \[B, 1, H, W\]; got \(2, 3, 8, 8\)"),
    "UNet.forward x int": (lambda: _unet()(torch.ones(2, 1, 8, 8, dtype=torch.long), ONE), r"x must be a floating-point tensor; got torch.int64"),
    "UNet.forward t shape": (lambda: _unet()(torch.ones(2, 1, 8, 8), torch.ones(3)), r"t must have shape \[B\] = \[2\]; got \(3,\)"),
    "UNet.forward H divisible": (lambda: _unet(ch_mult=[1, 2])(torch.ones(2, 1, 7, 7), ONE), r"H and W must be divisible by 2; got \(7, 7\)"),
    "ProcessModel process": (lambda: ProcessModel(MLP(MLPConfig(dim=2)), "vp"), r"process must be a DDPM, NCSN or SDE; got str"),
    "ProcessModel net": (lambda: ProcessModel(torch.nn.Linear(2, 2), VP), r"net must be a diffcore network \(UNet or MLP"),
    "ProcessModel conditioning": (lambda: ProcessModel(MLP(MLPConfig(dim=2, conditioning="sigma")), DDPM),
                                  r"a DDPM process needs a network with conditioning='discrete'; got 'sigma'"),
    "MLPConfig dim 0": (lambda: MLPConfig(dim=0), r"dim must be >= 1; got 0"),
    "MLPConfig unknown key": (lambda: MLPConfig.from_dict({"width": 1}), r"unknown MLP config key\(s\) \['width'\]"),
    "MLP config dict": (lambda: MLP({"dim": 2}), r"config must be an MLPConfig"),
    "MLP.forward x shape": (lambda: MLP(MLPConfig(dim=2))(torch.ones(2, 3), ONE), r"x must be \[B, 2\]; got \(2, 3\)"),
    "MLP.forward t shape": (lambda: MLP(MLPConfig(dim=2))(torch.ones(2, 2), torch.ones(3)), r"t must have shape \[B\] = \[2\]; got \(3,\)"),
    "models.spec.build_process family": (lambda: spec.build_process("gan", {}), r"family must be one of \['ddpm', 'ncsn', 'sde-subvp', 'sde-ve', 'sde-vp'\]"),
    "models.spec.build_process sigma_max": (lambda: spec.build_process("ncsn", {}), r"process options for family='ncsn' need 'sigma_max'"),
    "models.spec.build_process T": (lambda: spec.build_process("ddpm", {"T": "a"}), r"T must be an integer; got 'a'"),
    "models.spec.build_process schedule": (lambda: spec.build_process("ddpm", {"schedule": "sqrt"}), r"schedule must be one of \['cosine', 'linear'\]"),
    "models.spec.build_process not dict": (lambda: spec.build_process("ddpm", [1]), r"process must be a dict of options; got list"),
    "models.spec.build_network type": (lambda: spec.build_network({"type": "vit"}), r"network type must be one of \['mlp', 'unet'\]"),
    "models.spec.build_network config": (lambda: spec.build_network({"type": "mlp", "config": 3}), r"network config must be a dict of options; got int"),
    "models.spec.check_spec format": (lambda: spec.check_spec({"format": "other"}), r"not a diffcore model spec \(format must be 'diffcore-model'"),
    "models.spec.check_spec missing": (lambda: spec.check_spec({"format": "diffcore-model"}), r"missing key 'family'"),
    "models.spec.load_model path int": (lambda: spec.load_model(3), r"path must be a model directory or a .safetensors file; got int"),
    "models.spec.load_model no such path": (lambda: spec.load_model("no/such/model"), r"model must be a directory with model.json \+ model.safetensors"),
    "models.spec.as_sde cosine": (lambda: spec.as_sde(None, diffcore.DDPM(schedules.cosine_betas(10))), r"only a DDPM with the linear beta schedule"),
    # diffcore.data
    "data.load int": (lambda: data.load(3), r"data must be a string: digits, toy:NAME, folder:PATH or cifar10:PATH; got 3"),
    "data.load empty": (lambda: data.load(""), r"data must be a string"),
    "data.load unknown kind": (lambda: data.load("mnist"), r"data must be digits, digits:heldout, toy:NAME"),
    "data.load digits split": (lambda: data.load("digits:test"), r"split must be one of \['all', 'heldout', 'train'\]"),
    "data.load toy name": (lambda: data.load("toy:spiral"), r"toy must be one of \['checkerboard', 'eight_gaussians', 'moons', 'two_gaussians'\]"),
    "data.load folder missing": (lambda: data.load("folder:/no/such/dir"), r"data folder '/no/such/dir' does not exist", FileNotFoundError),
    "data.load cifar10 missing": (lambda: data.load("cifar10:/no/such/dir"), r"CIFAR-10 batch file\(s\) .* not found under '/no/such/dir'", FileNotFoundError),
    "data.toy n 0": (lambda: data.toy("moons", n=0), r"n must be >= 1; got 0"),
    "data.toy seed negative": (lambda: data.toy("moons", seed=-1), r"seed must be >= 0; got -1"),
    "data.cifar10 split": (lambda: data.cifar10("/no/such/dir", split="val"), r"split must be one of \['test', 'train'\]"),
    # diffcore.train
    "train.TrainConfig family": (lambda: train.TrainConfig(family="gan"), r"family must be one of"),
    "train.TrainConfig steps 0": (lambda: train.TrainConfig(steps=0), r"steps must be >= 1; got 0"),
    "train.TrainConfig batch_size 0": (lambda: train.TrainConfig(batch_size=0), r"batch_size must be >= 1; got 0"),
    "train.TrainConfig lr 0": (lambda: train.TrainConfig(lr=0.0), r"lr must be finite and > 0; got 0.0"),
    "train.TrainConfig lr NaN": (lambda: train.TrainConfig(lr=math.nan), r"lr must be finite and > 0; got nan"),
    "train.TrainConfig warmup": (lambda: train.TrainConfig(warmup=-1), r"warmup must be >= 0; got -1"),
    "train.TrainConfig grad_clip": (lambda: train.TrainConfig(grad_clip=math.inf), r"grad_clip must be finite and > 0"),
    "train.TrainConfig ema_decay 1": (lambda: train.TrainConfig(ema_decay=1.0), r"ema_decay must lie in \[0, 1\); got 1.0"),
    "train.TrainConfig ema_decay NaN": (lambda: train.TrainConfig(ema_decay=math.nan), r"ema_decay must lie in \[0, 1\); got nan"),
    "train.TrainConfig precision": (lambda: train.TrainConfig(precision="fp8"), r"precision must be one of \['bf16', 'fp16', 'fp32'\]"),
    "train.TrainConfig seed": (lambda: train.TrainConfig(seed=-1), r"seed must be >= 0; got -1"),
    "train.TrainConfig loss": (lambda: train.TrainConfig(loss="l1"), r"loss must be one of"),
    "train.TrainConfig hybrid needs ddpm": (lambda: train.TrainConfig(family="ncsn", loss="hybrid"), r"loss='hybrid' \(learned variance\) is for family='ddpm'"),
    "train.TrainConfig checkpoint_every": (lambda: train.TrainConfig(checkpoint_every=0), r"checkpoint_every must be >= 1; got 0"),
    "train.TrainConfig process": (lambda: train.TrainConfig(process=[1]), r"process and network must be dicts of options"),
    "train.TrainConfig data": (lambda: train.TrainConfig(data=3), r"data must be a data spec string"),
    "train.Trainer config": (lambda: train.Trainer({}, "unused-out"), r"config must be a TrainConfig; got dict"),
    "train.Trainer data NaN": (lambda: _trainer(torch.full((4, 2), math.nan)), r"data contains NaN or Inf"),
    "train.Trainer data 1-D": (lambda: _trainer(torch.ones(4)), r"data must be \[N, \.\.\.\] with N >= 1; got \(4,\)"),
    "train.Trainer data list": (lambda: _trainer([[1.0, 2.0]]), r"data must be a torch.Tensor \[N, \.\.\.\]"),
    "train.Trainer data not square": (lambda: _trainer(torch.ones(4, 1, 4, 6)), r"images must be square for the U-Net; got 4x6"),
    "train.Trainer device": (lambda: _trainer(device="gpu0"), r"device must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got 'gpu0'"),
    "train.Trainer device meta": (lambda: _trainer(device="meta"), r"device='meta': diffcore runs on 'cpu' or 'cuda'"),
    "train.Trainer out_dir int": (lambda: _trainer(out=3), r"out_dir must be a directory path; got int"),
    "train.Trainer out_dir file": (lambda: _trainer(out=__file__), r"out_dir '.*test_bad_input.py' exists and is not a directory"),
}
if not torch.cuda.is_available():
    ADDED["train.Trainer device cuda"] = (lambda: _trainer(device="cuda"), r"device='cuda': CUDA is not available here")
assert not set(ADDED) & set(CASES)
CASES.update(ADDED)


@pytest.mark.parametrize("case", sorted(CASES))
def test_bad_input_raises_an_error_naming_the_argument(case):
    call, pattern, *error = CASES[case]
    with pytest.raises(error[0] if error else ValueError, match=pattern):
        call()

