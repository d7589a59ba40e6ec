"""Fuzzing every C++ op of diffcore._C with hypothesis: random shapes (0-sized and odd ones),
random strides (non-contiguous views: sliced, transposed, expanded with a zero stride), dtypes
(ints, bool, half, bfloat16, float32, float64) and devices (meta). Each call either raises a clean RuntimeError/ValueError or returns what the
torch reference returns for the same inputs; it never crashes the process."""
import math
import re

import pytest
import torch

pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from diffcore import noise as N  # noqa: E402
from diffcore import ops  # noqa: E402

native = pytest.importorskip("diffcore.native", reason="the native extension did not build here")
C = torch.ops.diffcore
SETTINGS = settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
MUTATIONS = ["ok"] * 36 + ["int64", "int32", "bool", "float16", "bfloat16", "other_float", "strided", "transposed",
                           "expanded", "meta", "shape", "scalar"]


def mutate(t, kind, draw_int):
    """t, or a variant that may be invalid for the op."""
    if t is None or kind == "ok":
        return t
    if kind in ("int64", "int32", "bool", "float16", "bfloat16"):
        return t.to(getattr(torch, kind))
    if kind == "other_float":
        return t.to(torch.float32 if t.dtype == torch.float64 else torch.float64)
    if kind == "strided":   # same values, non-contiguous storage
        if t.dim() == 0:
            return t
        big = torch.zeros(*t.shape[:-1], 2 * t.shape[-1] + 1, dtype=t.dtype)
        big[..., 1::2] = t
        return big[..., 1::2]
    if kind == "transposed":  # same values, the last two dims' strides swapped
        return t.transpose(-1, -2).contiguous().transpose(-1, -2) if t.dim() >= 2 else t
    if kind == "expanded":    # row 0 repeated with a zero stride
        return t[:1].expand(t.shape) if t.dim() >= 1 and t.shape[0] > 1 else t
    if kind == "meta":
        return t.to("meta")
    if kind == "shape":
        if t.dim() == 0:
            return t.reshape(1)
        shape = list(t.shape)
        shape[draw_int(0, t.dim() - 1)] += 1
        return torch.zeros(shape, dtype=t.dtype)
    if kind == "scalar":
        return t.reshape(-1)[:1].reshape(()) if t.numel() else torch.zeros((), dtype=t.dtype)
    raise AssertionError(kind)


def call_or_clean_error(fn, *args):
    """(True, result) or (False, None) for a RuntimeError/ValueError whose message names an
    argument of the op; anything else fails."""
    try:
        return True, fn(*args)
    except (RuntimeError, ValueError) as e:
        names = {a.name for a in fn.default._schema.arguments} | {"x", "B", "C", "D", "K"}
        assert any(re.search(rf"\b{n}\b", str(e)) for n in names), f"the error names no argument of {sorted(names)}: {e}"
        return False, None


def valid(tensors, x, coefs, halves=False):
    """All x-like tensors match x (shape, dtype, contiguous, CPU) and coefficients are float64 [B];
    halves: x may also be bfloat16 / float16 (the CPU residual_add)."""
    dtypes = (torch.float32, torch.float64) + ((torch.bfloat16, torch.float16) if halves else ())
    if x.device.type != "cpu" or x.dtype not in dtypes or not x.is_contiguous() or x.dim() < 1:
        return False
    for t in tensors:
        if t is not None and (t.shape != x.shape or t.dtype != x.dtype or not t.is_contiguous() or t.device != x.device):
            return False
    for c in coefs:
        if c is not None and (c.shape != (x.shape[0],) or c.dtype != torch.float64 or not c.is_contiguous()
                              or c.device != x.device):
            return False
    return True


def all_cpu(*ts):
    """Every tensor on the CPU (a meta tensor anywhere sends the call to the fake kernel)."""
    return all(t.device.type == "cpu" for t in ts if isinstance(t, torch.Tensor))


def tol(x):
    return dict(atol=1e-10, rtol=1e-10) if x.dtype == torch.float64 else dict(atol=5e-5, rtol=5e-5)


