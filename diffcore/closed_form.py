"""Gaussian mixtures: data whose every noised marginal is known in closed form.

If x0 ~ sum_k w_k N(mu_k, diag(v_k)) and x_t = m x0 + s z, then
x_t ~ sum_k w_k N(m mu_k, diag(m^2 v_k + s^2)), so its score, its density and
p(component | x_t) are exact. Tests, examples and benchmarks use this as ground truth.
"""
from __future__ import annotations

import math

import torch

from . import noise as _noise
from . import parameterization as P
from .device_cache import on_device
from .discrete import DDPM, NCSN
from .sde import SDE
from .validation import check_finite, check_int, check_real


class GaussianMixture:
    """sum_k weights[k] N(means[k], diag(stds[k]^2)).

    means: [K, D]; stds: scalar, [K] (isotropic per component) or [K, D] (diagonal);
    weights: [K], positive (normalised here). Held in float64; outputs follow x's dtype.
    """

    def __init__(self, means, stds, weights=None):
        means = torch.as_tensor(means, dtype=torch.float64)
        if means.dim() == 1:
            means = means[:, None]
        if means.dim() != 2:
            raise ValueError(f"means must have shape [K, D]; got {tuple(means.shape)}")
        K, D = means.shape
        stds = torch.as_tensor(stds, dtype=torch.float64)
        if stds.dim() == 0:
            stds = stds.expand(K)
        if stds.dim() == 1:
            if stds.shape[0] != K:
                raise ValueError(f"stds must have shape [], [K] = [{K}] or [K, D] = [{K}, {D}]; got {tuple(stds.shape)}")
            stds = stds[:, None].expand(K, D)
        if stds.shape != (K, D):
            raise ValueError(f"stds must have shape [], [K] = [{K}] or [K, D] = [{K}, {D}]; got {tuple(stds.shape)}")
        weights = torch.full((K,), 1.0 / K, dtype=torch.float64) if weights is None else torch.as_tensor(weights, dtype=torch.float64)
        if weights.shape != (K,):
            raise ValueError(f"weights must have shape [K] = [{K}]; got {tuple(weights.shape)}")
        for name, v in (("means", means), ("stds", stds), ("weights", weights)):
            if not torch.isfinite(v).all():
                raise ValueError(f"{name} must be finite")
        if (stds <= 0).any():
            raise ValueError("stds must all be > 0")
        if (weights <= 0).any():
            raise ValueError("weights must all be > 0")
        self.means = means.contiguous()
        self.vars = (stds ** 2).contiguous()
        self.weights = weights / weights.sum()
        self.K, self.D = K, D

    def __repr__(self):
        return f"GaussianMixture(K={self.K}, D={self.D})"

    # ---- data side -----------------------------------------------------------------------
    def sample(self, n: int, seed: int = 0, dtype: torch.dtype = torch.float64, start: int = 0) -> torch.Tensor:
        """n draws [n, D] from the counter generator; draw i depends only on (seed, start + i)."""
        n = check_int("n", n, lo=1)
        idx = torch.arange(start, start + n)
        u = _noise.uniform(seed, idx, 0, (1,), stream=_noise.STREAM_DATA, dtype=torch.float64)[:, 0]
        comp = torch.searchsorted(torch.cumsum(self.weights, 0)[:-1].contiguous(), u.contiguous(), right=True)
        z = _noise.normal(seed, idx, 1, (self.D,), stream=_noise.STREAM_DATA, dtype=torch.float64)
        return (self.means[comp] + self.vars[comp].sqrt() * z).to(dtype)

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.D:
            raise ValueError(f"x must hold D = {self.D} values per sample; got shape {tuple(x.shape)}")
        return flat

    def _noised(self, x, m, s):
        """Component log-densities [K, B] and (x - m mu_k) / var_k as [K, D, B].

        Batch-last layout: every op runs over contiguous B and reduces over outer dims,
        which is several times faster on CPU than [B, K, D] with a tiny inner D.
        """
        xt = self._flat(x).to(torch.float64).T                          # [D, B]
        m = torch.as_tensor(m, dtype=torch.float64, device=x.device).reshape(1, 1, -1)
        s = torch.as_tensor(s, dtype=torch.float64, device=x.device).reshape(1, 1, -1)
        var = m * m * on_device(self.vars, x.device)[:, :, None] + s * s   # [K, D, B]
        diff = xt[None] - m * on_device(self.means, x.device)[:, :, None]  # [K, D, B]
        scaled = diff / var
        logn = -0.5 * (diff * scaled + torch.log(2 * math.pi * var)).sum(1)  # [K, B]
        return logn + torch.log(on_device(self.weights, x.device))[:, None], scaled

    def noised_log_prob(self, x, m, s) -> torch.Tensor:
        """log p(x) of the mixture after x -> m x + s z; float64 [B]."""
        return torch.logsumexp(self._noised(x, m, s)[0], dim=0)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density of the clean mixture, float64 [B]."""
        check_finite("x", x)
        return self.noised_log_prob(x, 1.0, 0.0)

    def posterior(self, x, m=1.0, s=0.0) -> torch.Tensor:
        """p(component k | x) under the noised mixture, float64 [B, K]: the exact classifier."""
        check_finite("x", x)
        if not isinstance(s, torch.Tensor) and not check_real("s", s) >= 0:
            raise ValueError(f"s must be >= 0 (a noise std); got {s}")
        return torch.softmax(self._noised(x, m, s)[0], dim=0).T

    def noised_score(self, x, m, s) -> torch.Tensor:
        """grad_x log p(x) of the noised mixture, shaped and typed like x."""
        logw, scaled = self._noised(x, m, s)
        r = torch.softmax(logw, dim=0)                                   # [K, B]
        score = -(r[:, None, :] * scaled).sum(0)                         # [D, B]
        return score.T.reshape(x.shape).to(x.dtype).contiguous()

    def assign(self, x: torch.Tensor) -> torch.Tensor:
        """Most probable component of each clean sample [B]."""
        return self.posterior(x).argmax(dim=1)

    # ---- the exact model of a process ----------------------------------------------------
    def model(self, process, v: float = -1.0):
        """`model(x, t)` with the exact output `process` expects: the score of the noised
        marginal for NCSN (t = sigma) and SDEs (continuous t), eps for DDPM (integer t).

        For a learned_range DDPM, the variance half of the output is the constant v in
        [-1, 1] (-1 = beta~_t, the posterior variance; +1 = beta_t).
        """
        coeffs = _marginal_coeffs_fn(process)
        if not -1.0 <= v <= 1.0:
            raise ValueError(f"v must lie in [-1, 1]; got {v}")
        gm = self

        def exact_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            m, s = coeffs(per_sample_time(t, x))
            score = gm.noised_score(x, m, s)
            if process.output == "score":
                return score
            eps = P.eps_from_score(score, P.bcast(s.to(x.dtype), x))
            if process.variance == "learned_range":
                return torch.cat([eps, torch.full_like(eps, v)], dim=1)
            return eps

        exact_model.process = process
        return exact_model

    def classifier(self, process, k: int):
        """`log_prob(x, t)` = log p(component k | x_t) under `process`, exact and
        differentiable in x: the noise-conditional classifier for guided sampling."""
        coeffs = _marginal_coeffs_fn(process)
        k = check_int("k", k, lo=0, hi=self.K - 1)
        gm = self

        def log_prob(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            m, s = coeffs(per_sample_time(t, x))
            logw, _ = gm._noised(x, m, s)
            return logw[k] - torch.logsumexp(logw, dim=0)

        return log_prob

    def observation_log_likelihood(self, process, A, y):
        """`log_prob(x, t)` = log p(y | x_t) for a linear observation y = A x0 of the clean
        data (A [M, D], y [M]), exact: given component k, x0 | x_t is Gaussian, so y | x_t
        is a K-component Gaussian mixture. Guiding an unconditional score with it samples
        p(x | y) exactly, where replacing the known part (the score_sde imputation) does not."""
        coeffs = _marginal_coeffs_fn(process)
        A = torch.as_tensor(A, dtype=torch.float64)
        y = torch.as_tensor(y, dtype=torch.float64)
        if A.dim() != 2 or A.shape[1] != self.D:
            raise ValueError(f"A must have shape [M, D] with D = {self.D}; got {tuple(A.shape)}")
        if y.shape != (A.shape[0],):
            raise ValueError(f"y must have shape [M] = [{A.shape[0]}]; got {tuple(y.shape)}")
        gm = self

        def log_prob(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            m, s = coeffs(per_sample_time(t, x))
            m = torch.as_tensor(m, dtype=torch.float64).reshape(-1, 1, 1)
            s = torch.as_tensor(s, dtype=torch.float64).reshape(-1, 1, 1)
            logw, _ = gm._noised(x, m.flatten(), s.flatten())             # [K, B]
            log_r = (logw - torch.logsumexp(logw, 0)).T                    # [B, K]
            xf = gm._flat(x).to(torch.float64)[:, None, :]                 # [B, 1, D]
            v, mu = on_device(gm.vars, x.device), on_device(gm.means, x.device)  # [K, D]
            denom = s * s + m * m * v                                      # [B, K, D]
            post_mean = (s * s * mu + m * v * xf) / denom
            post_var = v * s * s / denom
            Ad = A.to(x.device)
            mean_y = post_mean @ Ad.T                                      # [B, K, M]
            cov_y = (Ad * post_var[..., None, :]) @ Ad.T                   # [B, K, M, M]
            cov_y = cov_y + 1e-12 * torch.eye(A.shape[0], dtype=torch.float64, device=x.device)
            L = torch.linalg.cholesky(cov_y)
            r = torch.linalg.solve_triangular(L, (y.to(x.device) - mean_y)[..., None], upper=False)[..., 0]
            log_n = (-0.5 * r.pow(2).sum(-1) - torch.log(torch.diagonal(L, dim1=-2, dim2=-1)).sum(-1)
                     - 0.5 * A.shape[0] * math.log(2 * math.pi))
            return torch.logsumexp(log_r + log_n, dim=1)

        return log_prob


def per_sample_time(t, x: torch.Tensor) -> torch.Tensor:
    """t as a tensor [B] on x's device (a scalar is broadcast to every sample)."""
    t = torch.as_tensor(t, device=x.device)
    return t.expand(x.shape[0]) if t.dim() == 0 else t


def _marginal_coeffs_fn(process):
    """t -> (m, s) of x_t = m x0 + s z for the time convention of `process`."""
    if isinstance(process, NCSN):
        return process.marginal_coeffs
    if isinstance(process, DDPM):
        return lambda t: process.marginal_coeffs(t.long())
    if isinstance(process, SDE):
        return lambda t: process.marginal_coeffs(t.to(torch.float64))
    raise ValueError(f"process must be an NCSN, DDPM or SDE; got {type(process).__name__}")
