"""3x3 convolutions by Winograd's F(4x4, 3x3) and F(2x2, 3x3) on CPU: the native op
diffcore::conv3x3_winograd.

A U-Net's 3x3 convolutions are most of its time on CPU, and on CPUs without AVX-512 oneDNN
(PyTorch's CPU convolution library) has no Winograd kernels: its direct convolution does 9
multiply-adds per output pixel and input channel, F(2x2, 3x3) 4 and F(4x4, 3x3) 2.25. Over the
CIFAR-10 U-Net's 47 such layers (batch 16, 2 threads, AMD EPYC; benchmarks/RESULTS.md) the
native op (csrc/cpu/winograd.cpp) measured 2.47x oneDNN's direct convolution with F(4x4), and
1.74x with F(2x2).

    y = conv3x3(x, weight, bias)   # F.conv2d(x, weight, bias, padding=1), float32 rounding apart

x: float32 or bfloat16 CPU [B, C, H, W] in channels_last; the output is channels_last too, in x's
dtype (bf16: the weight and bias rounded to bf16, float32 arithmetic, the output rounded once,
as a bf16 convolution with float32 accumulation; for CPUs whose oneDNN has no bf16).

Which F: F(4x4, 3x3) when the call has at least MIN_TILES_F4 of its 4x4 output tiles, else
F(2x2, 3x3), whose transformed weight is 2.25x smaller to read (see pick_tile). Rounding, in
eps32 times each output's scale |x| conv |w| + |b| (measured over 540 random layers): F(2x2) at
most 2.4, F(4x4) at most 36, i.e. within 4.3e-6 of that scale: several times oneDNN's direct
convolution's error (F(2x2) is below it), the F(4x4, 3x3) that cuDNN and oneDNN also offer in
float32, and far below TF32 (2^-11) or what rounding bf16 inputs costs (2^-8). `FP32_F4 = False`
(or DIFFCORE_WINOGRAD_FP32_F4=0 in the environment) keeps float32 calls on F(2x2); bf16 calls
use F(4x4) whenever they have the tiles.

Memory: the transformed weight (G g G^T, computed in float64, kept in float32) is 16/9 of the
weight's float32 size for F(2x2) and 4x for F(4x4) (the CIFAR-10 U-Net's 109 MB of swapped 3x3
weights: 437 MB); a layer called both with and without MIN_TILES_F4 tiles (a small last chunk,
say) keeps both, 5.8x. Each is made once per weight and kept while the weight is unchanged (see
_transformed), in a registry dropped with the weight; clear_cache() frees them. All of them
together stay under cache_limit_mb() megabytes (CACHE_LIMIT_MB, or DIFFCORE_WINOGRAD_CACHE_MB;
by default a quarter of the machine's memory): the 47 layers accelerate swaps in a Stable
Diffusion 1.5 U-Net hold 1.9 GiB of float32 weights, whose transforms take 5.7 GiB at batch 2
(benchmarks/large_unet.py; 7.8 GiB were all F(4x4)). A layer whose transform would cross the
limit first drops cached transforms that save less per byte (output pixels per call over the
transform's (tile + 2)^2 elements: low-resolution, wide layers go first); where that does not
make room, it runs oneDNN's direct convolution instead (bf16: on the bf16 values in float32, as
autocast's widened ops do), or the other tile's transform where it holds one; conv3x3 then
transforms the weight for that call alone. One warning says when the limit is first reached
(again after clear_cache()); cache_bytes() says what the transforms hold.

`WinogradConv2d` is the nn.Conv2d subclass diffcore.accelerate swaps in (class swap: same
parameters and state_dict keys) for plain nn.Conv2d(kernel 3, stride 1, padding 1, groups 1) layers with
at least MIN_CHANNELS input and output channels; it uses the op for float32 CPU inference on
channels_last input (bf16 too where oneDNN has no bf16 convolutions) and calls nn.Conv2d's
forward for everything else (training, other devices and dtypes, NCHW input, torch.compile,
tracing, no extension).
"""
from __future__ import annotations

import functools
import os
import warnings
import weakref
import zlib

import torch
from torch import nn

from . import ops, precision

