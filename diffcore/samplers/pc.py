"""Predictor-corrector sampling of score SDEs (Song et al. 2021, Algorithms 1-3).

Predictors: euler_maruyama, reverse_diffusion, ancestral, none.
Correctors: langevin (step size from the score and noise norms at a target snr),
ald (annealed Langevin: step size from the marginal std), none.
Formulas and time grid follow score_sde: t_i = linspace(T, eps, N), dt = -T / N.
Every step returns (x, x_mean); the last x_mean is the denoised sample.
"""
from __future__ import annotations

import math

import torch

from .. import noise as _noise
from .. import parameterization as P
from ..sde import SDE, SubVPSDE, VESDE, VPSDE
from ..validation import check_choice, check_int, check_positive
from ..controllable import check_observation, observation_noise
from .common import call_model, initial_state, require, time_dtype

PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
CORRECTORS = ("langevin", "ald", "none")
NORMS = ("per_sample", "batch")


# ---- predictors ------------------------------------------------------------------------
def euler_maruyama_step(sde: SDE, x, t, score, noise, dt: float):
    """x + [f - g^2 score] dt + g sqrt(-dt) z  (dt < 0: time runs backwards)."""
    drift, diffusion = sde.reverse_sde(x, t, score)
    x_mean = x + drift * dt
    return x_mean + P.bcast(diffusion, x) * math.sqrt(-dt) * noise, x_mean


def reverse_diffusion_step(sde: SDE, x, t, score, noise):
    """x - f_i + G_i^2 score + G_i z, with (f_i, G_i) the SDE's discrete chain at t."""
    f, G = sde.reverse_discretize(x, t, score)
    x_mean = x - f
    return x_mean + P.bcast(G, x) * noise, x_mean


def ancestral_step(sde: SDE, x, t, score, noise):
    """The SMLD / DDPM ancestral step of the SDE's discrete chain (VE and VP only)."""
    if isinstance(sde, VESDE):
        sigma, adjacent = sde.adjacent_sigmas(t, x)
        s2, a2 = P.bcast(sigma ** 2, x), P.bcast(adjacent ** 2, x)
        x_mean = x + score * (s2 - a2)
        std = torch.sqrt(a2 * (s2 - a2) / s2)
        return x_mean + std * noise, x_mean
    if isinstance(sde, VPSDE) and not isinstance(sde, SubVPSDE):
        beta = P.bcast(sde.beta_at(t, x), x)
        x_mean = (x + beta * score) / torch.sqrt(1 - beta)
        return x_mean + torch.sqrt(beta) * noise, x_mean
    raise ValueError(f"predictor='ancestral' needs a VESDE or VPSDE; got {type(sde).__name__}")


# ---- correctors -------------------------------------------------------------------------
def _corrector_alpha(sde: SDE, t, x):
    """score_sde scales Langevin steps by alpha_i = 1 - beta_i for VP-type SDEs."""
    if isinstance(sde, VPSDE):
        return P.bcast(sde.alpha_at(t, x), x)
    return torch.ones((x.shape[0],) + (1,) * (x.dim() - 1), dtype=x.dtype, device=x.device)


def langevin_corrector_step(sde: SDE, x, t, score, noise, snr: float, norm: str = "per_sample"):
    """step = 2 alpha (snr * |z| / |score|)^2; norms per sample, or batch means as score_sde."""
    alpha = _corrector_alpha(sde, t, x)
    # contiguous rows: a strided input takes another reduction kernel, whose rounding would
    # make a sample's result depend on the batch it was computed in
    grad_norm = torch.linalg.vector_norm(score.contiguous().flatten(1), dim=1)
    noise_norm = torch.linalg.vector_norm(noise.contiguous().flatten(1), dim=1)
    if norm == "batch":
        grad_norm, noise_norm = grad_norm.mean().expand_as(grad_norm), noise_norm.mean().expand_as(noise_norm)
    step = P.bcast((snr * noise_norm / grad_norm) ** 2 * 2, x) * alpha
    x_mean = x + step * score
    return x_mean + torch.sqrt(step * 2) * noise, x_mean


