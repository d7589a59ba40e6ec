"""DDIM (Song, Meng & Ermon 2021): eta = 0 deterministic, eta = 1 ancestral-like,
on strided subsequences of the trained chain."""
from __future__ import annotations

import torch

from ..discrete import DDPM, gather, spaced_timesteps
from ..validation import check_int, check_positive
from .. import parameterization as P
from .common import call_model, initial_state, require


def ddim_step(process: DDPM, eps: torch.Tensor, t: torch.Tensor, t_prev: torch.Tensor, x: torch.Tensor,
              eta: float, noise: torch.Tensor | None, clip_denoised: bool = False):
    """x_t -> x_{t_prev} (eq. 12). t, t_prev: indices [B] into `process`; t_prev < 0 means
    the clean end (abar = 1). Returns (x_prev, pred_x0)."""
    abar = process.alphas_cumprod
    abar_t = gather(abar, t, x)
    abar_prev = torch.where(P.bcast(t_prev, x) >= 0, gather(abar, t_prev.clamp(min=0), x), torch.ones_like(abar_t))
    pred_x0 = P.x0_from_eps(x, eps, abar_t.sqrt(), (1 - abar_t).sqrt())
    if clip_denoised:
        pred_x0 = pred_x0.clamp(-1, 1)
    var = (1 - abar_prev) / (1 - abar_t) * (1 - abar_t / abar_prev)
    std = eta * var.sqrt()
    x_prev = abar_prev.sqrt() * pred_x0 + (1 - abar_prev - std ** 2).clamp(min=0).sqrt() * eps
    if eta > 0:
        x_prev = x_prev + std * noise
    return x_prev, pred_x0


OPTIONS = ("eta", "clip_denoised", "spacing", "timesteps")


def check_eta(eta) -> float:
    eta = check_positive("eta", eta, allow_zero=True)
    if eta > 1:
        raise ValueError(f"eta must lie in [0, 1] (0: deterministic DDIM, 1: DDPM-like); got {eta}")
    return eta


def schedule(process: DDPM, steps, spacing: str, timesteps) -> torch.Tensor:
    """The increasing timesteps DDIM visits: explicit, or `steps` (default 50) spaced ones."""
    if timesteps is None:
        steps = check_int("steps", 50 if steps is None else steps, lo=1, hi=process.T)
        return spaced_timesteps(process.T, steps, spacing)
    ts = torch.as_tensor(timesteps, dtype=torch.int64).flatten()
    if ts.numel() < 1 or (ts < 0).any() or (ts >= process.T).any() or (ts.numel() > 1 and not (ts[1:] > ts[:-1]).all()):
        raise ValueError(f"timesteps must be strictly increasing integers in [0, {process.T - 1}]")
    return ts


def run(model, process, noise, steps, x_init, eta=0.0, clip_denoised=False, spacing="leading", timesteps=None):
    require("ddim", process, DDPM, "a DDPM process")
    eta = check_eta(eta)
    ts = schedule(process, steps, spacing, timesteps)
    x = initial_state(process, noise, x_init)
    B = x.shape[0]
    tmap = process.timestep_map.to(x.device)
    ts = ts.to(x.device)
    for k in range(ts.numel()):
        i = ts.numel() - 1 - k
        t = ts[i].expand(B)
        t_prev = (ts[i - 1] if i > 0 else torch.tensor(-1, device=x.device)).expand(B)
        eps, _ = process.split_output(call_model(model, x, tmap[t]), x)
        x, _ = ddim_step(process, eps, t, t_prev, x, eta, noise.normal(k) if eta > 0 else None, clip_denoised)
    return x, {"nfe": ts.numel()}
