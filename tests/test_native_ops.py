"""The native backend's ops (diffcore._C through diffcore.native) against the torch reference
in float64 (and float32), the in-op noise against diffcore.noise, the op table's routing, and
GroupNorm+SiLU's gradients. CUDA variants are gpu-marked and skip without a GPU."""
import math

import pytest
import torch

import diffcore
from diffcore import noise as N
from diffcore import ops, step_coeffs

native = pytest.importorskip("diffcore.native", reason="the native extension did not build here")

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.gpu)]
# (dtype, atol, rtol): float64 to rounding; float32 within a few ulps of the float32 reference
TOLS = [(torch.float64, 1e-12, 1e-12), (torch.float32, 2e-6, 2e-6)]
SHAPES = [(5, 3, 7, 4), (1, 13), (3, 1, 1, 1), (2, 1031)]
NOISE_TOL = dict(atol=1e-6, rtol=2e-6)   # float32 Box-Muller: log/cos/sin rounded (not bitwise torch's)


def need(device):
    if device == "cuda" and not (torch.cuda.is_available() and native.available("cuda")):
        pytest.skip("needs CUDA and a CUDA build of the extension")
    return torch.device(device)


def rand(*shape, dtype=torch.float64, seed=0, device="cpu"):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype).to(device)


def close(got, ref, atol, rtol):
    got = got if isinstance(got, (tuple, list)) else (got,)
    ref = ref if isinstance(ref, (tuple, list)) else (ref,)
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.dtype == r.dtype and g.shape == r.shape
        torch.testing.assert_close(g.cpu(), r.cpu(), atol=atol, rtol=rtol)


# ---- the generator ----------------------------------------------------------------------------
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("numel", [1, 3, 5, 8, 1027])
def test_philox_uniform_equals_reference_bitwise(device, numel):
    dev = need(device)
    idx = torch.tensor([3, 0, 2**31 + 5, 77], device=dev)
    seed = 2**40 + 987654321
    got = native.uniform(seed, idx, 13, (numel,), stream=N.STREAM_INIT + 2)
    ref = N.uniform(seed, idx.cpu(), 13, (numel,), stream=N.STREAM_INIT + 2, dtype=torch.float64)
    assert torch.equal(got.cpu(), ref)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("shape", [(1,), (2, 3), (3, 5, 7), (4099,)])
def test_philox_normal_equals_reference(device, shape):
    dev = need(device)
    idx = torch.tensor([11, 2, 9], device=dev)
    seed = 2**63 + 2**33 + 1   # both key words used, and above int64's range
    got = native.normal(seed, idx, 2**32 - 1, shape, stream=N.STREAM_CORRECTOR + 1)
    ref = N.normal(seed, idx.cpu(), 2**32 - 1, shape, stream=N.STREAM_CORRECTOR + 1)
    assert got.dtype == torch.float32 and got.shape == ref.shape
    torch.testing.assert_close(got.cpu(), ref, **NOISE_TOL)
    # bit-equal for most elements (the rest differ by an ulp of log/cos/sin)
    assert (got.cpu() == ref).float().mean() > 0.6


# ---- step ops against the reference ------------------------------------------------------------
def coefs(B, n, seed, lo=0.1, hi=1.0):
    g = torch.Generator().manual_seed(seed)
    return [lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64) for _ in range(n)]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, atol, rtol", TOLS)
