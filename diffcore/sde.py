"""Score SDEs (Song et al. 2021): VE, VP and sub-VP, with score_sde's defaults and formulas.

dx = f(x, t) dt + g(t) dw on t in [0, T = 1]. The model is `score(x, t)` with continuous t
of shape [B]. Each SDE gives its drift and diffusion, the perturbation kernel
(`marginal_prob`), the prior, its discrete chain (SMLD for VE, DDPM for VP), and the
reverse-time SDE and probability-flow ODE for a given score.
"""
from __future__ import annotations

import math

import torch

from . import parameterization as P
from .device_cache import on_device
from .discrete import DDPM, NCSN
from .validation import check_batch_time, check_finite, check_int, check_positive


class SDE:
    T = 1.0
    eps = 1e-5  # smallest time samplers and likelihoods go down to
    output = "score"

    def __init__(self, N: int):
        self.N = check_int("N", N, lo=1)

    # Subclasses: _drift_coeff(t) (f = coeff * x), diffusion(t), marginal_coeffs(t), prior_std.
    def sde(self, x: torch.Tensor, t: torch.Tensor):
        """(drift f(x, t), diffusion g(t) of shape [B])."""
        return P.bcast(self._drift_coeff(t), x) * x, self.diffusion(t)

    def config(self) -> dict:
        raise NotImplementedError

    def with_steps(self, N: int) -> "SDE":
        """The same SDE with an N-step discrete chain (samplers use N steps)."""
        return self if N == self.N else type(self)(**{**self.config(), "N": N})

    def check_eps(self, eps) -> float:
        """The smallest time a sampler, loss or likelihood goes down to: the SDE's default, or
        a given eps in (0, T)."""
        if eps is None:
            return self.eps
        eps = check_positive("eps", eps)
        if eps >= self.T:
            raise ValueError(f"eps must lie in (0, T) = (0, {self.T}); got {eps}")
        return eps

    def check_t(self, t, x: torch.Tensor, lo: float | None = None) -> torch.Tensor:
        return check_batch_time("t", t, x.shape[0], 0.0 if lo is None else lo, self.T, x)

    def marginal_prob(self, x0: torch.Tensor, t):
        """Mean and std of p_0t(x(t) | x(0) = x0); std has shape [B]."""
        check_finite("x0", x0)
        t = self.check_t(t, x0)
        m, s = self.marginal_coeffs(t.to(x0.dtype))
        return P.bcast(m, x0) * x0, s

    def prior_sampling(self, noise: torch.Tensor) -> torch.Tensor:
        """x(T) from standard normal noise (explicit, so the caller owns the generator)."""
        return self.prior_std * noise

    def prior_logp(self, z: torch.Tensor) -> torch.Tensor:
        """log N(z; 0, prior_std^2 I) summed over all but the batch dimension."""
        d = z[0].numel()
        var = self.prior_std ** 2
        return -0.5 * d * math.log(2 * math.pi * var) - z.flatten(1).pow(2).sum(1) / (2 * var)

    def timestep_index(self, t: torch.Tensor) -> torch.Tensor:
        """The discrete chain's index for continuous t, as score_sde rounds it. A t outside
        [0, T] is a ValueError on the CPU (checked there only: on a GPU the check would sync)."""
        idx = (t * (self.N - 1) / self.T).long()
        if idx.device.type == "cpu" and idx.numel() and not torch.compiler.is_compiling():
            lo, hi = int(idx.min()), int(idx.max())
            if lo < 0 or hi >= self.N:
                raise ValueError(f"t must lie in [0, {self.T}] (the discrete chain's {self.N} steps); "
                                 f"got values in [{float(t.min())}, {float(t.max())}]")
        return idx

    def discretize(self, x: torch.Tensor, t: torch.Tensor):
        """(f, G) of x_{i+1} = x_i + f + G z; Euler-Maruyama unless the SDE has its own chain."""
        dt = self.T / self.N
        drift, diffusion = self.sde(x, t)
        return drift * dt, diffusion * math.sqrt(dt)

    # ---- reverse time -------------------------------------------------------------------
    def reverse_sde(self, x, t, score, probability_flow: bool = False):
        """Drift and diffusion of the reverse SDE (or the probability-flow ODE) given the score."""
        drift, diffusion = self.sde(x, t)
        g2 = P.bcast(diffusion, x) ** 2
        drift = drift - g2 * score * (0.5 if probability_flow else 1.0)
        return drift, torch.zeros_like(diffusion) if probability_flow else diffusion

    def reverse_discretize(self, x, t, score, probability_flow: bool = False):
        f, G = self.discretize(x, t)
        rev_f = f - P.bcast(G, x) ** 2 * score * (0.5 if probability_flow else 1.0)
        return rev_f, torch.zeros_like(G) if probability_flow else G

    def reverse(self, score_fn, probability_flow: bool = False) -> "ReverseSDE":
        return ReverseSDE(self, score_fn, probability_flow)

    def probability_flow_drift(self, x, t, score):
        return self.reverse_sde(x, t, score, probability_flow=True)[0]