@st.composite
def step_case(draw):
    B = draw(st.integers(0, 4))
    rest = draw(st.lists(st.integers(0, 6), min_size=0, max_size=3))
    dtype = draw(st.sampled_from([torch.float32, torch.float64]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**16)))
    shape = (B, *rest)
    mk = lambda: torch.randn(*shape, generator=g, dtype=dtype)  # noqa: E731
    cf = lambda lo, hi: lo + (hi - lo) * torch.rand(B, generator=g, dtype=torch.float64)  # noqa: E731
    di = lambda lo, hi: draw(st.integers(lo, hi))  # noqa: E731
    m = lambda t: mutate(t, draw(st.sampled_from(MUTATIONS)), di)  # noqa: E731
    in_op = draw(st.booleans())
    idx = torch.tensor([draw(st.integers(0, 2**40)) for _ in range(B)], dtype=torch.int64)
    return dict(mk=mk, cf=cf, m=m, draw=draw, in_op=in_op, idx=idx, seed=draw(st.integers(0, 2**63 - 1)),
                step=draw(st.integers(0, 2**32 - 1)), stream=draw(st.integers(0, 2**32 - 1)))


def noise_of(case, x):
    """(z arg, seed, idx arg, step, stream) for the schema, and the z the reference uses."""
    if not case["in_op"]:
        z = case["m"](case["mk"]())
        return (z, 0, None, 0, 0), z
    idx = case["m"](case["idx"])
    ok = (x.dim() >= 1 and x.shape[0] > 0 and x.dtype.is_floating_point and idx.dtype == torch.int64
          and idx.shape == (x.shape[0],) and idx.device.type == "cpu" and idx.is_contiguous())
    z = N.normal(case["seed"], idx, case["step"], x.shape[1:], case["stream"]).to(x.dtype) if ok else None
    return (None, case["seed"], idx, case["step"], case["stream"]), z


def check_outputs(got, ref, x, in_op):
    for g, r in zip(got, ref):
        assert g.shape == x.shape and g.dtype == x.dtype
        t = tol(x) if not in_op else dict(atol=2e-5, rtol=2e-5)
        torch.testing.assert_close(g, r, **t)


@given(step_case())
@SETTINGS
def test_fuzz_affine_step(case):
    m, x = case["m"], case["m"](case["mk"]())
    s = m(case["mk"]())
    a, b, sd = (m(case["cf"](0.1, 1)) for _ in range(3))
    nargs, z = noise_of(case, x)
    ok, out = call_or_clean_error(C.affine_step, x, s, a, b, sd, *nargs)
    if ok and all_cpu(x, s, a, b, sd, *nargs) and z is not None:
        assert valid([s, nargs[0]], x, [a, b, sd])
        check_outputs(out, ops.affine_step_reference(x, s, a, b, sd, z), x, case["in_op"])


@given(step_case())
@SETTINGS
def test_fuzz_heun_step(case):
    m, x = case["m"], case["m"](case["mk"]())
    ts = [m(case["mk"]()) for _ in range(3)]
    cs = [m(case["cf"](-1, 1)) for _ in range(4)]
    ok, out = call_or_clean_error(C.heun_step, x, *ts, *cs)
    if ok and all_cpu(x, *ts, *cs) and x.dim() >= 1:
        assert valid(ts, x, cs)
        check_outputs([out], [ops.heun_step_reference(x, *ts, *cs)], x, False)


@given(step_case(), st.booleans(), st.booleans())
@SETTINGS
def test_fuzz_ddpm_step(case, learned, clip):
    m, x = case["m"], case["m"](case["mk"]())
    eps = m(case["mk"]())
    cs = [m(case["cf"](0.1, 2)) for _ in range(4)] + [m(case["cf"](-6, -1))]
    v = m(case["mk"]().clamp(-1, 1)) if learned else None
    lvmax = m(case["cf"](-3, 0)) if learned else None
    nargs, z = noise_of(case, x)
    ok, out = call_or_clean_error(C.ddpm_step, x, eps, *cs, v, lvmax, clip, *nargs)
    y = x.clone()
    ok_inplace, _ = call_or_clean_error(C.ddpm_step_, y, eps, *cs, v, lvmax, clip, *nargs)
    if x.is_contiguous():     # (clone() makes a strided x contiguous, which is then accepted)
        assert ok_inplace == ok   # the in-place op takes exactly the inputs the out-of-place one does
    if ok and all_cpu(x, eps, v, lvmax, *cs, *nargs) and z is not None:
        assert valid([eps, v, nargs[0]], x, cs + [lvmax])
        check_outputs(out, ops.ddpm_step_reference(x, eps, *cs, z, clip, v, lvmax), x, case["in_op"])
        assert torch.equal(y, out[0])