@pytest.mark.parametrize("shape", SHAPES)
def test_affine_and_heun_steps(device, dtype, atol, rtol, shape):
    dev = need(device)
    x, s, z, xp, s2 = (rand(*shape, dtype=dtype, seed=i, device=dev) for i in range(5))
    a, b, sd, c = (t.to(dev) for t in coefs(shape[0], 4, 1))
    close(native.affine_step(x, s, a, b, sd, z), ops.affine_step_reference(x, s, a, b, sd, z), atol, rtol)
    close(native.heun_step(x, s, xp, s2, a, b, c, sd), ops.heun_step_reference(x, s, xp, s2, a, b, c, sd), atol, rtol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, atol, rtol", TOLS)
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range"])
@pytest.mark.parametrize("clip", [False, True])
def test_ddpm_step(device, dtype, atol, rtol, variance, clip):
    dev = need(device)
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(50), variance=variance)
    shape = (5, 3, 7, 5)
    x, eps, z = (rand(*shape, dtype=dtype, seed=i, device=dev) for i in range(3))
    t = torch.tensor([0, 1, 17, 49, 3], device=dev)
    kw = step_coeffs.ddpm(proc, t)
    v = rand(*shape, dtype=dtype, seed=5, device=dev).clamp(-1, 1) if variance == "learned_range" else None
    args = [kw[k] for k in ("sqrt_recip_abar", "sqrt_recipm1_abar", "coef_x0", "coef_xt", "log_var")]
    got = native.ddpm_step(x, eps, *args, z, clip_denoised=clip, v=v, log_var_max=kw.get("log_var_max"))
    ref = ops.ddpm_step_reference(x, eps, *args, z, clip, v, kw.get("log_var_max"))
    close(got, ref, atol, rtol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
@pytest.mark.parametrize("in_op", [False, True], ids=["z", "in_op_noise"])
@pytest.mark.parametrize("shape", [(5, 3, 7, 5), (1, 13), (3, 1031)])
def test_ddpm_step_inplace_equals_out_of_place_bitwise(device, dtype, variance, in_op, shape):
    """ddpm_step_ (the engine's step) writes ddpm_step's x_prev into x, bit for bit, and returns x."""
    dev = need(device)
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(50), variance=variance)
    B = shape[0]
    x, eps, z = (rand(*shape, dtype=dtype, seed=10 + i, device=dev) for i in range(3))
    t = torch.tensor([0, 1, 17, 49, 3][:B] if B <= 5 else list(range(B)), device=dev)
    kw = step_coeffs.ddpm(proc, t)
    v = rand(*shape, dtype=dtype, seed=15, device=dev).clamp(-1, 1) if variance == "learned_range" else None
    noise = dict(seed=2**40 + 3, sample_idx=torch.arange(7, 7 + B, device=dev), step=21) if in_op else dict(noise=z)
    for clip in (False, True):
        want = ops.ddpm_step(x, eps, **kw, clip_denoised=clip, v=v, backend="native", **noise)[0]
        y = x.clone()
        got = ops.ddpm_step_(y, eps, **kw, clip_denoised=clip, v=v, backend="native", **noise)
        assert got is y or got.data_ptr() == y.data_ptr()
        assert torch.equal(y, want)
        if not in_op:
            ref = ops.ddpm_step_reference(x, eps, *[kw[k] for k in ("sqrt_recip_abar", "sqrt_recipm1_abar", "coef_x0",
                                                                      "coef_xt", "log_var")], z, clip, v,
                                          kw.get("log_var_max"))[0]
            tol = dict(atol=1e-12, rtol=1e-12) if dtype == torch.float64 else dict(atol=2e-6, rtol=2e-6)
            torch.testing.assert_close(y, ref, **tol)


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_ddpm_step_inplace_on_every_layout_and_dtype(backend):
    """Inputs the extension does not write directly (channels_last, float16, eps being x itself)
    still get ddpm_step's numbers in place."""
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(30))
    kw = step_coeffs.ddpm(proc, torch.tensor([3, 29, 0]))
    noise = dict(seed=5, sample_idx=torch.tensor([4, 0, 9]), step=2)
    base = rand(3, 4, 5, 6, dtype=torch.float32, seed=1)
    cases = {"channels_last": (base.contiguous(memory_format=torch.channels_last), rand(3, 4, 5, 6, seed=2).float()),
             "float16": (base.half(), rand(3, 4, 5, 6, seed=2).half()),
             "eps_is_x": (base, None)}
    for name, (x, eps) in cases.items():
        eps = x if eps is None else eps
        want = ops.ddpm_step(x, eps, **kw, clip_denoised=True, backend=backend, **noise)[0]
        y = x.clone()
        got = ops.ddpm_step_(y, y if eps is x else eps, **kw, clip_denoised=True, backend=backend, **noise)
        assert got.data_ptr() == y.data_ptr() and got.stride() == x.stride(), name
        assert torch.equal(y, want), name


