"""Triton sampler steps and residual_add against the float64 reference, and their in-kernel
noise against diffcore.noise (the counter-based Philox generator).

On CPU the kernels run under TRITON_INTERPRET=1 (set here before triton is imported);
gpu-marked tests need CUDA and skip without it.
"""
import math
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")
import triton.language as tl  # noqa: E402

import diffcore  # noqa: E402
from diffcore import noise as N  # noqa: E402
from diffcore import ops, step_coeffs  # noqa: E402
from diffcore.kernels import affine_step, ddim_step, ddpm_step, heun_step, langevin_step, residual_add  # noqa: E402
from diffcore.kernels.philox import _low_word, philox4x32_10  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.gpu
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")

# (dtype, atol, rtol) against the float64 reference; every check also obeys the 2x rule.
DTYPES = [(torch.float32, 1e-5, 1e-5), (torch.float16, 1e-2, 4e-3), (torch.bfloat16, 6e-2, 2e-2)]
DTYPE_IDS = ["fp32", "fp16", "bf16"]
SHAPES = [(5, 3, 7, 5), (1, 97), (3, 1, 1, 1)]     # 105 elements (a partial word group), 97, 1
SEED = 2 ** 40 + 12345                              # > 2**32: both key words matter


def rand(*shape, seed, dtype=torch.float64, lo=None, hi=None):
    g = torch.Generator().manual_seed(seed)
    t = torch.randn(*shape, generator=g, dtype=torch.float64) if lo is None else \
        torch.rand(*shape, generator=g, dtype=torch.float64) * (hi - lo) + lo
    return t.to(dtype).to(DEV)


def f64(t):
    return None if t is None else t.double() if isinstance(t, torch.Tensor) else t


def address(B):
    """A generator address with sample indices outside 0..B-1, step and stream != 0."""
    idx = torch.tensor([7, 2 ** 32 + 3, 0, 123456789, 42][:B] + list(range(1000, 1000 + max(0, B - 5))), device=DEV)
    return SEED, idx, 17, N.STREAM_CORRECTOR + 2


def drawn(x, addr):
    """diffcore.noise's draw for that address, rounded to x's dtype as the reference does."""
    seed, idx, step, stream = addr
    return N.normal(seed, idx.cpu(), step, x.shape[1:], stream).to(x.dtype).to(DEV)


def check(got, want, dtype_tol, plain):
    """got (fast, x's dtype) vs want (float64 reference); error at most 2x plain torch's + atol."""
    dtype, atol, rtol = dtype_tol
    assert got.dtype == dtype and torch.isfinite(got).all(), "wrong dtype, or an unwritten/non-finite element"
    torch.testing.assert_close(got.double(), want, atol=atol, rtol=rtol)
    err, base = (got.double() - want).abs().max().item(), (plain.double() - want).abs().max().item()
    assert err <= 2 * base + atol, f"error {err:.3g} > 2 x plain torch's {base:.3g} + {atol}"


def poisoned(x, k):
    return tuple(torch.full_like(x, float("nan")) for _ in range(k))


def run_both(launch, reference, tensors, coefs, x, z, addr, dtype_tol, k, **kw):
    """Launch with NaN-poisoned outputs (z given or the address) and compare every output with
    the float64 reference and with the reference in x's dtype."""
    outs = poisoned(x, k)
    if z is not None:
        got = launch(*tensors, *coefs, z, out=outs, **kw)
    else:
        seed, idx, step, stream = addr
        got = launch(*tensors, *coefs, None, idx, seed & 0xFFFFFFFF, seed >> 32, step, stream, out=outs, **kw)
        z = drawn(x, addr)
    got = got if isinstance(got, tuple) else (got,)
    assert all(g.data_ptr() == o.data_ptr() for g, o in zip(got, outs))
    ref_kw = {key: f64(v) for key, v in kw.items()}
    want = reference(*map(f64, tensors), *map(f64, coefs), f64(z), **ref_kw)
    plain = reference(*tensors, *coefs, z, **kw)
    want, plain = (want, plain) if isinstance(want, tuple) else ((want,), (plain,))
    for g, w, p in zip(got, want, plain):
        check(g, w, dtype_tol, p)


NOISE = ["z", "address"]


