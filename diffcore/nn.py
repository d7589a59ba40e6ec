"""Fused building blocks for diffusion U-Nets. Dispatch only: every computation goes through
diffcore.ops, so a faster backend (Triton on CUDA, the C++ extension on CPU) speeds up any
model built from these modules with no change to the model.

Parameter names match torch.nn.GroupNorm (weight, bias), so state_dicts stay compatible
when diffcore.accelerate swaps these modules into an existing network.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import ops
from .validation import check_int


class GroupNormSiLU(nn.Module):
    """SiLU(GroupNorm(x + emb)) in one pass; silu=False gives plain GroupNorm.

    emb (optional, [N, C]) is added to x before the statistics: the residual block's
    timestep-embedding add fused into its second normalization.
    backend (attribute, default None: the op table's choice) pins the backend of diffcore.ops;
    diffcore.accelerate(module, backend=...) sets it.
    """

    backend: str | None = None

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5, affine: bool = True,
                 silu: bool = True):
        super().__init__()
        check_int("num_groups", num_groups, lo=1)
        check_int("num_channels", num_channels, lo=1)
        if num_channels % num_groups:
            raise ValueError(f"num_channels ({num_channels}) must be divisible by num_groups ({num_groups})")
        self.num_groups, self.num_channels, self.eps, self.silu = num_groups, num_channels, eps, silu
        self.affine = affine
        if affine:
            self.weight = nn.Parameter(torch.ones(num_channels))
            self.bias = nn.Parameter(torch.zeros(num_channels))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: torch.Tensor, emb: torch.Tensor | None = None) -> torch.Tensor:
        # under autocast x may be bf16/fp16 while weight stays fp32: the op accumulates in fp32
        return ops.group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps, emb=emb, silu=self.silu,
                                   backend=self.backend)

    def extra_repr(self) -> str:
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}, affine={self.affine}, silu={self.silu}"


def residual_add(skip: torch.Tensor, h: torch.Tensor, scale: float = 1.0, backend: str | None = None) -> torch.Tensor:
    """(skip + h) * scale through the op table (the residual block's epilogue)."""
    if skip.dtype != h.dtype:  # autocast may leave the two branches in different precisions
        skip = skip.to(h.dtype)
    return ops.residual_add(skip, h, scale, backend=backend)


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """Sinusoidal embedding of (possibly fractional) timesteps t [B] -> [B, dim] (DDPM / tensor2tensor:
    sin half first, then cos; an odd dim gets a zero column)."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, dtype=torch.float32, device=t.device) / max(half - 1, 1))
    args = t.to(torch.float32)[:, None] * freqs[None]
    emb = torch.cat([torch.sin(args), torch.cos(args)], dim=1)
    if dim % 2:
        emb = nn.functional.pad(emb, (0, 1))
    return emb


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log sigma (NCSN++ for VE): fixed, not trained, but saved."""

    def __init__(self, dim: int, scale: float = 16.0, seed: int = 0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("W", torch.randn(dim // 2, generator=g) * scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        proj = x.to(torch.float32)[:, None] * self.W[None, :] * (2 * math.pi)
        return torch.cat([torch.sin(proj), torch.cos(proj)], dim=1)
