"""Training objectives of the three families. Each returns a per-sample loss [B]; the caller
averages. Randomness (levels, timesteps, noise) is passed in explicitly or drawn from an
optional torch.Generator, so a test can pin every draw.

- score_matching_loss: Hyvarinen's E[tr(grad_x s) + 1/2 |s|^2] (exact trace or sliced).
- dsm_loss: NCSN denoising score matching over the sigma ladder, lambda(sigma) = sigma^2.
- ddpm_simple_loss, ddpm_vlb_terms, ddpm_prior_bpd, ddpm_hybrid_loss: DDPM / improved DDPM.
- sde_score_loss: continuous-time DSM, lambda(t) = sigma(t)^2 or likelihood weighting g(t)^2.
"""
from __future__ import annotations

import math

import torch

from . import parameterization as P
from .device_cache import on_device
from .discrete import DDPM, NCSN, gather
from .sde import SDE
from .validation import check_choice, check_finite, check_int

_LOG2 = math.log(2.0)


def _mean_flat(x: torch.Tensor) -> torch.Tensor:
    return x.flatten(1).mean(1)


def _randn_like(x, noise, generator):
    if noise is None:
        return torch.randn(x.shape, generator=generator, dtype=x.dtype, device=x.device)
    if noise.shape != x.shape:
        raise ValueError(f"noise must have shape {tuple(x.shape)}; got {tuple(noise.shape)}")
    return noise.to(x.dtype)


# ---- original score matching -----------------------------------------------------------
def score_matching_loss(score_fn, x: torch.Tensor, method: str = "exact", projections: int = 1,
                        kind: str = "gaussian", generator: torch.Generator | None = None) -> torch.Tensor:
    """E[tr(grad_x s(x)) + 1/2 |s(x)|^2] per sample (Hyvarinen 2005).

    method="exact": the Jacobian trace, one backward pass per dimension (low D only).
    method="sliced": v^T (grad_x s) v averaged over `projections` random v (Song et al. 2019,
    the variance-reduced form keeping 1/2 |s|^2 exact); kind: "gaussian" or "rademacher".
    """
    check_choice("method", method, ("exact", "sliced"))
    check_choice("kind", kind, ("gaussian", "rademacher"))
    check_int("projections", projections, lo=1)
    check_finite("x", x)
    x = x.detach().requires_grad_(True)
    s = score_fn(x)
    if s.shape != x.shape:
        raise ValueError(f"score_fn(x) must have x's shape {tuple(x.shape)}; got {tuple(s.shape)}")
    sf, xf = s.flatten(1), x
    if method == "exact":
        trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for d in range(sf.shape[1]):
            g, = torch.autograd.grad(sf[:, d].sum(), xf, create_graph=True)
            trace = trace + g.flatten(1)[:, d]
    else:
        trace = torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
        for _ in range(projections):
            v = torch.randn(sf.shape, generator=generator, dtype=x.dtype, device=x.device)
            if kind == "rademacher":
                v = v.sign()
            g, = torch.autograd.grad((sf * v).sum(), xf, create_graph=True)
            trace = trace + (g.flatten(1) * v).sum(1)
        trace = trace / projections
    return trace + 0.5 * sf.pow(2).sum(1)


# ---- NCSN ---------------------------------------------------------------------------------
def _check_process(name: str, process, cls, what: str):
    if not isinstance(process, cls):
        raise ValueError(f"{name} must be {what}; got {type(process).__name__}")


