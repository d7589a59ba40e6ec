"""A full-covariance Gaussian: data whose every noised marginal, score and conditional is exact.

If x0 ~ N(mu, Sigma) and x_t = m x0 + s z, then x_t ~ N(m mu, m^2 Sigma + s^2 I). With the
eigendecomposition Sigma = U diag(lam) U^T (computed once) the noised covariance is
U diag(m^2 lam + s^2) U^T, so its density and score cost one rotation per sample. Unlike
GaussianMixture's diagonal components, Sigma may be anisotropic and rotated, which makes the
probability-flow Jacobian non-diagonal: a real test of likelihoods and divergence estimators.
"""
from __future__ import annotations

import math

import torch

from . import noise as _noise
from .closed_form import per_sample_time
from .device_cache import on_device
from .sde import SDE
from .validation import check_finite, check_int


class Gaussian:
    """N(mean, cov) in D dimensions, held in float64; outputs follow the input's dtype.

    mean: [D]; cov: [D, D], symmetric (to ~1e-10 relative) and positive definite.
    """

    def __init__(self, mean, cov):
        mean = torch.as_tensor(mean, dtype=torch.float64)
        if mean.dim() != 1 or mean.shape[0] < 1:
            raise ValueError(f"mean must have shape [D] with D >= 1; got {tuple(mean.shape)}")
        D = mean.shape[0]
        cov = torch.as_tensor(cov, dtype=torch.float64)
        if cov.shape != (D, D):
            raise ValueError(f"cov must have shape [D, D] = [{D}, {D}]; got {tuple(cov.shape)}")
        for name, v in (("mean", mean), ("cov", cov)):
            if not torch.isfinite(v).all():
                raise ValueError(f"{name} must be finite")
        scale = cov.abs().max().item()
        asym = (cov - cov.T).abs().max().item()
        if asym > 1e-10 * max(scale, 1e-300):
            raise ValueError(f"cov must be symmetric; max |cov - cov^T| = {asym:.3g}")
        cov = 0.5 * (cov + cov.T)
        lam, U = torch.linalg.eigh(cov)
        # Positive definite, with the smallest eigenvalue resolvable in float64.
        if lam[0].item() <= D * 1e-14 * max(lam[-1].item(), 0.0) or lam[0].item() <= 0:
            raise ValueError(f"cov must be positive definite; its smallest eigenvalue is {lam[0].item():.3g}")
        self.mean, self.cov = mean.contiguous(), cov.contiguous()
        self.eigvals, self.eigvecs = lam.contiguous(), U.contiguous()
        self.D = D

    def __repr__(self):
        return f"Gaussian(D={self.D})"

    # ---- data side -----------------------------------------------------------------------
    def sample(self, n: int, seed: int = 0, dtype: torch.dtype = torch.float64, start: int = 0) -> torch.Tensor:
        """n draws [n, D] = mean + Sigma^{1/2} z from the counter generator (symmetric root);
        draw i depends only on (seed, start + i)."""
        n = check_int("n", n, lo=1)
        start = check_int("start", start, lo=0)
        idx = torch.arange(start, start + n)
        z = _noise.normal(seed, idx, 1, (self.D,), stream=_noise.STREAM_DATA, dtype=torch.float64)
        root = (self.eigvecs * self.eigvals.sqrt()) @ self.eigvecs.T
        return (self.mean + z @ root).to(dtype).contiguous()

    def _flat(self, x: torch.Tensor) -> torch.Tensor:
        check_finite("x", x)
        if x.dim() < 2:
            raise ValueError(f"x must have shape [B, ...] with D = {self.D} values per sample; got {tuple(x.shape)}")
        flat = x.reshape(x.shape[0], -1)
        if flat.shape[1] != self.D:
            raise ValueError(f"x must hold D = {self.D} values per sample; got shape {tuple(x.shape)}")
        return flat

    def _coeff(self, name: str, v, x: torch.Tensor) -> torch.Tensor:
        """m or s as float64 [B, 1] (a scalar is broadcast)."""
        v = torch.as_tensor(v, dtype=torch.float64, device=x.device)
        B = x.shape[0]
        if v.dim() == 0:
            v = v.expand(B)
        if v.shape != (B,):
            raise ValueError(f"{name} must be a scalar or have shape [B] = [{B}]; got {tuple(v.shape)}")
        if not torch.isfinite(v).all():
            raise ValueError(f"{name} must be finite")
        return v[:, None]

    def _noised(self, x, m, s):
        """(w, var): x - m mu in the eigenbasis and the noised variances, both float64 [B, D]."""
        flat = self._flat(x).to(torch.float64)
        m, s = self._coeff("m", m, x), self._coeff("s", s, x)
        if (s < 0).any():
            raise ValueError("s must be >= 0")
        U = on_device(self.eigvecs, x.device)
        var = m * m * on_device(self.eigvals, x.device) + s * s           # [B, D]
        if not (var > 0).all():
            raise ValueError("m and s must not both be 0 (the noised covariance m^2 cov + s^2 I is singular)")
        w = (flat - m * on_device(self.mean, x.device)) @ U               # [B, D]
        return w, var

    def noised_log_prob(self, x, m, s) -> torch.Tensor:
        """log N(x; m mean, m^2 cov + s^2 I), float64 [B]; m, s scalars or [B]."""
        w, var = self._noised(x, m, s)
        return -0.5 * (w * w / var + torch.log(2 * math.pi * var)).sum(1)

    def log_prob(self, x: torch.Tensor) -> torch.Tensor:
        """Exact log-density log N(x; mean, cov), float64 [B]."""
        return self.noised_log_prob(x, 1.0, 0.0)

    def noised_score(self, x, m, s) -> torch.Tensor:
        """grad_x log N(x; m mean, m^2 cov + s^2 I), shaped and typed like x."""
        w, var = self._noised(x, m, s)
        score = -(w / var) @ on_device(self.eigvecs, x.device).T
        return score.reshape(x.shape).to(x.dtype).contiguous()

    def score(self, x: torch.Tensor) -> torch.Tensor:
        return self.noised_score(x, 1.0, 0.0)

    # ---- the exact model of an SDE ---------------------------------------------------------
    def model(self, process):
        """`model(x, t)` = the exact score of the noised marginal of `process` (an SDE; t
        continuous, a scalar or [B])."""
        if not isinstance(process, SDE):
            raise ValueError(f"process must be a VESDE, VPSDE or SubVPSDE (an SDE); got {type(process).__name__}")
        g = self

        def exact_model(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
            m, s = process.marginal_coeffs(per_sample_time(t, x).to(torch.float64))
            return g.noised_score(x, m, s)

        exact_model.process = process
        return exact_model

    # ---- conditioning ----------------------------------------------------------------------
    def free_index(self, known_idx) -> torch.Tensor:
        """The coordinates not in known_idx, ascending: the order conditional() returns them in."""
        known = self._known(known_idx)
        mask = torch.ones(self.D, dtype=torch.bool)
        mask[known] = False
        return mask.nonzero().squeeze(1)

    @staticmethod
    def _as_index(known_idx) -> torch.Tensor:
        k = torch.as_tensor(known_idx).cpu()
        if k.numel() == 0 and k.dim() == 1 and k.dtype != torch.bool:
            k = k.to(torch.int64)  # [] arrives as float32
        return k

    def _known(self, known_idx) -> torch.Tensor:
        k = self._as_index(known_idx)
        if k.dtype == torch.bool:
            if k.shape != (self.D,):
                raise ValueError(f"known_idx as a boolean mask must have shape [D] = [{self.D}]; got {tuple(k.shape)}")
            return k.nonzero().squeeze(1)
        if k.dtype.is_floating_point or k.dtype.is_complex or k.dim() != 1:
            raise ValueError("known_idx must be a 1-D sequence of integer indices or a boolean mask of shape [D]; "
                             f"got dtype {k.dtype}, shape {tuple(k.shape)}")
        k = k.to(torch.int64)
        if k.numel() and (k.min() < 0 or k.max() >= self.D):
            raise ValueError(f"known_idx must lie in [0, {self.D - 1}]; got {k.tolist()}")
        if k.unique().numel() != k.numel():
            raise ValueError(f"known_idx must not repeat an index; got {k.tolist()}")
        return k.sort().values

    def conditional(self, known_idx, values):
        """(mean, cov) of the free coordinates given x[known_idx] = values, exactly:
        mean = mu_f + S_fk S_kk^{-1} (values - mu_k), cov = S_ff - S_fk S_kk^{-1} S_kf.

        known_idx: integer indices (any order, matched to values' last axis) or a boolean
        mask [D] (values then in ascending coordinate order). values: [K] or [B, K].
        Free coordinates come in ascending order (see free_index). mean is [F] or [B, F],
        cov [F, F]; both typed like values.
        """
        k_raw = self._as_index(known_idx)
        known = self._known(known_idx)
        K = known.numel()
        if K == self.D:
            raise ValueError("known_idx must leave at least one coordinate free")
        check_finite("values", values)
        if values.dim() not in (1, 2) or values.shape[-1] != K:
            raise ValueError(f"values must have shape [K] or [B, K] with K = {K} (len(known_idx)); "
                             f"got {tuple(values.shape)}")
        if k_raw.dtype != torch.bool and K:
            # values follow known_idx's order; reorder them to ascending coordinates.
            values = values[..., k_raw.to(torch.int64).argsort().to(values.device)]
        free = self.free_index(known)
        dev = values.device
        S, mu = self.cov.to(dev), self.mean.to(dev)
        fi, ki = free.to(dev), known.to(dev)
        S_ff = S[fi][:, fi]
        if K == 0:
            mean = mu[fi].expand(*values.shape[:-1], free.numel())
            return mean.to(values.dtype).contiguous(), S_ff.to(values.dtype).contiguous()
        S_kk, S_fk = S[ki][:, ki], S[fi][:, ki]
        L = torch.linalg.cholesky(S_kk)
        A = torch.cholesky_solve(S_fk.T, L).T                           # S_fk S_kk^{-1}: [F, K]
        mean = mu[fi] + (values.to(torch.float64) - mu[ki]) @ A.T
        cov = S_ff - A @ S_fk.T
        cov = 0.5 * (cov + cov.T)
        return mean.to(values.dtype).contiguous(), cov.to(values.dtype).contiguous()
