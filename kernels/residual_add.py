"""out = (skip + h) * scale in one pass (the residual block's epilogue), float32 math
(float64 for float64). Reference: diffcore.ops.residual_add_reference."""
from __future__ import annotations

import torch
import triton
import triton.language as tl

from diffcore.ops import residual_add_reference as reference  # noqa: F401

from ._common import check_fake, check_like, check_x, tl_acc

BLOCK = 1024


@triton.jit
def _residual_add_kernel(
    SKIP_ptr,   # [numel] skip branch (any float dtype)
    H_ptr,      # [numel] block output
    OUT_ptr,    # [numel] result, h's dtype
    numel,
    scale,      # float32 (or float64) multiplier
    ACC: tl.constexpr, BLOCK: tl.constexpr,
):
    off = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = off < numel
    s = tl.load(SKIP_ptr + off, mask=mask, other=0.0).to(ACC)
    h = tl.load(H_ptr + off, mask=mask, other=0.0).to(ACC)
    tl.store(OUT_ptr + off, ((s + h) * scale).to(OUT_ptr.dtype.element_ty), mask=mask)


def residual_add_forward(skip: torch.Tensor, h: torch.Tensor, scale: float = 1.0, *, out=None) -> torch.Tensor:
    """Launch the kernel on contiguous copies of skip and h; out (h's shape/dtype, contiguous) optional."""
    check_x(h, "h", min_dim=0)
    check_like("skip", skip, h, "h")
    skip, h = skip.contiguous(), h.contiguous()
    out = torch.empty_like(h) if out is None else out
    if out.shape != h.shape or out.dtype != h.dtype or not out.is_contiguous():
        raise ValueError("out must be a contiguous tensor of h's shape and dtype")
    n = h.numel()
    if n:
        _residual_add_kernel[(triton.cdiv(n, BLOCK),)](skip, h, out, n, float(scale),
                                                       ACC=tl_acc(h.dtype), BLOCK=BLOCK, num_warps=4)
    return out


@torch.library.custom_op("diffcore_triton::residual_add", mutates_args=())
def residual_add_op(skip: torch.Tensor, h: torch.Tensor, scale: float) -> torch.Tensor:
    return residual_add_forward(skip, h, scale)


@residual_add_op.register_fake
def _(skip, h, scale):
    check_fake(h, {"skip": skip})
    return torch.empty(h.shape, dtype=h.dtype, device=h.device)


def _setup_context(ctx, inputs, output):
    ctx.scale = inputs[2]
    ctx.dtypes = (inputs[0].dtype, inputs[1].dtype)


def _backward(ctx, g):
    d = g * ctx.scale
    return d.to(ctx.dtypes[0]), d.to(ctx.dtypes[1]), None


residual_add_op.register_autograd(_backward, setup_context=_setup_context)


def residual_add(skip, h, scale=1.0):
    """The op table's entry: (skip + h) * scale."""
    return torch.ops.diffcore_triton.residual_add(skip, h, float(scale))