def test_ddpm_step_inplace_refuses_gradients_and_partial_overlap():
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(10))
    kw = step_coeffs.ddpm(proc, torch.tensor([3, 5]))
    x = rand(2, 8, dtype=torch.float32, seed=0).requires_grad_()
    with pytest.raises(ValueError, match="ddpm_step_.*not differentiable"):
        ops.ddpm_step_(x, torch.zeros(2, 8), **kw, noise=torch.zeros(2, 8))
    buf = rand(2 * 8 + 1, dtype=torch.float32, seed=1)
    x, eps = buf[:16].view(2, 8), buf[1:].view(2, 8)   # eps is x shifted by one element
    with pytest.raises(RuntimeError, match="eps overlaps x in part"):
        ops.ddpm_step_(x, eps, **kw, noise=torch.zeros(2, 8), backend="native")


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, atol, rtol", TOLS)
@pytest.mark.parametrize("eta", [0.0, 0.7])
def test_ddim_step(device, dtype, atol, rtol, eta):
    dev = need(device)
    proc = diffcore.DDPM(diffcore.schedules.linear_betas(40))
    shape = (5, 2, 3, 9)
    x, eps, z = (rand(*shape, dtype=dtype, seed=i, device=dev) for i in range(3))
    kw = step_coeffs.ddim(proc, torch.tensor([39, 20, 5, 1, 0], device=dev), torch.tensor([30, 10, 0, 0, -1], device=dev), eta)
    for clip in (False, True):
        got = native.ddim_step(x, eps, kw["abar_t"], kw["abar_prev"], kw["eta"], z, clip_denoised=clip)
        close(got, ops.ddim_step_reference(x, eps, kw["abar_t"], kw["abar_prev"], kw["eta"], z, clip), atol, rtol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, atol, rtol", [(torch.float64, 1e-12, 1e-11), (torch.float32, 1e-5, 1e-5)])
@pytest.mark.parametrize("norm", ["per_sample", "batch"])
@pytest.mark.parametrize("shape", [(5, 3, 7, 4), (1, 13)])
def test_langevin_step(device, dtype, atol, rtol, norm, shape):
    dev = need(device)
    x, s, z = (rand(*shape, dtype=dtype, seed=i, device=dev) for i in range(3))
    (alpha,) = coefs(shape[0], 1, 3, 0.5, 1.0)
    alpha = alpha.to(dev)
    got = native.langevin_step(x, s, alpha, 0.16, z, norm=norm)
    close(got, ops.langevin_step_reference(x, s, alpha, 0.16, z, norm), atol, rtol)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, atol, rtol", TOLS)
def test_residual_add(device, dtype, atol, rtol):
    dev = need(device)
    s, h = rand(3, 4, 5, 6, dtype=dtype, device=dev), rand(3, 4, 5, 6, dtype=dtype, seed=1, device=dev)
    close(native.residual_add(s, h, 1 / math.sqrt(2)), ops.residual_add_reference(s, h, 1 / math.sqrt(2)), atol, rtol)
    hc, sc = h.contiguous(memory_format=torch.channels_last), s.contiguous(memory_format=torch.channels_last)
    close(native.residual_add(sc, hc, 0.5), ops.residual_add_reference(s, h, 0.5), atol, rtol)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape", [(5, 3, 7, 4), (1, 13), (2, 1031), (3, 1, 1, 1), (2, 9, 33, 35)])
def test_residual_add_16bit_is_the_float32_result_rounded(dtype, shape):
    """CPU bf16 / fp16 (an accelerated U-Net's residuals under bf16 autocast): float32 arithmetic
    rounded once, bit for bit the reference's, in either layout; ties round to even, inf and NaN
    pass through; ops.residual_add routes 16-bit CPU tensors here."""
    seed = torch.randint(0, 2**31, ()).item()
    s, h = rand(*shape, seed=seed).to(dtype), rand(*shape, seed=seed + 1).to(dtype)
    flat_s, flat_h = s.view(-1), h.view(-1)
    ulp = 2.0 ** -7 if dtype == torch.bfloat16 else 2.0 ** -10
    flat_s[:4] = torch.tensor([1.0, 1.0, float("inf"), float("nan")], dtype=dtype)[: flat_s.numel()]
    flat_h[:4] = torch.tensor([ulp / 2, 3 * ulp / 2, 1.0, 1.0], dtype=dtype)[: flat_h.numel()]   # two ties
    for scale in (1.0, 2 ** -0.5, -3.0):
        ref = ops.residual_add_reference(s, h, scale)
        for got in (torch.ops.diffcore.residual_add(s, h, scale), native.residual_add(s, h, scale),
                    ops.residual_add(s, h, scale)):   # the C++ op itself, its wrapper, the op table
            torch.testing.assert_close(got, ref, atol=0, rtol=0, equal_nan=True)
        assert ops.resolve("residual_add", h.device) == "native"
        if scale == 1.0 and s.numel() >= 2:
            assert ref.view(-1)[0] == 1.0 and ref.view(-1)[1] == 1.0 + 2 * ulp   # the ties, to even
    if len(shape) == 4:
        sc, hc = (t.contiguous(memory_format=torch.channels_last) for t in (s, h))
        got = native.residual_add(sc, hc, 0.5)
        assert got.is_contiguous(memory_format=torch.channels_last)
        torch.testing.assert_close(got, ops.residual_add_reference(s, h, 0.5), atol=0, rtol=0, equal_nan=True)


# ---- in-op noise: the same numbers as the generator at that address -----------------------------
ADDR = dict(seed=2**35 + 17, step=7, stream=N.STREAM_CORRECTOR + 2)


def address(x):
    idx = torch.tensor([9, 2**20 + 3, 0, 41, 5][: x.shape[0]], device=x.device)
    z = N.normal(ADDR["seed"], idx.cpu(), ADDR["step"], x.shape[1:], ADDR["stream"]).to(x.dtype).to(x.device)
    return (ADDR["seed"], idx, ADDR["step"], ADDR["stream"]), z


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(5, 3, 7, 4), (1, 1029), (2, 3)])
def test_in_op_noise_equals_generator(device, dtype, shape):
    dev = need(device)
    x, s = rand(*shape, dtype=dtype, device=dev), rand(*shape, dtype=dtype, seed=1, device=dev)
    addr, z = address(x)
    B = shape[0]
    one, half = torch.ones(B, dtype=torch.float64, device=dev), torch.full((B,), 0.5, dtype=torch.float64, device=dev)
    tol = dict(atol=4e-6, rtol=4e-6)
    out, mean = native.affine_step(x, s, one, half, one * 2, None, noise_address=addr)
    close((out, mean), ops.affine_step_reference(x, s, one, half, one * 2, z), **tol)
    lv = torch.full((B,), math.log(0.3), dtype=torch.float64, device=dev)
    got = native.ddpm_step(x, s, one, half, half, half, lv, None, noise_address=addr)
    close(got, ops.ddpm_step_reference(x, s, one, half, half, half, lv, z), **tol)
    got = native.ddim_step(x, s, half, half * 1.5, one, None, noise_address=addr)
    close(got, ops.ddim_step_reference(x, s, half, half * 1.5, one, z), **tol)
    got = native.langevin_step(x, s, one, 0.2, None, noise_address=addr, norm="batch")
    close(got, ops.langevin_step_reference(x, s, one, 0.2, z, "batch"), **tol)


