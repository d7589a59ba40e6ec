"""Fuzzing the Triton launchers (diffcore.kernels, under TRITON_INTERPRET=1 on CPU) with
hypothesis: random shapes (0-sized and odd ones), layouts (transposed, sliced with a stride,
expanded with a zero stride, channels-last), dtypes (float16/bfloat16/float32/float64, int32,
int64, bool), devices (meta) and noise addresses. Each call goes through the launcher
(`*_forward`) or the custom op (torch.ops.diffcore_triton.*) and either raises a clean
ValueError/TypeError/RuntimeError whose message names an argument of the op, or returns what
the reference in diffcore.ops returns for the same inputs; it never crashes the process and
never returns unwritten memory."""
import os
import re

import pytest
import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")
pytest.importorskip("triton")
pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, event, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.control import currently_in_test_context  # noqa: E402

from diffcore import noise as N  # noqa: E402
from diffcore import ops  # noqa: E402

kernels = pytest.importorskip("diffcore.kernels")
from diffcore.kernels import (affine_step, ddim_step, ddpm_step, group_norm_silu, heun_step,  # noqa: E402
                              langevin_step, residual_add)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
if not kernels.available(torch.device(DEV)):
    pytest.skip("the Triton kernels do not run here (no CUDA, TRITON_INTERPRET unset)", allow_module_level=True)

T = torch.ops.diffcore_triton
SETTINGS = settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck))
FLOATS = (torch.float32, torch.float64, torch.float16, torch.bfloat16)
DTYPES = list(FLOATS) * 3 + [torch.int32, torch.int64, torch.bool]
LAYOUTS = ["contiguous"] * 4 + ["transposed", "strided", "expanded"]
MUTATIONS = ["ok"] * 14 + ["dtype", "shape", "meta", "layout", "scalar"]
TOL = {torch.float64: 1e-9, torch.float32: 2e-5, torch.float16: 1e-2, torch.bfloat16: 6e-2}


def make(shape, dtype, layout, g, lo=None, hi=None):
    """A tensor of `shape` with random values, laid out as asked (values do not depend on it)."""
    shape = tuple(shape)
    base = torch.randn(shape, generator=g, dtype=torch.float64) if lo is None else \
        lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)
    if dtype == torch.bool:
        base = base > 0
    elif not dtype.is_floating_point:
        base = (base * 3).round()
    base = base.to(dtype)
    if layout == "transposed" and len(shape) >= 2:
        return base.transpose(-1, -2).contiguous().transpose(-1, -2)
    if layout == "strided" and len(shape) >= 1:
        big = torch.zeros(*shape[:-1], 2 * shape[-1] + 1, dtype=dtype)
        big[..., 1::2] = base
        return big[..., 1::2]
    if layout == "expanded" and len(shape) >= 1 and shape[0] > 0:
        return base[:1].expand(shape)   # zero stride along dim 0
    return base.to(DEV)


class Case:
    """Draws tensors for one call: mostly valid, sometimes mutated."""

    def __init__(self, data, seed):
        self.data, self.g = data, torch.Generator().manual_seed(seed)

    def draw(self, strategy):
        return self.data.draw(strategy)

    def tensor(self, shape, dtype, lo=None, hi=None, mutate=True):
        kind = self.draw(st.sampled_from(MUTATIONS)) if mutate else "ok"
        layout = self.draw(st.sampled_from(LAYOUTS)) if kind == "layout" else "contiguous"
        if kind == "dtype":
            dtype = self.draw(st.sampled_from(DTYPES))
        if kind == "shape":
            shape = list(shape) or [1]
            shape[self.draw(st.integers(0, len(shape) - 1))] += 1
        if kind == "scalar":
            shape = ()
        t = make(shape, dtype, layout, self.g, lo, hi)
        return t.to("meta") if kind == "meta" else t


def names_of(op) -> set:
    """The argument names of a custom op's schema (what a clean error message may name)."""
    return {a.name for a in op.default._schema.arguments} | {"noise address", "out", "x", "num_groups"}


def _event(what):
    if currently_in_test_context():   # the share of each outcome: pytest --hypothesis-show-statistics
        event(what)


def call(fn, names, *args, **kw):
    """(True, result) or (False, None) for a clean error naming an argument; else the test fails."""
    try:
        out = fn(*args, **kw)
        _event("result")
        return True, out
    except (ValueError, TypeError, RuntimeError) as e:
        _event(f"clean {type(e).__name__}")
        msg = str(e)
        assert any(re.search(rf"\b{re.escape(n)}\b", msg) for n in names), \
            f"{type(e).__name__} names no argument of {sorted(names)}: {msg}"
        return False, None


def tensors(*ts):
    return [t for t in ts if isinstance(t, torch.Tensor)]


def any_meta(*ts):
    return any(t.device.type == "meta" for t in tensors(*ts))


