"""GroupNorm (+ SiLU, + the timestep-embedding add) forward and backward in Triton.

    y = SiLU(GroupNorm(x + emb[:, :, None, ...]))        (silu=False: plain GroupNorm)

x is [N, C, *spatial], NC*-contiguous or channels-last (memory [N, *spatial, C]); y keeps
that layout. Statistics and all arithmetic in float32 (float64 for float64 inputs).

Programs: one per (sample, group) when there are enough of them; otherwise each group is
split over SPLIT programs along the spatial axis (two stages: partial (count, mean, M2)
per split, then every split combines them and normalises its part). Tiles are
[BLOCK_C channels, BLOCK_S positions] so per-channel sums (weight, bias and emb grads) are
row sums, in either layout.

Layers: the kernels, `group_norm_silu_forward` / `group_norm_silu_backward` (launchers),
the custom ops diffcore_triton::group_norm_silu(_backward) with fake impls and autograd, and
`group_norm_silu` (the op table's entry). The reference is diffcore.ops.group_norm_silu_reference.
"""
from __future__ import annotations

from typing import Optional

import torch
import triton
import triton.language as tl

from diffcore.ops import group_norm_silu_reference as reference  # noqa: F401  (the float64-capable reference)

from ._common import acc_dtype, check_fake, check_like, check_x, tl_acc

TILE = 1024          # elements per tile
MAX_BLOCK_C = 64     # channels per tile at most
MAX_SPLIT = 64


@triton.jit
def _offsets(base, ch, ss, C, S, CHANNELS_LAST: tl.constexpr):
    """Flat offsets of channels ch [BLOCK_C] x positions ss [BLOCK_S] of one sample."""
    if CHANNELS_LAST:
        return base + ss[None, :].to(tl.int64) * C + ch[:, None]
    else:
        return base + ch[:, None].to(tl.int64) * S + ss[None, :]


@triton.jit
def _program(C, S, G, CG, S_PER_SPLIT):
    """This program's (pid = n * G + g, split, n, base offset of sample n, its positions
    s_lo .. s_hi, its group's first channel)."""
    pid = tl.program_id(0).to(tl.int64)
    split = tl.program_id(1)
    n = pid // G
    s_lo = split * S_PER_SPLIT
    return pid, split, n, n * C * S, s_lo, tl.minimum(S, s_lo + S_PER_SPLIT), (pid % G) * CG


@triton.jit
def _channels(c0, c_first, CG, BLOCK_C: tl.constexpr):
    """(cmask, ch): channels c_first + c0 .. + BLOCK_C of a group of CG, and which exist."""
    cc = c0 + tl.arange(0, BLOCK_C)
    return cc < CG, c_first + cc


@triton.jit
def _tile(base, ch, cmask, s0, s_hi, C, S, CHANNELS_LAST: tl.constexpr, BLOCK_S: tl.constexpr):
    """(mask, offsets) of the [BLOCK_C, BLOCK_S] tile of channels ch at positions s0 .. s_hi."""
    ss = s0 + tl.arange(0, BLOCK_S)
    mask = cmask[:, None] & (ss < s_hi)[None, :]
    return mask, _offsets(base, ch, ss, C, S, CHANNELS_LAST)


@triton.jit
def _channel_params(W_ptr, B_ptr, EMB_ptr, n, C, ch, cmask,
                    HAS_W: tl.constexpr, HAS_B: tl.constexpr, HAS_EMB: tl.constexpr,
                    ACC: tl.constexpr, BLOCK_C: tl.constexpr):
    """(w, b, e) [BLOCK_C] of channels ch of sample n: weight (1 without HAS_W), bias (0
    without HAS_B) and the embedding (0 without HAS_EMB, and then not read)."""
    if HAS_W:
        w = tl.load(W_ptr + ch, mask=cmask, other=0.0).to(ACC)
    else:
        w = tl.full([BLOCK_C], 1.0, ACC)
    if HAS_B:
        bb = tl.load(B_ptr + ch, mask=cmask, other=0.0).to(ACC)
    else:
        bb = tl.full([BLOCK_C], 0.0, ACC)
    if HAS_EMB:
        e = tl.load(EMB_ptr + n * C + ch, mask=cmask, other=0.0).to(ACC)
    else:
        e = tl.zeros([BLOCK_C], ACC)
    return w, bb, e