def test_op_table_routes_to_native_and_draws_in_op():
    x, s = rand(4, 3, 5, dtype=torch.float32), rand(4, 3, 5, dtype=torch.float32, seed=1)
    assert ops.resolve("affine_step", x.device) == "native"
    idx = torch.tensor([3, 1, 4, 1000])
    got = ops.affine_step(x, s, 1.0, 0.5, 2.0, seed=2**33 + 1, sample_idx=idx, step=4, stream=3)
    ref = ops.affine_step(x, s, 1.0, 0.5, 2.0, seed=2**33 + 1, sample_idx=idx, step=4, stream=3, backend="torch")
    close(got, ref, atol=4e-6, rtol=4e-6)


def test_unsupported_dtype_falls_back_to_reference():
    x, s = rand(3, 8, dtype=torch.bfloat16), rand(3, 8, dtype=torch.bfloat16, seed=1)
    z = rand(3, 8, dtype=torch.bfloat16, seed=2)
    got = ops.affine_step(x, s, 1.0, 0.5, 2.0, noise=z, backend="native")
    close(got, ops.affine_step(x, s, 1.0, 0.5, 2.0, noise=z, backend="torch"), atol=0, rtol=0)


def test_non_contiguous_inputs_go_through_the_wrapper():
    x = rand(6, 4, 10)[:, :, ::2]
    s = rand(6, 10, 4, seed=1).transpose(1, 2)[:, :, ::2]
    a, b, sd = coefs(6, 3, 2)
    z = rand(6, 4, 5, seed=3)
    close(native.affine_step(x, s, a, b, sd, z), ops.affine_step_reference(x, s, a, b, sd, z), 1e-12, 1e-12)


