"""The native backend: the C++/CUDA extension diffcore._C (sources in csrc/), as torch ops
`torch.ops.diffcore.*` with CPU and CUDA implementations of one set of schemas.

Loading (on first import of this module; `import diffcore` never compiles anything):

1. a prebuilt library `diffcore._C` (setup.py builds it at install time) is used when it was
   built from the csrc/ sources present (a hash of them is compiled into the library; without
   a csrc/ tree, any prebuilt library is used);
2. otherwise the sources are JIT-compiled with torch.utils.cpp_extension (ninja) into a cache
   directory ($DIFFCORE_EXT_DIR, default ~/.cache/diffcore/ext/<hash>), saying so on stderr;
   the next processes reuse it;
3. if neither works, importing this module raises ImportError with the reason, which
   diffcore.ops turns into one warning and the torch reference.

Environment: DIFFCORE_NO_EXT=1 (no extension at all: ImportError), DIFFCORE_NO_JIT=1 (use a
prebuilt library or nothing), DIFFCORE_CSRC (another source tree to compile), DIFFCORE_CUDA_ARCH (e.g. "8.0;9.0", CUDA JIT builds),
MAX_JOBS (parallel compile jobs).

For diffcore.ops this module exposes

    IMPLS: dict[str, callable]      op name -> implementation with the reference's signature
    available(device) -> bool       whether the extension runs on that device here

An input the extension does not take (a half-precision tensor, say) falls back to the torch
reference for that call. Step ops take `noise_address=(seed, sample_idx, step, stream)` when
z is None and draw diffcore.noise.normal's numbers in-op.

Whole-trajectory sampling of a Gaussian mixture's exact score lives in diffcore.trajectory
(`integrate_gmm`, re-exported here).
"""
from __future__ import annotations

import hashlib
import importlib.util
import mmap
import os
import sys

import torch

from . import ops as _ops

_PKG = os.path.dirname(os.path.abspath(__file__))
CSRC = os.environ.get("DIFFCORE_CSRC") or os.path.join(os.path.dirname(_PKG), "csrc")
NAMESPACE = "diffcore"


# ---- sources and their hash (setup.py computes the same hash) -------------------------------
def _csrc_files(root: str = CSRC) -> list[str]:
    out = []
    for d, _, files in os.walk(root):
        out += [os.path.join(d, f) for f in files if f.endswith((".h", ".cpp", ".cu"))]
    return sorted(out, key=lambda p: os.path.relpath(p, root).replace(os.sep, "/"))


def source_hash(root: str = CSRC) -> str | None:
    """sha256 (16 hex digits) of csrc/'s .h/.cpp/.cu files, or None without a csrc/ tree."""
    files = _csrc_files(root)
    if not files:
        return None
    h = hashlib.sha256()
    for p in files:
        h.update(os.path.relpath(p, root).replace(os.sep, "/").encode() + b"\0")
        with open(p, "rb") as f:
            h.update(f.read() + b"\0")
    return h.hexdigest()[:16]


def cpu_sources(root: str = CSRC) -> list[str]:
    return [os.path.join(root, p) for p in ("register.cpp", "cpu/steps.cpp", "cpu/gmm.cpp", "cpu/group_norm.cpp",
                                            "cpu/winograd.cpp")]


def cuda_sources(root: str = CSRC) -> list[str]:
    return [os.path.join(root, p) for p in ("cuda/kernels.cu", "cuda/ops_cuda.cpp")]


def compile_flags(src_hash: str, cuda: bool) -> tuple[list[str], list[str], list[str]]:
    """(C++ flags, nvcc flags, link flags) of the extension (setup.py uses the same)."""
    cxx = ["-O3", "-fopenmp", "-fno-math-errno", "-fno-trapping-math", f"-DDIFFCORE_SOURCE_HASH={src_hash}"]
    if os.environ.get("DIFFCORE_NATIVE_ARCH") == "1":
        cxx.append("-march=native")
    nvcc = ["-O3", "-lineinfo"] if cuda else []
    if cuda:
        cxx.append("-DDIFFCORE_WITH_CUDA")
    return cxx, nvcc, ["-fopenmp"]


# ---- loading ------------------------------------------------------------------------------
_origin: str | None = None   # how the library was found: "prebuilt:<path>" or "jit:<path>"


