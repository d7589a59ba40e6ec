"""Controllable generation with an unconditional score (Song et al. 2021, §5 and App. I).

Linear observations: the known part of x is P x for an orthogonal projector P (symmetric,
P^2 = P), with known values b = P x_true. Inpainting (P = a 0/1 mask) and colorization
(P = projection on the grey direction (1, 1, 1)/sqrt(3) of each pixel's colour vector)
are the two classic cases; `LinearObservation.from_matrix` takes any A with orthonormal rows
(P = A^T A, b = A^T y).

- PC sampler: after every predictor and corrector update the known part is replaced by
  the forward-perturbed known data, P x <- m(t) b + s(t) P z (fresh z each time).
- ODE sampler: the drift only moves the free part, evaluated at
  (I - P) x + m(t) b + s(t) P z0 with z0 drawn once per sample, so the trajectory is smooth
  and the adaptive solver's error control stays meaningful.
- Both end with P x = b exactly.

Class guidance: `guided(model, log_prob, scale)` adds scale * grad_x log p(y | x_t, t).
"""
from __future__ import annotations

import math

import torch

from . import noise as _noise
from . import parameterization as P
from .validation import check_finite, check_positive

STREAM_OBSERVATION = 6 << 16  # + sub-step: noise that perturbs the known data


class LinearObservation:
    """Known part P x = b of every sample; `project` applies P to a batch [B, *shape]."""

    def __init__(self, project, known: torch.Tensor):
        if not callable(project):
            raise ValueError("project must be a callable applying the projector P to x")
        check_finite("known", known)
        self.project = project
        self.known = known

    # ---- constructors ------------------------------------------------------------------
    @classmethod
    def inpainting(cls, mask: torch.Tensor, values: torch.Tensor) -> "LinearObservation":
        """mask: 1 where x is known, 0 where it is free, one sample's shape; values: the known
        data, one sample's shape or [n, *shape] (one per sample)."""
        if not isinstance(mask, torch.Tensor) or not ((mask == 0) | (mask == 1)).all():
            raise ValueError("mask must be a tensor of 0s (free) and 1s (known)")
        check_finite("values", values)
        try:
            known = values * mask
        except RuntimeError:
            raise ValueError(f"values {tuple(values.shape)} must broadcast against mask {tuple(mask.shape)}") from None
        def project(x):
            if mask.shape != x.shape[1:]:
                raise ValueError(f"mask must have one sample's shape {tuple(x.shape[1:])}; got {tuple(mask.shape)}")
            return x * mask.to(x.device, x.dtype)

        return cls(project, known)

    @classmethod
    def colorization(cls, grey: torch.Tensor, channel_dim: int = 1) -> "LinearObservation":
        """grey: the grey coordinate g . x of each pixel, g = (1, 1, 1) / sqrt(3), shaped like
        the images without their channel dimension. Images are [n, 3, H, W] (channel_dim=1)."""
        check_finite("grey", grey)
        g = 1 / math.sqrt(3)

        def project(x):
            if x.shape[channel_dim] != 3:
                raise ValueError(f"colorization needs 3 channels in dim {channel_dim}; got shape {tuple(x.shape)}")
            return (x.sum(channel_dim, keepdim=True) * g).expand_as(x) * g

        return cls(project, (grey.unsqueeze(channel_dim) * g).expand(*grey.shape[:channel_dim], 3, *grey.shape[channel_dim:]))

    @classmethod
    def from_matrix(cls, A: torch.Tensor, y: torch.Tensor) -> "LinearObservation":
        """y = A x on flattened samples, A [M, D] with orthonormal rows; y [M] or [n, M]."""
        if A.dim() != 2:
            raise ValueError(f"A must be a matrix [M, D]; got shape {tuple(A.shape)}")
        gram = A @ A.T
        if not torch.allclose(gram, torch.eye(A.shape[0], dtype=A.dtype, device=A.device), atol=1e-6):
            raise ValueError("A must have orthonormal rows (A A^T = I)")
        if y.shape[-1] != A.shape[0]:
            raise ValueError(f"y must have A's {A.shape[0]} rows as its last dimension; got {tuple(y.shape)}")
        proj = A.T @ A

        def project(x):
            flat = x.reshape(x.shape[0], -1)
            return (flat @ proj.to(x.device, x.dtype)).reshape(x.shape)

        return cls(project, y.to(A.dtype) @ A)  # A^T y as a row per sample, flattened

    # ---- use inside samplers -----------------------------------------------------------
    def known_for(self, x: torch.Tensor, sample_idx: torch.Tensor) -> torch.Tensor:
        """b for this chunk: one sample's b for all, or row sample_idx of a per-sample b."""
        b = self.known.to(x.device, x.dtype)
        per = x[0].numel()
        if b.numel() == per:
            return b.reshape(1, *x.shape[1:]).expand_as(x)
        if b.dim() >= 1 and b[0].numel() == per and b.shape[0] > int(sample_idx.max()):
            return b[sample_idx.to(b.device)].reshape(x.shape)
        raise ValueError(f"the observation's known values {tuple(self.known.shape)} must hold one sample "
                         f"({tuple(x.shape[1:])}) or one per sample [n, *shape]")

    def replace(self, x, m, s, b, z):
        """(I - P) x + m b + s P z, with m and s shaped to broadcast against x."""
        return x - self.project(x) + m * b + s * self.project(z)

    def finalize(self, x, b):
        return x - self.project(x) + b


def guided(model, log_prob, scale: float = 1.0, process=None):
    """A score model plus scale * grad_x log p(y | x_t, t); log_prob(x, t) -> [B].

    For an eps model (pass its DDPM `process`) the guidance is applied to the score it
    stands for: eps - s_t * scale * grad, since eps = -s_t * score.
    """
    scale = check_positive("scale", scale, allow_zero=True)
    if process is not None and getattr(process, "output", None) not in ("score", "eps"):
        raise ValueError(f"process must be an NCSN, DDPM or SDE; got {type(process).__name__}")
    eps_model = process is not None and process.output == "eps"
    if eps_model and process.variance == "learned_range":
        raise ValueError("guided() does not support variance='learned_range' eps models yet")

    def guided_model(x, t):
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            grad, = torch.autograd.grad(log_prob(xg, t).sum(), xg)
        grad = scale * grad.to(x.dtype)
        if eps_model:
            _, s = process.marginal_coeffs(t)
            return model(x, t) - P.bcast(s.to(x.dtype), x) * grad
        return model(x, t) + grad

    return guided_model


def check_observation(observation) -> LinearObservation:
    if not isinstance(observation, LinearObservation):
        raise ValueError(f"observation must be a diffcore.controllable.LinearObservation; got {type(observation).__name__}")
    return observation


def observation_noise(noise: _noise.NoiseSource, step: int, sub: int) -> torch.Tensor:
    return noise.normal(step, STREAM_OBSERVATION + sub)