# ---- GroupNorm + SiLU ---------------------------------------------------------------------------
GN_CASES = [  # (shape, groups)
    ((2, 6, 5, 7), 3), ((1, 4, 1, 1), 2), ((3, 8, 13), 2), ((2, 32, 9, 9), 8), ((1, 5, 97), 1), ((2, 6, 3, 4, 5), 2),
]


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype, atol, rtol", [(torch.float64, 1e-12, 1e-12), (torch.float32, 1e-5, 1e-5)])
@pytest.mark.parametrize("shape, G", GN_CASES)
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_group_norm_silu_forward(device, dtype, atol, rtol, shape, G, layout):
    dev = need(device)
    x = rand(*shape, dtype=dtype, device=dev) * 2 + 3
    if layout == "channels_last":
        if x.dim() not in (4, 5):
            pytest.skip("channels_last needs 4-D or 5-D")
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    C = shape[1]
    w, b, emb = rand(C, dtype=dtype, seed=1, device=dev), rand(C, dtype=dtype, seed=2, device=dev), \
        rand(shape[0], C, dtype=dtype, seed=3, device=dev)
    for kw in (dict(weight=w, bias=b, emb=emb, silu=True), dict(silu=True), dict(weight=w, silu=False),
               dict(bias=b, emb=emb, silu=False, eps=1e-3)):
        got = native.group_norm_silu(x, G, **kw)
        ref = ops.group_norm_silu_reference(x, G, **kw)
        close(got, ref, atol, rtol)


# 16-bit storage on CPU: float32 arithmetic, so the output is the float64 reference rounded to the
# dtype, but where the float32 value lands within its rounding error of a tie (rare)
HALF_TOL = {torch.bfloat16: 2.0 ** -7, torch.float16: 2.0 ** -10}   # one unit in the last place, relative


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
@pytest.mark.parametrize("shape, G", GN_CASES + [((1, 4, 2049), 2), ((2, 1032, 2, 3), 8)])  # past the 1024 chunk
@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
def test_group_norm_silu_16bit_is_the_float64_result_rounded(dtype, shape, G, layout):
    x = (rand(*shape) * 2 + 3).to(dtype)
    if layout == "channels_last":
        if x.dim() not in (4, 5):
            pytest.skip("channels_last needs 4-D or 5-D")
        x = x.contiguous(memory_format=torch.channels_last if x.dim() == 4 else torch.channels_last_3d)
    C = shape[1]
    w, b, emb = rand(C, seed=1), rand(C, seed=2), rand(shape[0], C, seed=3)
    for kw in (dict(weight=w, bias=b, emb=emb, silu=True), dict(silu=True), dict(weight=w, silu=False)):
        got = native.group_norm_silu(x, G, **{k: v.float() if torch.is_tensor(v) else v for k, v in kw.items()})
        assert got.dtype == dtype and got.stride() == x.stride()
        ref = ops.group_norm_silu_reference(x.double(), G, **kw)
        close(got.double(), ref, atol=1e-5, rtol=HALF_TOL[dtype])
        off = (got.double() != ref.to(dtype).double()).float().mean().item()
        assert off < 0.01, f"{off:.1%} of the values are not the float64 result rounded to {dtype}"


def test_group_norm_silu_16bit_statistics_and_parameters_are_float32():
    x = rand(2, 6, 5, 3).to(torch.bfloat16)
    y, mean, rstd = torch.ops.diffcore.group_norm_silu(x, 3, torch.ones(6), None, 1e-5, None, True)
    assert y.dtype == torch.bfloat16 and mean.dtype == rstd.dtype == torch.float32
    torch.testing.assert_close(mean.double(), x.double().reshape(2, 3, -1).mean(-1), atol=1e-6, rtol=1e-6)
    torch.library.opcheck(torch.ops.diffcore.group_norm_silu.default, (x, 3, torch.ones(6), None, 1e-5, None, True))
    with pytest.raises(RuntimeError, match="weight must be Float for x of dtype BFloat16"):
        torch.ops.diffcore.group_norm_silu(x, 3, torch.ones(6, dtype=torch.bfloat16), None, 1e-5, None, True)
    # through diffcore.ops: any parameter dtype is converted; the output keeps x's dtype and layout
    xl = rand(2, 8, 4, 4).half().contiguous(memory_format=torch.channels_last)
    got = ops.group_norm_silu(xl, 4, rand(8, seed=1).half(), rand(8, seed=2), backend="native")
    assert got.dtype == torch.float16 and got.is_contiguous(memory_format=torch.channels_last)
    ref = ops.group_norm_silu_reference(xl.double(), 4, rand(8, seed=1).half().double(), rand(8, seed=2))
    close(got.double(), ref, atol=1e-5, rtol=HALF_TOL[torch.float16])


