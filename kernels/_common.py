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


# ---- argument checks of the launchers ---------------------------------------------------------
KERNEL_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


def check_device(name: str, t: torch.Tensor) -> None:
    """t is where the kernels run: CUDA, or CPU under the interpreter (never meta: a meta
    tensor reaches the custom op's fake implementation, not the launcher)."""
    from . import available  # the package's rule, one place

    if not available(t.device):
        raise ValueError(f"{name} must be on a CUDA device (or the CPU under TRITON_INTERPRET=1) for the Triton "
                         f"kernels; got {t.device}")


def check_x(x, name: str = "x", min_dim: int = 1) -> None:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if x.dtype not in KERNEL_DTYPES:
        raise ValueError(f"{name} must be float16, bfloat16, float32 or float64; got dtype {x.dtype}")
    if x.dim() < min_dim:
        raise ValueError(f"{name} must have at least {min_dim} dimension(s) ([B, ...]); got shape {tuple(x.shape)}")
    check_device(name, x)


def check_like(name: str, t, x: torch.Tensor, ref: str = "x") -> None:
    """t is a floating-point tensor of x's shape on x's device (its dtype may differ: the kernels
    read it in the accumulation dtype)."""
    if not isinstance(t, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(t).__name__}")
    if not t.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {t.dtype}")
    if t.shape != x.shape:
        raise ValueError(f"{name} must have {ref}'s shape {tuple(x.shape)}; got {tuple(t.shape)}")
    if t.device != x.device:
        raise ValueError(f"{name} must be on {ref}'s device {x.device}; got {t.device}")


def check_coef(name: str, c, x: torch.Tensor) -> None:
    """c is a real tensor [B] on x's device (one coefficient per sample)."""
    if not isinstance(c, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor [B]; got {type(c).__name__}")
    if c.dtype == torch.bool or c.dtype.is_complex:
        raise ValueError(f"{name} must be a real tensor; got dtype {c.dtype}")
    if c.shape != (x.shape[0],):
        raise ValueError(f"{name} must have shape [B] = [{x.shape[0]}]; got {tuple(c.shape)}")
    if c.device != x.device:
        raise ValueError(f"{name} must be on x's device {x.device}; got {c.device}")


def check_step(x, like: dict, coefs: dict, z=None, sample_idx=None) -> None:
    """Every argument of a step launcher: x, the x-like tensors, the per-sample coefficients
    and the noise (z like x, or sample_idx an integer tensor [B])."""
    check_x(x)
    for name, t in like.items():
        check_like(name, t, x)
    for name, c in coefs.items():
        check_coef(name, c, x)
    if z is not None:
        check_like("z", z, x)
    elif sample_idx is not None:
        if (not isinstance(sample_idx, torch.Tensor) or sample_idx.dtype.is_floating_point
                or sample_idx.dtype.is_complex or sample_idx.dtype == torch.bool):
            raise ValueError(f"sample_idx must be an integer tensor [B]; got "
                             f"{getattr(sample_idx, 'dtype', type(sample_idx).__name__)}")
        if sample_idx.shape != (x.shape[0],):
            raise ValueError(f"sample_idx must have shape [B] = [{x.shape[0]}]; got {tuple(sample_idx.shape)}")
        if sample_idx.device != x.device:
            raise ValueError(f"sample_idx must be on x's device {x.device}; got {sample_idx.device}")


def check_fake(x: torch.Tensor, like: dict, others: dict = None) -> None:
    """The fake implementations' checks: the x-like tensors match x's shape and every tensor is
    on x's device (a meta tensor among CPU ones would otherwise route the call here and return
    uninitialised memory)."""
    for name, t in {**like, **(others or {})}.items():
        if isinstance(t, torch.Tensor) and t.device != x.device:
            raise ValueError(f"{name} must be on x's device {x.device}; got {t.device}")
    for name, t in like.items():
        if isinstance(t, torch.Tensor) and t.shape != x.shape:
            raise ValueError(f"{name} must have x's shape {tuple(x.shape)}; got {tuple(t.shape)}")