def dsm_loss(model, ncsn: NCSN, x0: torch.Tensor, levels: torch.Tensor | None = None,
             noise: torch.Tensor | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """lambda(sigma) * 1/2 |s(x~, sigma) + (x~ - x) / sigma^2|^2 with lambda = sigma^2,
    i.e. 1/2 |sigma s + z|^2, for a level index i ~ U{0..L-1} per sample (NCSN eq. 5-6)."""
    _check_process("ncsn", ncsn, NCSN, "an NCSN")
    check_finite("x0", x0)
    B = x0.shape[0]
    if levels is None:
        levels = torch.randint(0, ncsn.L, (B,), generator=generator, device=x0.device)
    elif levels.shape != (B,) or levels.dtype.is_floating_point or (levels < 0).any() or (levels >= ncsn.L).any():
        raise ValueError(f"levels must be integer indices [B] = [{B}] in [0, {ncsn.L - 1}]")
    z = _randn_like(x0, noise, generator)
    sigma = ncsn.sigmas.to(x0.device)[levels.long()]
    xt = ncsn.perturb(x0, sigma, z)
    s = model(xt, sigma.to(x0.dtype))
    return 0.5 * (P.bcast(sigma.to(x0.dtype), x0) * s + z).flatten(1).pow(2).sum(1)


# ---- DDPM ---------------------------------------------------------------------------------
def _ddpm_draws(ddpm: DDPM, x0, t, noise, generator):
    _check_process("ddpm", ddpm, DDPM, "a DDPM")
    check_finite("x0", x0)
    if t is None:
        t = torch.randint(0, ddpm.T, (x0.shape[0],), generator=generator, device=x0.device)
    t = ddpm.check_t(t, x0.shape[0], x0)
    z = _randn_like(x0, noise, generator)
    return t, z, ddpm.q_sample(x0, t, z)


def ddpm_simple_loss(model, ddpm: DDPM, x0, t=None, noise=None, generator=None) -> torch.Tensor:
    """L_simple = mean over dimensions of (eps - eps_theta(x_t, t))^2 (Ho et al. eq. 14)."""
    t, z, xt = _ddpm_draws(ddpm, x0, t, noise, generator)
    eps, _ = ddpm.split_output(model(xt, on_device(ddpm.timestep_map, t.device)[t]), xt)
    return _mean_flat((z - eps) ** 2)


def normal_kl(mean1, logvar1, mean2, logvar2) -> torch.Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, e^logvar2)), elementwise."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + torch.exp(logvar1 - logvar2)
                  + (mean1 - mean2) ** 2 * torch.exp(-logvar2))


def discretized_gaussian_log_likelihood(x, means, log_scales) -> torch.Tensor:
    """log P(x's 8-bit bin) under N(means, e^(2 log_scales)) for x in [-1, 1] (bins of width
    2/255, the two edge bins open to +-infinity), elementwise. Exact normal CDF."""
    if not (x.abs() <= 1.0 + 1e-6).all():
        raise ValueError("x must be data scaled to [-1, 1]")
    centered = x - means
    inv_std = torch.exp(-log_scales)
    upper = inv_std * (centered + 1.0 / 255.0)
    lower = inv_std * (centered - 1.0 / 255.0)
    log_cdf_upper = torch.special.log_ndtr(upper)
    log_sf_lower = torch.special.log_ndtr(-lower)
    delta = torch.special.ndtr(upper) - torch.special.ndtr(lower)
    return torch.where(x < -0.999, log_cdf_upper,
                       torch.where(x > 0.999, log_sf_lower, torch.log(delta.clamp(min=1e-12))))


def ddpm_vlb_terms(model_output, ddpm: DDPM, x0, xt, t, clip_denoised: bool = False) -> torch.Tensor:
    """The VLB term at t in bits per dimension [B]: KL(q(x_{t-1}|x_t,x_0) || p(x_{t-1}|x_t))
    for t > 0, the discretized decoder's -log p(x_0 | x_1) at t = 0 (data in [-1, 1])."""
    check_finite("x0", x0)
    check_finite("xt", xt)
    t = ddpm.check_t(t, x0.shape[0], x0)
    true_mean, _, true_logvar = ddpm.q_posterior(x0, xt, t)
    out = ddpm.p_mean_variance(model_output, xt, t, clip_denoised)
    kl = _mean_flat(normal_kl(true_mean, true_logvar, out["mean"], out["log_variance"])) / _LOG2
    nll = -_mean_flat(discretized_gaussian_log_likelihood(x0, out["mean"], 0.5 * out["log_variance"])) / _LOG2
    return torch.where(t == 0, nll, kl)


