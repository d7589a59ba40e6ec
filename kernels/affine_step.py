"""x_mean = a x + b score; x = x_mean + std z in one pass (Euler-Maruyama, reverse-diffusion
and ancestral predictors, probability-flow Euler with std = 0), z read or drawn in-kernel.
Reference: diffcore.ops.affine_step_reference."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from diffcore.ops import affine_step_reference as reference  # noqa: F401

from ._common import (STEP_BLOCK_G, acc_dtype, check_fake, check_step, coef, load_noise, noise_args, out_buffers,
                      per_sample, split_seed, step_grid, step_tile, tl_acc)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "stream"])
def _affine_step_kernel(
    X_ptr, SCORE_ptr,        # [B, M] state and score
    Z_ptr,                   # [B, M] noise (HAS_Z)
    IDX_ptr,                 # [B] int64 sample indices (in-kernel noise)
    A_ptr, B_ptr, STD_ptr,   # [B] per-sample coefficients (ACC dtype)
    OUT_ptr, MEAN_ptr,       # [B, M] x and x_mean, x's dtype
    M, nblocks,              # elements per sample, programs per sample
    seed_lo, seed_hi, step, stream,  # generator address (uint32 values)
    HAS_Z: tl.constexpr, ACC: tl.constexpr, BLOCK_G: tl.constexpr,
):
    b, g, e, mask = step_tile(M, nblocks, BLOCK_G)
    off = b * M + e
    x = tl.load(X_ptr + off, mask=mask, other=0.0).to(ACC)
    s = tl.load(SCORE_ptr + off, mask=mask, other=0.0).to(ACC)
    z = load_noise(Z_ptr, IDX_ptr, b, g, off, mask, seed_lo, seed_hi, step, stream,
                   HAS_Z, X_ptr.dtype.element_ty, ACC)
    mean = tl.load(A_ptr + b) * x + tl.load(B_ptr + b) * s
    out = mean + tl.load(STD_ptr + b) * z
    tl.store(OUT_ptr + off, out.to(OUT_ptr.dtype.element_ty), mask=mask)
    tl.store(MEAN_ptr + off, mean.to(MEAN_ptr.dtype.element_ty), mask=mask)


def affine_step_forward(x, score, a, b, std, z=None, sample_idx=None, seed_lo=0, seed_hi=0, step=0, stream=0,
                        *, out=None):
    """Launch the step; out = (x_out, x_mean) buffers optional. Returns (x_out, x_mean)."""
    check_step(x, {"score": score}, {"a": a, "b": b, "std": std}, z, sample_idx)
    acc = acc_dtype(x.dtype)
    x2, s2 = per_sample(x), per_sample(score)
    B, M = x2.shape
    zz, idx, *addr, has_z = noise_args(x2, z, sample_idx, seed_lo, seed_hi, step, stream)
    o, m = out_buffers(out, x2, 2)
    if B * M:
        grid, nblocks = step_grid(B, M)
        _affine_step_kernel[grid](x2, s2, zz, idx, coef(a, acc), coef(b, acc), coef(std, acc), o, m, M, nblocks,
                                  *addr, HAS_Z=has_z, ACC=tl_acc(x.dtype), BLOCK_G=STEP_BLOCK_G, num_warps=4)
    return o.view(x.shape), m.view(x.shape)


@torch.library.custom_op("diffcore_triton::affine_step", mutates_args=())
def affine_step_op(x: torch.Tensor, score: torch.Tensor, a: torch.Tensor, b: torch.Tensor, std: torch.Tensor,
                   z: Optional[torch.Tensor], sample_idx: Optional[torch.Tensor], seed_lo: int, seed_hi: int,
                   step: int, stream: int) -> tuple[torch.Tensor, torch.Tensor]:
    return affine_step_forward(x, score, a, b, std, z, sample_idx, seed_lo, seed_hi, step, stream)


@affine_step_op.register_fake
def _(x, score, a, b, std, z, sample_idx, seed_lo, seed_hi, step, stream):
    check_fake(x, {"score": score, "z": z}, {"a": a, "b": b, "std": std, "sample_idx": sample_idx})
    return torch.empty(x.shape, dtype=x.dtype, device=x.device), torch.empty(x.shape, dtype=x.dtype, device=x.device)


def affine_step(x, score, a, b, std, z, noise_address=None):
    """The op table's entry: (x, x_mean); z, or noise_address = (seed, sample_idx, step, stream)."""
    seed, idx, step, stream = noise_address if z is None else (0, None, 0, 0)
    return torch.ops.diffcore_triton.affine_step(x, score, a, b, std, z, idx, *split_seed(seed), int(step), int(stream))