__all__ = ["conv3x3", "transform_weight", "pick_tile", "revalidate", "clear_cache", "WinogradConv2d", "why_not",
           "MIN_CHANNELS", "MIN_TILES", "MIN_TILES_F4", "FP32_F4", "CACHE_LIMIT_MB", "cache_limit_mb", "cache_bytes"]

# below this, the 16-column GEMM panels are mostly padding or the GEMMs too short: 3 -> 128 and
# 128 -> 3 measured 0.8x and 1.0x the direct convolution, 16 -> 16 1.4x, 64 -> 64 1.9x
MIN_CHANNELS = 16
# below this many 2x2 output tiles (batch x ceil(H/2) x ceil(W/2)) the GEMMs are too short to pay
# for reading the transformed weight (16/9 the weight's size): at batch 1 (2 threads) 4x4 images
# (4 tiles) measured 1.03x the direct convolution for 256 -> 256 channels and 0.74x for 512 -> 256,
# 8x8 images (16 tiles) 1.42x and 2.1x
MIN_TILES = 16
# F(4x4, 3x3) reads a transformed weight 2.25x F(2x2)'s: with few tiles that read costs more than its
# fewer multiply-adds save. Below this many 4x4 output tiles (batch x ceil(H/4) x ceil(W/4)) calls
# take F(2x2): 256 -> 256 channels (2 threads) measured F(4x4) 0.5x F(2x2) at 1-4 tiles, 0.9x at 8,
# 1.4-1.5x at 16 (batch 1 at 16x16, batch 4 at 8x8) and 1.3-1.7x from there on (ad hoc runs; with
# more threads each has fewer tiles, and the crossover may lie higher)
MIN_TILES_F4 = 16
# whether float32 calls may take F(4x4, 3x3) (module docstring: its rounding)
FP32_F4 = os.environ.get("DIFFCORE_WINOGRAD_FP32_F4", "1").strip().lower() not in ("0", "false", "no", "off")


def _default_cache_limit_mb() -> float:
    """DIFFCORE_WINOGRAD_CACHE_MB, else a quarter of the machine's or container's memory."""
    env = os.environ.get("DIFFCORE_WINOGRAD_CACHE_MB", "").strip()
    if env:
        try:
            mb = float(env)
        except ValueError:
            mb = -1.0
        if not mb >= 0 or mb == float("inf"):
            raise ValueError(f"DIFFCORE_WINOGRAD_CACHE_MB must be a number of megabytes >= 0; got {env!r}")
        return mb
    return _memory_bytes() / 4 / 2**20


