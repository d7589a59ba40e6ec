"""Langevin dynamics (plain, at the smallest noise level) and annealed Langevin dynamics
(Song & Ermon 2019, Algorithm 1) with NCSNv2's optional final denoising step."""
from __future__ import annotations

import torch

from .. import parameterization as P
from ..discrete import NCSN
from ..validation import check_int, check_positive
from .common import initial_state, lowest_noise_time, require, score_at, time_dtype


def langevin_step(x: torch.Tensor, score: torch.Tensor, step_size, noise: torch.Tensor) -> torch.Tensor:
    """x + (alpha / 2) * score + sqrt(alpha) * z; step_size alpha is a float or [B, 1, ...]."""
    return x + 0.5 * step_size * score + torch.sqrt(torch.as_tensor(step_size, dtype=x.dtype)) * noise


LANGEVIN_OPTIONS = ("step_size", "init", "init_range")


def run_langevin(model, process, noise, steps, x_init, step_size=1e-3, init="uniform", init_range=(-1.0, 1.0)):
    """Plain Langevin dynamics with the score at the process's smallest noise level.

    Without annealing, chains started far from the data mix between modes only through
    low-density regions where the score is poor, so mode weights come out wrong.
    """
    steps = check_int("steps", 1000 if steps is None else steps, lo=1)
    step_size = check_positive("step_size", step_size)
    x = initial_state(process, noise, x_init, init, init_range)
    t = lowest_noise_time(process, x)
    for i in range(steps):
        x = langevin_step(x, score_at(model, process, x, t), step_size, noise.normal(i))
    return x, {"nfe": steps}


ANNEALED_OPTIONS = ("eps", "denoise", "init", "init_range")


def run_annealed(model, process, noise, steps, x_init, eps=2e-5, denoise=True, init="uniform",
                 init_range=(-1.0, 1.0)):
    """Annealed Langevin dynamics: `steps` Langevin steps at each sigma_i with
    alpha_i = eps * sigma_i^2 / sigma_L^2; then, if denoise, x + sigma_L^2 * s(x, sigma_L)."""
    require("annealed_langevin", process, NCSN, "an NCSN process (a sigma ladder)")
    steps = check_int("steps", 100 if steps is None else steps, lo=1)
    eps = check_positive("eps", eps)
    x = initial_state(process, noise, x_init, init, init_range)
    B = x.shape[0]
    sigma_L = process.sigma_min
    k = 0
    for sigma in process.sigmas.tolist():
        alpha = eps * (sigma / sigma_L) ** 2
        t = torch.full((B,), sigma, dtype=time_dtype(x), device=x.device)
        for _ in range(steps):
            x = langevin_step(x, score_at(model, process, x, t), alpha, noise.normal(k))
            k += 1
    if denoise:
        t = torch.full((B,), sigma_L, dtype=time_dtype(x), device=x.device)
        x = P.x0_from_score(x, score_at(model, process, x, t), 1.0, sigma_L)
        k += 1
    return x, {"nfe": k}