class ReverseSDE:
    """The reverse-time SDE of `forward` for a score function (probability-flow ODE if asked)."""

    def __init__(self, forward: SDE, score_fn, probability_flow: bool = False):
        self.forward, self.score_fn, self.probability_flow = forward, score_fn, probability_flow
        self.T, self.N = forward.T, forward.N

    def sde(self, x, t):
        return self.forward.reverse_sde(x, t, self.score_fn(x, t), self.probability_flow)

    def discretize(self, x, t):
        return self.forward.reverse_discretize(x, t, self.score_fn(x, t), self.probability_flow)


class VESDE(SDE):
    """Variance exploding: dx = sigma(t) sqrt(2 log(smax/smin)) dw, sigma(t) = smin (smax/smin)^t.

    As in score_sde, p_0 is the data already perturbed by sigma_min, so the marginal std
    at t is sigma(t) itself.
    """

    eps = 1e-5

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, N: int = 1000):
        super().__init__(N)
        self.sigma_min = check_positive("sigma_min", sigma_min)
        self.sigma_max = check_positive("sigma_max", sigma_max)
        if self.sigma_min >= self.sigma_max:
            raise ValueError(f"need sigma_min < sigma_max; got {sigma_min}, {sigma_max}")
        self.discrete_sigmas = torch.exp(torch.linspace(math.log(sigma_min), math.log(sigma_max), N, dtype=torch.float64))

    def __repr__(self):
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, N={self.N})"

    def config(self):
        return {"sigma_min": self.sigma_min, "sigma_max": self.sigma_max, "N": self.N}

    @property
    def prior_std(self):
        return self.sigma_max

    def sigma(self, t):
        return self.sigma_min * (self.sigma_max / self.sigma_min) ** t

    def _drift_coeff(self, t):
        return torch.zeros_like(t)

    def diffusion(self, t):
        return self.sigma(t) * math.sqrt(2 * (math.log(self.sigma_max) - math.log(self.sigma_min)))

    def marginal_coeffs(self, t):
        return torch.ones_like(t), self.sigma(t)

    def adjacent_sigmas(self, t, like):
        """(sigma_i, sigma_{i-1}) of the SMLD chain at t's index; sigma_{-1} = 0."""
        idx = self.timestep_index(t)
        sig = on_device(self.discrete_sigmas, t.device)
        sigma = sig[idx].to(like.dtype)
        adjacent = torch.where(idx == 0, torch.zeros_like(sigma), sig[(idx - 1).clamp(min=0)].to(like.dtype))
        return sigma, adjacent

    def discretize(self, x, t):
        """SMLD chain: x_i = x_{i-1} + sqrt(sigma_i^2 - sigma_{i-1}^2) z."""
        sigma, adjacent = self.adjacent_sigmas(t, x)
        return torch.zeros_like(x), torch.sqrt(sigma ** 2 - adjacent ** 2)

    def to_ncsn(self) -> NCSN:
        """The same noise levels as an NCSN ladder (largest first)."""
        return NCSN(self.discrete_sigmas.flip(0))