@functools.lru_cache(maxsize=None)
def _memory_bytes() -> float:
    """Physical memory, or the container's (cgroup v2 or v1) limit where that is lower; 16 GiB
    where neither can be read. Read once: a refused layer asks on every call."""
    sizes = []
    try:
        sizes.append(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (AttributeError, ValueError, OSError):
        pass
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                sizes.append(int(f.read().strip()))
        except (OSError, ValueError):   # absent, or "max"
            pass
    sizes = [b for b in sizes if b > 0]
    return float(min(sizes)) if sizes else 16.0 * 2**30


# the most megabytes (2^20 bytes) all cached weight transforms may hold (module docstring,
# Memory); None: DIFFCORE_WINOGRAD_CACHE_MB, else a quarter of the machine's (or container's)
# memory. Checked when a transform would be added: lowering it evicts nothing until then
# (clear_cache() does)
CACHE_LIMIT_MB: float | None = None

# G of F(2x2, 3x3) and of F(4x4, 3x3) (Lavin & Gray; csrc/cpu/winograd.cpp has B and A)
_GS = {
    2: torch.tensor([[1.0, 0.0, 0.0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0.0, 0.0, 1.0]], dtype=torch.float64),
    4: torch.tensor([[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
                     [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]], dtype=torch.float64),
}
_PROBES = 256   # weight values compared on every call (see _transformed)


class _Entry:
    """A weight's cached transforms (u[bf16, tile]: of its values, or of them rounded to bfloat16,
    for F(tile x tile, 3x3); each made on first use) and what tells whether the weight still has
    those values."""
    __slots__ = ("key", "probe", "digest", "epoch", "u", "pixels")

    def __init__(self, weight: torch.Tensor):
        w = weight.detach()
        self.key = (weight._version, w.data_ptr())
        self.probe = _probe(w)
        self.digest = _digest(w)   # for the full check once per epoch (a copy would double the weights' memory)
        self.epoch = _EPOCH
        self.u: dict[tuple[bool, int], torch.Tensor] = {}
        self.pixels = 0   # output pixels of the latest call: what a cached transform saves per call


_U: dict[int, _Entry] = {}   # id(weight) -> its entry, dropped with the weight
_WATCHED: dict[int, weakref.finalize] = {}
_EPOCH = 0
_WARNED = False   # the limit's one warning (until clear_cache)


def _forget(i: int) -> None:
    _U.pop(i, None)
    _WATCHED.pop(i, None)


def cache_bytes() -> int:
    """Bytes the cached weight transforms hold now (summed, not counted: a count could drift when a
    finalizer runs mid-update)."""
    return sum(u.nbytes for e in list(_U.values()) for u in list(e.u.values()))


def cache_limit_mb() -> float:
    """The limit in force: CACHE_LIMIT_MB, or where that is None DIFFCORE_WINOGRAD_CACHE_MB, else a
    quarter of the machine's (or container's) memory."""
    mb = CACHE_LIMIT_MB
    if mb is None:
        return _default_cache_limit_mb()
    if isinstance(mb, bool) or not isinstance(mb, (int, float)) or not 0 <= mb < float("inf"):
        raise ValueError(f"diffcore.winograd.CACHE_LIMIT_MB must be None or a number of megabytes >= 0; got {mb!r}")
    return float(mb)


def _transform_bytes(weight: torch.Tensor, tile: int) -> int:
    K, C = weight.shape[:2]
    return (tile + 2) ** 2 * C * -(-K // 16) * 16 * 4


def _warn_limit(need: int) -> None:
    global _WARNED
    if not _WARNED:
        _WARNED = True
        warnings.warn(f"diffcore.winograd: the cached weight transforms hold {cache_bytes() / 2**20:.0f} MiB and "
                      f"the next needs {need / 2**20:.0f} MiB, over the limit of {cache_limit_mb():.0f} MiB "
                      "(CACHE_LIMIT_MB, DIFFCORE_WINOGRAD_CACHE_MB): the layers that save least per byte run "
                      "oneDNN's direct convolution, or a Winograd tile they hold (conv3x3: a transform made "
                      "for each call)", RuntimeWarning, stacklevel=4)


def _make_room(need: int, pixels: int, tile: int, own: int) -> bool:
    """Whether `need` bytes fit under the limit once other weights' transforms that save less per
    byte than this one (output pixels per call / (tile + 2)^2) are dropped (they are, lowest
    first; `own`: the id of the weight asking, whose other tile stays)."""
    room = cache_limit_mb() * 2**20 - cache_bytes()
    if need <= room:
        return True
    worth = pixels / (tile + 2) ** 2
    lesser = sorted((e.pixels / (k[1] + 2) ** 2, i, k, u.nbytes)
                    for i, e in list(_U.items()) if i != own for k, u in list(e.u.items())
                    if e.pixels / (k[1] + 2) ** 2 < worth)
    if room + sum(n for *_, n in lesser) < need:
        return False
    for _, i, k, n in lesser:
        if room >= need:
            break
        del _U[i].u[k]
        room += n
    return True


def transform_weight(weight: torch.Tensor, tile: int = 2) -> torch.Tensor:
    """[K, C, 3, 3] -> G g G^T packed for the op: float32 [N, ceil(K / 16), C, 16] (element
    k = a * row + col of the a x a transform, a = tile + 2, N = a^2, then 16-column panels of the
    C x K matrix, the columns past K zero). tile 2: F(2x2, 3x3); tile 4: F(4x4, 3x3). Computed
    in float64 and rounded once."""
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3):
        raise ValueError(f"weight must be [out_channels, in_channels, 3, 3]; got shape {tuple(weight.shape)}")
    if type(tile) is not int or tile not in _GS:
        raise ValueError(f"tile must be 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)); got {tile!r}")
    N, (K, C) = (tile + 2) ** 2, weight.shape[:2]
    # vec(G g G^T) = (G kron G) vec(g): one [16 C, 9] x [9, N] product per 16-column panel, written
    # straight into it (3.6x faster than G @ g @ G^T and a permuted copy for 1280 -> 1280 channels)
    gg = torch.kron(_GS[tile], _GS[tile]).T.contiguous().to(weight.device)
    w = weight.detach().reshape(K, C, 9)
    u = torch.zeros(N, -(-K // 16), C, 16, dtype=torch.float32, device=weight.device)
    for p in range(u.shape[1]):
        k0, k1 = 16 * p, min(K, 16 * p + 16)
        u[:, p, :, :k1 - k0] = (w[k0:k1].to(torch.float64).reshape(-1, 9) @ gg).view(k1 - k0, C, N).permute(2, 1, 0)
    return u


def _dense(w: torch.Tensor) -> bool:
    """Whether w covers its memory exactly once, in any order of dimensions."""
    expected = 1
    for stride, size in sorted((st, sz) for st, sz in zip(w.stride(), w.shape) if sz != 1):
        if stride != expected:
            return False
        expected *= size
    return True


def _flat(w: torch.Tensor) -> torch.Tensor:
    """w's values in memory order as a 1-D view: a dense weight (channels_last, or any order) is
    read in place, where reshape(-1) of a channels_last weight would copy all of it."""
    return w.as_strided((w.numel(),), (1,)) if _dense(w) else w.reshape(-1)


def _digest(w: torch.Tensor) -> int:
    """CRC-32 of w's bytes (2.3 GB/s here: about 50 ms for the CIFAR U-Net's 3x3 weights)."""
    return zlib.crc32(_flat(w).contiguous().view(torch.uint8).numpy().data)


def _probe(w: torch.Tensor) -> torch.Tensor:
    """_PROBES values spread over w's memory."""
    flat = _flat(w)
    step = max(1, flat.numel() // _PROBES)
    return flat[::step].clone()


def pick_tile(x: torch.Tensor) -> int:
    """The F(tile x tile, 3x3) a call on x ([B, C, H, W]) runs: 4 when x has at least MIN_TILES_F4
    4x4 output tiles (and is bfloat16, or FP32_F4 is on), else 2."""
    if x.dim() != 4:
        raise ValueError(f"x must be a 4-D tensor [B, C, H, W]; got shape {tuple(x.shape)}")
    B, _, H, W = x.shape
    f4 = x.dtype == torch.bfloat16 or FP32_F4
    return 4 if f4 and B * (-(-H // 4)) * (-(-W // 4)) >= MIN_TILES_F4 else 2


def _transform(weight: torch.Tensor, bf16: bool, tile: int) -> torch.Tensor:
    return transform_weight(weight.to(torch.bfloat16) if bf16 else weight, tile=tile)


def _transformed(weight: torch.Tensor, bf16: bool = False, tile: int = 2, other_tile: bool = False,
                 transient: bool = True, pixels: int = 0) -> torch.Tensor | None:
    """The packed F(tile x tile, 3x3) transform of weight (of weight rounded to bfloat16 if bf16),
    remade when the weight changes. Every call checks the weight's version counter, its address
    and 256 of its values spread over the tensor: writes through `weight.data` (EMA swaps,
    merged adapters) move no version counter, but a write that replaces the weight changes those
    values. Once per epoch (diffcore.sample starts one, as does revalidate()) a CRC-32 of all its
    bytes is compared, which catches any write but an improbable collision; comparing every
    value on every call would cost a read of every weight per forward (a fifth of a batch-1
    forward of the CIFAR U-Net on CPU). A weight made under inference mode has no version
    counter: it is transformed on every call.

    Where caching it would take the transforms past CACHE_LIMIT_MB: the weight's cached
    transform for the other tile if other_tile allows one, else a transform made for this call
    if transient, else None (the caller runs another convolution)."""
    if weight.is_inference():
        return _transform(weight, bf16, tile)
    w = weight.detach()
    e = _U.get(id(weight))
    stale = (e is None or e.key != (weight._version, w.data_ptr())
             or not torch.equal(e.probe.view(torch.uint8), _probe(w).view(torch.uint8))   # bits: NaN == NaN
             or (e.epoch != _EPOCH and e.digest != _digest(w)))
    if stale:
        if id(weight) not in _WATCHED:   # one finalizer per live weight, whatever clear_cache did
            _WATCHED[id(weight)] = weakref.finalize(weight, _forget, id(weight))
        with torch.inference_mode(False), torch.no_grad():
            e = _U[id(weight)] = _Entry(weight)
    e.epoch = _EPOCH
    e.pixels = pixels
    if (bf16, tile) not in e.u:
        need = _transform_bytes(w, tile)
        if not _make_room(need, pixels, tile, id(weight)):
            _warn_limit(need)
            # the other tile where it is held (float32 F(4x4) only while FP32_F4 allows it)
            if other_tile and (bf16, 6 - tile) in e.u and (bf16 or FP32_F4 or tile == 4):
                return e.u[bf16, 6 - tile]
            return _transform(w, bf16, tile) if transient else None
        with torch.inference_mode(False), torch.no_grad():
            e.u[bf16, tile] = _transform(w, bf16, tile)
    return e.u[bf16, tile]


def revalidate() -> None:
    """Start a new epoch: each layer's next call checks a CRC-32 of its whole weight once
    (diffcore.sample calls this at the start of every run). Call it after writing to weights
    through `.data` in part (a few channels, say) when the model then runs outside
    diffcore.sample: the per-call probes see 256 values of each weight."""
    global _EPOCH
    _EPOCH += 1


def clear_cache() -> None:
    """Drop every cached weight transform (they are remade on the next call)."""
    global _WARNED
    _U.clear()
    _WARNED = False


def _native_loaded() -> bool:
    """Whether the native extension (imported once, by diffcore.ops) has the Winograd op."""
    return ops._backend_module("native") is not None and hasattr(torch.ops.diffcore, "conv3x3_winograd")


def _run(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, tile: int | None = None,
         cached_only: bool = False) -> torch.Tensor | None:
    """float32 x: float32 weight and bias. bfloat16 x: weight and bias rounded to bfloat16 (as
    autocast casts a convolution's operands), float32 arithmetic, the output rounded once.
    cached_only (the module): None where the transform finds no room under the limit (a cached
    one of the other tile serves), instead of a transform made for this call."""
    bf16 = x.dtype == torch.bfloat16
    if bf16 and bias is not None:
        bias = bias.to(torch.bfloat16)
    u = _transformed(weight, bf16, pick_tile(x) if tile is None else tile, other_tile=cached_only,
                     transient=not cached_only, pixels=x.shape[0] * x.shape[2] * x.shape[3])
    return None if u is None else torch.ops.diffcore.conv3x3_winograd(x, u, bias, weight.shape[0])


def conv3x3(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None,
            tile: int | None = None) -> torch.Tensor:
    """F.conv2d(x, weight, bias, padding=1) by Winograd's F(tile x tile, 3x3): tile 2 or 4, None
    for pick_tile's choice (see the module docstring). bfloat16 x: a bf16 convolution (weight
    and bias rounded to bf16, float32 accumulation, a bf16 output), as under CPU autocast."""
    if not _native_loaded():
        raise RuntimeError("diffcore.winograd.conv3x3 needs the native extension (diffcore.native), which did "
                           "not load here")
    if not isinstance(x, torch.Tensor) or x.dim() != 4:
        raise ValueError(f"x must be a 4-D channels_last tensor [B, C, H, W]; got "
                         f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__}")
    if weight.dim() != 4 or tuple(weight.shape[2:]) != (3, 3) or weight.shape[1] != x.shape[1]:
        raise ValueError(f"weight must be [out_channels, {x.shape[1]}, 3, 3] for x of shape {tuple(x.shape)}; "
                         f"got {tuple(weight.shape)}")
    accepted = (torch.float32, torch.bfloat16) if x.dtype == torch.bfloat16 else (torch.float32,)
    if weight.dtype not in accepted or weight.device.type != "cpu":
        raise ValueError(f"weight must be a CPU tensor of dtype {' or '.join(map(str, accepted))} for x of dtype "
                         f"{x.dtype}; got {weight.dtype} on {weight.device}")
    if bias is not None and (bias.dtype not in accepted or bias.device.type != "cpu"):
        raise ValueError(f"bias must be None or a CPU tensor of dtype {' or '.join(map(str, accepted))} for x of "
                         f"dtype {x.dtype}; got {bias.dtype} on {bias.device}")
    if tile is not None and (type(tile) is not int or tile not in _GS):
        raise ValueError(f"tile must be None (pick_tile's choice), 2 (F(2x2, 3x3)) or 4 (F(4x4, 3x3)); got {tile!r}")
    return _run(x, weight, bias, tile)


def _geometry(conv: nn.Conv2d) -> str | None:
    """Why conv's geometry is not the Winograd op's (None if it is)."""
    if tuple(conv.kernel_size) != (3, 3):
        return f"kernel {tuple(conv.kernel_size)}, not 3x3"
    if tuple(conv.stride) != (1, 1) or tuple(conv.dilation) != (1, 1) or conv.groups != 1:
        return f"stride {tuple(conv.stride)}, dilation {tuple(conv.dilation)}, groups {conv.groups}: " \
               "the Winograd op is for stride 1, dilation 1, one group"
    if conv.padding not in ((1, 1), "same") or conv.padding_mode != "zeros":
        return f"padding {conv.padding} ({conv.padding_mode}), not 1 with zeros"
    return None


def why_not(conv: nn.Conv2d) -> str | None:
    """None if the layer is one WinogradConv2d handles, else why not (for accelerate's report)."""
    if type(conv) is not nn.Conv2d:
        return f"a Conv2d subclass ({type(conv).__name__})"
    geometry = _geometry(conv)
    if geometry is not None:
        return geometry
    if min(conv.in_channels, conv.out_channels) < MIN_CHANNELS:
        return f"{conv.in_channels} -> {conv.out_channels} channels: under {MIN_CHANNELS}, the direct " \
               "convolution is as fast"
    return None


class WinogradConv2d(nn.Conv2d):
    """nn.Conv2d(3x3, stride 1, padding 1) whose CPU inference on channels_last input runs
    through the Winograd op: float32, and bfloat16 on CPUs whose oneDNN has no bf16
    convolutions (under CPU autocast to bfloat16, or with bfloat16 input and weight), where
    PyTorch's bf16 convolution is its slow reference path. Every other call is nn.Conv2d's
    forward: another geometry (checked on each call, so a changed stride or padding is
    honoured), training (any of x, weight, bias needing grad), autocast to another dtype, other
    devices or dtypes, NCHW input, fewer than MIN_TILES 2x2 output tiles, torch.compile, jit or FX
    tracing, no extension."""

    def _winograd(self, x: torch.Tensor) -> torch.dtype | None:
        """The dtype the op runs in for this call (None: nn.Conv2d's forward)."""
        w, b = self.weight, self.bias
        if not (isinstance(x, torch.Tensor)                # not an FX tracing proxy
                and x.device.type == "cpu" and w.device.type == "cpu" and (b is None or b.device.type == "cpu")
                and x.dim() == 4 and x.shape[1] == w.shape[1]
                and x.is_contiguous(memory_format=torch.channels_last)
                and x.shape[0] * ((x.shape[2] + 1) // 2) * ((x.shape[3] + 1) // 2) >= MIN_TILES
                and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, w, b)))
                and not torch.compiler.is_compiling() and not torch.jit.is_tracing()
                and _geometry(self) is None):
            return None
        dtypes = {x.dtype, w.dtype} | ({b.dtype} if b is not None else set())
        if torch.is_autocast_enabled("cpu"):
            # autocast would cast x, weight and bias to its dtype: the op does the same for bf16
            ok = precision.cpu_bf16_emulated() and dtypes <= {torch.float32, torch.bfloat16}
            dtype = torch.bfloat16
        else:
            dtype = x.dtype
            ok = dtypes == {torch.float32} or (dtypes == {torch.bfloat16} and not precision.cpu_has_bf16())
        return dtype if ok and _native_loaded() else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        dtype = self._winograd(x)
        if dtype is None:
            return super().forward(x)
        x = x.to(dtype)
        y = _run(x, self.weight, self.bias, cached_only=True)
        if y is not None:
            return y
        # over the cache limit: the direct convolution, bf16 on the bf16 values in float32
        if dtype != torch.bfloat16:
            return super().forward(x)
        b = None if self.bias is None else precision.bf16_values(self.bias)
        with torch.autocast("cpu", enabled=False):
            return self._conv_forward(x.float(), precision.bf16_values(self.weight), b).to(torch.bfloat16)