def valid_step(x, like, coefs, idx=None):
    """Whether a step's inputs are all valid (so a clean error would have been a bug)."""
    if x.dtype not in FLOATS or x.dim() < 1 or x.device.type == "meta":
        return False
    for t in like:
        if t is not None and (not t.dtype.is_floating_point or t.shape != x.shape or t.device != x.device):
            return False
    for c in coefs:
        if c is not None and (c.dtype == torch.bool or c.shape != (x.shape[0],) or c.device != x.device):
            return False
    return idx is None or (idx.dtype in (torch.int32, torch.int64) and idx.shape == (x.shape[0],)
                           and idx.device == x.device)


def close(got, want, dtype):
    torch.testing.assert_close(got, want, atol=TOL[dtype], rtol=TOL[dtype], equal_nan=True)


@st.composite
def step_setup(draw):
    """(Case, x, shape, dtype, noise choice, address) for a step op."""
    data = draw(st.data())
    B = draw(st.integers(0, 3))
    rest = draw(st.lists(st.integers(0, 5), max_size=2))
    dtype = draw(st.sampled_from(FLOATS))
    case = Case(data, draw(st.integers(0, 2 ** 16)))
    shape = (B, *rest)
    x = case.tensor(shape, dtype)
    in_kernel = draw(st.booleans())
    if in_kernel:
        idx = case.tensor((B,), torch.int64, lo=0, hi=2 ** 20)
        addr = [draw(st.one_of(st.integers(0, 2 ** 32 - 1), st.integers(-2, 2 ** 32 + 2))) for _ in range(4)]
        z = None
    else:
        idx, addr, z = None, [0, 0, 0, 0], case.tensor(shape, dtype)
    return case, x, shape, dtype, z, idx, addr


def noise_for(x, z, idx, addr):
    """The z the reference uses: the given tensor, or diffcore.noise's draw for the address."""
    if z is not None:
        return z
    seed = addr[0] | (addr[1] << 32)
    return N.normal(seed, idx.cpu(), addr[2], x.shape[1:], addr[3]).to(x.dtype)


def addr_ok(idx, addr):
    return idx is None or all(0 <= a < 2 ** 32 for a in addr)


def check_result(ok, out, x, ins, expect, dtype, like, coefs, idx=None, addr=(0, 0, 0, 0)):
    """ok: outputs shaped like x and equal to the reference; a valid call must succeed."""
    if not ok:
        assert not (valid_step(x, like, coefs, idx) and addr_ok(idx, addr) and not any_meta(*ins)), \
            "a valid call raised"
        return
    outs = out if isinstance(out, tuple) else (out,)
    if any_meta(*ins):
        assert all(o.device.type == "meta" and o.shape == x.shape for o in outs)
        return
    assert valid_step(x, like, coefs, idx) and addr_ok(idx, addr), "an invalid call returned a result"
    for o, w in zip(outs, expect()):
        assert o.shape == x.shape and o.dtype == x.dtype
        close(o, w, torch.float32 if idx is not None and x.dtype == torch.float64 else x.dtype)  # fp32 Box-Muller


@given(step_setup(), st.booleans())
@SETTINGS
def test_fuzz_affine_step(setup, launcher):
    case, x, shape, dtype, z, idx, addr = setup
    score = case.tensor(shape, dtype)
    a, b, std = (case.tensor(shape[:1], torch.float32, 0.1, 1) for _ in range(3))
    if launcher:
        ok, out = call(affine_step.affine_step_forward, names_of(T.affine_step), x, score, a, b, std, z, idx, *addr)
    else:
        ok, out = call(T.affine_step, names_of(T.affine_step), x, score, a, b, std, z, idx, *addr)
    check_result(ok, out, x, [x, score, a, b, std, z, idx],
                 lambda: ops.affine_step_reference(x, score, a, b, std, noise_for(x, z, idx, addr)),
                 dtype, [score, z], [a, b, std], idx, addr)


@given(step_setup(), st.booleans())
@SETTINGS
def test_fuzz_heun_step(setup, launcher):
    case, x, shape, dtype, _, _, _ = setup
    ts = [case.tensor(shape, dtype) for _ in range(3)]
    cs = [case.tensor(shape[:1], torch.float64, -1, 1) for _ in range(4)]
    fn = heun_step.heun_step_forward if launcher else T.heun_step
    ok, out = call(fn, names_of(T.heun_step), x, *ts, *cs)
    check_result(ok, out, x, [x, *ts, *cs], lambda: [ops.heun_step_reference(x, *ts, *cs)], dtype, ts, cs)


