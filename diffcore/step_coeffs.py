"""Per-sample coefficients that turn a process and a time into the arguments of a fused
step op in diffcore.ops. Each function mirrors one reference step in diffcore.samplers, and
tests check the op with these coefficients against that step.

All coefficients are float64 tensors of shape [B] on t's device (the ops cast them).
"""
from __future__ import annotations

import math

import torch

from .discrete import DDPM
from .sde import SDE, SubVPSDE, VESDE, VPSDE
from .validation import check_choice

# A log-variance this low gives exp(lv / 2) == 0 exactly: "no noise" (DDPM's t = 0 step).
NO_NOISE_LOG_VAR = -1e4


def ddpm(process: DDPM, t: torch.Tensor) -> dict:
    """Keyword arguments of ops.ddpm_step (without v) for integer t [B] into `process`."""
    dev = t.device
    idx = t.long()
    take = lambda arr: arr.to(dev)[idx]  # noqa: E731
    abar = take(process.alphas_cumprod)
    if process.variance == "fixed_small":
        lv, lv_max = take(process.posterior_log_variance_clipped), None
    elif process.variance == "fixed_large":
        lv, lv_max = take(process.log_large_variance), None
    else:
        lv, lv_max = take(process.posterior_log_variance_clipped), take(process.log_betas)
    last = idx == 0
    lv = torch.where(last, torch.full_like(lv, NO_NOISE_LOG_VAR), lv)
    out = {"sqrt_recip_abar": (1 / abar).sqrt(), "sqrt_recipm1_abar": (1 / abar - 1).sqrt(),
           "coef_x0": take(process.posterior_mean_coef1), "coef_xt": take(process.posterior_mean_coef2),
           "log_var": lv}
    if lv_max is not None:
        out["log_var_max"] = torch.where(last, torch.full_like(lv_max, NO_NOISE_LOG_VAR), lv_max)
    return out


def ddim(process: DDPM, t: torch.Tensor, t_prev: torch.Tensor, eta: float) -> dict:
    """Keyword arguments of ops.ddim_step; t_prev < 0 is the clean end (abar = 1)."""
    abar = process.alphas_cumprod.to(t.device)
    abar_t = abar[t.long()]
    abar_prev = torch.where(t_prev >= 0, abar[t_prev.long().clamp(min=0)], torch.ones_like(abar_t))
    return {"abar_t": abar_t, "abar_prev": abar_prev, "eta": torch.full_like(abar_t, float(eta))}


PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "probability_flow")


def _drift_and_g(sde: SDE, t: torch.Tensor):
    t = t.to(torch.float64)
    return sde._drift_coeff(t), sde.diffusion(t)


def predictor(sde: SDE, t: torch.Tensor, kind: str, dt: float | None = None) -> dict:
    """(a, b, std) of ops.affine_step for an SDE predictor at continuous t [B].

    euler_maruyama / probability_flow (Euler on the ODE) take dt < 0 (-T / N in PC);
    reverse_diffusion and ancestral use the SDE's own discrete chain at t's index.
    """
    check_choice("kind", kind, PREDICTORS)
    t = t.to(torch.float64)
    if kind in ("euler_maruyama", "probability_flow"):
        if dt is None or not dt < 0:
            raise ValueError(f"predictor {kind!r} needs dt < 0 (time runs backwards); got {dt}")
        c, g = _drift_and_g(sde, t)
        if kind == "euler_maruyama":
            return {"a": 1 + c * dt, "b": -(g ** 2) * dt, "std": g * math.sqrt(-dt)}
        return {"a": 1 + c * dt, "b": -0.5 * (g ** 2) * dt, "std": torch.zeros_like(g)}
    if kind == "reverse_diffusion":
        if isinstance(sde, VESDE):
            sigma, adjacent = sde.adjacent_sigmas(t, t)
            G = torch.sqrt(sigma ** 2 - adjacent ** 2)
            return {"a": torch.ones_like(G), "b": G ** 2, "std": G}
        if type(sde) is VPSDE:
            beta = sde.beta_at(t, t)
            return {"a": 2 - torch.sqrt(1 - beta), "b": beta, "std": torch.sqrt(beta)}
        c, g = _drift_and_g(sde, t)  # sub-VP: Euler-Maruyama chain with dt = T / N
        h = sde.T / sde.N
        G = g * math.sqrt(h)
        return {"a": 1 - c * h, "b": G ** 2, "std": G}
    # ancestral
    if isinstance(sde, VESDE):
        sigma, adjacent = sde.adjacent_sigmas(t, t)
        s2, a2 = sigma ** 2, adjacent ** 2
        return {"a": torch.ones_like(s2), "b": s2 - a2, "std": torch.sqrt(a2 * (s2 - a2) / s2)}
    if type(sde) is VPSDE:
        beta = sde.beta_at(t, t)
        r = 1 / torch.sqrt(1 - beta)
        return {"a": r, "b": beta * r, "std": torch.sqrt(beta)}
    raise ValueError(f"predictor 'ancestral' needs a VESDE or VPSDE; got {type(sde).__name__}")


def heun(sde: SDE, t: torch.Tensor, h: float) -> tuple[dict, dict]:
    """Probability-flow Heun from t to t + h as two ops: the Euler stage (ops.affine_step with
    std = 0) and the trapezoid (ops.heun_step). d(x, t) = c(t) x - g(t)^2 / 2 score."""
    t = t.to(torch.float64)
    c1, g1 = _drift_and_g(sde, t)
    c2, g2 = _drift_and_g(sde, t + h)
    stage1 = {"a": 1 + c1 * h, "b": -0.5 * g1 ** 2 * h, "std": torch.zeros_like(g1)}
    stage2 = {"a": 1 + 0.5 * h * c1, "b": -0.25 * h * g1 ** 2, "c": 0.5 * h * c2, "d": -0.25 * h * g2 ** 2}
    return stage1, stage2


def langevin_alpha(sde: SDE, t: torch.Tensor) -> torch.Tensor:
    """score_sde's alpha_i = 1 - beta_i for VP-type SDEs (sub-VP included), 1 otherwise."""
    t = t.to(torch.float64)
    if isinstance(sde, VPSDE):
        return sde.alpha_at(t, t)
    return torch.ones_like(t)