@pytest.mark.parametrize("dtype_tol", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("noise", NOISE)
def test_affine_step(shape, dtype_tol, noise):
    dtype, B = dtype_tol[0], shape[0]
    x, s, z = rand(*shape, seed=1, dtype=dtype), rand(*shape, seed=2, dtype=dtype), rand(*shape, seed=3, dtype=dtype)
    coefs = [rand(B, seed=4, lo=0.5, hi=1.5), rand(B, seed=5, lo=-1, hi=1), rand(B, seed=6, lo=0, hi=1)]
    run_both(affine_step.affine_step_forward, ops.affine_step_reference, (x, s), coefs,
             x, z if noise == "z" else None, address(B), dtype_tol, 2)


@pytest.mark.parametrize("dtype_tol", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", SHAPES[:2], ids=lambda s: "x".join(map(str, s)))
def test_heun_step(shape, dtype_tol):
    dtype, B = dtype_tol[0], shape[0]
    xs = [rand(*shape, seed=i, dtype=dtype) for i in range(4)]
    coefs = [rand(B, seed=10 + i, lo=-1, hi=1) for i in range(4)]
    out = torch.full_like(xs[0], float("nan"))
    got = heun_step.heun_step_forward(*xs, *coefs, out=out)
    assert got.data_ptr() == out.data_ptr()
    check(got, ops.heun_step_reference(*map(f64, xs), *map(f64, coefs)), dtype_tol,
          ops.heun_step_reference(*xs, *coefs))


def ddpm_coefs(B, variance="fixed_small"):
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(50), variance=variance)
    t = torch.tensor([0, 1, 17, 49, 3, 30, 8][:B])
    kw = step_coeffs.ddpm(proc, t)
    return [kw[k].to(DEV) for k in ("sqrt_recip_abar", "sqrt_recipm1_abar", "coef_x0", "coef_xt", "log_var")], \
        kw.get("log_var_max")


@pytest.mark.parametrize("dtype_tol", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("variance, clip", [("fixed_small", False), ("fixed_large", True), ("learned_range", True)])
@pytest.mark.parametrize("noise", NOISE)
def test_ddpm_step(variance, clip, dtype_tol, noise):
    dtype, shape = dtype_tol[0], SHAPES[0]
    B = shape[0]
    x, eps, z = (rand(*shape, seed=i, dtype=dtype) for i in (1, 2, 3))
    coefs, lv_max = ddpm_coefs(B, variance)
    v = rand(*shape, seed=4, dtype=dtype, lo=-1, hi=1) if variance == "learned_range" else None
    run_both(ddpm_step.ddpm_step_forward, ops.ddpm_step_reference, (x, eps), coefs, x,
             z if noise == "z" else None, address(B), dtype_tol, 3, clip_denoised=clip, v=v,
             log_var_max=None if lv_max is None else lv_max.to(DEV))


@pytest.mark.parametrize("dtype_tol", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("eta, clip", [(0.0, False), (0.5, True), (1.0, False)])
@pytest.mark.parametrize("noise", NOISE)
def test_ddim_step(eta, clip, dtype_tol, noise):
    dtype, shape = dtype_tol[0], SHAPES[0]
    x, eps, z = (rand(*shape, seed=i, dtype=dtype) for i in (1, 2, 3))
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(40))
    kw = step_coeffs.ddim(proc, torch.tensor([39, 20, 5, 1, 0]), torch.tensor([30, 10, 0, 0, -1]), eta)
    coefs = [kw[k].to(DEV) for k in ("abar_t", "abar_prev", "eta")]
    run_both(ddim_step.ddim_step_forward, ops.ddim_step_reference, (x, eps), coefs, x,
             z if noise == "z" else None, address(shape[0]), dtype_tol, 2, clip_denoised=clip)


# the small shape in every dtype; a sample of several programs (partial norms summed) in fp32
LANGEVIN = [pytest.param(SHAPES[0], d, id=f"5x3x7x5-{i}") for d, i in zip(DTYPES, DTYPE_IDS)] + \
    [pytest.param((2, 2, 33, 37), DTYPES[0], id="2x2x33x37-multiblock-fp32")]


@pytest.mark.parametrize("norm", ["per_sample", "batch"])
@pytest.mark.parametrize("noise", NOISE)
@pytest.mark.parametrize("shape, dtype_tol", LANGEVIN)
def test_langevin_step(shape, norm, dtype_tol, noise):
    dtype = dtype_tol[0]
    x, s, z = (rand(*shape, seed=i, dtype=dtype) for i in (1, 2, 3))
    alpha = rand(shape[0], seed=4, lo=0.5, hi=1.0)
    run_both(langevin_step.langevin_step_forward, ops.langevin_step_reference, (x, s), [alpha, 0.16], x,
             z if noise == "z" else None, address(shape[0]), dtype_tol, 2, norm=norm)


# ---- the in-kernel generator -----------------------------------------------------------------------
@triton.jit
def _words_kernel(OUT_ptr, n_groups, sample, step, stream, seed_lo, seed_hi, BLOCK: tl.constexpr):
    g = tl.arange(0, BLOCK).to(tl.int64)
    zero = tl.zeros([BLOCK], tl.uint32)
    w = philox4x32_10(g.to(tl.uint32), (zero + sample).to(tl.uint32), (zero + step).to(tl.uint32),
                      (zero + stream).to(tl.uint32),
                      _low_word(seed_lo).to(tl.uint32), _low_word(seed_hi).to(tl.uint32))
    w0, w1, w2, w3 = w
    tl.store(OUT_ptr + g * 4, w0.to(tl.int64), mask=g < n_groups)
    tl.store(OUT_ptr + g * 4 + 1, w1.to(tl.int64), mask=g < n_groups)
    tl.store(OUT_ptr + g * 4 + 2, w2.to(tl.int64), mask=g < n_groups)
    tl.store(OUT_ptr + g * 4 + 3, w3.to(tl.int64), mask=g < n_groups)


def test_philox_words_equal_the_generator_bit_for_bit():
    out = torch.full((64, 4), -1, dtype=torch.int64, device=DEV)
    sample, step, stream = 0xFFFFFFF0, 0x80000001, 5
    _words_kernel[(1,)](out, 64, sample, step, stream, SEED & 0xFFFFFFFF, SEED >> 32, BLOCK=64)
    want = torch.stack(N.philox4x32((torch.arange(64), sample, step, stream), (SEED & 0xFFFFFFFF, SEED >> 32)), -1)
    assert torch.equal(out.cpu(), want)


@pytest.mark.parametrize("shape", [(5, 2, 3, 37), (2, 4 * 256 * 3 + 1)], ids=["odd", "several-programs"])
def test_in_kernel_noise_equals_diffcore_noise(shape):
    """x = 0 x + 0 score + 1 z: the step's output is its noise."""
    B = shape[0]
    seed, idx, step, stream = address(B)
    x = torch.zeros(shape, device=DEV)
    got, _ = ops.affine_step(x, x, 0.0, 0.0, 1.0, seed=seed, sample_idx=idx, step=step, stream=stream, backend="triton")
    want = N.normal(seed, idx.cpu(), step, shape[1:], stream)
    torch.testing.assert_close(got.cpu(), want)          # float32 rounding
    other, _ = ops.affine_step(x, x, 0.0, 0.0, 1.0, seed=seed, sample_idx=idx, step=step + 1, stream=stream,
                               backend="triton")
    assert (other != got).float().mean() > 0.99          # the step is part of the counter


def test_noise_depends_only_on_the_sample_index():
    """Sample i's noise is the same in any batch (chunking, ranks)."""
    seed = 3
    x = torch.zeros(4, 3, 5, 5, device=DEV)
    idx = torch.tensor([10, 11, 12, 13], device=DEV)
    full, _ = ops.affine_step(x, x, 0.0, 0.0, 1.0, seed=seed, sample_idx=idx, step=2, backend="triton")
    part, _ = ops.affine_step(x[:2], x[:2], 0.0, 0.0, 1.0, seed=seed, sample_idx=idx[2:], step=2, backend="triton")
    torch.testing.assert_close(part, full[2:], atol=0, rtol=0)


@pytest.mark.parametrize("op", ["ddpm_step", "ddim_step", "langevin_step"])
def test_ops_in_kernel_noise_matches_torch_backend(op):
    """Through diffcore.ops: backend='triton' with a seed equals backend='torch' with the same seed."""
    shape = (5, 3, 7, 5)
    x, e = rand(*shape, seed=1, dtype=torch.float32), rand(*shape, seed=2, dtype=torch.float32)
    seed, idx, step, stream = address(5)
    kw = dict(seed=seed, sample_idx=idx, step=step, stream=stream)
    if op == "ddpm_step":
        coefs, _ = ddpm_coefs(5, "fixed_large")
        call = lambda b: ops.ddpm_step(x, e, *coefs, clip_denoised=True, backend=b, **kw)  # noqa: E731
    elif op == "ddim_step":
        call = lambda b: ops.ddim_step(x, e, torch.full((5,), 0.3), torch.full((5,), 0.6), 0.7, backend=b, **kw)  # noqa: E731
    else:
        call = lambda b: ops.langevin_step(x, e, torch.full((5,), 0.4), 0.16, norm="batch", backend=b, **kw)  # noqa: E731
    for got, want in zip(call("triton"), call("torch")):
        torch.testing.assert_close(got, want)


def test_bad_noise_address_is_refused():
    x = torch.zeros(2, 3, device=DEV)
    with pytest.raises(ValueError, match="z or a noise address"):
        affine_step.affine_step_forward(x, x, torch.ones(2), torch.ones(2), torch.ones(2))
    with pytest.raises(ValueError, match="seed"):
        affine_step.affine_step(x, x, torch.ones(2), torch.ones(2), torch.ones(2), None,
                                noise_address=(2 ** 64, torch.arange(2), 0, 0))
    with pytest.raises(ValueError, match="out must"):
        affine_step.affine_step_forward(x, x, torch.ones(2), torch.ones(2), torch.ones(2), x, out=(x,))


# ---- residual_add ---------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype_tol", DTYPES, ids=DTYPE_IDS)
@pytest.mark.parametrize("shape", [(2, 5, 7, 13), (1, 1025), (1,)], ids=["2x5x7x13", "1025", "1"])
def test_residual_add(shape, dtype_tol):
    dtype = dtype_tol[0]
    skip, h = rand(*shape, seed=1, dtype=dtype), rand(*shape, seed=2, dtype=dtype)
    out = torch.full_like(h, float("nan"))
    got = residual_add.residual_add_forward(skip, h, 1 / math.sqrt(2), out=out)
    assert got.data_ptr() == out.data_ptr()
    check(got, ops.residual_add_reference(f64(skip), f64(h), 1 / math.sqrt(2)), dtype_tol,
          ops.residual_add_reference(skip, h, 1 / math.sqrt(2)))


def test_residual_add_mixed_dtypes_non_contiguous_and_grad():
    skip = rand(6, 4, 5, seed=1, dtype=torch.float32).transpose(0, 2)       # non-contiguous, fp32
    h = rand(5, 4, 6, seed=2, dtype=torch.bfloat16).requires_grad_()
    s = skip.clone().requires_grad_()
    y = ops.residual_add(s, h, 0.5, backend="triton")
    assert y.dtype == torch.bfloat16
    check(y.detach(), ops.residual_add_reference(f64(skip), f64(h.detach()), 0.5), DTYPES[2],
          ops.residual_add_reference(skip, h.detach(), 0.5))
    y.backward(torch.ones_like(y))
    assert s.grad.dtype == torch.float32 and h.grad.dtype == torch.bfloat16
    assert torch.equal(s.grad, torch.full_like(s, 0.5)) and torch.equal(h.grad, torch.full_like(h, 0.5))


# ---- custom-op checks ----------------------------------------------------------------------------
def _opcheck_cases():
    x, s = rand(2, 3, 5, seed=1, dtype=torch.float32), rand(2, 3, 5, seed=2, dtype=torch.float32)
    c = rand(2, seed=3, lo=0.2, hi=0.8, dtype=torch.float32)
    idx = torch.tensor([5, 2 ** 33], device=DEV)
    v = rand(2, 3, 5, seed=4, lo=-1, hi=1, dtype=torch.float32)
    T = torch.ops.diffcore_triton
    return {
        "residual_add": (T.residual_add, (x.clone().requires_grad_(), s.clone().requires_grad_(), 0.7)),
        "affine_step_z": (T.affine_step, (x, s, c, c, c, s, None, 0, 0, 0, 0)),
        "affine_step_address": (T.affine_step, (x, s, c, c, c, None, idx, 5, 1, 3, 2)),
        "heun_step": (T.heun_step, (x, s, x, s, c, c, c, c)),
        "ddpm_step": (T.ddpm_step, (x, s, c, c, c, c, c.log(), None, idx, 5, 1, 3, 2, True, v, c.log() + 1)),
        "ddim_step": (T.ddim_step, (x, s, c, c + 0.1, c, s, None, 0, 0, 0, 0, False)),
        "langevin_step": (T.langevin_step, (x, s, c, 0.16, None, idx, 5, 1, 3, 2, "batch")),
    }


@pytest.mark.parametrize("name", ["residual_add", "affine_step_z", "affine_step_address", "heun_step", "ddpm_step",
                                  "ddim_step", "langevin_step"])
def test_opcheck(name):
    op, args = _opcheck_cases()[name]
    torch.library.opcheck(op, args)


def test_step_compiles_with_aot_eager_fullgraph():
    x, s = rand(4, 3, 5, seed=1, dtype=torch.float32), rand(4, 3, 5, seed=2, dtype=torch.float32)
    idx = torch.arange(4, device=DEV) + 9

    def step(x, s):
        x, _ = ops.affine_step(x, s, 0.9, 0.1, 0.5, seed=SEED, sample_idx=idx, step=3, backend="triton")
        return ops.residual_add(x, s, 0.5, backend="triton")

    torch.testing.assert_close(torch.compile(step, backend="aot_eager", fullgraph=True)(x, s), step(x, s),
                               atol=0, rtol=0)


# ---- GPU only -------------------------------------------------------------------------------------
@gpu
@needs_cuda
def test_large_ddpm_step_on_gpu():
    shape = (256, 3, 64, 64)
    x, eps = rand(*shape, seed=1, dtype=torch.float32), rand(*shape, seed=2, dtype=torch.float32)
    coefs, _ = ddpm_coefs(5)
    coefs = [c.repeat(52)[:256] for c in coefs]
    idx = torch.arange(256, device=DEV) * 3 + 2 ** 32
    got = ops.ddpm_step(x, eps, *coefs, seed=SEED, sample_idx=idx, step=5, backend="triton")
    want = ops.ddpm_step(x, eps, *coefs, seed=SEED, sample_idx=idx, step=5, backend="torch")
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, atol=2e-5, rtol=2e-5)


@gpu
@needs_cuda
def test_cuda_graph_capture_and_replay_of_a_step():
    shape = (64, 3, 32, 32)
    x, eps = rand(*shape, seed=1, dtype=torch.float32), rand(*shape, seed=2, dtype=torch.float32)
    coefs, _ = ddpm_coefs(1, "fixed_large")
    coefs = [c.expand(64).contiguous() for c in coefs]
    idx = torch.arange(64, device=DEV)
    run = lambda: ops.ddpm_step(x, eps, *coefs, seed=SEED, sample_idx=idx, step=7, backend="triton")  # noqa: E731
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        run()                                     # warm-up (compilation) outside the capture
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = run()
    for seed in (5, 6):
        x.copy_(rand(*shape, seed=seed, dtype=torch.float32))
        graph.replay()
        torch.cuda.synchronize()
        for g, w in zip(static_out, run()):
            torch.testing.assert_close(g, w, atol=0, rtol=0)


@gpu
@needs_cuda
def test_torch_compile_inductor_step_on_gpu():
    x, s = rand(128, 3, 32, 32, seed=1, dtype=torch.bfloat16), rand(128, 3, 32, 32, seed=2, dtype=torch.bfloat16)
    idx = torch.arange(128, device=DEV)

    def step(x, s, a):
        x, mean = ops.affine_step(x, s, a, 0.1, 0.5, seed=SEED, sample_idx=idx, step=3, backend="triton")
        return ops.langevin_step(x, s, a, 0.16, seed=SEED, sample_idx=idx, step=3, stream=N.STREAM_CORRECTOR,
                                 backend="triton")

    a = torch.full((128,), 0.9, device=DEV)
    for g, w in zip(torch.compile(step, fullgraph=True)(x, s, a), step(x, s, a)):
        torch.testing.assert_close(g, w, atol=0, rtol=0)


def test_float64_steps_compute_in_float64_and_empty_batches_work():
    x, s, z = (rand(3, 2, 5, seed=i) for i in (1, 2, 3))           # float64
    got = ops.affine_step(x, s, 0.9, 0.1, 0.3, noise=z, backend="triton")
    want = ops.affine_step(x, s, 0.9, 0.1, 0.3, noise=z, backend="torch")
    for g, w in zip(got, want):
        assert g.dtype == torch.float64
        torch.testing.assert_close(g, w, atol=1e-14, rtol=1e-14)
    e = torch.empty(0, 3, 4, device=DEV)
    out, mean = ops.affine_step(e, e, 1.0, 1.0, 1.0, seed=1, sample_idx=torch.empty(0, dtype=torch.long), backend="triton")
    assert out.shape == e.shape and mean.shape == e.shape
    assert ops.group_norm_silu(torch.empty(0, 4, 3, 3, device=DEV), 2, backend="triton").shape == (0, 4, 3, 3)
