"""The project's one noise generator: Philox4x32-10, vectorised in PyTorch.

Every random number a sampler uses is a pure function of
    key     = (seed & 0xFFFFFFFF, seed >> 32)
    counter = (element // 4, sample index, step index, stream)
so sample i gets the same noise whatever the batch size, chunking, rank or backend.
Each Philox call gives four 32-bit words; words (0, 1) and (2, 3) become two
normals each by Box-Muller, so element e uses word-group e // 4, slot e % 4.
The Triton kernels and the C++/CUDA code implement exactly this function.

Streams separate the uses of one (sample, step) pair: the predictor's noise, the
corrector's k-th inner step, the initial state, data-side draws in losses, ...
"""
from __future__ import annotations

import math

import torch

from .validation import check_int

# Philox4x32 constants (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3").
PHILOX_M0 = 0xD2511F53
PHILOX_M1 = 0xCD9E8D57
PHILOX_W0 = 0x9E3779B9
PHILOX_W1 = 0xBB67AE85
ROUNDS = 10
_MASK32 = 0xFFFFFFFF

# Stream ids (counter word 3). A sub-step (corrector iteration, probe number) adds to them.
STREAM_STEP = 0          # predictor / ancestral / Langevin noise at a step
STREAM_INIT = 1 << 16    # the initial state x_T (prior or uniform start)
STREAM_CORRECTOR = 2 << 16  # + corrector iteration j
STREAM_DATA = 3 << 16    # draws made by GaussianMixture.sample and losses


def _mulhilo(a: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(hi, lo) 32-bit halves of a * m for uint32 a held in int64 and a constant m < 2**32.

    The int64 product wraps modulo 2**64, which keeps all 64 bits of the true product;
    the arithmetic shift's sign extension is masked away.
    """
    p = a * m
    return (p >> 32) & _MASK32, p & _MASK32


def philox4x32(counter: tuple[torch.Tensor, ...], key: tuple[int, int], rounds: int = ROUNDS):
    """Philox4x32 on int64 tensors holding uint32 values; returns four int64 tensors."""
    c0, c1, c2, c3 = (torch.as_tensor(c, dtype=torch.int64) & _MASK32 for c in counter)
    c0, c1, c2, c3 = torch.broadcast_tensors(c0, c1, c2, c3)
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(rounds):
        if r:
            k0 = (k0 + PHILOX_W0) & _MASK32
            k1 = (k1 + PHILOX_W1) & _MASK32
        hi0, lo0 = _mulhilo(c0, PHILOX_M0)
        hi1, lo1 = _mulhilo(c2, PHILOX_M1)
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
    return c0, c1, c2, c3


def uint32_to_uniform(w: torch.Tensor) -> torch.Tensor:
    """Top 24 bits -> (0, 1) exactly representable in float32: (w >> 8) + 0.5) / 2**24."""
    return ((w >> 8).to(torch.float64) + 0.5) * (1.0 / 16777216.0)


def _words(seed: int, sample_idx: torch.Tensor, step: int, stream: int, numel: int):
    """Philox words for `numel` elements of each sample: int64 tensor [B, ceil(numel/4), 4]."""
    groups = (numel + 3) // 4
    dev = sample_idx.device
    c0 = torch.arange(groups, device=dev, dtype=torch.int64)[None, :]
    c1 = sample_idx.to(torch.int64)[:, None]
    key = (seed & _MASK32, (seed >> 32) & _MASK32)
    # torch.full, not torch.tensor: a fill on the device, where torch.tensor is a blocking copy
    # from the host (one stall per draw in a CUDA-graph replay loop)
    step_t = torch.full((), step, dtype=torch.int64, device=dev)
    stream_t = torch.full((), stream, dtype=torch.int64, device=dev)
    w = philox4x32((c0, c1, step_t, stream_t), key)
    return torch.stack(w, dim=-1)


def _check_shape(shape, dtype) -> tuple:
    """One sample's shape as a tuple of ints >= 0, and a floating-point dtype."""
    try:
        shape = tuple(shape)
    except TypeError:
        raise ValueError(f"shape must be a tuple of ints (one sample's shape); got {shape!r}") from None
    for d in shape:
        check_int("shape entries", d, lo=0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    return shape


def _check_args(seed, sample_idx, step, stream):
    check_int("seed", seed, lo=0, hi=2**64 - 1)
    check_int("step", step, lo=0, hi=_MASK32)
    check_int("stream", stream, lo=0, hi=_MASK32)
    if not isinstance(sample_idx, torch.Tensor) or sample_idx.dim() != 1:
        raise ValueError("sample_idx must be a 1-D integer tensor of sample indices")
    if sample_idx.dtype.is_floating_point or sample_idx.dtype == torch.bool:
        raise ValueError(f"sample_idx must be an integer tensor; got {sample_idx.dtype}")


def uniform(seed: int, sample_idx: torch.Tensor, step: int, shape, stream: int = STREAM_STEP,
            dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniform (0, 1) numbers of shape [len(sample_idx), *shape] from the counter generator."""
    _check_args(seed, sample_idx, step, stream)
    shape = _check_shape(shape, dtype)
    numel = math.prod(shape)
    w = _words(seed, sample_idx, step, stream, numel).flatten(1)[:, :numel]  # flatten: B = 0 works too
    return uint32_to_uniform(w).to(dtype).reshape(len(sample_idx), *shape).contiguous()


def normal(seed: int, sample_idx: torch.Tensor, step: int, shape, stream: int = STREAM_STEP,
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normals of shape [len(sample_idx), *shape]; Box-Muller in float32.

    float32 math so the Triton and CUDA implementations can match to rounding.
    """
    _check_args(seed, sample_idx, step, stream)
    shape = _check_shape(shape, dtype)
    numel = math.prod(shape)
    w = _words(seed, sample_idx, step, stream, numel)          # [B, G, 4]
    u = uint32_to_uniform(w).to(torch.float32)
    u1, u2 = u[..., 0::2], u[..., 1::2]                          # pairs (w0, w1), (w2, w3)
    r = torch.sqrt(-2.0 * torch.log(u1))
    theta = (2.0 * math.pi) * u2
    z = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), dim=-1)  # [B, G, 2, 2]
    z = z.flatten(1)[:, :numel]
    # contiguous: a strided view would send later ops down other kernels (other rounding)
    return z.to(dtype).reshape(len(sample_idx), *shape).contiguous()


class NoiseSource:
    """The noise of one chunk of samples: fixed seed, sample indices, per-sample shape."""

    def __init__(self, seed: int, sample_idx: torch.Tensor, shape, device=None,
                 dtype: torch.dtype = torch.float32):
        check_int("seed", seed, lo=0, hi=2**64 - 1)
        self.seed = int(seed)
        self.sample_idx = sample_idx.to(device) if device is not None else sample_idx
        self.shape = tuple(shape)
        self.dtype = dtype

    def normal(self, step: int, stream: int = STREAM_STEP) -> torch.Tensor:
        return normal(self.seed, self.sample_idx, step, self.shape, stream, self.dtype)

    def uniform(self, step: int, stream: int = STREAM_STEP) -> torch.Tensor:
        return uniform(self.seed, self.sample_idx, step, self.shape, stream, self.dtype)