@given(step_setup(), st.booleans(), st.booleans(), st.booleans())
@SETTINGS
def test_fuzz_ddpm_step(setup, launcher, learned, clip):
    case, x, shape, dtype, z, idx, addr = setup
    eps = case.tensor(shape, dtype)
    cs = [case.tensor(shape[:1], torch.float32, 0.1, 2) for _ in range(4)] + [case.tensor(shape[:1], torch.float32, -6, -1)]
    v = case.tensor(shape, dtype, -1, 1) if learned else None
    lvmax = case.tensor(shape[:1], torch.float32, -3, 0) if learned else None
    args = (x, eps, *cs, z, idx, *addr, clip, v, lvmax)
    if launcher:
        ok, out = call(ddpm_step.ddpm_step_forward, names_of(T.ddpm_step), *args)
    else:
        ok, out = call(T.ddpm_step, names_of(T.ddpm_step), *args)
    check_result(ok, out, x, [x, eps, *cs, z, idx, v, lvmax],
                 lambda: ops.ddpm_step_reference(x, eps, *cs, noise_for(x, z, idx, addr), clip, v, lvmax),
                 dtype, [eps, z, v], cs + [lvmax], idx, addr)


@given(step_setup(), st.booleans(), st.booleans())
@SETTINGS
def test_fuzz_ddim_step(setup, launcher, clip):
    case, x, shape, dtype, z, idx, addr = setup
    eps = case.tensor(shape, dtype)
    at, ap, eta = (case.tensor(shape[:1], torch.float64, lo, hi) for lo, hi in ((0.1, 0.5), (0.6, 0.99), (0, 1)))
    args = (x, eps, at, ap, eta, z, idx, *addr, clip)
    fn = ddim_step.ddim_step_forward if launcher else T.ddim_step
    ok, out = call(fn, names_of(T.ddim_step), *args)
    check_result(ok, out, x, [x, eps, at, ap, eta, z, idx],
                 lambda: ops.ddim_step_reference(x, eps, at, ap, eta, noise_for(x, z, idx, addr), clip),
                 dtype, [eps, z], [at, ap, eta], idx, addr)


@given(step_setup(), st.booleans(), st.sampled_from(["per_sample", "batch", "global"]),
       st.sampled_from([0.16, 1.0, 0.0, -0.5]))
@SETTINGS
def test_fuzz_langevin_step(setup, launcher, norm, snr):
    case, x, shape, dtype, z, idx, addr = setup
    score = case.tensor(shape, dtype)
    alpha = case.tensor(shape[:1], torch.float32, 0.5, 1)
    args = (x, score, alpha, snr, z, idx, *addr, norm)
    fn = langevin_step.langevin_step_forward if launcher else T.langevin_step
    ok, out = call(fn, names_of(T.langevin_step) | {"norm", "snr"}, *args)
    ins = [x, score, alpha, z, idx]
    if not ok:
        assert not (valid_step(x, [score, z], [alpha], idx) and addr_ok(idx, addr) and snr > 0 and norm != "global"
                    and not any_meta(*ins)), "a valid call raised"
        return
    if any_meta(*ins):
        assert all(o.device.type == "meta" and o.shape == x.shape for o in out)
        return
    assert valid_step(x, [score, z], [alpha], idx) and addr_ok(idx, addr) and snr > 0 and norm != "global"
    want = ops.langevin_step_reference(x, score, alpha, snr, noise_for(x, z, idx, addr), norm)
    for o, w in zip(out, want):   # a zero score norm gives inf/NaN in both
        assert o.shape == x.shape and o.dtype == x.dtype
        torch.testing.assert_close(o, w, atol=max(TOL[x.dtype], 1e-4), rtol=max(TOL[x.dtype], 1e-4), equal_nan=True)


@given(st.data(), st.lists(st.integers(0, 6), max_size=3), st.sampled_from(FLOATS), st.floats(-2, 2),
       st.booleans())
@SETTINGS
def test_fuzz_residual_add(data, shape, dtype, scale, launcher):
    case = Case(data, 7)
    h = case.tensor(shape, dtype)
    skip = case.tensor(shape, dtype)
    fn = residual_add.residual_add_forward if launcher else T.residual_add
    ok, out = call(fn, names_of(T.residual_add) | {"h"}, skip, h, scale)
    good = (h.dtype in FLOATS and skip.dtype.is_floating_point and skip.shape == h.shape and skip.device == h.device
            and h.device.type != "meta")
    if not ok:   # all on meta is valid for the op (its fake runs), not for the launcher
        assert not (good or (not launcher and skip.device == h.device and h.device.type == "meta"
                             and h.dtype in FLOATS and skip.dtype.is_floating_point and skip.shape == h.shape))
        return
    if any_meta(skip, h):
        assert out.device.type == "meta" and out.shape == h.shape
        return
    assert good
    close(out, ops.residual_add_reference(skip, h, scale), h.dtype)