@triton.jit
def _gn_fwd_kernel(
    X_ptr,        # [N, C, S] input (either layout)
    EMB_ptr,      # [N, C] contiguous embedding added before the statistics (HAS_EMB)
    W_ptr,        # [C] weight (HAS_W)
    B_ptr,        # [C] bias (HAS_B)
    Y_ptr,        # [N, C, S] output, x's layout
    PART_ptr,     # [N*G, SPLIT, 3] partial (count, mean, M2) of each split (SPLIT > 1)
    MEAN_ptr,     # [N*G] group mean (written by split 0)
    RSTD_ptr,     # [N*G] group 1/sqrt(var + eps)
    C, S, G, CG,  # channels, positions per channel, groups, channels per group
    eps,          # float32 epsilon
    S_PER_SPLIT,  # positions per split (a multiple of BLOCK_S)
    CHANNELS_LAST: tl.constexpr, HAS_EMB: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    SILU: tl.constexpr, STATS: tl.constexpr, APPLY: tl.constexpr,
    SPLIT: tl.constexpr, SPLIT_P2: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    pid, split, n, base, s_lo, s_hi, c_first = _program(C, S, G, CG, S_PER_SPLIT)

    if STATS:
        cnt = tl.full([], 0.0, ACC)
        mean = tl.full([], 0.0, ACC)
        m2 = tl.full([], 0.0, ACC)
        for c0 in range(0, CG, BLOCK_C):
            cmask, ch = _channels(c0, c_first, CG, BLOCK_C)
            if HAS_EMB:
                e = tl.load(EMB_ptr + n * C + ch, mask=cmask, other=0.0).to(ACC)
            for s0 in range(s_lo, s_hi, BLOCK_S):
                mask, off = _tile(base, ch, cmask, s0, s_hi, C, S, CHANNELS_LAST, BLOCK_S)
                h = tl.load(X_ptr + off, mask=mask, other=0.0).to(ACC)
                if HAS_EMB:
                    h = h + e[:, None]
                nb = tl.sum(tl.sum(mask.to(ACC), axis=1), axis=0)
                mb = tl.sum(tl.sum(tl.where(mask, h, 0.0), axis=1), axis=0) / nb
                d = tl.where(mask, h - mb, 0.0)
                m2b = tl.sum(tl.sum(d * d, axis=1), axis=0)
                # Chan et al.: merge this tile's (nb, mb, m2b) into the running statistics
                tot = cnt + nb
                delta = mb - mean
                mean = mean + delta * (nb / tot)
                m2 = m2 + m2b + delta * delta * (cnt * nb / tot)
                cnt = tot
        if not APPLY:
            p = PART_ptr + (pid * SPLIT + split) * 3
            tl.store(p, cnt)
            tl.store(p + 1, mean)
            tl.store(p + 2, m2)

    if APPLY:
        if not STATS:
            j = tl.arange(0, SPLIT_P2)
            jm = j < SPLIT
            p = PART_ptr + (pid * SPLIT + j) * 3
            pc = tl.load(p, mask=jm, other=0.0)
            pm = tl.load(p + 1, mask=jm, other=0.0)
            pm2 = tl.load(p + 2, mask=jm, other=0.0)
            cnt = tl.sum(pc, axis=0)
            mean = tl.sum(pc * pm, axis=0) / cnt
            dm = tl.where(jm, pm - mean, 0.0)
            m2 = tl.sum(pm2, axis=0) + tl.sum(pc * dm * dm, axis=0)
        rstd = 1.0 / tl.sqrt(m2 / cnt + eps)
        if split == 0:
            tl.store(MEAN_ptr + pid, mean)
            tl.store(RSTD_ptr + pid, rstd)
        for c0 in range(0, CG, BLOCK_C):
            cmask, ch = _channels(c0, c_first, CG, BLOCK_C)
            w, bb, e = _channel_params(W_ptr, B_ptr, EMB_ptr, n, C, ch, cmask, HAS_W, HAS_B, HAS_EMB, ACC, BLOCK_C)
            scale = w * rstd
            # (h - mean) first: a one-element group gives exactly the bias, as in float64
            shift = tl.zeros([BLOCK_C], ACC) - mean
            if HAS_EMB:
                shift = shift + e
            for s0 in range(s_lo, s_hi, BLOCK_S):
                mask, off = _tile(base, ch, cmask, s0, s_hi, C, S, CHANNELS_LAST, BLOCK_S)
                x = tl.load(X_ptr + off, mask=mask, other=0.0).to(ACC)
                a = (x + shift[:, None]) * scale[:, None] + bb[:, None]
                if SILU:
                    a = a / (1.0 + tl.exp(tl.minimum(-a, 80.0)))  # no inf for very negative a
                tl.store(Y_ptr + off, a.to(Y_ptr.dtype.element_ty), mask=mask)


@triton.jit
def _xhat_dy(X_ptr, DY_ptr, off, mask, w, bb, e, mean, rstd,
             HAS_EMB: tl.constexpr, SILU: tl.constexpr, ACC: tl.constexpr):
    """(xhat, dy') of one tile: the forward's normalised input (h = x + e) recomputed, and the
    upstream gradient through the SiLU (dy' = dy * SiLU'(xhat w + b); dy itself without SILU)."""
    h = tl.load(X_ptr + off, mask=mask, other=0.0).to(ACC)
    if HAS_EMB:
        h = h + e[:, None]
    xhat = (h - mean) * rstd
    dy = tl.load(DY_ptr + off, mask=mask, other=0.0).to(ACC)
    if SILU:
        a = xhat * w[:, None] + bb[:, None]
        sig = 1.0 / (1.0 + tl.exp(tl.minimum(-a, 80.0)))
        dy = dy * sig * (1.0 + a * (1.0 - sig))
    return xhat, dy


@triton.jit
def _gn_bwd_kernel(
    X_ptr, EMB_ptr, W_ptr, B_ptr,   # forward inputs (as in _gn_fwd_kernel)
    DY_ptr,       # [N, C, S] upstream gradient, x's layout
    MEAN_ptr,     # [N*G] saved group mean
    RSTD_ptr,     # [N*G] saved group rstd
    DX_ptr,       # [N, C, S] gradient of x, x's layout
    DWP_ptr,      # [SPLIT, N, C] partial sums of dy' * xhat (weight grad)
    DBP_ptr,      # [SPLIT, N, C] partial sums of dy' (bias grad)
    DEP_ptr,      # [SPLIT, N, C] partial sums of dx (emb grad, HAS_EMB)
    PART_ptr,     # [N*G, SPLIT, 2] partial sums of dxhat and dxhat * xhat (SPLIT > 1)
    C, S, G, CG, S_PER_SPLIT, N,
    CHANNELS_LAST: tl.constexpr, HAS_EMB: tl.constexpr, HAS_W: tl.constexpr, HAS_B: tl.constexpr,
    SILU: tl.constexpr, STATS: tl.constexpr, APPLY: tl.constexpr,
    SPLIT: tl.constexpr, SPLIT_P2: tl.constexpr, ACC: tl.constexpr,
    BLOCK_C: tl.constexpr, BLOCK_S: tl.constexpr,
):
    # dy' = dy * SiLU'(a) with a = xhat w + b; dxhat = dy' w;
    # dx = rstd (dxhat - mean(dxhat) - xhat mean(dxhat xhat)) over the group.
    pid, split, n, base, s_lo, s_hi, c_first = _program(C, S, G, CG, S_PER_SPLIT)
    mean = tl.load(MEAN_ptr + pid).to(ACC)
    rstd = tl.load(RSTD_ptr + pid).to(ACC)
    chan = (split * N + n) * C  # row of this (split, sample) in the [SPLIT, N, C] partials

    if STATS:
        s1 = tl.full([], 0.0, ACC)
        s2 = tl.full([], 0.0, ACC)
        for c0 in range(0, CG, BLOCK_C):
            cmask, ch = _channels(c0, c_first, CG, BLOCK_C)
            w, bb, e = _channel_params(W_ptr, B_ptr, EMB_ptr, n, C, ch, cmask, HAS_W, HAS_B, HAS_EMB, ACC, BLOCK_C)
            dw_c = tl.zeros([BLOCK_C], ACC)
            db_c = tl.zeros([BLOCK_C], ACC)
            for s0 in range(s_lo, s_hi, BLOCK_S):
                mask, off = _tile(base, ch, cmask, s0, s_hi, C, S, CHANNELS_LAST, BLOCK_S)
                xhat, dy = _xhat_dy(X_ptr, DY_ptr, off, mask, w, bb, e, mean, rstd, HAS_EMB, SILU, ACC)
                dy = tl.where(mask, dy, 0.0)
                dxhat = dy * w[:, None]
                dw_c += tl.sum(dy * xhat, axis=1)
                db_c += tl.sum(dy, axis=1)
                s1 += tl.sum(tl.sum(dxhat, axis=1), axis=0)
                s2 += tl.sum(tl.sum(dxhat * xhat, axis=1), axis=0)
            tl.store(DWP_ptr + chan + ch, dw_c, mask=cmask)
            tl.store(DBP_ptr + chan + ch, db_c, mask=cmask)
        if not APPLY:
            tl.store(PART_ptr + (pid * SPLIT + split) * 2, s1)
            tl.store(PART_ptr + (pid * SPLIT + split) * 2 + 1, s2)

    if APPLY:
        if not STATS:
            j = tl.arange(0, SPLIT_P2)
            jm = j < SPLIT
            s1 = tl.sum(tl.load(PART_ptr + (pid * SPLIT + j) * 2, mask=jm, other=0.0), axis=0)
            s2 = tl.sum(tl.load(PART_ptr + (pid * SPLIT + j) * 2 + 1, mask=jm, other=0.0), axis=0)
        inv_cnt = 1.0 / (tl.zeros([], ACC) + CG * S)  # a tensor even when CG = S = 1 arrive as constexpr
        m1 = s1 * inv_cnt
        m2 = s2 * inv_cnt
        for c0 in range(0, CG, BLOCK_C):
            cmask, ch = _channels(c0, c_first, CG, BLOCK_C)
            w, bb, e = _channel_params(W_ptr, B_ptr, EMB_ptr, n, C, ch, cmask, HAS_W, HAS_B, HAS_EMB, ACC, BLOCK_C)
            de_c = tl.zeros([BLOCK_C], ACC)
            for s0 in range(s_lo, s_hi, BLOCK_S):
                mask, off = _tile(base, ch, cmask, s0, s_hi, C, S, CHANNELS_LAST, BLOCK_S)
                xhat, dy = _xhat_dy(X_ptr, DY_ptr, off, mask, w, bb, e, mean, rstd, HAS_EMB, SILU, ACC)
                dx = rstd * (dy * w[:, None] - m1 - xhat * m2)
                dx = tl.where(mask, dx, 0.0)
                tl.store(DX_ptr + off, dx.to(DX_ptr.dtype.element_ty), mask=mask)
                if HAS_EMB:
                    de_c += tl.sum(dx, axis=1)
            if HAS_EMB:
                tl.store(DEP_ptr + chan + ch, de_c, mask=cmask)


# ---- launchers ------------------------------------------------------------------------------
def _channels_last(x: torch.Tensor) -> bool:
    """Whether x is laid out [N, *spatial, C] (and not also NC*-contiguous)."""
    return x.dim() >= 3 and not x.is_contiguous() and x.movedim(1, -1).is_contiguous()


def _layout(t: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """t as NC*-contiguous or channels-last (memory [N, *spatial, C]); no copy if already."""
    return t.movedim(1, -1).contiguous().movedim(-1, 1) if channels_last else t.contiguous()


def _empty(x: torch.Tensor, channels_last: bool, dtype=None) -> torch.Tensor:
    dtype = dtype or x.dtype
    if channels_last:
        return torch.empty((x.shape[0], *x.shape[2:], x.shape[1]), dtype=dtype, device=x.device).movedim(-1, 1)
    return torch.empty(x.shape, dtype=dtype, device=x.device)


def _config(x: torch.Tensor, num_groups: int, split: Optional[int], block_s: Optional[int] = None):
    """(S, CG, BLOCK_C, BLOCK_S, SPLIT, S_PER_SPLIT, num_warps) for x [N, C, *spatial];
    split / block_s (a power of two) override the heuristics (tests use them to reach the
    two-stage path on small shapes)."""
    N, C = x.shape[:2]
    S = x[0, 0].numel() if x.dim() > 2 else 1
    CG = C // num_groups
    BLOCK_C = min(triton.next_power_of_2(CG), MAX_BLOCK_C)
    BLOCK_S = max(1, min(triton.next_power_of_2(S), TILE // BLOCK_C))
    if block_s is not None:
        BLOCK_S = int(block_s)
    if split is None:
        # enough programs to fill the device: about 4 per SM on a GPU
        target = 4 * torch.cuda.get_device_properties(x.device).multi_processor_count if x.is_cuda else 8
        split = max(1, min(MAX_SPLIT, triton.cdiv(target, N * num_groups)))
    split = max(1, min(int(split), triton.cdiv(S, BLOCK_S)))
    s_per = triton.cdiv(triton.cdiv(S, split), BLOCK_S) * BLOCK_S
    split = triton.cdiv(S, s_per)
    num_warps = 4 if BLOCK_C * BLOCK_S <= 1024 else 8
    return S, CG, BLOCK_C, BLOCK_S, split, s_per, num_warps


def _check_args(x, num_groups, weight, bias, eps, emb):
    """The op table's checks (shapes, C divisible by num_groups, devices, eps > 0) plus where
    and in which dtypes the kernels run."""
    from diffcore.ops import _check_norm_args

    check_x(x, min_dim=2)
    _check_norm_args(x, num_groups, weight, bias, eps, emb)


def _prepare(x, num_groups, weight, bias, emb):
    cl = _channels_last(x)
    x = _layout(x, cl)
    weight = weight.contiguous() if weight is not None else None
    bias = bias.contiguous() if bias is not None else None
    emb = emb.contiguous() if emb is not None else None
    return x, weight, bias, emb, cl


def group_norm_silu_forward(x, num_groups, weight=None, bias=None, eps=1e-5, emb=None, silu=True,
                            *, out=None, split=None, block_s=None):
    """Launch the forward kernel(s). Returns (y, mean [N, G], rstd [N, G]); `out` (x's shape,
    dtype and layout) receives y if given; `split` / `block_s` force the programs per group and the tile's positions."""
    _check_args(x, num_groups, weight, bias, eps, emb)
    x, weight, bias, emb, cl = _prepare(x, num_groups, weight, bias, emb)
    N, C = x.shape[:2]
    acc = acc_dtype(x.dtype)
    y = _empty(x, cl) if out is None else out
    if out is not None and (out.shape != x.shape or out.dtype != x.dtype or out.stride() != x.stride()):
        raise ValueError("out must have x's shape, dtype and memory layout")
    mean = torch.empty((N, num_groups), dtype=acc, device=x.device)
    rstd = torch.empty((N, num_groups), dtype=acc, device=x.device)
    if x.numel() == 0:
        return y, mean.fill_(0), rstd.fill_(0)
    S, CG, BLOCK_C, BLOCK_S, SPLIT, s_per, num_warps = _config(x, num_groups, split, block_s)
    part = torch.empty((N * num_groups, SPLIT, 3), dtype=acc, device=x.device) if SPLIT > 1 else mean
    common = dict(CHANNELS_LAST=cl, HAS_EMB=emb is not None, HAS_W=weight is not None, HAS_B=bias is not None,
                  SILU=bool(silu), SPLIT=SPLIT, SPLIT_P2=triton.next_power_of_2(SPLIT), ACC=tl_acc(x.dtype),
                  BLOCK_C=BLOCK_C, BLOCK_S=BLOCK_S, num_warps=num_warps)
    args = (x, emb if emb is not None else x, weight if weight is not None else x, bias if bias is not None else x,
            y, part, mean, rstd, C, S, num_groups, CG, float(eps), s_per)
    grid = (N * num_groups, SPLIT)
    if SPLIT == 1:
        _gn_fwd_kernel[grid](*args, STATS=True, APPLY=True, **common)
    else:
        _gn_fwd_kernel[grid](*args, STATS=True, APPLY=False, **common)
        _gn_fwd_kernel[grid](*args, STATS=False, APPLY=True, **common)
    return y, mean, rstd


def group_norm_silu_backward(dy, x, num_groups, weight, bias, emb, mean, rstd, silu=True, *, split=None, block_s=None):
    """Launch the backward kernel(s). Returns (dx, dweight, dbias, demb); a gradient whose
    input is None comes back as an empty tensor."""
    _check_args(x, num_groups, weight, bias, 1.0, emb)
    check_like("dy", dy, x)
    for name, s in (("mean", mean), ("rstd", rstd)):
        if not isinstance(s, torch.Tensor) or s.shape != (x.shape[0], num_groups) or s.device != x.device:
            raise ValueError(f"{name} must be the forward's statistics [N, G] = [{x.shape[0]}, {num_groups}] "
                             f"on x's device")
    x, weight, bias, emb, cl = _prepare(x, num_groups, weight, bias, emb)
    dy = _layout(dy, cl)
    N, C = x.shape[:2]
    acc = acc_dtype(x.dtype)
    dx = _empty(x, cl)
    empty = lambda t: (torch.empty(t.shape, dtype=t.dtype, device=x.device) if t is not None  # noqa: E731
                       else x.new_empty((0,)))
    if x.numel() == 0:
        return dx, empty(weight).zero_(), empty(bias).zero_(), empty(emb).zero_()
    S, CG, BLOCK_C, BLOCK_S, SPLIT, s_per, num_warps = _config(x, num_groups, split, block_s)
    dwp = torch.empty((SPLIT, N, C), dtype=acc, device=x.device)
    dbp = torch.empty((SPLIT, N, C), dtype=acc, device=x.device)
    dep = torch.empty((SPLIT, N, C), dtype=acc, device=x.device) if emb is not None else dwp
    part = torch.empty((N * num_groups, SPLIT, 2), dtype=acc, device=x.device) if SPLIT > 1 else dwp
    common = dict(CHANNELS_LAST=cl, HAS_EMB=emb is not None, HAS_W=weight is not None, HAS_B=bias is not None,
                  SILU=bool(silu), SPLIT=SPLIT, SPLIT_P2=triton.next_power_of_2(SPLIT), ACC=tl_acc(x.dtype),
                  BLOCK_C=BLOCK_C, BLOCK_S=BLOCK_S, num_warps=num_warps)
    args = (x, emb if emb is not None else x, weight if weight is not None else x, bias if bias is not None else x,
            dy, mean.contiguous(), rstd.contiguous(), dx, dwp, dbp, dep, part, C, S, num_groups, CG, s_per, N)
    grid = (N * num_groups, SPLIT)
    if SPLIT == 1:
        _gn_bwd_kernel[grid](*args, STATS=True, APPLY=True, **common)
    else:
        _gn_bwd_kernel[grid](*args, STATS=True, APPLY=False, **common)
        _gn_bwd_kernel[grid](*args, STATS=False, APPLY=True, **common)
    dw = dwp.sum((0, 1)).to(weight.dtype) if weight is not None else x.new_empty((0,))
    db = dbp.sum((0, 1)).to(bias.dtype) if bias is not None else x.new_empty((0,))
    de = dep.sum(0).to(emb.dtype) if emb is not None else x.new_empty((0,))
    return dx, dw, db, de


# ---- custom ops -----------------------------------------------------------------------------
@torch.library.custom_op("diffcore_triton::group_norm_silu", mutates_args=())
def group_norm_silu_op(x: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor],
                       bias: Optional[torch.Tensor], eps: float, emb: Optional[torch.Tensor],
                       silu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(y, mean [N, G], rstd [N, G]) of SiLU(GroupNorm(x + emb))."""
    return group_norm_silu_forward(x, num_groups, weight, bias, eps, emb, silu)


@group_norm_silu_op.register_fake
def _(x, num_groups, weight, bias, eps, emb, silu):
    check_fake(x, {}, {"weight": weight, "bias": bias, "emb": emb})
    acc = acc_dtype(x.dtype)
    stats = x.new_empty((x.shape[0], num_groups), dtype=acc)
    return _empty(x, _channels_last(x)), stats, torch.empty_like(stats)


@torch.library.custom_op("diffcore_triton::group_norm_silu_backward", mutates_args=())
def group_norm_silu_backward_op(dy: torch.Tensor, x: torch.Tensor, num_groups: int,
                                weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
                                emb: Optional[torch.Tensor], mean: torch.Tensor, rstd: torch.Tensor,
                                silu: bool) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(dx, dweight, dbias, demb); empty tensors for absent inputs."""
    return group_norm_silu_backward(dy, x, num_groups, weight, bias, emb, mean, rstd, silu)


@group_norm_silu_backward_op.register_fake
def _(dy, x, num_groups, weight, bias, emb, mean, rstd, silu):
    check_fake(x, {"dy": dy}, {"weight": weight, "bias": bias, "emb": emb, "mean": mean, "rstd": rstd})
    like = lambda t: torch.empty_like(t, memory_format=torch.contiguous_format) if t is not None else x.new_empty((0,))  # noqa: E731
    return _empty(x, _channels_last(x)), like(weight), like(bias), like(emb)


def _setup_context(ctx, inputs, output):
    x, num_groups, weight, bias, eps, emb, silu = inputs
    _, mean, rstd = output
    ctx.save_for_backward(x, weight, bias, emb, mean, rstd)
    ctx.num_groups, ctx.silu = num_groups, silu


def _backward(ctx, dy, _dmean, _drstd):
    x, weight, bias, emb, mean, rstd = ctx.saved_tensors
    dx, dw, db, de = torch.ops.diffcore_triton.group_norm_silu_backward(
        dy, x, ctx.num_groups, weight, bias, emb, mean, rstd, ctx.silu)
    need = ctx.needs_input_grad
    return (dx if need[0] else None, None, dw if weight is not None and need[2] else None,
            db if bias is not None and need[3] else None, None, de if emb is not None and need[5] else None, None)


group_norm_silu_op.register_autograd(_backward, setup_context=_setup_context)


def group_norm_silu(x, num_groups, weight=None, bias=None, eps=1e-5, emb=None, silu=True):
    """The op table's entry (diffcore.ops.group_norm_silu's signature): y only."""
    return torch.ops.diffcore_triton.group_norm_silu(x, num_groups, weight, bias, float(eps), emb, bool(silu))[0]
