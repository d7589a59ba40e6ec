"""DDPM ancestral sampling (Ho et al. 2020) with the three variances, optional x0 clipping
and timestep respacing (improved DDPM: a T-step model sampled in fewer steps)."""
from __future__ import annotations

import torch

from .. import parameterization as P
from ..discrete import DDPM, spaced_timesteps
from ..validation import check_int
from .common import call_model, initial_state, require


def ddpm_step(process: DDPM, model_output: torch.Tensor, t: torch.Tensor, x: torch.Tensor,
              noise: torch.Tensor, clip_denoised: bool = False):
    """One step x_t -> x_{t-1} ~ p(x_{t-1} | x_t); no noise at t = 0.

    t: integer indices [B] into `process` (a respaced process's own indices).
    Returns (x_prev, mean, pred_x0).
    """
    out = process.p_mean_variance(model_output, x, t, clip_denoised)
    nonzero = P.bcast((t != 0).to(x.dtype), x)
    x_prev = out["mean"] + nonzero * torch.exp(0.5 * out["log_variance"]) * noise
    return x_prev, out["mean"], out["pred_x0"]


def chain_for(process: DDPM, steps, spacing: str, timesteps) -> DDPM:
    """The (possibly respaced) chain to sample: explicit timesteps, or `steps` spaced ones."""
    if timesteps is None:
        if steps is None or steps == process.T:
            return process
        timesteps = spaced_timesteps(process.T, check_int("steps", steps, lo=1, hi=process.T), spacing)
    elif steps is not None and steps != len(timesteps):
        raise ValueError(f"steps={steps} disagrees with len(timesteps)={len(timesteps)}; give one of them")
    return process.respace(timesteps)


OPTIONS = ("clip_denoised", "spacing", "timesteps")


def run(model, process, noise, steps, x_init, clip_denoised=False, spacing="leading", timesteps=None):
    require("ancestral", process, DDPM, "a DDPM process")
    chain = chain_for(process, steps, spacing, timesteps)
    x = initial_state(chain, noise, x_init)
    B = x.shape[0]
    tmap = chain.timestep_map.to(x.device)
    for k, i in enumerate(reversed(range(chain.T))):
        t = torch.full((B,), i, dtype=torch.int64, device=x.device)
        out = call_model(model, x, tmap[t])
        x, _, _ = ddpm_step(chain, out, t, x, noise.normal(k), clip_denoised)
    return x, {"nfe": chain.T}