class VPSDE(SDE):
    """Variance preserving: dx = -1/2 beta(t) x dt + sqrt(beta(t)) dw, beta linear in t."""

    eps = 1e-3

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, N: int = 1000):
        super().__init__(N)
        self.beta_0 = check_positive("beta_min", beta_min)
        self.beta_1 = check_positive("beta_max", beta_max)
        if self.beta_0 > self.beta_1:
            raise ValueError(f"need beta_min <= beta_max; got {beta_min}, {beta_max}")
        # The discrete chain (beta_i = beta(t_i) / N) exists only for N > beta_max; Euler-Maruyama
        # and the ODE do not need it, so a short N is refused only where the chain is used.
        self._discrete_betas = torch.linspace(self.beta_0 / N, self.beta_1 / N, N, dtype=torch.float64)

    @property
    def discrete_betas(self) -> torch.Tensor:
        if self.beta_1 / self.N >= 1:
            raise ValueError(f"the discrete DDPM chain of {self!r} needs N > beta_max (beta_max / N < 1); "
                             f"use more steps, or predictor='euler_maruyama' with corrector='none' (pc), or denoise=False (ode)")
        return self._discrete_betas

    @property
    def alphas(self) -> torch.Tensor:
        return 1.0 - self.discrete_betas

    def __repr__(self):
        return f"{type(self).__name__}(beta_min={self.beta_0}, beta_max={self.beta_1}, N={self.N})"

    prior_std = 1.0

    def config(self):
        return {"beta_min": self.beta_0, "beta_max": self.beta_1, "N": self.N}

    def beta(self, t):
        return self.beta_0 + t * (self.beta_1 - self.beta_0)

    def log_mean_coeff(self, t):
        return -0.25 * t ** 2 * (self.beta_1 - self.beta_0) - 0.5 * t * self.beta_0

    def _drift_coeff(self, t):
        return -0.5 * self.beta(t)

    def diffusion(self, t):
        return torch.sqrt(self.beta(t))

    def marginal_coeffs(self, t):
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), torch.sqrt(-torch.expm1(2 * lmc))

    def beta_at(self, t, like) -> torch.Tensor:
        """beta_i of the discrete chain at t's index, [B] in like's dtype."""
        return on_device(self.discrete_betas, t.device)[self.timestep_index(t)].to(like.dtype)

    def alpha_at(self, t, like) -> torch.Tensor:
        """alpha_i = 1 - beta_i (rounded from float64) at t's index, [B] in like's dtype."""
        return self.alphas.to(t.device)[self.timestep_index(t)].to(like.dtype)

    def discretize(self, x, t):
        """DDPM chain: x_i = sqrt(1 - beta_i) x_{i-1} + sqrt(beta_i) z."""
        beta = self.beta_at(t, x)
        return P.bcast(torch.sqrt(1 - beta), x) * x - x, torch.sqrt(beta)

    def to_ddpm(self, variance: str = "fixed_small") -> DDPM:
        """The same chain as a DDPM process (beta_i = beta(t_i) / N)."""
        return DDPM(self.discrete_betas, variance=variance)


class SubVPSDE(VPSDE):
    """sub-VP: the VP drift with g(t)^2 = beta(t) (1 - exp(-2 int_0^t beta)); its variance
    (1 - exp(2 lmc))^2 stays below the VP one. No chain of its own: discretize is EM."""

    def diffusion(self, t):
        discount = -torch.expm1(-2 * self.beta_0 * t - (self.beta_1 - self.beta_0) * t ** 2)
        return torch.sqrt(self.beta(t) * discount)

    def marginal_coeffs(self, t):
        lmc = self.log_mean_coeff(t)
        return torch.exp(lmc), -torch.expm1(2 * lmc)

    discretize = SDE.discretize

    def to_ddpm(self, variance: str = "fixed_small") -> DDPM:
        raise ValueError("SubVPSDE has no discrete DDPM chain; use VPSDE.to_ddpm()")