def _prebuilt_path() -> str | None:
    try:
        spec = importlib.util.find_spec("diffcore._C")
    except (ImportError, ValueError):
        return None
    return spec.origin if spec is not None and spec.origin and os.path.exists(spec.origin) else None


def _library_has(path: str, marker: bytes) -> bool:
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
        return m.find(marker) >= 0


def _cache_dir(src_hash: str) -> str:
    base = os.environ.get("DIFFCORE_EXT_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "diffcore", "ext")
    tag = f"{src_hash}-py{sys.version_info[0]}{sys.version_info[1]}-torch{torch.__version__.replace('+', '_')}"
    return os.path.join(base, tag)


def _want_cuda() -> bool:
    if torch.version.cuda is None or os.environ.get("DIFFCORE_NO_CUDA") == "1":
        return False
    from torch.utils.cpp_extension import CUDA_HOME
    return CUDA_HOME is not None


def _jit_build(src_hash: str) -> str:
    from torch.utils import cpp_extension
    cuda = _want_cuda()
    if cuda and os.environ.get("DIFFCORE_CUDA_ARCH"):
        os.environ["TORCH_CUDA_ARCH_LIST"] = os.environ["DIFFCORE_CUDA_ARCH"]
    cxx, nvcc, ld = compile_flags(src_hash, cuda)
    build_dir = _cache_dir(src_hash)
    os.makedirs(build_dir, exist_ok=True)
    name = f"diffcore_C_{src_hash}"
    lib = os.path.join(build_dir, f"{name}.so")
    if not os.path.exists(lib):
        print(f"diffcore: compiling the native extension ({'CPU + CUDA' if cuda else 'CPU'}; about a minute, "
              f"once) into {build_dir}", file=sys.stderr, flush=True)
    sources = cpu_sources() + (cuda_sources() if cuda else [])
    cpp_extension.load(name=name, sources=sources, extra_cflags=cxx, extra_cuda_cflags=nvcc, extra_ldflags=ld,
                       build_directory=build_dir, with_cuda=cuda, is_python_module=False, verbose=False)
    return lib


def _load() -> None:
    global _origin
    if os.environ.get("DIFFCORE_NO_EXT") == "1":
        raise ImportError("the native extension is switched off (DIFFCORE_NO_EXT=1)")
    want = source_hash()
    pre = _prebuilt_path()
    if pre is not None and (want is None or _library_has(pre, f"source={want}".encode())):
        torch.ops.load_library(pre)
        _origin = f"prebuilt:{pre}"
        return
    if want is None:
        raise ImportError("diffcore._C is not built and the csrc/ sources are not here to compile it")
    if os.environ.get("DIFFCORE_NO_JIT") == "1":
        why = "is stale (built from other sources)" if pre else "is not built"
        raise ImportError(f"diffcore._C {why} and DIFFCORE_NO_JIT=1 forbids compiling it")
    try:
        lib = _jit_build(want)
    except Exception as e:  # compiler missing, compile error, ...
        msg = str(e).strip().splitlines()
        tail = " | ".join(msg[-6:]) if msg else type(e).__name__
        raise ImportError(f"compiling the native extension failed: {type(e).__name__}: {tail}") from e
    _origin = f"jit:{lib}"


_load()
_C = torch.ops.diffcore
BUILD_INFO: str = _C.build_info()
HAS_CUDA = "cuda=1" in BUILD_INFO


def available(device) -> bool:
    device = torch.device(device)
    if device.type == "cpu":
        return True
    return device.type == "cuda" and HAS_CUDA and torch.cuda.is_available()


def origin() -> str:
    """Where the loaded library came from ("prebuilt:<path>" or "jit:<path>")."""
    return _origin or ""


# ---- fake (meta) implementations: shapes for torch.compile and opcheck ----------------------
def _need(t, name: str, dims) -> None:
    """The fake kernels' share of the C++ checks: enough to compute the output shapes."""
    if t.dim() not in dims:
        raise ValueError(f"diffcore: {name} must have {' or '.join(map(str, dims))} dimensions; got {t.dim()}")


def _register_fakes() -> None:
    reg = torch.library.register_fake

    @reg("diffcore::philox_normal")
    def _(seed, sample_idx, step, stream, numel):
        _need(sample_idx, "sample_idx", (1,))
        return sample_idx.new_empty((sample_idx.shape[0], numel), dtype=torch.float32)

    @reg("diffcore::philox_uniform")
    def _(seed, sample_idx, step, stream, numel):
        _need(sample_idx, "sample_idx", (1,))
        return sample_idx.new_empty((sample_idx.shape[0], numel), dtype=torch.float64)

    @reg("diffcore::affine_step")
    def _(x, score, a, b, std, z, seed, sample_idx, step, stream):
        return torch.empty_like(x), torch.empty_like(x)

    @reg("diffcore::heun_step")
    def _(x, score1, x_pred, score2, a, b, c, d):
        return torch.empty_like(x)

    @reg("diffcore::ddpm_step")
    def _(x, eps, s1, s2, c1, c2, lv, v, lv_max, clip, z, seed, sample_idx, step, stream):
        return torch.empty_like(x), torch.empty_like(x), torch.empty_like(x)

    @reg("diffcore::ddpm_step_")
    def _(x, eps, s1, s2, c1, c2, lv, v, lv_max, clip, z, seed, sample_idx, step, stream):
        return x

    @reg("diffcore::ddim_step")
    def _(x, eps, abar_t, abar_prev, eta, clip, z, seed, sample_idx, step, stream):
        return torch.empty_like(x), torch.empty_like(x)

    @reg("diffcore::langevin_step")
    def _(x, score, alpha, snr, batch_norm, z, seed, sample_idx, step, stream):
        return torch.empty_like(x), torch.empty_like(x)

    @reg("diffcore::residual_add")
    def _(skip, h, scale):
        return torch.empty_like(h)

    @reg("diffcore::group_norm_silu")
    def _(x, num_groups, weight, bias, eps, emb, silu):
        if x.dim() < 2:
            raise ValueError(f"diffcore: x must be [N, C, *spatial]; got shape {tuple(x.shape)}")
        stats = x.new_empty((x.shape[0], num_groups), dtype=_gn_acc(x.dtype))
        return torch.empty_like(x), stats, stats.clone()

    @reg("diffcore::conv3x3_winograd")
    def _(x, u, bias, out_channels):
        _need(x, "x", (4,))
        B, _, H, W = x.shape
        return x.new_empty((B, out_channels, H, W)).contiguous(memory_format=torch.channels_last)

    @reg("diffcore::gmm_pc")
    def _(x, sample_idx, seed, cf, coef, k, corrector_steps, predictor, snr):
        return torch.empty_like(x), torch.empty_like(x)

    @reg("diffcore::gmm_ode")
    def _(x, cf, coef, h, k, heun):
        return torch.empty_like(x)

    @reg("diffcore::gmm_rk45")
    def _(x, means, vars, log_weights, kind, p0, p1, t0, t1, rtol, atol, h0, max_steps):
        _need(x, "x", (2,))
        return torch.empty_like(x), x.new_empty((x.shape[0],), dtype=torch.int64)


def _register_autograd() -> None:
    """group_norm_silu's backward: the reference's, through autograd (exact by construction)."""

    def setup_context(ctx, inputs, output):
        x, num_groups, weight, bias, eps, emb, silu = inputs
        ctx.num_groups, ctx.eps, ctx.silu = num_groups, eps, silu
        ctx.save_for_backward(x, weight, bias, emb)

    def backward(ctx, gy, _gmean, _grstd):
        x, weight, bias, emb = ctx.saved_tensors
        args = [x, weight, bias, emb]
        need = [t is not None and ctx.needs_input_grad[i] for t, i in zip(args, (0, 2, 3, 5))]
        with torch.enable_grad():
            leaves = [t.detach().requires_grad_(n) if t is not None else None for t, n in zip(args, need)]
            y = _ops.group_norm_silu_reference(leaves[0], ctx.num_groups, leaves[1], leaves[2], ctx.eps,
                                               leaves[3], ctx.silu)
            wanted = [t for t, n in zip(leaves, need) if n]
            grads = list(torch.autograd.grad(y, wanted, gy)) if wanted else []
        out = [grads.pop(0) if n else None for n in need]
        return out[0], None, out[1], out[2], None, out[3], None

    torch.library.register_autograd("diffcore::group_norm_silu", backward, setup_context=setup_context)


_register_fakes()
_register_autograd()


# ---- IMPLS: the op table's entries ------------------------------------------------------------
_FLOATS = (torch.float32, torch.float64)
_HALVES = (torch.bfloat16, torch.float16)   # CPU group_norm_silu, residual_add: 16-bit storage, float32 arithmetic


def _gn_acc(dtype: torch.dtype) -> torch.dtype:
    """group_norm_silu's parameter and statistics dtype (csrc/common.h group_norm_acc_type)."""
    return torch.float32 if dtype in _HALVES else dtype


def _seed64(seed: int) -> int:
    """A seed in [0, 2^64) as the int64 with the same bits (the schema's `int`)."""
    seed = int(seed)
    return seed - (1 << 64) if seed >= (1 << 63) else seed


def _like(t, x):
    return t.to(dtype=x.dtype, device=x.device).contiguous()


def _coef(c, x):
    return c.to(dtype=torch.float64, device=x.device).contiguous()


def _native_ok(x, cpu_halves: bool = False) -> bool:
    """Whether the extension takes x (cpu_halves: bfloat16 / float16 on the CPU too)."""
    dtype_ok = x.dtype in _FLOATS or (cpu_halves and x.dtype in _HALVES and x.device.type == "cpu")
    return dtype_ok and available(x.device) and x.dim() >= 1


def _noise_args(z, noise_address, x):
    """(z, seed, sample_idx, step, stream) for the schema."""
    if z is not None:
        return _like(z, x), 0, None, 0, 0
    seed, idx, step, stream = noise_address
    return None, _seed64(seed), idx.to(device=x.device, dtype=torch.int64).contiguous(), int(step), int(stream)


def _ref_z(z, noise_address, x):
    if z is not None:
        return z
    seed, idx, step, stream = noise_address
    return _ops.draw_noise(x, None, seed, idx, step, stream)


def _restore(out, x):
    """Outputs follow x's memory format as the reference's do (they are computed contiguous)."""
    if x.is_contiguous():
        return out
    return tuple(o.contiguous(memory_format=torch.channels_last) if x.dim() == 4 and
                 x.is_contiguous(memory_format=torch.channels_last) else o for o in out)


def affine_step(x, score, a, b, std, z, noise_address=None):
    if not _native_ok(x):
        return _ops.affine_step_reference(x, score, a, b, std, _ref_z(z, noise_address, x))
    out = _C.affine_step(x.contiguous(), _like(score, x), _coef(a, x), _coef(b, x), _coef(std, x),
                         *_noise_args(z, noise_address, x))
    return _restore(out, x)


def heun_step(x, score1, x_pred, score2, a, b, c, d):
    if not _native_ok(x):
        return _ops.heun_step_reference(x, score1, x_pred, score2, a, b, c, d)
    return _C.heun_step(x.contiguous(), _like(score1, x), _like(x_pred, x), _like(score2, x),
                        *(_coef(v, x) for v in (a, b, c, d)))


def ddpm_step(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, z, noise_address=None,
              clip_denoised=False, v=None, log_var_max=None):
    if not _native_ok(x):
        return _ops.ddpm_step_reference(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var,
                                        _ref_z(z, noise_address, x), clip_denoised, v, log_var_max)
    co = [_coef(c, x) for c in (sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var)]
    out = _C.ddpm_step(x.contiguous(), _like(eps, x), *co, None if v is None else _like(v, x),
                       None if log_var_max is None else _coef(log_var_max, x), bool(clip_denoised),
                       *_noise_args(z, noise_address, x))
    return _restore(out, x)


def ddpm_step_(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, z, noise_address=None,
               clip_denoised=False, v=None, log_var_max=None):
    """In place; an x the extension cannot write directly (another dtype or layout) is updated
    by copying ddpm_step's result into it."""
    if not (_native_ok(x) and x.is_contiguous()):
        out = ddpm_step(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, z, noise_address,
                        clip_denoised, v, log_var_max)
        return x.copy_(out[0])
    co = [_coef(c, x) for c in (sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var)]
    return _C.ddpm_step_(x, _like(eps, x), *co, None if v is None else _like(v, x),
                         None if log_var_max is None else _coef(log_var_max, x), bool(clip_denoised),
                         *_noise_args(z, noise_address, x))


def ddim_step(x, eps, abar_t, abar_prev, eta, z, noise_address=None, clip_denoised=False):
    if not _native_ok(x):
        return _ops.ddim_step_reference(x, eps, abar_t, abar_prev, eta, _ref_z(z, noise_address, x), clip_denoised)
    out = _C.ddim_step(x.contiguous(), _like(eps, x), _coef(abar_t, x), _coef(abar_prev, x), _coef(eta, x),
                       bool(clip_denoised), *_noise_args(z, noise_address, x))
    return _restore(out, x)


def langevin_step(x, score, alpha, snr, z, noise_address=None, norm="per_sample"):
    if not _native_ok(x):
        return _ops.langevin_step_reference(x, score, alpha, snr, _ref_z(z, noise_address, x), norm)
    out = _C.langevin_step(x.contiguous(), _like(score, x), _coef(alpha, x), float(snr), norm == "batch",
                           *_noise_args(z, noise_address, x))
    return _restore(out, x)


def residual_add(skip, h, scale=1.0):
    if not _native_ok(h, cpu_halves=True) or skip.dtype != h.dtype:
        return _ops.residual_add_reference(skip, h, scale)
    fmt = torch.channels_last if h.dim() == 4 and h.is_contiguous(memory_format=torch.channels_last) \
        and not h.is_contiguous() else None
    if fmt is not None:   # same layout on both sides: one pass over the storage in order
        hp, sp = h.permute(0, 2, 3, 1), skip.contiguous(memory_format=fmt).permute(0, 2, 3, 1)
        return _C.residual_add(sp, hp, float(scale)).permute(0, 3, 1, 2)
    return _C.residual_add(skip.contiguous(), h.contiguous(), float(scale))


def group_norm_silu(x, num_groups, weight=None, bias=None, eps=1e-5, emb=None, silu=True):
    if not (x.dtype in _FLOATS or (x.dtype in _HALVES and x.device.type == "cpu")) \
            or x.device.type != "cpu" and not available(x.device):
        return _ops.group_norm_silu_reference(x, num_groups, weight, bias, eps, emb, silu)
    if x.device.type == "cuda" and not x.is_contiguous():
        x = x.contiguous()
    elif not (x.is_contiguous() or (x.dim() == 4 and x.is_contiguous(memory_format=torch.channels_last))
              or (x.dim() == 5 and x.is_contiguous(memory_format=torch.channels_last_3d))):
        x = x.contiguous()
    p = [None if t is None else t.to(dtype=_gn_acc(x.dtype)).contiguous() for t in (weight, bias, emb)]
    return _C.group_norm_silu(x, int(num_groups), p[0], p[1], float(eps), p[2], bool(silu))[0]


IMPLS = {
    "group_norm_silu": group_norm_silu,
    "residual_add": residual_add,
    "affine_step": affine_step,
    "heun_step": heun_step,
    "ddpm_step": ddpm_step,
    "ddim_step": ddim_step,
    "langevin_step": langevin_step,
}

# In-place ops (diffcore.ops.ddpm_step_); backends without an entry copy the out-of-place result.
INPLACE = {"ddpm_step_": ddpm_step_}


def normal(seed: int, sample_idx: torch.Tensor, step: int, shape, stream: int = 0) -> torch.Tensor:
    """diffcore.noise.normal (float32) computed by the extension on sample_idx's device."""
    shape = tuple(shape)
    numel = 1
    for s in shape:
        numel *= int(s)
    idx = sample_idx.to(torch.int64).contiguous()
    return _C.philox_normal(_seed64(seed), idx, int(step), int(stream), numel).reshape(len(idx), *shape)


def uniform(seed: int, sample_idx: torch.Tensor, step: int, shape, stream: int = 0) -> torch.Tensor:
    """diffcore.noise.uniform as float64 (exact) computed by the extension."""
    shape = tuple(shape)
    numel = 1
    for s in shape:
        numel *= int(s)
    idx = sample_idx.to(torch.int64).contiguous()
    return _C.philox_uniform(_seed64(seed), idx, int(step), int(stream), numel).reshape(len(idx), *shape)


def integrate_gmm(*args, **kwargs):
    """diffcore.trajectory.integrate_gmm (whole trajectories of a Gaussian mixture in one op)."""
    from .trajectory import integrate_gmm as f
    return f(*args, **kwargs)