def ddpm_prior_bpd(ddpm: DDPM, x0) -> torch.Tensor:
    """KL(q(x_T | x_0) || N(0, I)) in bits per dimension [B]."""
    check_finite("x0", x0)
    t = torch.full((x0.shape[0],), ddpm.T - 1, dtype=torch.int64, device=x0.device)
    mean = gather(ddpm.sqrt_alphas_cumprod, t, x0) * x0
    logvar = torch.log(gather(1.0 - ddpm.alphas_cumprod, t, x0)).expand_as(x0)
    return _mean_flat(normal_kl(mean, logvar, torch.zeros_like(x0), torch.zeros_like(x0))) / _LOG2


def ddpm_hybrid_loss(model, ddpm: DDPM, x0, t=None, noise=None, generator=None,
                     lambda_vlb: float = 0.001) -> torch.Tensor:
    """Improved DDPM's L_hybrid = L_simple + lambda * L_vlb for learned variance.

    L_vlb is estimated as T * L_t (t uniform), and the mean is frozen in it (stop-gradient
    on eps), so the VLB trains only the variance, as in Nichol & Dhariwal §3.1.
    """
    _check_process("ddpm", ddpm, DDPM, "a DDPM")
    if ddpm.variance != "learned_range":
        raise ValueError(f"ddpm_hybrid_loss needs variance='learned_range'; got {ddpm.variance!r}")
    t, z, xt = _ddpm_draws(ddpm, x0, t, noise, generator)
    out = model(xt, on_device(ddpm.timestep_map, t.device)[t])
    eps, v = ddpm.split_output(out, xt)
    frozen = torch.cat([eps.detach(), v], dim=1)
    vb = ddpm_vlb_terms(frozen, ddpm, x0, xt, t)
    return _mean_flat((z - eps) ** 2) + lambda_vlb * ddpm.T * vb


# ---- score SDEs ----------------------------------------------------------------------------
WEIGHTINGS = ("sigma2", "likelihood")


def sde_score_loss(model, sde: SDE, x0, t=None, noise=None, generator=None, weighting: str = "sigma2",
                   eps: float | None = None, reduce: str = "sum") -> torch.Tensor:
    """E_t lambda(t) |s(x_t, t) - grad log p_0t(x_t | x_0)|^2, t ~ U[eps, T] (Song et al. eq. 7).

    weighting="sigma2": lambda = sigma(t)^2, i.e. |sigma s + z|^2 (score_sde's default);
    "likelihood": lambda = g(t)^2, which makes the loss a bound on the NLL (Song et al. 2021b).
    reduce: "sum" or "mean" over the data dimensions.
    """
    check_choice("weighting", weighting, WEIGHTINGS)
    check_choice("reduce", reduce, ("sum", "mean"))
    _check_process("sde", sde, SDE, "a VESDE, VPSDE or SubVPSDE")
    check_finite("x0", x0)
    eps = sde.check_eps(eps)
    B = x0.shape[0]
    if t is None:
        t = torch.rand(B, generator=generator, dtype=torch.float64, device=x0.device) * (sde.T - eps) + eps
    t = sde.check_t(t, x0, lo=eps).to(x0.dtype)  # t = 0 would divide by std(0) = 0 (VP)
    z = _randn_like(x0, noise, generator)
    m, std = sde.marginal_coeffs(t)
    xt = P.bcast(m, x0) * x0 + P.bcast(std, x0) * z
    s = model(xt, t)
    if weighting == "sigma2":
        per = (s * P.bcast(std, x0) + z) ** 2
    else:
        per = (s + z / P.bcast(std, x0)) ** 2 * P.bcast(sde.diffusion(t) ** 2, x0)
    per = per.flatten(1)
    return per.sum(1) if reduce == "sum" else per.mean(1)
