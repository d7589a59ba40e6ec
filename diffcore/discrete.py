"""Discrete-time processes: NCSN's sigma ladder (SMLD) and DDPM's Markov chain.

Model conventions (what `model(x, t)` receives and must return):
- NCSN: t is the noise level sigma itself (float tensor [B]); the model returns the score.
- DDPM: t is the integer timestep in [0, T) of the *trained* chain (a respaced process maps
  its own indices back, as improved DDPM does); the model returns eps, or [eps, v] stacked
  along dim 1 (2C channels) for variance="learned_range".
"""
from __future__ import annotations

import torch

from . import parameterization as P
from .device_cache import on_device
from .validation import check_choice, check_finite, check_int

VARIANCES = ("fixed_small", "fixed_large", "learned_range")


def _as_schedule(name: str, values) -> torch.Tensor:
    try:
        t = torch.as_tensor(values, dtype=torch.float64).detach().cpu().clone()
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a non-empty 1-D sequence of numbers; got {type(values).__name__}") from None
    if t.dim() != 1 or t.numel() < 1:
        raise ValueError(f"{name} must be a non-empty 1-D sequence; got shape {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise ValueError(f"{name} must be finite")
    return t


def gather(arr: torch.Tensor, idx: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """arr[idx] as x's dtype and device, shaped [B, 1, ...] to broadcast against x."""
    return P.bcast(on_device(arr, x.device)[idx.to(x.device).long()].to(x.dtype), x)


class NCSN:
    """Noise-conditional score network process (Song & Ermon 2019): x~ = x + sigma * z
    for sigma on a decreasing ladder sigma_1 > ... > sigma_L."""

    output = "score"

    def __init__(self, sigmas):
        sigmas = _as_schedule("sigmas", sigmas)
        if (sigmas <= 0).any():
            raise ValueError("sigmas must all be > 0")
        if sigmas.numel() > 1 and not (sigmas[1:] < sigmas[:-1]).all():
            raise ValueError("sigmas must be strictly decreasing (sigma_1 > ... > sigma_L)")
        self.sigmas = sigmas
        self.L = sigmas.numel()

    def __repr__(self):
        return f"NCSN(L={self.L}, sigma_1={self.sigmas[0].item():.4g}, sigma_L={self.sigmas[-1].item():.4g})"

    @property
    def sigma_min(self) -> float:
        return self.sigmas[-1].item()

    def marginal_coeffs(self, sigma: torch.Tensor):
        """(m, s) with x~ = m x + s z: m = 1, s = sigma."""
        return torch.ones_like(sigma), sigma

    def perturb(self, x: torch.Tensor, sigma: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        if not isinstance(sigma, torch.Tensor) or sigma.shape != (x.shape[0],):
            raise ValueError(f"sigma must be a tensor [B] = [{x.shape[0]}]; got "
                             f"{tuple(sigma.shape) if isinstance(sigma, torch.Tensor) else type(sigma).__name__}")
        if noise.shape != x.shape:
            raise ValueError(f"noise must have x's shape {tuple(x.shape)}; got {tuple(noise.shape)}")
        return x + P.bcast(sigma.to(x.dtype), x) * noise


class DDPM:
    """Denoising diffusion probabilistic model (Ho et al. 2020; Nichol & Dhariwal 2021).

    variance: "fixed_small" (posterior beta~_t), "fixed_large" (beta_t, with beta~_1 at the
    first step) or "learned_range" (the network's v in [-1, 1] interpolates log beta~_t
    and log beta_t). All schedule arrays are float64; steps cast to the data's dtype.
    """

    output = "eps"

    def __init__(self, betas, variance: str = "fixed_small", timestep_map=None):
        betas = _as_schedule("betas", betas)
        if (betas <= 0).any() or (betas >= 1).any():
            raise ValueError("betas must all lie in (0, 1)")
        self.variance = check_choice("variance", variance, VARIANCES)
        self.betas = betas
        self.T = betas.numel()
        # Which timestep of the trained chain each index of this one is (respacing).
        self.timestep_map = (torch.arange(self.T) if timestep_map is None
                             else torch.as_tensor(timestep_map, dtype=torch.int64).clone())
        if self.timestep_map.shape != (self.T,):
            raise ValueError(f"timestep_map must have one entry per beta ({self.T}); got {tuple(self.timestep_map.shape)}")

        self.alphas = 1.0 - betas
        self.alphas_cumprod = torch.cumprod(self.alphas, 0)
        self.alphas_cumprod_prev = torch.cat([torch.ones(1, dtype=torch.float64), self.alphas_cumprod[:-1]])
        self.sqrt_alphas_cumprod = self.alphas_cumprod.sqrt()
        self.sqrt_one_minus_alphas_cumprod = (1.0 - self.alphas_cumprod).sqrt()
        # q(x_{t-1} | x_t, x_0) = N(coef1 x0 + coef2 x_t, beta~_t)
        self.posterior_variance = betas * (1.0 - self.alphas_cumprod_prev) / (1.0 - self.alphas_cumprod)
        # beta~_0 = 0: clip its log to beta~_1, as improved DDPM does (only the decoder uses it).
        pv1 = self.posterior_variance[1] if self.T > 1 else betas[0]
        self.posterior_log_variance_clipped = torch.log(torch.cat([pv1.reshape(1), self.posterior_variance[1:]]))
        self.posterior_mean_coef1 = betas * self.alphas_cumprod_prev.sqrt() / (1.0 - self.alphas_cumprod)
        self.posterior_mean_coef2 = (1.0 - self.alphas_cumprod_prev) * self.alphas.sqrt() / (1.0 - self.alphas_cumprod)
        # fixed_large: beta_t, but beta~_1 at the first step so the decoder's variance is sane.
        self.large_variance = torch.cat([pv1.reshape(1), betas[1:]])
        self.log_large_variance = torch.log(self.large_variance)
        self.log_betas = torch.log(betas)

    def __repr__(self):
        return f"DDPM(T={self.T}, variance={self.variance!r})"

    # ---- the forward chain -------------------------------------------------------------
    def check_t(self, t, batch: int, like: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t, device=like.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool or t.dtype.is_complex:
            raise ValueError(f"t must be integer timesteps in [0, {self.T - 1}]; got dtype {t.dtype}")
        if t.dim() == 0:
            t = t.expand(batch)
        if t.shape != (batch,):
            raise ValueError(f"t must have shape [B] = [{batch}]; got {tuple(t.shape)}")
        if (t < 0).any() or (t >= self.T).any():
            raise ValueError(f"t must lie in [0, {self.T - 1}]; got values in [{t.min().item()}, {t.max().item()}]")
        return t.long()

    def marginal_coeffs(self, t: torch.Tensor):
        """(m, s) of q(x_t | x_0) = N(m x_0, s^2 I) at integer t: (sqrt(abar_t), sqrt(1 - abar_t))."""
        idx = t.long()  # indexed on t's device: no host round trip per model call
        return (on_device(self.sqrt_alphas_cumprod, t.device)[idx],
                on_device(self.sqrt_one_minus_alphas_cumprod, t.device)[idx])

    def q_sample(self, x0: torch.Tensor, t, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps."""
        check_finite("x0", x0)
        t = self.check_t(t, x0.shape[0], x0)
        if noise.shape != x0.shape:
            raise ValueError(f"noise must have x0's shape {tuple(x0.shape)}; got {tuple(noise.shape)}")
        return gather(self.sqrt_alphas_cumprod, t, x0) * x0 + gather(self.sqrt_one_minus_alphas_cumprod, t, x0) * noise

    def q_posterior(self, x0: torch.Tensor, x_t: torch.Tensor, t: torch.Tensor):
        """Mean, variance and clipped log-variance of q(x_{t-1} | x_t, x_0)."""
        if x0.shape != x_t.shape:
            raise ValueError(f"x0 must have x_t's shape {tuple(x_t.shape)}; got {tuple(x0.shape)}")
        mean = gather(self.posterior_mean_coef1, t, x_t) * x0 + gather(self.posterior_mean_coef2, t, x_t) * x_t
        return mean, gather(self.posterior_variance, t, x_t), gather(self.posterior_log_variance_clipped, t, x_t)

    # ---- the reverse chain -------------------------------------------------------------
    def split_output(self, model_output: torch.Tensor, x: torch.Tensor):
        """(eps, v or None): learned_range models return 2C channels along dim 1."""
        if self.variance == "learned_range":
            if model_output.shape[1] != 2 * x.shape[1] or model_output.shape[2:] != x.shape[2:]:
                raise ValueError(f"variance='learned_range' needs model output [B, 2C, ...] = "
                                 f"{(x.shape[0], 2 * x.shape[1], *x.shape[2:])}; got {tuple(model_output.shape)}")
            eps, v = model_output.chunk(2, dim=1)
            return eps, v
        if model_output.shape != x.shape:
            raise ValueError(f"model output must have x's shape {tuple(x.shape)} for variance="
                             f"{self.variance!r}; got {tuple(model_output.shape)}")
        return model_output, None

    def log_variance(self, t: torch.Tensor, x: torch.Tensor, v: torch.Tensor | None = None) -> torch.Tensor:
        """log of the reverse step's variance at t (broadcastable against x)."""
        if self.variance == "fixed_small":
            return gather(self.posterior_log_variance_clipped, t, x)
        if self.variance == "fixed_large":
            return gather(self.log_large_variance, t, x)
        frac = (v + 1) / 2  # the network's v in [-1, 1] -> [0, 1]
        return frac * gather(self.log_betas, t, x) + (1 - frac) * gather(self.posterior_log_variance_clipped, t, x)

    def p_mean_variance(self, model_output: torch.Tensor, x: torch.Tensor, t: torch.Tensor,
                        clip_denoised: bool = False):
        """Mean and log-variance of p(x_{t-1} | x_t), with the predicted x_0 and eps."""
        eps, v = self.split_output(model_output, x)
        m, s = gather(self.sqrt_alphas_cumprod, t, x), gather(self.sqrt_one_minus_alphas_cumprod, t, x)
        pred_x0 = P.x0_from_eps(x, eps, m, s)
        if clip_denoised:
            pred_x0 = pred_x0.clamp(-1, 1)
        mean, _, _ = self.q_posterior(pred_x0, x, t)
        return {"mean": mean, "log_variance": self.log_variance(t, x, v), "pred_x0": pred_x0, "eps": eps}

    # ---- respacing -----------------------------------------------------------------------
    def respace(self, timesteps) -> "DDPM":
        """The chain restricted to an increasing subset of timesteps (improved DDPM §4):
        beta'_i = 1 - abar_{t_i} / abar_{t_{i-1}}; the model still sees the original t_i."""
        ts = torch.as_tensor(timesteps, dtype=torch.int64).flatten()
        if ts.numel() < 1 or (ts < 0).any() or (ts >= self.T).any():
            raise ValueError(f"timesteps must be a non-empty subset of [0, {self.T - 1}]")
        if ts.numel() > 1 and not (ts[1:] > ts[:-1]).all():
            raise ValueError("timesteps must be strictly increasing")
        abar = self.alphas_cumprod[ts]
        abar_prev = torch.cat([torch.ones(1, dtype=torch.float64), abar[:-1]])
        return DDPM(1.0 - abar / abar_prev, variance=self.variance, timestep_map=self.timestep_map[ts])


def spaced_timesteps(T: int, steps: int, spacing: str = "leading") -> torch.Tensor:
    """Increasing subset of [0, T) with `steps` entries.

    leading:  0, T//S, 2T//S, ...        (DDIM paper; diffusers' default)
    trailing: ..., T-1 - T/S, T-1        (ends at the last timestep)
    even:     round(i (T-1) / (S-1))     (improved DDPM's section spacing: both ends)
    """
    T = check_int("T", T, lo=1)
    steps = check_int("steps", steps, lo=1, hi=T)
    check_choice("spacing", spacing, ("leading", "trailing", "even"))
    if spacing == "leading":
        return torch.arange(steps, dtype=torch.int64) * (T // steps)
    if spacing == "trailing":
        # T - i T / S for i < S, computed per index: a float arange can overshoot by one entry
        i = torch.arange(steps, dtype=torch.float64)
        return (torch.round(T - i * T / steps).long() - 1).flip(0)
    if steps == 1:
        return torch.tensor([T - 1])
    return torch.round(torch.arange(steps, dtype=torch.float64) * (T - 1) / (steps - 1)).long()
