"""DDPM ancestral step in one pass: x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps (clipped to
[-1, 1] if asked), mean = coef_x0 x0 + coef_xt x, x_prev = mean + exp(log_var / 2) z with a
fixed per-sample log-variance or the learned range (v like x):
log_var = (v + 1)/2 log_var_max + (1 - v)/2 log_var. z read or drawn in-kernel.
Reference: diffcore.ops.ddpm_step_reference."""
from __future__ import annotations

from typing import Optional

import torch
import triton.language as tl
import triton

from diffcore.ops import ddpm_step_reference as reference  # noqa: F401

from ._common import (STEP_BLOCK_G, acc_dtype, check_fake, check_step, coef, load_noise, noise_args, out_buffers,
                      per_sample, split_seed, step_grid, step_tile, tl_acc)


@triton.jit(do_not_specialize=["seed_lo", "seed_hi", "step", "stream"])
def _ddpm_step_kernel(
    X_ptr, EPS_ptr,          # [B, M] x_t and the predicted noise
    V_ptr,                   # [B, M] learned-range interpolation v (HAS_V)
    Z_ptr, IDX_ptr,          # [B, M] noise (HAS_Z) / [B] int64 sample indices
    SRA_ptr, SRM1_ptr,       # [B] sqrt(1/abar), sqrt(1/abar - 1)
    CX0_ptr, CXT_ptr,        # [B] posterior mean coefficients
    LV_ptr, LVMAX_ptr,       # [B] log-variance (the minimum with v), maximum (HAS_V)
    OUT_ptr, MEAN_ptr, X0_ptr,   # [B, M] x_prev, mean, pred_x0 (x's dtype)
    M, nblocks, seed_lo, seed_hi, step, stream,
    CLIP: tl.constexpr, HAS_V: tl.constexpr, HAS_Z: tl.constexpr, ACC: tl.constexpr, BLOCK_G: tl.constexpr,
):
    b, g, e, mask = step_tile(M, nblocks, BLOCK_G)
    off = b * M + e
    x = tl.load(X_ptr + off, mask=mask, other=0.0).to(ACC)
    eps = tl.load(EPS_ptr + off, mask=mask, other=0.0).to(ACC)
    x0 = tl.load(SRA_ptr + b) * x - tl.load(SRM1_ptr + b) * eps
    if CLIP:
        x0 = tl.minimum(tl.maximum(x0, -1.0), 1.0)
    mean = tl.load(CX0_ptr + b) * x0 + tl.load(CXT_ptr + b) * x
    lv = tl.load(LV_ptr + b)
    if HAS_V:
        frac = (tl.load(V_ptr + off, mask=mask, other=0.0).to(ACC) + 1.0) / 2.0
        lv = frac * tl.load(LVMAX_ptr + b) + (1.0 - frac) * lv
    z = load_noise(Z_ptr, IDX_ptr, b, g, off, mask, seed_lo, seed_hi, step, stream,
                   HAS_Z, X_ptr.dtype.element_ty, ACC)
    out = mean + tl.exp(0.5 * lv) * z
    tl.store(OUT_ptr + off, out.to(OUT_ptr.dtype.element_ty), mask=mask)
    tl.store(MEAN_ptr + off, mean.to(MEAN_ptr.dtype.element_ty), mask=mask)
    tl.store(X0_ptr + off, x0.to(X0_ptr.dtype.element_ty), mask=mask)


def ddpm_step_forward(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, z=None,
                      sample_idx=None, seed_lo=0, seed_hi=0, step=0, stream=0, clip_denoised=False, v=None,
                      log_var_max=None, *, out=None):
    """Launch the step; out = (x_prev, mean, x0) buffers optional. Returns (x_prev, mean, x0)."""
    coefs = {"sqrt_recip_abar": sqrt_recip_abar, "sqrt_recipm1_abar": sqrt_recipm1_abar, "coef_x0": coef_x0,
             "coef_xt": coef_xt, "log_var": log_var}
    if v is not None and log_var_max is not None:
        coefs["log_var_max"] = log_var_max
    check_step(x, {"eps": eps} if v is None else {"eps": eps, "v": v}, coefs, z, sample_idx)
    acc = acc_dtype(x.dtype)
    x2 = per_sample(x)
    B, M = x2.shape
    if v is not None and log_var_max is None:
        raise ValueError("v (learned_range) needs log_var_max")
    zz, idx, *addr, has_z = noise_args(x2, z, sample_idx, seed_lo, seed_hi, step, stream)
    outs = out_buffers(out, x2, 3)
    lv = coef(log_var, acc)
    if B * M:
        grid, nblocks = step_grid(B, M)
        _ddpm_step_kernel[grid](
            x2, per_sample(eps), per_sample(v) if v is not None else x2, zz, idx,
            *(coef(t, acc) for t in (sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt)),
            lv, coef(log_var_max, acc) if v is not None else lv, *outs, M, nblocks, *addr,
            CLIP=bool(clip_denoised), HAS_V=v is not None, HAS_Z=has_z, ACC=tl_acc(x.dtype),
            BLOCK_G=STEP_BLOCK_G, num_warps=4)
    return tuple(o.view(x.shape) for o in outs)


@torch.library.custom_op("diffcore_triton::ddpm_step", mutates_args=())
def ddpm_step_op(x: torch.Tensor, eps: torch.Tensor, sqrt_recip_abar: torch.Tensor, sqrt_recipm1_abar: torch.Tensor,
                 coef_x0: torch.Tensor, coef_xt: torch.Tensor, log_var: torch.Tensor, z: Optional[torch.Tensor],
                 sample_idx: Optional[torch.Tensor], seed_lo: int, seed_hi: int, step: int, stream: int,
                 clip_denoised: bool, v: Optional[torch.Tensor],
                 log_var_max: Optional[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return ddpm_step_forward(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, z, sample_idx,
                             seed_lo, seed_hi, step, stream, clip_denoised, v, log_var_max)


@ddpm_step_op.register_fake
def _(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, z, sample_idx, seed_lo, seed_hi,
      step, stream, clip_denoised, v, log_var_max):
    check_fake(x, {"eps": eps, "z": z, "v": v},
               {"sqrt_recip_abar": sqrt_recip_abar, "sqrt_recipm1_abar": sqrt_recipm1_abar, "coef_x0": coef_x0,
                "coef_xt": coef_xt, "log_var": log_var, "sample_idx": sample_idx, "log_var_max": log_var_max})
    return tuple(torch.empty(x.shape, dtype=x.dtype, device=x.device) for _ in range(3))


def ddpm_step(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, z, noise_address=None,
              clip_denoised=False, v=None, log_var_max=None):
    """The op table's entry: (x_prev, mean, pred_x0)."""
    seed, idx, step, stream = noise_address if z is None else (0, None, 0, 0)
    return torch.ops.diffcore_triton.ddpm_step(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var,
                                               z, idx, *split_seed(seed), int(step), int(stream),
                                               bool(clip_denoised), v, log_var_max)
