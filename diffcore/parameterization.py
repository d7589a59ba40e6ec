"""Conversions between what a network may predict, in one place.

Every process here perturbs data as x_t = m * x0 + s * eps with eps ~ N(0, I), where
(m, s) is the process's marginal at t (NCSN: m = 1, s = sigma; DDPM: m = sqrt(abar),
s = sqrt(1 - abar); SDEs: marginal_prob). From that one identity:
    score = -eps / s                     (the score of the noised marginal, given x0's posterior)
    x0    = (x - s * eps) / m            (Tweedie: x0 = (x + s^2 * score) / m)
    v     = m * eps - s * x0             (Salimans & Ho's v; for m^2 + s^2 = 1 the usual one)
m and s broadcast against x: pass them already shaped [B, 1, ...] or as Python floats.
"""
from __future__ import annotations

import torch


def bcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A per-sample vector [B] reshaped to [B, 1, ..., 1] to broadcast against x [B, ...]."""
    return v.reshape(v.shape[0], *([1] * (x.dim() - 1)))


def _pair(x, name, y) -> None:
    """x and the prediction y must have one shape (m and s broadcast; x and y do not)."""
    if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor) and x.shape != y.shape:
        raise ValueError(f"{name} must have x's shape {tuple(x.shape)}; got {tuple(y.shape)}")


def score_from_eps(eps, s):
    return -eps / s


def eps_from_score(score, s):
    return -score * s


def x0_from_eps(x, eps, m, s):
    _pair(x, "eps", eps)
    return (x - s * eps) / m


def eps_from_x0(x, x0, m, s):
    _pair(x, "x0", x0)
    return (x - m * x0) / s


def x0_from_score(x, score, m, s):
    _pair(x, "score", score)
    return (x + s * s * score) / m


def score_from_x0(x, x0, m, s):
    _pair(x, "x0", x0)
    return -(x - m * x0) / (s * s)


def v_from_eps(x, eps, m, s):
    _pair(x, "eps", eps)
    return m * eps - s * x0_from_eps(x, eps, m, s)


def x0_from_v(x, v, m, s):
    _pair(x, "v", v)
    return (m * x - s * v) / (m * m + s * s)


def eps_from_v(x, v, m, s):
    _pair(x, "v", v)
    return (s * x + m * v) / (m * m + s * s)