def ald_corrector_step(sde: SDE, x, t, score, noise, snr: float):
    """Annealed Langevin as a corrector: step = 2 alpha (snr * std(t))^2."""
    alpha = _corrector_alpha(sde, t, x)
    _, std = sde.marginal_coeffs(t)
    step = P.bcast((snr * std.to(x.dtype)) ** 2 * 2, x) * alpha
    x_mean = x + step * score
    return x_mean + torch.sqrt(step * 2) * noise, x_mean


OPTIONS = ("predictor", "corrector", "snr", "corrector_steps", "denoise", "eps", "norm", "init", "observation")


def check_run_options(sde, predictor, corrector, snr, corrector_steps, eps, norm):
    """PC's option checks (the reference sampler and the engine's plan share them).
    Returns (snr, corrector_steps, eps) as numbers."""
    require("pc", sde, SDE, "a VESDE, VPSDE or SubVPSDE")
    check_choice("predictor", predictor, PREDICTORS)
    check_choice("corrector", corrector, CORRECTORS)
    check_choice("norm", norm, NORMS)
    snr = check_positive("snr", snr)
    corrector_steps = check_int("corrector_steps", corrector_steps, lo=0)
    if predictor == "ancestral" and not (isinstance(sde, VESDE) or type(sde) is VPSDE):
        raise ValueError(f"predictor='ancestral' needs a VESDE or VPSDE; got {type(sde).__name__}")
    return snr, corrector_steps, sde.check_eps(eps)


def run(model, sde, noise, steps, x_init, predictor="reverse_diffusion", corrector="langevin", snr=0.16,
        corrector_steps=1, denoise=True, eps=None, norm="per_sample", init="prior", observation=None):
    snr, corrector_steps, eps = check_run_options(sde, predictor, corrector, snr, corrector_steps, eps, norm)
    if steps is not None:
        sde = sde.with_steps(check_int("steps", steps, lo=1))
    x = initial_state(sde, noise, x_init, init)
    B = x.shape[0]
    timesteps = torch.linspace(sde.T, eps, sde.N, dtype=torch.float64)
    tdt = time_dtype(x)
    dt = -sde.T / sde.N
    x_mean = x
    nfe = 0
    b = None if observation is None else check_observation(observation).known_for(x, noise.sample_idx)

    def observe(x, x_mean, t, step, sub):
        """Known part <- forward-perturbed known data (x) and its mean (x_mean) at time t."""
        m, s = sde.marginal_coeffs(t)
        m, s = P.bcast(m, x), P.bcast(s, x)
        z = observation_noise(noise, step, sub)
        return observation.replace(x, m, s, b, z), observation.replace(x_mean, m, 0 * s, b, z)

    for i in range(sde.N):
        t = timesteps[i].to(x.device).expand(B).to(tdt)
        t_next = timesteps[min(i + 1, sde.N - 1)].to(x.device).expand(B).to(tdt)
        if corrector != "none":
            for j in range(corrector_steps):
                score = call_model(model, x, t)
                z = noise.normal(i, _noise.STREAM_CORRECTOR + j)
                if corrector == "langevin":
                    x, x_mean = langevin_corrector_step(sde, x, t, score, z, snr, norm)
                else:
                    x, x_mean = ald_corrector_step(sde, x, t, score, z, snr)
                nfe += 1
                if observation is not None:
                    x, x_mean = observe(x, x_mean, t, i, j)
        if predictor != "none":
            score = call_model(model, x, t)
            z = noise.normal(i)
            if predictor == "euler_maruyama":
                x, x_mean = euler_maruyama_step(sde, x, t, score, z, dt)
            elif predictor == "reverse_diffusion":
                x, x_mean = reverse_diffusion_step(sde, x, t, score, z)
            else:
                x, x_mean = ancestral_step(sde, x, t, score, z)
            nfe += 1
            if observation is not None:
                x, x_mean = observe(x, x_mean, t_next, i, 0xFFFF)
    x = x_mean if denoise else x
    if observation is not None:
        x = observation.finalize(x, b)
    return x, {"nfe": nfe}
