"""Noise schedules (float64): DDPM's linear and cosine betas, NCSN's geometric sigma ladder,
and the "improved techniques for training score-based models" helpers (Song & Ermon 2020)."""
from __future__ import annotations

import math

import torch

from .validation import check_int, check_positive


def linear_betas(T: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> torch.Tensor:
    """DDPM's linear schedule (Ho et al. 2020): T betas from beta_start to beta_end."""
    T = check_int("T", T, lo=1)
    beta_start = check_positive("beta_start", beta_start)
    beta_end = check_positive("beta_end", beta_end)
    if not beta_start <= beta_end < 1:
        raise ValueError(f"need beta_start <= beta_end < 1; got beta_start={beta_start}, beta_end={beta_end}")
    return torch.linspace(beta_start, beta_end, T, dtype=torch.float64)


def cosine_alpha_bar(t: torch.Tensor, s: float = 0.008) -> torch.Tensor:
    """Improved DDPM's alpha-bar(t) for t in [0, 1] (unnormalised: f(t) in the paper)."""
    return torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2


def cosine_betas(T: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> torch.Tensor:
    """Improved DDPM's cosine schedule (Nichol & Dhariwal 2021), betas capped at max_beta."""
    T = check_int("T", T, lo=1)
    s = check_positive("s", s, allow_zero=True)
    max_beta = check_positive("max_beta", max_beta)
    if max_beta >= 1:
        raise ValueError(f"max_beta must be < 1; got {max_beta}")
    t = torch.arange(T + 1, dtype=torch.float64) / T
    abar = cosine_alpha_bar(t, s)
    return torch.clamp(1 - abar[1:] / abar[:-1], max=max_beta)


def geometric_sigmas(sigma_max: float, sigma_min: float, num_levels: int) -> torch.Tensor:
    """NCSN's noise ladder sigma_1 > ... > sigma_L, a geometric sequence (float64)."""
    sigma_max = check_positive("sigma_max", sigma_max)
    sigma_min = check_positive("sigma_min", sigma_min)
    num_levels = check_int("num_levels", num_levels, lo=1)
    if sigma_min > sigma_max or (sigma_min == sigma_max and num_levels > 1):
        raise ValueError(f"need sigma_min < sigma_max for more than one level; got sigma_min={sigma_min}, "
                         f"sigma_max={sigma_max}, num_levels={num_levels}")
    if num_levels == 1:
        return torch.tensor([sigma_max], dtype=torch.float64)
    return torch.exp(torch.linspace(math.log(sigma_max), math.log(sigma_min), num_levels, dtype=torch.float64))


def sigma_max_from_data(data: torch.Tensor) -> float:
    """Technique 1: sigma_1 as large as the largest pairwise Euclidean distance in the data."""
    if not isinstance(data, torch.Tensor) or data.dim() < 2 or data.shape[0] < 2:
        raise ValueError("data must be a tensor [N, ...] with N >= 2 examples")
    x = data.reshape(data.shape[0], -1).to(torch.float64)
    best = 0.0
    for start in range(0, x.shape[0], 1024):  # blocks keep memory at O(1024 * N)
        d = torch.cdist(x[start:start + 1024], x, compute_mode="donot_use_mm_for_euclid_dist")
        best = max(best, d.max().item())
    return best


def _std_normal_cdf(z: float) -> float:
    return 0.5 * math.erfc(-z / math.sqrt(2.0))


def gamma_rule(gamma: float, dim: int) -> float:
    """Technique 2's left-hand side: Phi(sqrt(2D)(g-1) + 3g) - Phi(sqrt(2D)(g-1) - 3g)."""
    a = math.sqrt(2.0 * dim) * (gamma - 1.0)
    return _std_normal_cdf(a + 3.0 * gamma) - _std_normal_cdf(a - 3.0 * gamma)


def gamma_for_dim(dim: int, target: float = 0.5) -> float:
    """The ratio gamma = sigma_{i-1}/sigma_i with gamma_rule(gamma, dim) = target (bisection).

    For large gamma the rule tends to 0 only when sqrt(2D) > 3; for D <= 4 it tends to 1
    and no gamma satisfies it, so those dimensions are refused rather than searched forever.
    """
    dim = check_int("dim", dim, lo=5)
    if not 0 < target < gamma_rule(1.0, dim):
        raise ValueError(f"target must lie in (0, {gamma_rule(1.0, dim):.4f}); got {target}")
    lo, hi = 1.0, 2.0
    for _ in range(64):
        if gamma_rule(hi, dim) <= target:
            break
        lo, hi = hi, hi * 2.0
    for _ in range(200):
        mid = 0.5 * (lo + hi)
        if gamma_rule(mid, dim) > target:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def num_levels_for(sigma_max: float, sigma_min: float, dim: int, target: float = 0.5) -> int:
    """Fewest geometric levels from sigma_max to sigma_min whose ratio is at most gamma_for_dim."""
    sigma_max = check_positive("sigma_max", sigma_max)
    sigma_min = check_positive("sigma_min", sigma_min)
    if sigma_min > sigma_max:
        raise ValueError(f"need sigma_min <= sigma_max; got sigma_min={sigma_min}, sigma_max={sigma_max}")
    gamma = gamma_for_dim(dim, target)
    return max(1, math.ceil(math.log(sigma_max / sigma_min) / math.log(gamma)) + 1)