def test_group_norm_large_mean_error_within_twice_torch_float32():
    # flash-attention's rule: the fast op's error against float64 at most ~2x plain torch's in float32
    for offset, spread in ((1000.0, 0.01), (100.0, 1.0), (0.0, 1e-3)):
        x = rand(2, 4, 8, 8, dtype=torch.float32) * spread + offset
        emb = rand(2, 4, dtype=torch.float32, seed=1)
        exact = ops.group_norm_silu_reference(x.double(), 2, emb=emb.double())
        err = (native.group_norm_silu(x, 2, emb=emb).double() - exact).abs().max()
        err_torch = (ops.group_norm_silu_reference(x, 2, emb=emb).double() - exact).abs().max()
        assert err <= 2 * err_torch + 1e-6, (offset, spread, err.item(), err_torch.item())


def test_group_norm_silu_gradients():
    x = rand(2, 6, 5, 3).requires_grad_()
    w, b, emb = rand(6, seed=1).requires_grad_(), rand(6, seed=2).requires_grad_(), rand(2, 6, seed=3).requires_grad_()
    assert torch.autograd.gradcheck(lambda *a: native.group_norm_silu(a[0], 3, a[1], a[2], 1e-5, a[3], True),
                                    (x, w, b, emb))
    y = ops.group_norm_silu(x, 3, w, b, emb=emb, backend="native")
    g = torch.autograd.grad(y.square().sum(), (x, w, b, emb))
    yr = ops.group_norm_silu_reference(x, 3, w, b, emb=emb)
    gr = torch.autograd.grad(yr.square().sum(), (x, w, b, emb))
    close(list(g), list(gr), 1e-12, 1e-12)
    # only x needs a gradient
    xx = rand(1, 4, 3, dtype=torch.float32).requires_grad_()
    (gx,) = torch.autograd.grad(native.group_norm_silu(xx, 2).sum(), xx)
    (gxr,) = torch.autograd.grad(ops.group_norm_silu_reference(xx, 2).sum(), xx)
    close(gx, gxr, 1e-6, 1e-6)


def test_opcheck_group_norm_and_steps():
    x = rand(2, 4, 3, 3, dtype=torch.float32)
    w = rand(4, dtype=torch.float32, seed=1)
    torch.library.opcheck(torch.ops.diffcore.group_norm_silu.default, (x, 2, w, None, 1e-5, None, True))
    a = torch.ones(2, dtype=torch.float64)
    torch.library.opcheck(torch.ops.diffcore.affine_step.default,
                          (x, x, a, a, a, None, 5, torch.tensor([0, 3]), 1, 2))


def test_compile_sees_the_ops():
    x = rand(2, 4, 3, 3, dtype=torch.float32)

    @torch.compile(backend="eager", fullgraph=True)
    def f(x):
        return torch.ops.diffcore.group_norm_silu(x, 2, None, None, 1e-5, None, True)[0] * 2

    close(f(x), ops.group_norm_silu_reference(x, 2) * 2, 1e-5, 1e-5)


