"""DDIM step (eq. 12) in one pass: x0 = (x - sqrt(1 - abar_t) eps) / sqrt(abar_t) (clipped
if asked); x_prev = sqrt(abar_prev) x0 + sqrt(max(1 - abar_prev - std^2, 0)) eps + std z,
std = eta sqrt((1 - abar_prev)/(1 - abar_t) (1 - abar_t/abar_prev)). z read or drawn in-kernel.
Reference: diffcore.ops.ddim_step_reference."""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from diffcore.ops import ddim_step_reference as reference  # noqa: F401

from ._common import (STEP_BLOCK_G, acc_dtype, check_fake, check_step, coef, load_noise, noise_args, out_buffers,
                      per_sample, split_seed, step_grid, step_tile, tl_acc)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "stream"])
def _ddim_step_kernel(
    X_ptr, EPS_ptr,          # [B, M] x_t and the predicted noise
    Z_ptr, IDX_ptr,          # [B, M] noise (HAS_Z) / [B] int64 sample indices
    AT_ptr, AP_ptr, ETA_ptr,  # [B] abar_t, abar_prev, eta (ACC dtype)
    OUT_ptr, X0_ptr,         # [B, M] x_prev and pred_x0 (x's dtype)
    M, nblocks, seed_lo, seed_hi, step, stream,
    CLIP: tl.constexpr, HAS_Z: tl.constexpr, ACC: tl.constexpr, BLOCK_G: tl.constexpr,
):
    b, g, e, mask = step_tile(M, nblocks, BLOCK_G)
    off = b * M + e
    at = tl.load(AT_ptr + b)
    ap = tl.load(AP_ptr + b)
    std = tl.load(ETA_ptr + b) * tl.sqrt((1.0 - ap) / (1.0 - at) * (1.0 - at / ap))
    c_eps = tl.sqrt(tl.maximum(1.0 - ap - std * std, 0.0))
    x = tl.load(X_ptr + off, mask=mask, other=0.0).to(ACC)
    eps = tl.load(EPS_ptr + off, mask=mask, other=0.0).to(ACC)
    x0 = (x - tl.sqrt(1.0 - at) * eps) / tl.sqrt(at)
    if CLIP:
        x0 = tl.minimum(tl.maximum(x0, -1.0), 1.0)
    z = load_noise(Z_ptr, IDX_ptr, b, g, off, mask, seed_lo, seed_hi, step, stream,
                   HAS_Z, X_ptr.dtype.element_ty, ACC)
    out = tl.sqrt(ap) * x0 + c_eps * eps + std * z
    tl.store(OUT_ptr + off, out.to(OUT_ptr.dtype.element_ty), mask=mask)
    tl.store(X0_ptr + off, x0.to(X0_ptr.dtype.element_ty), mask=mask)


def ddim_step_forward(x, eps, abar_t, abar_prev, eta, z=None, sample_idx=None, seed_lo=0, seed_hi=0, step=0,
                      stream=0, clip_denoised=False, *, out=None):
    """Launch the step; out = (x_prev, x0) buffers optional. Returns (x_prev, x0)."""
    check_step(x, {"eps": eps}, {"abar_t": abar_t, "abar_prev": abar_prev, "eta": eta}, z, sample_idx)
    acc = acc_dtype(x.dtype)
    x2 = per_sample(x)
    B, M = x2.shape
    zz, idx, *addr, has_z = noise_args(x2, z, sample_idx, seed_lo, seed_hi, step, stream)
    outs = out_buffers(out, x2, 2)
    if B * M:
        grid, nblocks = step_grid(B, M)
        _ddim_step_kernel[grid](x2, per_sample(eps), zz, idx, *(coef(t, acc) for t in (abar_t, abar_prev, eta)),
                                *outs, M, nblocks, *addr, CLIP=bool(clip_denoised), HAS_Z=has_z,
                                ACC=tl_acc(x.dtype), BLOCK_G=STEP_BLOCK_G, num_warps=4)
    return tuple(o.view(x.shape) for o in outs)


@torch.library.custom_op("diffcore_triton::ddim_step", mutates_args=())
def ddim_step_op(x: torch.Tensor, eps: torch.Tensor, abar_t: torch.Tensor, abar_prev: torch.Tensor,
                 eta: torch.Tensor, z: Optional[torch.Tensor], sample_idx: Optional[torch.Tensor], seed_lo: int,
                 seed_hi: int, step: int, stream: int, clip_denoised: bool) -> tuple[torch.Tensor, torch.Tensor]:
    return ddim_step_forward(x, eps, abar_t, abar_prev, eta, z, sample_idx, seed_lo, seed_hi, step, stream,
                             clip_denoised)


@ddim_step_op.register_fake
def _(x, eps, abar_t, abar_prev, eta, z, sample_idx, seed_lo, seed_hi, step, stream, clip_denoised):
    check_fake(x, {"eps": eps, "z": z},
               {"abar_t": abar_t, "abar_prev": abar_prev, "eta": eta, "sample_idx": sample_idx})
    return tuple(torch.empty(x.shape, dtype=x.dtype, device=x.device) for _ in range(2))


def ddim_step(x, eps, abar_t, abar_prev, eta, z, noise_address=None, clip_denoised=False):
    """The op table's entry: (x_prev, pred_x0)."""
    seed, idx, step, stream = noise_address if z is None else (0, None, 0, 0)
    return torch.ops.diffcore_triton.ddim_step(x, eps, abar_t, abar_prev, eta, z, idx, *split_seed(seed),
                                               int(step), int(stream), bool(clip_denoised))
