"""Shared pieces of the kernel launchers: accumulation dtype, per-sample flattening, the
noise argument of the step kernels, and the in-kernel noise loader."""
from __future__ import annotations

import math

import torch
import triton
import triton.language as tl

from .philox import normal_tile

# Elements of one step-kernel program: BLOCK_G word groups of 4 (one Philox call each).
STEP_BLOCK_G = 256


def acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 math for float64 tensors, float32 for everything else (fp32/fp16/bf16)."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def tl_acc(dtype: torch.dtype):
    return tl.float64 if dtype == torch.float64 else tl.float32


def per_sample(x: torch.Tensor) -> torch.Tensor:
    """x as a contiguous [B, M] tensor (element m of row b is x[b].flatten()[m])."""
    return x.contiguous().reshape(x.shape[0], math.prod(x.shape[1:]))


def coef(c: torch.Tensor, acc: torch.dtype) -> torch.Tensor:
    """A per-sample coefficient [B] as a contiguous tensor of the accumulation dtype."""
    return c.to(acc).contiguous()


def noise_args(x2: torch.Tensor, z, sample_idx, seed_lo: int, seed_hi: int, step: int, stream: int):
    """Kernel arguments (Z_ptr, IDX_ptr, seed_lo, seed_hi, step, stream, HAS_Z) for either an
    explicit noise tensor z or the generator address; unused pointers get x itself."""
    if z is not None:
        return per_sample(z), x2, 0, 0, 0, 0, True
    if sample_idx is None:
        raise ValueError("a step needs either z or a noise address (seed, sample_idx, step, stream)")
    idx = sample_idx.to(device=x2.device, dtype=torch.int64).contiguous()
    for name, v in (("seed_lo", seed_lo), ("seed_hi", seed_hi), ("step", step), ("stream", stream)):
        if not 0 <= v <= 0xFFFFFFFF:
            raise ValueError(f"noise address {name} must be in [0, 2**32); got {v}")
    return x2, idx, int(seed_lo), int(seed_hi), int(step), int(stream), False


def split_seed(seed: int) -> tuple[int, int]:
    seed = int(seed)
    if not 0 <= seed < 2 ** 64:
        raise ValueError(f"seed must be in [0, 2**64); got {seed}")
    return seed & 0xFFFFFFFF, seed >> 32


def step_grid(B: int, M: int):
    """(grid, blocks per sample) of a step kernel: one 1-D axis over B x blocks, so neither
    the batch nor the sample size meets CUDA's 65535 limit on grid axes 1 and 2."""
    nblocks = triton.cdiv(M, 4 * STEP_BLOCK_G)
    return (B * nblocks,), nblocks


@triton.jit
def step_tile(M, nblocks, BLOCK_G: tl.constexpr):
    """(sample b, word groups g [BLOCK_G], element offsets within the sample [BLOCK_G, 4],
    mask) of this program of a step kernel."""
    pid = tl.program_id(0).to(tl.int64)
    b = pid // nblocks
    g = (pid % nblocks) * BLOCK_G + tl.arange(0, BLOCK_G).to(tl.int64)
    e = g[:, None] * 4 + tl.arange(0, 4)[None, :]
    return b, g, e, e < M


@triton.jit
def load_noise(Z_ptr, IDX_ptr, b, g, off, mask, seed_lo, seed_hi, step, stream,
               HAS_Z: tl.constexpr, X_DTYPE: tl.constexpr, ACC: tl.constexpr):
    """The step's noise at flat offsets `off` (= b * M + element): loaded from Z when HAS_Z,
    else drawn from the counter generator at (element // 4, IDX[b], step, stream) and, like
    the reference, rounded to x's dtype before use."""
    if HAS_Z:
        z = tl.load(Z_ptr + off, mask=mask, other=0.0).to(ACC)
    else:
        sample = tl.load(IDX_ptr + b)
        z = normal_tile(g, sample, step, stream, seed_lo, seed_hi).to(X_DTYPE).to(ACC)
        z = tl.where(mask, z, 0.0)
    return z


def out_buffers(out, x2: torch.Tensor, k: int):
    """k output buffers for a step on x2 [B, M]: new ones, or the caller's `out` (a tensor or
    a tuple of k contiguous tensors of x's dtype and size, e.g. NaN-poisoned by a test)."""
    if out is None:
        return tuple(torch.empty_like(x2) for _ in range(k))
    out = tuple(out) if isinstance(out, (tuple, list)) else (out,)
    if len(out) != k or any(not o.is_contiguous() or o.numel() != x2.numel() or o.dtype != x2.dtype
                            or o.device != x2.device for o in out):
        raise ValueError(f"out must be {k} contiguous tensor(s) of x's size, dtype and device")
    return out