# ---- C++ argument checks name the argument ---------------------------------------------------------
def test_cpp_checks_name_the_argument():
    C = torch.ops.diffcore
    x = torch.zeros(2, 3)
    one = torch.ones(2, dtype=torch.float64)
    cases = [
        (lambda: C.affine_step(x, x, one.float(), one, one, x, 0, None, 0, 0), "a must be float64"),
        (lambda: C.affine_step(x, torch.zeros(2, 4), one, one, one, x, 0, None, 0, 0), "score must have x's shape"),
        (lambda: C.affine_step(x, x.double(), one, one, one, x, 0, None, 0, 0), "score must have x's dtype"),
        (lambda: C.affine_step(x, x, one, one, one, None, 0, None, 0, 0), "sample_idx"),
        (lambda: C.affine_step(x, x, one, one, one, None, 0, torch.tensor([0, 1], dtype=torch.int32), 0, 0), "int64"),
        (lambda: C.affine_step(x, x, one, one, one, None, 0, torch.tensor([0, 1]), -1, 0), "step"),
        (lambda: C.heun_step(x.int(), x, x, x, one, one, one, one), "x must be float32 or float64"),
        (lambda: C.heun_step(x.t(), x, x, x, one, one, one, one), "x must be contiguous"),
        (lambda: C.ddpm_step(x, x, one, one, one, one, one, x, None, False, x, 0, None, 0, 0), "log_var_max"),
        (lambda: C.langevin_step(x, x, one, -1.0, False, x, 0, None, 0, 0), "snr"),
        (lambda: C.group_norm_silu(torch.zeros(2, 6, 3), 4, None, None, 1e-5, None, True), "num_groups"),
        (lambda: C.group_norm_silu(torch.zeros(2, 6, 3), 3, torch.ones(5), None, 1e-5, None, True), "weight"),
        (lambda: C.group_norm_silu(torch.zeros(2, 6, 3), 3, None, None, 1e-5, torch.ones(2, 5), True), "emb"),
        (lambda: C.group_norm_silu(torch.zeros(2, 6, 3), 3, None, None, 0.0, None, True), "eps"),
        (lambda: C.philox_normal(0, torch.tensor([1.0]), 0, 0, 4), "sample_idx must be int64"),
        (lambda: C.residual_add(torch.zeros(3), torch.zeros(4), 1.0), "skip"),
    ]
    for call, match in cases:
        with pytest.raises(RuntimeError, match=match):
            call()


def test_build_info_and_origin():
    assert "source=" in native.BUILD_INFO and native.origin().split(":")[0] in ("prebuilt", "jit")
    assert native.available("cpu") and not native.available("meta")


