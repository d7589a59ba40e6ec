"""x_next = a x + b score1 + c x_pred + d score2 in one pass (Heun's second stage for a
linear-drift ODE). Reference: diffcore.ops.heun_step_reference."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from diffcore.ops import heun_step_reference as reference  # noqa: F401

from ._common import (STEP_BLOCK_G, acc_dtype, check_fake, check_step, coef, out_buffers, per_sample, step_grid,
                      step_tile, tl_acc)


@triton.jit
def _heun_step_kernel(
    X_ptr, S1_ptr, XP_ptr, S2_ptr,   # [B, M] x, score1, x_pred, score2
    A_ptr, B_ptr, C_ptr, D_ptr,      # [B] coefficients (ACC dtype)
    OUT_ptr,                         # [B, M] result, x's dtype
    M, nblocks,
    ACC: tl.constexpr, BLOCK_G: tl.constexpr,
):
    b, g, e, mask = step_tile(M, nblocks, BLOCK_G)
    off = b * M + e
    out = (tl.load(A_ptr + b) * tl.load(X_ptr + off, mask=mask, other=0.0).to(ACC)
           + tl.load(B_ptr + b) * tl.load(S1_ptr + off, mask=mask, other=0.0).to(ACC)
           + tl.load(C_ptr + b) * tl.load(XP_ptr + off, mask=mask, other=0.0).to(ACC)
           + tl.load(D_ptr + b) * tl.load(S2_ptr + off, mask=mask, other=0.0).to(ACC))
    tl.store(OUT_ptr + off, out.to(OUT_ptr.dtype.element_ty), mask=mask)


def heun_step_forward(x, score1, x_pred, score2, a, b, c, d, *, out=None):
    check_step(x, {"score1": score1, "x_pred": x_pred, "score2": score2}, {"a": a, "b": b, "c": c, "d": d})
    acc = acc_dtype(x.dtype)
    x2 = per_sample(x)
    B, M = x2.shape
    (o,) = out_buffers(out, x2, 1)
    if B * M:
        grid, nblocks = step_grid(B, M)
        _heun_step_kernel[grid](x2, per_sample(score1), per_sample(x_pred), per_sample(score2),
                                *(coef(t, acc) for t in (a, b, c, d)), o, M, nblocks,
                                ACC=tl_acc(x.dtype), BLOCK_G=STEP_BLOCK_G, num_warps=4)
    return o.view(x.shape)


@torch.library.custom_op("diffcore_triton::heun_step", mutates_args=())
def heun_step_op(x: torch.Tensor, score1: torch.Tensor, x_pred: torch.Tensor, score2: torch.Tensor,
                 a: torch.Tensor, b: torch.Tensor, c: torch.Tensor, d: torch.Tensor) -> torch.Tensor:
    return heun_step_forward(x, score1, x_pred, score2, a, b, c, d)


@heun_step_op.register_fake
def _(x, score1, x_pred, score2, a, b, c, d):
    check_fake(x, {"score1": score1, "x_pred": x_pred, "score2": score2}, {"a": a, "b": b, "c": c, "d": d})
    return torch.empty(x.shape, dtype=x.dtype, device=x.device)


def heun_step(x, score1, x_pred, score2, a, b, c, d):
    """The op table's entry."""
    return torch.ops.diffcore_triton.heun_step(x, score1, x_pred, score2, a, b, c, d)
