"""Triton GroupNorm(+SiLU, +emb) forward and backward against the float64 reference.

On CPU the kernels run under TRITON_INTERPRET=1 (set here before triton is imported);
gpu-marked tests need CUDA and skip without it.
"""
import os

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")

from diffcore import ops  # noqa: E402
from diffcore.kernels import group_norm_silu as gn  # noqa: E402

DEV = "cuda" if torch.cuda.is_available() else "cpu"
gpu = pytest.mark.gpu

# (dtype, atol, rtol) against the float64 reference; half types also obey the 2x rule below.
DTYPES = [(torch.float32, 2e-5, 2e-5), (torch.float16, 4e-3, 4e-3), (torch.bfloat16, 3e-2, 2e-2)]
DTYPE_IDS = ["fp32", "fp16", "bf16"]


def rand(*shape, seed, dtype=torch.float64, scale=1.0, shift=0.0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(*shape, generator=g, dtype=torch.float64) * scale + shift).to(dtype).to(DEV)


def layout(x, channels_last):
    if not channels_last:
        return x.contiguous()
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def inputs(shape, G, dtype, channels_last, affine, with_emb, seed=0, shift=0.0):
    N, C = shape[:2]
    x = layout(rand(*shape, seed=seed, dtype=dtype, scale=2.0, shift=shift), channels_last)
    w = rand(C, seed=seed + 1, dtype=dtype) if affine else None
    b = rand(C, seed=seed + 2, dtype=dtype) if affine else None
    emb = rand(N, C, seed=seed + 3, dtype=dtype) if with_emb else None
    return x, w, b, emb


def f64(t):
    return None if t is None else t.detach().double()


def reference(x, G, w, b, emb, silu, eps=1e-5):
    return ops.group_norm_silu_reference(f64(x), G, f64(w), f64(b), eps, f64(emb), silu)


def check_close(got, want, dtype_tol, plain=None):
    """got (fast op) vs want (float64 reference); with `plain` (torch in the same dtype), the
    fast op's error may be at most 2x plain torch's plus the dtype's atol."""
    dtype, atol, rtol = dtype_tol
    assert torch.isfinite(got).all(), "unwritten or non-finite output"
    torch.testing.assert_close(got.double(), want, atol=atol, rtol=rtol)
    if plain is not None:
        err, base = (got.double() - want).abs().max().item(), (plain.double() - want).abs().max().item()
        assert err <= 2 * base + atol, f"error {err:.3g} > 2 x plain torch's {base:.3g} + {atol}"


# (shape, groups, channels_last, affine, emb, silu, split, block_s): odd shapes on purpose;
# split/block_s force the two-stage reduction (partial sums over several programs per group).
CASES = [
    ((1, 6, 7, 13), 3, False, True, True, True, None, None),
    ((2, 6, 7, 13), 2, True, True, False, True, None, None),
    ((3, 4, 1, 1), 4, False, True, True, True, None, None),       # C = G, H = W = 1
    ((2, 8, 1, 1), 2, True, False, True, True, None, None),
    ((1, 10, 5, 9), 5, True, True, True, False, 3, 16),            # plain GroupNorm, split, CL
    ((1, 12, 97), 3, False, True, False, True, 4, 32),             # 3-D, 97-element rows, split
    ((2, 3, 9, 11), 1, False, False, False, True, 5, 32),          # G = 1, split
    ((1, 70, 3, 3), 1, True, True, True, True, None, None),       # CG = 70 > one channel tile
    ((2, 4, 2, 3, 5), 2, False, True, True, True, None, None),    # 5-D NC*-contiguous
    ((1, 6, 2, 3, 3), 3, True, True, True, True, 2, 8),           # 5-D channels_last_3d, split
]
CASE_IDS = ["1x6x7x13", "cl-2x6x7x13", "C=G-1x1", "cl-1x1-noaffine", "cl-gn-split", "3d-97-split",
            "G1-split", "cl-CG70", "5d", "cl3d-split"]


# every case in float32; the half types on the cases that differ in kind (layout, split, 1x1, 5-D)
HALF = {"cl-2x6x7x13", "C=G-1x1", "cl-gn-split", "3d-97-split", "cl3d-split"}
FWD = [pytest.param(c, d, id=f"{i}-{di}") for c, i in zip(CASES, CASE_IDS) for d, di in zip(DTYPES, DTYPE_IDS)
       if di == "fp32" or i in HALF]


