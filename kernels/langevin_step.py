"""Langevin corrector step: step = 2 alpha (snr |z| / |score|)^2 with the norms per sample
or batch-averaged; x_mean = x + step score; x = x_mean + sqrt(2 step) z. Two kernels: a
reduction (per-block sums of score^2 and z^2, z drawn in-kernel when no tensor is given),
then the update (z drawn again from the same counters: no noise tensor ever touches memory).
Reference: diffcore.ops.langevin_step_reference."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from diffcore.ops import langevin_step_reference as reference  # noqa: F401

from ._common import (STEP_BLOCK_G, acc_dtype, check_fake, check_step, coef, load_noise, noise_args, out_buffers,
                      per_sample, split_seed, step_grid, step_tile, tl_acc)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "stream"])
def _langevin_norms_kernel(
    SCORE_ptr,               # [B, M] score
    Z_ptr, IDX_ptr,          # [B, M] noise (HAS_Z) / [B] int64 sample indices
    PART_ptr,                # [B * nblocks, 2] per-program sums of score^2 and z^2 (ACC dtype)
    M, nblocks, seed_lo, seed_hi, step, stream,
    HAS_Z: tl.constexpr, ACC: tl.constexpr, BLOCK_G: tl.constexpr,
):
    b, g, e, mask = step_tile(M, nblocks, BLOCK_G)
    off = b * M + e
    s = tl.load(SCORE_ptr + off, mask=mask, other=0.0).to(ACC)
    z = load_noise(Z_ptr, IDX_ptr, b, g, off, mask, seed_lo, seed_hi, step, stream,
                   HAS_Z, SCORE_ptr.dtype.element_ty, ACC)
    pid = tl.program_id(0).to(tl.int64)
    tl.store(PART_ptr + pid * 2, tl.sum(tl.sum(s * s, axis=1), axis=0))
    tl.store(PART_ptr + pid * 2 + 1, tl.sum(tl.sum(z * z, axis=1), axis=0))


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "stream"])
def _langevin_update_kernel(
    X_ptr, SCORE_ptr,        # [B, M] state and score
    Z_ptr, IDX_ptr,          # [B, M] noise (HAS_Z) / [B] int64 sample indices
    STEP_ptr, NSTD_ptr,      # [B] step size and sqrt(2 step) (ACC dtype)
    OUT_ptr, MEAN_ptr,       # [B, M] x and x_mean (x's dtype)
    M, nblocks, seed_lo, seed_hi, step, stream,
    HAS_Z: tl.constexpr, ACC: tl.constexpr, BLOCK_G: tl.constexpr,
):
    b, g, e, mask = step_tile(M, nblocks, BLOCK_G)
    off = b * M + e
    x = tl.load(X_ptr + off, mask=mask, other=0.0).to(ACC)
    s = tl.load(SCORE_ptr + off, mask=mask, other=0.0).to(ACC)
    z = load_noise(Z_ptr, IDX_ptr, b, g, off, mask, seed_lo, seed_hi, step, stream,
                   HAS_Z, X_ptr.dtype.element_ty, ACC)
    mean = x + tl.load(STEP_ptr + b) * s
    out = mean + tl.load(NSTD_ptr + b) * z
    tl.store(OUT_ptr + off, out.to(OUT_ptr.dtype.element_ty), mask=mask)
    tl.store(MEAN_ptr + off, mean.to(MEAN_ptr.dtype.element_ty), mask=mask)


def langevin_step_forward(x, score, alpha, snr, z=None, sample_idx=None, seed_lo=0, seed_hi=0, step=0, stream=0,
                          norm="per_sample", *, out=None):
    """Launch the reduction and the update; out = (x, x_mean) buffers optional."""
    if norm not in ("per_sample", "batch"):
        raise ValueError(f"norm must be 'per_sample' or 'batch'; got {norm!r}")
    check_step(x, {"score": score}, {"alpha": alpha}, z, sample_idx)
    if not float(snr) > 0:
        raise ValueError(f"snr must be > 0; got {snr}")
    acc = acc_dtype(x.dtype)
    x2, s2 = per_sample(x), per_sample(score)
    B, M = x2.shape
    zz, idx, *addr, has_z = noise_args(x2, z, sample_idx, seed_lo, seed_hi, step, stream)
    o, m = out_buffers(out, x2, 2)
    if B * M == 0:
        return o.view(x.shape), m.view(x.shape)
    grid, nblocks = step_grid(B, M)
    part = torch.empty((B, nblocks, 2), dtype=acc, device=x.device)
    kw = dict(HAS_Z=has_z, ACC=tl_acc(x.dtype), BLOCK_G=STEP_BLOCK_G, num_warps=4)
    _langevin_norms_kernel[grid](s2, zz, idx, part, M, nblocks, *addr, **kw)
    sums = part.sum(1)                       # [B, 2]
    g, n = sums[:, 0].sqrt(), sums[:, 1].sqrt()
    if norm == "batch":
        g, n = g.mean().expand(B), n.mean().expand(B)
    step_size = (2 * coef(alpha, acc) * (float(snr) * n / g) ** 2).contiguous()
    nstd = (2 * step_size).sqrt().contiguous()
    _langevin_update_kernel[grid](x2, s2, zz, idx, step_size, nstd, o, m, M, nblocks, *addr, **kw)
    return o.view(x.shape), m.view(x.shape)


@torch.library.custom_op("diffcore_triton::langevin_step", mutates_args=())
def langevin_step_op(x: torch.Tensor, score: torch.Tensor, alpha: torch.Tensor, snr: float,
                     z: Optional[torch.Tensor], sample_idx: Optional[torch.Tensor], seed_lo: int, seed_hi: int,
                     step: int, stream: int, norm: str) -> tuple[torch.Tensor, torch.Tensor]:
    return langevin_step_forward(x, score, alpha, snr, z, sample_idx, seed_lo, seed_hi, step, stream, norm)


@langevin_step_op.register_fake
def _(x, score, alpha, snr, z, sample_idx, seed_lo, seed_hi, step, stream, norm):
    check_fake(x, {"score": score, "z": z}, {"alpha": alpha, "sample_idx": sample_idx})
    return tuple(torch.empty(x.shape, dtype=x.dtype, device=x.device) for _ in range(2))


def langevin_step(x, score, alpha, snr, z, noise_address=None, norm="per_sample"):
    """The op table's entry: (x, x_mean)."""
    seed, idx, step, stream = noise_address if z is None else (0, None, 0, 0)
    return torch.ops.diffcore_triton.langevin_step(x, score, alpha, float(snr), z, idx, *split_seed(seed),
                                                   int(step), int(stream), str(norm))