# ---- the AVX2 noise path, the noise's accuracy, the CPU output pool ---------------------------------
def _subprocess_normal(env_extra, seed, idx, step, numel, stream, out):
    """native.normal in a fresh process with extra environment (switches read once per process)."""
    import os
    import subprocess
    import sys
    code = ("import sys, torch; import diffcore.native as n; "
            f"torch.save(n.normal({seed}, torch.tensor({idx}), {step}, ({numel},), stream={stream}), sys.argv[1])")
    env = dict(os.environ, OMP_NUM_THREADS="1", **env_extra)
    r = subprocess.run([sys.executable, "-c", code, str(out)], env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return torch.load(out)


# whole 128-blocks, block + scalar tail, tail only; under 128 values per sample the noise of 32
# samples is drawn at once (lane = sample): 4 samples, and 70 = two full batches and a partial one
@pytest.mark.parametrize("numel, n_samples", [(4099, 4), (1000, 4), (131, 4), (2, 4), (2, 70), (127, 70), (5, 33)])
def test_simd_and_scalar_noise_are_bitwise_equal(tmp_path, numel, n_samples):
    # DIFFCORE_SCALAR_NOISE=1 forces philox.h's scalar code (also what CUDA and the integrators run)
    seed, step, stream = 2**63 + 12345, 2**32 - 2, N.STREAM_INIT + 3
    idx = ([0, 7, 2**32 - 1, 2**31] * 18)[:n_samples]
    idx = [(v + 3 * i) % 2**32 for i, v in enumerate(idx)] if n_samples > 4 else idx   # repeats made distinct
    scalar = _subprocess_normal({"DIFFCORE_SCALAR_NOISE": "1"}, seed, idx, step, numel, stream, tmp_path / "z.pt")
    fast = native.normal(seed, torch.tensor(idx), step, (numel,), stream=stream)
    assert torch.equal(fast, scalar)


def test_noise_error_against_float64_box_muller():
    # the same float32 uniforms and float32 angle 2 pi u as every backend, then log, sqrt, cos, sin
    # in float64: the native normals stay within 2.5 ulps (float32 torch itself: about 2.7)
    seed, step, idx, numel = 2**40 + 7, 123, torch.arange(16), 65536
    z = native.normal(seed, idx, step, (numel,)).double()
    u = N.uniform(seed, idx, step, (numel,), dtype=torch.float64).float().reshape(16, -1, 4)
    u1, u2 = u[..., 0::2].double(), u[..., 1::2]
    theta = (torch.tensor(2 * math.pi, dtype=torch.float32) * u2).double()
    r = torch.sqrt(-2 * torch.log(u1))
    z64 = torch.stack((r * torch.cos(theta), r * torch.sin(theta)), -1).reshape(16, -1)
    ulp = torch.pow(2.0, torch.floor(torch.log2(z64.abs())) - 23)
    assert ((z - z64).abs() / ulp).max() <= 2.5


def _big_ddpm_inputs(B=128, shape=(3, 32, 32)):   # outputs of 1.5 MiB: from the pool (>= 1 MiB)
    x, eps = rand(B, *shape, dtype=torch.float32), rand(B, *shape, dtype=torch.float32, seed=1)
    kw = step_coeffs.ddpm(diffcore.DDPM(diffcore.schedules.linear_betas(100)), torch.full((B,), 50))
    return x, eps, kw


def test_pooled_outputs_are_ordinary_tensors():
    x = rand(8, 64, 32, 32, dtype=torch.float32)   # 2 MiB: from the pool
    y = native.group_norm_silu(x, 8)
    ref = ops.group_norm_silu_reference(x, 8)
    close(y, ref, 1e-5, 1e-5)
    y2 = y.clone()
    y.resize_(2 * y.numel())                       # a resizable storage: grows through the pool
    assert torch.equal(y[: y2.numel()], y2.flatten())
    y.resize_(3)
    assert y.numpy().shape == (3,) and torch.equal(y, y2.flatten()[:3])
    del y
    y3 = native.group_norm_silu(x, 8)              # freed blocks come back for the same size
    close(y3, ref, 1e-5, 1e-5)
    # autograd through the reference backward on a pooled output
    xg = x[:2].clone().requires_grad_()
    (gx,) = torch.autograd.grad(native.group_norm_silu(xg, 8).square().sum(), xg)
    (gr,) = torch.autograd.grad(ops.group_norm_silu_reference(xg, 8).square().sum(), xg)
    close(gx, gr, 1e-4, 1e-4)


def test_pool_reuses_a_freed_output():
    x, eps, kw = _big_ddpm_inputs()
    args = [kw[k] for k in ("sqrt_recip_abar", "sqrt_recipm1_abar", "coef_x0", "coef_xt", "log_var")]
    out = native.ddpm_step(x, eps, *args, None, (3, torch.arange(128), 5, 0), True)
    ptrs = {t.data_ptr() for t in out}
    first = [t.clone() for t in out]
    del out
    again = native.ddpm_step(x, eps, *args, None, (3, torch.arange(128), 5, 0), True)
    assert {t.data_ptr() for t in again} == ptrs     # the same three blocks, already mapped
    for a, b in zip(again, first):
        assert torch.equal(a, b)


def test_pool_switched_off_and_threads(tmp_path):
    import os
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor
    # DIFFCORE_CPU_POOL_MB=0: plain torch allocations, the same numbers
    code = ("import sys, torch; import diffcore.native as n; "
            "x = torch.randn(8, 64, 32, 32, generator=torch.Generator().manual_seed(0)); "
            "torch.save(n.group_norm_silu(x, 8), sys.argv[1])")
    env = dict(os.environ, OMP_NUM_THREADS="1", DIFFCORE_CPU_POOL_MB="0")
    r = subprocess.run([sys.executable, "-c", code, str(tmp_path / "y.pt")], env=env, capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    x = torch.randn(8, 64, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.equal(torch.load(tmp_path / "y.pt"), native.group_norm_silu(x, 8))
    # many threads allocating and freeing pooled outputs at once
    xs, eps, kw = _big_ddpm_inputs()
    args = [kw[k] for k in ("sqrt_recip_abar", "sqrt_recipm1_abar", "coef_x0", "coef_xt", "log_var")]
    want = native.ddpm_step(xs, eps, *args, None, (9, torch.arange(128), 1, 0), False)[0].clone()

    def work(_):
        return all(torch.equal(native.ddpm_step(xs, eps, *args, None, (9, torch.arange(128), 1, 0), False)[0], want)
                   for _ in range(10))

    with ThreadPoolExecutor(4) as ex:
        assert all(ex.map(work, range(8)))