@pytest.mark.parametrize("case, dtype_tol", FWD)
def test_forward_matches_float64_reference(case, dtype_tol):
    shape, G, cl, affine, with_emb, silu, split, block_s = case
    x, w, b, emb = inputs(shape, G, dtype_tol[0], cl, affine, with_emb)
    out = torch.full_like(x, float("nan"))                         # poisoned: every element must be written
    y, mean, rstd = gn.group_norm_silu_forward(x, G, w, b, 1e-5, emb, silu, out=out, split=split, block_s=block_s)
    assert y is out and y.stride() == x.stride()
    check_close(y, reference(x, G, w, b, emb, silu), dtype_tol,
                plain=ops.group_norm_silu_reference(x, G, w, b, 1e-5, emb, silu))
    h = f64(x) + (f64(emb).reshape(*emb.shape, *[1] * (x.dim() - 2)) if emb is not None else 0)
    hg = h.reshape(shape[0], G, -1)
    torch.testing.assert_close(mean.double(), hg.mean(-1), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(rstd.double(), (hg.var(-1, unbiased=False) + 1e-5).rsqrt(), atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("dtype_tol", DTYPES, ids=DTYPE_IDS)
def test_through_ops_keeps_layout_and_dtype(dtype_tol):
    x, w, b, emb = inputs((2, 8, 5, 3), 4, dtype_tol[0], True, True, True, seed=5)
    y = ops.group_norm_silu(x, 4, w, b, emb=emb, backend="triton")
    assert y.dtype == x.dtype and y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    check_close(y, reference(x, 4, w, b, emb, True), dtype_tol)


def test_large_mean_half_input_uses_fp32_statistics():
    x = rand(2, 4, 6, 5, seed=3, dtype=torch.bfloat16, shift=100.0)
    y = ops.group_norm_silu(x, 2, backend="triton")
    check_close(y, reference(x, 2, None, None, None, True), (torch.bfloat16, 3e-2, 2e-2))


def test_non_contiguous_input_is_accepted():
    base = rand(2, 6, 9, 8, seed=7)
    x = base[:, :, ::2, 1:].float()            # a strided view in neither layout
    x = x.transpose(2, 3)
    assert not x.is_contiguous() and not x.movedim(1, -1).is_contiguous()
    y = ops.group_norm_silu(x, 3, eps=1e-6, backend="triton")
    check_close(y, reference(x, 3, None, None, None, True, eps=1e-6), DTYPES[0])


# (shape, groups, channels_last, affine, emb, silu, split, block_s) for the backward pass
GRAD_CASES = [
    ((2, 6, 7, 13), 3, False, True, True, True, None, None),
    ((2, 6, 5, 7), 2, True, True, True, True, None, None),
    ((1, 4, 9, 11), 2, False, True, True, True, 3, 16),
    ((1, 8, 6, 5), 4, True, True, True, False, 4, 8),
    ((3, 4, 1, 1), 4, False, False, True, True, None, None),
    ((2, 6, 13), 3, False, True, False, True, 2, 8),
]
GRAD_IDS = ["nchw", "cl", "split", "cl-split-gn", "C=G-1x1-noaffine", "3d-split-noemb"]


@pytest.mark.parametrize("case", GRAD_CASES, ids=GRAD_IDS)
def test_backward_matches_float64_autograd(case):
    shape, G, cl, affine, with_emb, silu, split, block_s = case
    x, w, b, emb = inputs(shape, G, torch.float32, cl, affine, with_emb, seed=11)
    dy = layout(rand(*shape, seed=20, dtype=torch.float32), not cl)   # the other layout on purpose
    _, mean, rstd = gn.group_norm_silu_forward(x, G, w, b, 1e-5, emb, silu)
    got = gn.group_norm_silu_backward(dy, x, G, w, b, emb, mean, rstd, silu, split=split, block_s=block_s)
    leaves = [t.double().requires_grad_() if t is not None else None for t in (x, w, b, emb)]
    ref = ops.group_norm_silu_reference(leaves[0], G, leaves[1], leaves[2], 1e-5, leaves[3], silu)
    want = torch.autograd.grad(ref, [t for t in leaves if t is not None], dy.double())
    got = [g for g, t in zip(got, leaves) if t is not None]
    assert got[0].stride() == x.stride()
    for name, g, r in zip(["x", "weight", "bias", "emb"], got, want):
        assert torch.isfinite(g).all(), name
        torch.testing.assert_close(g.double(), r, atol=5e-5, rtol=5e-5, msg=lambda m: f"d{name}: {m}")


@pytest.mark.parametrize("dtype_tol", [(torch.float32, 5e-5, 5e-5), (torch.bfloat16, 5e-2, 5e-2)], ids=["fp32", "bf16"])
def test_autograd_through_ops(dtype_tol):
    dtype = dtype_tol[0]
    x, w, b, emb = inputs((2, 6, 4, 5), 3, dtype, False, True, True, seed=13)
    leaves = [t.clone().requires_grad_() for t in (x, w, b, emb)]
    assert ops.resolve("group_norm_silu", x.device, "triton", needs_grad=True) == "triton"  # not the reference
    y = ops.group_norm_silu(leaves[0], 3, leaves[1], leaves[2], emb=leaves[3], backend="triton")
    assert "diffcore_triton" in type(y.grad_fn).__name__.lower() or "diffcore_triton" in str(y.grad_fn.name())
    dy = rand(2, 6, 4, 5, seed=14, dtype=dtype)
    y.backward(dy)
    ref_leaves = [f64(t).requires_grad_() for t in (x, w, b, emb)]
    ref = ops.group_norm_silu_reference(ref_leaves[0], 3, ref_leaves[1], ref_leaves[2], 1e-5, ref_leaves[3])
    ref.backward(f64(dy))
    for t, r in zip(leaves, ref_leaves):
        assert t.grad.dtype == dtype
        torch.testing.assert_close(t.grad.double(), r.grad, atol=dtype_tol[1], rtol=dtype_tol[2])


def test_opcheck():
    x, w, b, emb = inputs((2, 4, 3, 5), 2, torch.float32, True, True, True, seed=17)
    torch.library.opcheck(torch.ops.diffcore_triton.group_norm_silu,
                          (x.requires_grad_(), 2, w.requires_grad_(), b.requires_grad_(), 1e-5,
                           emb.requires_grad_(), True))


def test_opcheck_backward_op_without_optionals():
    x, _, _, _ = inputs((2, 4, 3, 3), 2, torch.float32, False, False, False, seed=19)
    _, mean, rstd = gn.group_norm_silu_forward(x, 2)
    dy = torch.randn_like(x)
    torch.library.opcheck(torch.ops.diffcore_triton.group_norm_silu_backward,
                          (dy, x, 2, None, None, None, mean, rstd, False),
                          test_utils=("test_schema", "test_faketensor"))


def test_compiles_with_aot_eager_fullgraph():
    """dynamo + AOT autograd see the op, its fake impl and its backward with no graph break."""
    x, w, b, emb = inputs((2, 4, 3, 5), 2, torch.float32, False, True, True, seed=23)
    f = torch.compile(lambda x, w, b, e: ops.group_norm_silu(x, 2, w, b, emb=e, backend="triton"),
                      backend="aot_eager", fullgraph=True)
    xs = x.clone().requires_grad_()
    y = f(xs, w, b, emb)
    y.square().sum().backward()
    xr = f64(x).requires_grad_()
    ops.group_norm_silu_reference(xr, 2, f64(w), f64(b), 1e-5, f64(emb)).square().sum().backward()
    torch.testing.assert_close(y.double(), reference(x, 2, w, b, emb, True), atol=2e-5, rtol=2e-5)
    torch.testing.assert_close(xs.grad.double(), xr.grad, atol=5e-5, rtol=5e-5)


# ---- GPU only ------------------------------------------------------------------------------------
needs_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@gpu
@needs_cuda
@pytest.mark.parametrize("dtype_tol", [DTYPES[0], DTYPES[2]], ids=["fp32", "bf16"])
@pytest.mark.parametrize("shape, G, cl", [((64, 512, 16, 16), 32, True), ((1, 256, 64, 64), 32, False),
                                          ((8, 320, 33, 31), 32, True)], ids=["cl-64x512x16", "1x256x64-split", "odd"])
def test_large_shapes_on_gpu(shape, G, cl, dtype_tol):
    x, w, b, emb = inputs(shape, G, dtype_tol[0], cl, True, True, seed=29)
    y = ops.group_norm_silu(x, G, w, b, emb=emb, backend="triton")
    check_close(y, reference(x, G, w, b, emb, True), dtype_tol,
                plain=ops.group_norm_silu_reference(x, G, w, b, 1e-5, emb, True))
    dy = torch.randn_like(x)
    leaves = [t.clone().requires_grad_() for t in (x, w, b, emb)]
    ops.group_norm_silu(leaves[0], G, leaves[1], leaves[2], emb=leaves[3], backend="triton").backward(dy)
    ref_leaves = [f64(t).requires_grad_() for t in (x, w, b, emb)]
    ops.group_norm_silu_reference(ref_leaves[0], G, ref_leaves[1], ref_leaves[2], 1e-5, ref_leaves[3]).backward(f64(dy))
    tol = 1e-3 if dtype_tol[0] == torch.float32 else 1e-1
    for t, r in zip(leaves, ref_leaves):
        torch.testing.assert_close(t.grad.double(), r.grad, atol=tol, rtol=tol)


@gpu
@needs_cuda
def test_torch_compile_inductor_on_gpu():
    x, w, b, emb = inputs((4, 64, 16, 16), 32, torch.bfloat16, True, True, True, seed=31)

    def block(x, w, b, e):
        h = ops.group_norm_silu(x, 32, w, b, emb=e, backend="triton")
        return ops.residual_add(x, h, 2 ** -0.5, backend="triton")

    eager = block(x, w, b, emb)
    compiled = torch.compile(block, fullgraph=True)(x, w, b, emb)
    torch.testing.assert_close(compiled, eager, atol=0, rtol=0)