@given(step_case(), st.booleans())
@SETTINGS
def test_fuzz_ddim_step(case, clip):
    m, x = case["m"], case["m"](case["mk"]())
    eps = m(case["mk"]())
    at, ap, eta = m(case["cf"](0.1, 0.5)), m(case["cf"](0.6, 0.99)), m(case["cf"](0, 1))
    nargs, z = noise_of(case, x)
    ok, out = call_or_clean_error(C.ddim_step, x, eps, at, ap, eta, clip, *nargs)
    if ok and all_cpu(x, eps, at, ap, eta, *nargs) and z is not None:
        assert valid([eps, nargs[0]], x, [at, ap, eta])
        check_outputs(out, ops.ddim_step_reference(x, eps, at, ap, eta, z, clip), x, case["in_op"])


@given(step_case(), st.booleans(), st.floats(-1, 1))
@SETTINGS
def test_fuzz_langevin_step(case, batch, snr):
    m, x = case["m"], case["m"](case["mk"]())
    s = m(case["mk"]())
    alpha = m(case["cf"](0.5, 1))
    nargs, z = noise_of(case, x)
    ok, out = call_or_clean_error(C.langevin_step, x, s, alpha, snr, batch, *nargs)
    if ok and all_cpu(x, s, alpha, *nargs) and z is not None and x.dim() >= 2 and x.numel() and x[0].numel():
        assert snr > 0 and valid([s, nargs[0]], x, [alpha])
        ref = ops.langevin_step_reference(x, s, alpha, snr, z, "batch" if batch else "per_sample")
        for g, r in zip(out, ref):
            torch.testing.assert_close(g, r, atol=1e-4, rtol=1e-4, equal_nan=True)


@given(step_case(), st.floats(-2, 2))
@SETTINGS
def test_fuzz_residual_add(case, scale):
    m = case["m"]
    h = m(case["mk"]())
    skip = m(case["mk"]())
    ok, out = call_or_clean_error(C.residual_add, skip, h, scale)
    if ok and all_cpu(h, skip) and h.dim() >= 1:
        assert valid([skip], h, [], halves=True)
        # 16-bit: float32 arithmetic rounded once, bit for bit the reference
        exact = dict(atol=0, rtol=0) if h.dtype in (torch.bfloat16, torch.float16) else tol(h)
        torch.testing.assert_close(out, ops.residual_add_reference(skip, h, scale), equal_nan=True, **exact)


@given(st.integers(0, 3), st.integers(1, 8), st.integers(1, 4), st.lists(st.integers(1, 5), max_size=3),
       st.sampled_from(MUTATIONS), st.sampled_from(MUTATIONS), st.sampled_from(MUTATIONS), st.booleans(),
       st.sampled_from([torch.float32, torch.float64]), st.booleans(), st.floats(-1e-3, 1e-2), st.data())