@given(st.data(), st.integers(0, 3), st.sampled_from([1, 2, 3, 4, 6, 8]), st.integers(1, 4),
       st.lists(st.integers(1, 5), max_size=2), st.sampled_from(FLOATS), st.booleans(), st.booleans(),
       st.sampled_from([1e-5, 1e-3, 0.0, -1.0, float("nan")]), st.sampled_from(["contiguous", "channels_last", "transposed"]))
@SETTINGS
def test_fuzz_group_norm_silu(data, N_, C_, G, spatial, dtype, silu, launcher, eps, layout):
    case = Case(data, 11)
    x = case.tensor((N_, C_, *spatial), dtype)
    if x.dim() == 4 and x.device.type != "meta" and layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    elif x.dim() >= 3 and layout == "transposed":
        x = x.transpose(-1, -2).contiguous().transpose(-1, -2)
    w = case.tensor((C_,), dtype) if data.draw(st.booleans()) else None
    bias = case.tensor((C_,), torch.float32) if data.draw(st.booleans()) else None
    emb = case.tensor((N_, C_), dtype) if data.draw(st.booleans()) else None
    names = names_of(T.group_norm_silu)
    if launcher:
        ok, out = call(group_norm_silu.group_norm_silu_forward, names, x, G, w, bias, eps, emb, silu)
    else:
        ok, out = call(T.group_norm_silu, names, x, G, w, bias, eps, emb, silu)
    ins = [x, w, bias, emb]
    good = (x.dtype in FLOATS and x.dim() >= 2 and C_ % G == 0 and x.shape[1] == C_ and eps > 0
            and all(t.dtype.is_floating_point and t.device == x.device for t in tensors(w, bias, emb))
            and (w is None or w.shape == (C_,)) and (bias is None or bias.shape == (C_,))
            and (emb is None or emb.shape == (x.shape[0], C_)))
    if not ok:
        assert not (good and not any_meta(*ins)), "a valid call raised"
        return
    y = out[0]
    if any_meta(*ins):
        assert y.device.type == "meta" and y.shape == x.shape
        return
    assert good, "an invalid call returned a result"
    assert y.shape == x.shape and y.dtype == x.dtype
    if x.numel() and x[0, 0].numel() * (C_ // G) > 1:
        want = ops.group_norm_silu_reference(x, G, w, bias, eps, emb, silu)
        tol = max(TOL[x.dtype], 1e-4)
        torch.testing.assert_close(y, want, atol=tol, rtol=tol)


@given(st.data(), st.sampled_from(FLOATS[:2]), st.sampled_from(MUTATIONS), st.sampled_from(MUTATIONS))
@settings(SETTINGS, max_examples=8)  # two interpreted launches per example
def test_fuzz_group_norm_silu_backward(data, dtype, m_dy, m_stats):
    """The backward launcher with a mutated dy or mutated statistics: dx equals autograd's
    through the reference, or a clean error."""
    g = torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    x = torch.randn(2, 4, 3, 3, generator=g, dtype=dtype).to(DEV)
    w = torch.randn(4, generator=g, dtype=dtype).to(DEV)
    _, mean, rstd = group_norm_silu.group_norm_silu_forward(x, 2, w)
    case = Case(data, 5)
    dy = case.tensor(x.shape, dtype) if m_dy != "ok" else torch.randn(x.shape, generator=g, dtype=dtype).to(DEV)
    if m_stats == "shape":
        mean = mean[:, :1]
    elif m_stats == "meta":
        rstd = rstd.to("meta")
    ok, out = call(group_norm_silu.group_norm_silu_backward, names_of(T.group_norm_silu_backward),
                   dy, x, 2, w, None, None, mean, rstd)
    stats_ok = mean.shape == (2, 2) and rstd.device == x.device
    dy_ok = dy.dtype.is_floating_point and dy.shape == x.shape and dy.device == x.device
    assert ok == (stats_ok and dy_ok)
    if ok:
        xr = x.detach().requires_grad_(True)
        y = ops.group_norm_silu_reference(xr, 2, w, None, 1e-5, None, True)
        dx_ref, = torch.autograd.grad(y, xr, dy.to(dtype))
        torch.testing.assert_close(out[0], dx_ref, atol=1e-4, rtol=1e-4)


def test_fuzz_strategies_reach_both_outcomes():
    """The strategies above make valid and invalid calls (the fuzz is not all-errors)."""
    x = torch.randn(2, 3).to(DEV)
    one = torch.ones(2).to(DEV)
    assert call(affine_step.affine_step_forward, {"x"}, x, x, one, one, one, x)[0]
    assert not call(affine_step.affine_step_forward, {"x"}, x.long(), x, one, one, one, x)[0]
    assert not call(T.affine_step, {"score"}, x, x.to("meta"), one, one, one, x, None, 0, 0, 0, 0)[0]
    assert not call(T.residual_add, {"skip"}, x[:1], x, 1.0)[0]