@SETTINGS
def test_fuzz_group_norm_silu(N_, C_, G, spatial, mx, mw, me, channels_last, dtype, silu, eps, data):
    g = torch.Generator().manual_seed(1)
    x = torch.randn(N_, C_, *spatial, generator=g, dtype=dtype)
    if channels_last and x.dim() == 4:
        x = x.contiguous(memory_format=torch.channels_last)
    di = lambda lo, hi: data.draw(st.integers(lo, hi))  # noqa: E731
    x = mutate(x, mx, di)
    w = mutate(torch.randn(C_, generator=g, dtype=dtype), mw, di)
    emb = mutate(torch.randn(N_, C_, generator=g, dtype=dtype), me, di)
    ok, out = call_or_clean_error(C.group_norm_silu, x, G, w, None, eps, emb, silu)
    if not ok or not all_cpu(x, w, emb):
        return
    assert C_ % G == 0 and eps > 0 and x.dtype in (torch.float32, torch.float64)
    y = out[0]
    assert y.shape == x.shape and y.dtype == x.dtype
    if x.numel() and x[0, 0].numel() * (C_ // G) > 1:   # the reference refuses one-value groups
        ref = ops.group_norm_silu_reference(x, G, w, None, eps, emb, silu)
        torch.testing.assert_close(y, ref, atol=1e-4, rtol=1e-4)


@given(st.sampled_from(MUTATIONS), st.integers(-5, 40), st.integers(-3, 2**32 + 3), st.integers(-3, 2**32 + 3),
       st.integers(-2**63, 2**63 - 1), st.data())
@SETTINGS
def test_fuzz_philox(m, numel, step, stream, seed, data):
    idx = mutate(torch.arange(3, dtype=torch.int64) * 7, m, lambda lo, hi: data.draw(st.integers(lo, hi)))
    for fn, ref_fn in ((C.philox_normal, N.normal), (C.philox_uniform, N.uniform)):
        if idx.device.type == "meta" and numel < 0:
            # known gap, reported to diffcore/native.py's owner: the fake (meta) philox kernels do not
            # check numel, so torch's own "negative dimension" error comes out, naming no argument
            with pytest.raises(RuntimeError):
                fn(seed, idx, step, stream, numel)
            continue
        ok, out = call_or_clean_error(fn, seed, idx, step, stream, numel)
        if ok and idx.device.type == "cpu":
            assert 0 <= step < 2**32 and 0 <= stream < 2**32 and numel >= 0 and idx.dtype == torch.int64
            kw = {} if fn is C.philox_normal else {"dtype": torch.float64}
            ref = ref_fn(seed % 2**64, idx, step, (numel,), stream, **kw)
            torch.testing.assert_close(out, ref, atol=1e-6, rtol=2e-6)


@given(st.integers(0, 5), st.integers(1, 6), st.integers(1, 3), st.integers(1, 4),
       st.lists(st.sampled_from(MUTATIONS), min_size=5, max_size=5), st.sampled_from([torch.float32, torch.float64]),
       st.integers(0, 2), st.data())
@SETTINGS
def test_fuzz_gmm_ops(n, D, K, steps, muts, dtype, cs, data):
    g = torch.Generator().manual_seed(3)
    di = lambda lo, hi: data.draw(st.integers(lo, hi))  # noqa: E731
    x = mutate(torch.randn(n, D, generator=g, dtype=dtype), muts[0], di)
    idx = mutate(torch.arange(n, dtype=torch.int64), muts[1], di)
    width = 2 * K * D + K
    cf = torch.rand(steps, width, generator=g, dtype=dtype)
    cf[:, K * D: 2 * K * D] += 0.5          # positive inverse variances
    cf = mutate(cf, muts[2], di)
    coef = mutate(torch.rand(steps, 4, generator=g, dtype=dtype) * 0.1 + 0.9, muts[3], di)
    ok, out = call_or_clean_error(C.gmm_pc, x, idx, 5, cf, coef, K, cs, True, 0.16)
    if ok and all_cpu(x, idx, cf, coef):
        assert out[0].shape == x.shape and torch.isfinite(out[0]).all()
    ode_cf = mutate(torch.rand(steps, width, generator=g, dtype=dtype) + 0.5, muts[4], di)
    ok, out = call_or_clean_error(C.gmm_ode, x, ode_cf, torch.full((steps, 2), 0.1, dtype=dtype),
                                  torch.full((1, steps), -0.01, dtype=dtype), K, False)
    if ok and all_cpu(x, ode_cf):
        assert out.shape == x.shape and torch.isfinite(out).all()
    means = mutate(torch.randn(K, D, generator=g, dtype=dtype), muts[2], di)
    vars_ = torch.rand(K, D, generator=g, dtype=dtype) + 0.5
    logw = torch.log(torch.full((K,), 1.0 / K, dtype=dtype))
    kind = data.draw(st.integers(-1, 3))
    ok, out = call_or_clean_error(C.gmm_rk45, x, means, vars_, logw, kind, 0.1, 20.0, 1.0, 1e-3, 1e-3, 1e-3, 0.0, 500)
    if ok and all_cpu(x, means):
        assert 0 <= kind <= 2
        assert out[0].shape == x.shape and out[1].shape == (x.shape[0],)  # x may be mutated


def test_fuzz_cases_hit_both_outcomes():
    """The strategies above produce valid and invalid calls (the fuzz is not all-errors)."""
    x = torch.randn(2, 3)
    one = torch.ones(2, dtype=torch.float64)
    assert call_or_clean_error(C.affine_step, x, x, one, one, one, x, 0, None, 0, 0)[0]
    assert not call_or_clean_error(C.affine_step, x.to(torch.float16), x, one, one, one, x, 0, None, 0, 0)[0]
    assert math.isfinite(float(call_or_clean_error(C.residual_add, x, x, 2.0)[1].sum()))
