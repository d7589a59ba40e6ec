"""bf16 on CPUs without bf16 instructions: the Winograd op's bf16 path, WinogradConv2d under
autocast, diffcore.precision.autocast's widened ops, and a bf16 sampling run, each against
float64 on bf16-rounded operands (a bf16 op with float32 accumulation is within half a bf16
ulp of that, plus the float32 accumulation error) and against PyTorch's own bf16 autocast."""
import copy
import itertools
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import diffcore
from diffcore import precision, winograd

native = pytest.importorskip("diffcore.native", reason="the native extension did not load here")
if not hasattr(torch.ops.diffcore, "conv3x3_winograd"):
    pytest.skip("the loaded extension predates conv3x3_winograd", allow_module_level=True)

BF16, EPS32 = torch.bfloat16, torch.finfo(torch.float32).eps
HALF_ULP = 2.0**-8   # bf16 keeps 8 significant bits: rounding moves a value by at most 2^-8 of it
WINOGRAD = {2: 16, 4: 128}   # F(2x2) and F(4x4)'s float32 rounding bounds in eps32 * scale (test_winograd.py)


def cl(t):
    return t.contiguous(memory_format=torch.channels_last)


def r16(t):
    """t's values rounded to bf16, held in float64."""
    return t.to(BF16).double()


def check_bf16(y, ref, scale, what="", acc=32):
    """y (bf16) within half a bf16 ulp of the float64 result on bf16 operands plus a float32
    accumulation bound (acc eps32 * scale, scale = the op on absolute values: 32 is twice a
    plain sum's; the Winograd op's bf16 path passes WINOGRAD[tile]); all but 2 % of the outputs
    equal the float64 result rounded to bf16."""
    assert y.dtype == BF16, f"{what}: dtype {y.dtype}"
    err = (y.double() - ref).abs()
    bound = HALF_ULP * ref.abs() + acc * EPS32 * scale + 1e-30
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"{what}: error {err.max().item():.3g} is {worst:.2f}x the bf16 bound"
    # at most 2 % (and at least one: a 24-output layer measured one off in 0.2-0.7 % of seeds) may
    # round the other way, where float32 accumulation moves a value across a bf16 tie
    off = (y != ref.to(BF16)).sum().item()
    assert off <= max(1, 0.02 * y.numel()), f"{what}: {off} of {y.numel()} outputs are not the float64 result " \
                                            "rounded to bf16"


def conv_ref(x, w, b):
    ref = F.conv2d(r16(x), r16(w), None if b is None else r16(b), padding=1)
    scale = F.conv2d(r16(x).abs(), r16(w).abs(), None if b is None else r16(b).abs(), padding=1)
    return ref, scale


# F(4x4) (at least MIN_TILES_F4 4x4 tiles) and F(2x2) shapes, a 1xN image in each
SHAPES = [(2, 5, 7, 9, 11), (3, 16, 8, 1, 1), (5, 33, 40, 7, 6), (2, 64, 48, 8, 8), (3, 9, 33, 5, 19),
          (16, 9, 11, 1, 13)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_bf16_op_matches_float64_on_bf16_operands(shape):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    B, C, K, H, W = shape
    x = cl(torch.randn(B, C, H, W, generator=g)).to(BF16)
    w, b = torch.randn(K, C, 3, 3, generator=g) / 3, torch.randn(K, generator=g)
    y = winograd.conv3x3(x, w, b)
    assert y.shape == (B, K, H, W) and y.is_contiguous(memory_format=torch.channels_last)
    check_bf16(y, *conv_ref(x, w, b), what=f"shape {shape}, seed {seed}", acc=WINOGRAD[winograd.pick_tile(x)])


def test_bf16_output_is_the_float32_result_rounded_to_nearest_even():
    """The bf16 path does the float32 path's arithmetic on the widened input and rounds once:
    bit for bit torch's rounding of the float32 op's output (odd channel counts: the 8-lane
    vector code and the scalar tail; F(2x2) and F(4x4))."""
    g = torch.Generator().manual_seed(random.randrange(2**31))
    for (B, C, K, H, W), tile in itertools.product([(2, 37, 45, 7, 9), (3, 64, 131, 6, 10)], (2, 4)):
        x = cl(torch.randn(B, C, H, W, generator=g)).to(BF16)
        u = winograd.transform_weight(torch.randn(K, C, 3, 3, generator=g).to(BF16), tile=tile)
        b = torch.randn(K, generator=g)
        y = torch.ops.diffcore.conv3x3_winograd(x, u, b, K)
        y32 = torch.ops.diffcore.conv3x3_winograd(x.float(), u, b, K)
        assert y.dtype == BF16 and torch.equal(y.view(torch.int16), y32.to(BF16).view(torch.int16))


def test_bf16_rounding_of_ties_infinities_and_nan():
    """Zero input: the output is the float32 bias, so crafted biases pin the rounding rule."""
    K = 45   # 5 vectors of 8 channels and a scalar tail of 5
    bits = torch.randint(0, 2**15, (K,), dtype=torch.int32) * 65536 + 0x8000   # ties, odd and even
    special = [0x7F800000,            # +inf
               0x7FC00001,            # NaN
               0x7FFFFFFF,            # NaN whose rounding carry would make it -0.0 without the NaN rule
               -1,                    # NaN (0xFFFFFFFF): the carry would wrap to +0.0
               0x7F7FFFFF,            # float32 max: rounds up to +inf
               0x00008000,            # a subnormal tie
               0x80018000 - 2**32,    # a negative tie, odd: away from zero
               0x3F808000, 0x3F818000,  # 1 + 2^-8 (tie, even: down), 1 + 3 * 2^-8 (tie, odd: up)
               0xFF800000 - 2**32]    # -inf
    n = len(special)
    cases = itertools.product(((0, 1), (K - n, 1), (K - n, -1)), (2, 4))  # vector code, scalar tail (last 5)
    for (i, order), tile in cases:
        bits[i:i + n] = torch.tensor(special[::order], dtype=torch.int32)
        b = bits.view(torch.float32)
        x = cl(torch.zeros(1, 16, 4, 4)).to(BF16)
        u = winograd.transform_weight(torch.randn(K, 16, 3, 3), tile=tile)
        y = torch.ops.diffcore.conv3x3_winograd(x, u, b, K)
        want = b.to(BF16)
        got = y[0, :, 1, 2]
        assert torch.equal(got.isnan(), want.isnan())
        assert (got[got.isnan()].view(torch.int16) == 0x7FC0).all()   # c10's quiet NaN
        keep = ~want.isnan()
        assert torch.equal(got[keep].view(torch.int16), want[keep].view(torch.int16))


def test_portable_bf16_path_in_a_subprocess():
    """The portable transforms and rounding (what a CPU without AVX2 runs), forced by
    DIFFCORE_SCALAR_WINOGRAD=1, which is read once per process."""
    import subprocess
    import sys
    code = ("import torch, random; from diffcore import ops, winograd; ops._backend_module('native');"
            "import tests.test_bf16_cpu as t;"
            "[t.test_bf16_op_matches_float64_on_bf16_operands(s) for s in t.SHAPES];"
            "t.test_bf16_output_is_the_float32_result_rounded_to_nearest_even();"
            "t.test_bf16_rounding_of_ties_infinities_and_nan(); print('ok')")
    env = {**__import__("os").environ, "DIFFCORE_SCALAR_WINOGRAD": "1"}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                         cwd=__import__("os").path.dirname(__import__("os").path.dirname(__file__)))
    assert out.returncode == 0 and out.stdout.strip().endswith("ok"), out.stderr[-3000:]


def test_bf16_op_takes_a_bf16_bias_and_rejects_other_dtypes():
    x = cl(torch.randn(1, 16, 4, 4)).to(BF16)
    u = winograd.transform_weight(torch.randn(8, 16, 3, 3))
    b = torch.randn(8)
    assert torch.equal(torch.ops.diffcore.conv3x3_winograd(x, u, b.to(BF16), 8),
                       torch.ops.diffcore.conv3x3_winograd(x, u, b.to(BF16).float(), 8))
    with pytest.raises(RuntimeError, match="bias must be a float32 \\(or x's dtype\\)"):
        torch.ops.diffcore.conv3x3_winograd(x, u, b.half(), 8)
    with pytest.raises(RuntimeError, match="x must be float32 or bfloat16"):
        torch.ops.diffcore.conv3x3_winograd(x.half(), u, None, 8)
    with pytest.raises(ValueError, match="weight must be a CPU tensor of dtype torch.float32 or torch.bfloat16"):
        winograd.conv3x3(x, torch.randn(8, 16, 3, 3).half())


# ---- WinogradConv2d under autocast and with bf16 weights -------------------------------------

def swapped(conv):
    m = copy.deepcopy(conv)
    m.__class__ = winograd.WinogradConv2d
    return m


def count_calls(monkeypatch):
    calls = []
    real = winograd._transformed
    monkeypatch.setattr(winograd, "_transformed", lambda w, bf16=False, tile=2, **kw: calls.append(bf16) or real(w, bf16, tile, **kw))
    return calls


def layer(monkeypatch, onednn_bf16, c_in, c_out, h, w):
    """(conv, its WinogradConv2d copy, channels_last input, the list of Winograd calls) with
    precision.cpu_has_bf16() pinned to onednn_bf16."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: onednn_bf16)
    conv = nn.Conv2d(c_in, c_out, 3, padding=1)
    return conv, swapped(conv), cl(torch.randn(2, c_in, h, w)), count_calls(monkeypatch)


def test_module_under_bf16_autocast_is_a_bf16_convolution(monkeypatch):
    monkeypatch.setattr(winograd, "FP32_F4", True)                  # the float32 call below takes F(4x4)
    conv, m, x, calls = layer(monkeypatch, False, 24, 40, 13, 9)     # 2 x 4 x 3 = 24 4x4 tiles: F(4x4)
    assert winograd.pick_tile(x) == 4
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        y, torch_y = m(x), conv(x)   # torch's bf16 convolution (the slow path here)
    assert calls == [True] and torch_y.dtype == BF16
    ref, scale = conv_ref(x, conv.weight.detach(), conv.bias.detach())
    check_bf16(y, ref, scale, "WinogradConv2d", acc=WINOGRAD[4])
    check_bf16(torch_y, ref, scale, "torch's own bf16 convolution")   # the same contract
    # the cached bf16 transform is the rounded weight's, beside the float32 one
    with torch.no_grad():
        m(x)
    e = winograd._U[id(m.weight)]
    assert set(e.u) == {(True, 4), (False, 4)}
    assert torch.equal(e.u[True, 4], winograd.transform_weight(m.weight.detach().to(BF16), tile=4))


def test_module_with_bf16_weights_and_input_runs_the_op(monkeypatch):
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    m = swapped(nn.Conv2d(16, 16, 3, padding=1)).to(BF16)
    x = cl(torch.randn(2, 16, 16, 16)).to(BF16)                 # 32 4x4 tiles: F(4x4)
    assert winograd.pick_tile(x) == 4
    calls = count_calls(monkeypatch)
    with torch.no_grad():
        y = m(x)
    assert calls == [True]
    check_bf16(y, *conv_ref(x, m.weight.detach(), m.bias.detach()), what="bf16 module", acc=WINOGRAD[4])


def test_module_leaves_bf16_to_onednn_where_it_has_bf16(monkeypatch):
    """On a CPU with bf16 instructions oneDNN's bf16 convolution is not the slow path: no swap."""
    conv, m, x, calls = layer(monkeypatch, True, 16, 16, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=BF16):
        assert torch.equal(m(x), conv(x))
    with torch.no_grad():
        assert torch.equal(m.to(BF16)(x.to(BF16)), nn.Conv2d.forward(m, x.to(BF16)))
    assert calls == []


def test_module_under_fp16_autocast_keeps_the_autocast_dtype(monkeypatch):
    conv, m, x, calls = layer(monkeypatch, False, 16, 16, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        y, ref = m(x), conv(x)
    assert calls == [] and y.dtype == torch.float16 and torch.equal(y, ref)


# ---- diffcore.precision.autocast: the widened ops ---------------------------------------------

def _cases(g):
    def r(*s):
        return torch.randn(*s, generator=g)
    return {
        "conv1d": (F.conv1d, (r(2, 5, 17), r(7, 5, 3), r(7)), {"padding": 1}),
        "conv2d": (F.conv2d, (r(2, 5, 9, 7), r(6, 5, 3, 3), r(6)), {"stride": 2}),
        "conv3d": (F.conv3d, (r(1, 3, 5, 4, 6), r(4, 3, 3, 3, 3)), {}),
        "conv_transpose2d": (F.conv_transpose2d, (r(2, 5, 6, 7), r(5, 3, 3, 3), r(3)), {"stride": 2}),
        "linear": (F.linear, (r(3, 11, 33), r(19, 33), r(19)), {}),
        "matmul": (torch.matmul, (r(3, 13, 21), r(21, 9)), {}),
        "mm": (torch.mm, (r(13, 21), r(21, 9)), {}),
        "bmm": (torch.bmm, (r(3, 13, 21), r(3, 21, 9)), {}),
        "addmm": (torch.addmm, (r(13, 9), r(13, 21), r(21, 9)), {}),
        "baddbmm": (torch.baddbmm, (r(3, 13, 9), r(3, 13, 21), r(3, 21, 9)), {"alpha": 0.5}),
        "addbmm": (torch.addbmm, (r(13, 9), r(3, 13, 21), r(3, 21, 9)), {"beta": 0.5}),
        "einsum": (torch.einsum, ("bij,bjk->bik", r(3, 13, 21), r(3, 21, 9)), {}),
        "einsum list": (torch.einsum, ("...ij,...kj", [r(2, 3, 13, 21), r(2, 3, 9, 21)]), {}),
        "Tensor.__matmul__": (torch.Tensor.__matmul__, (r(4, 13, 21), r(21, 9)), {}),
        "Tensor.__rmatmul__": (torch.Tensor.__rmatmul__, (r(21, 9), r(4, 13, 21)), {}),
        "Tensor.addmm": (torch.Tensor.addmm, (r(13, 9), r(13, 21), r(21, 9)), {"alpha": 2.0}),
    }


class Recorder(torch.overrides.TorchFunctionMode):
    """Sees the calls the widening mode (pushed above it) makes: calls holds (func, its operands'
    dtypes, whether autocast is on), firsts (func's name, its first tensor's dtype and shape)."""

    def __init__(self):
        super().__init__()
        self.calls, self.firsts = [], []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        tensors = _flat_tensors((args, kwargs))
        self.calls.append((func, {t.dtype for t in tensors}, torch.is_autocast_enabled("cpu")))
        if tensors:
            self.firsts.append((getattr(func, "__name__", str(func)), tensors[0].dtype, tuple(tensors[0].shape)))
        return func(*args, **kwargs)


def _attribute_read(func) -> bool:
    return getattr(func, "__name__", "") in ("__get__", "is_floating_point", "dim", "size")


def _flat_tensors(args):
    return [t for t in torch.utils._pytree.tree_leaves(args) if isinstance(t, torch.Tensor)]


@pytest.mark.parametrize("name", list(_cases(torch.Generator())))
def test_widened_op_is_a_bf16_op(name, monkeypatch):
    """Within the bf16 bound of float64 on bf16 operands, like PyTorch's own bf16 op, and run by
    the float32 kernel on bf16 values with autocast off (a recorder under the mode sees it)."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    seed = random.randrange(2**31)
    func, args, kwargs = _cases(torch.Generator().manual_seed(seed))[name]
    with torch.no_grad():
        with Recorder() as rec, precision.autocast("cpu", BF16):
            y = func(*args, **kwargs)
        # the one computing call made with autocast off (attribute reads are calls to the mode too)
        inner = [c for c in rec.calls if c[2] is False and not _attribute_read(c[0])]
        assert len(inner) == 1 and inner[0][1] == {torch.float32}, rec.calls
        widened = tuple(torch.utils._pytree.tree_map(
            lambda a: a.to(BF16).float() if isinstance(a, torch.Tensor) else a, args))
        assert torch.equal(y, func(*widened, **kwargs).to(BF16))
        with torch.autocast("cpu", dtype=BF16):
            torch_y = func(*args, **kwargs)   # PyTorch's own bf16 op
        d = torch.utils._pytree.tree_map(lambda a: r16(a) if isinstance(a, torch.Tensor) else a, args)
        ref = func(*d, **kwargs)
        scale = func(*torch.utils._pytree.tree_map(lambda a: a.abs() if isinstance(a, torch.Tensor) else a, d),
                     **kwargs)
    assert y.dtype == torch_y.dtype == BF16 and y.shape == torch_y.shape
    check_bf16(y, ref, scale, f"{name} (seed {seed})")


def test_widening_is_off_outside_bf16_autocast_and_for_float64_out_and_elementwise_einsum():
    g = torch.Generator().manual_seed(0)
    a, w = torch.randn(5, 7, generator=g), torch.randn(3, 7, generator=g)

    def widened_calls(fn):
        with Recorder() as rec, precision.WidenedBf16():
            out = fn()
        return out, [c for c in rec.calls if c[2] is False and c[1] == {torch.float32} and c[0] is not torch.Tensor.to]

    y, calls = widened_calls(lambda: F.linear(a, w))                     # no autocast: float32
    assert torch.equal(y, a @ w.T)
    with torch.autocast("cpu", dtype=BF16):
        y, calls = widened_calls(lambda: F.linear(a, w))
        assert y.dtype == BF16 and calls
        d, calls = widened_calls(lambda: F.linear(a.double(), w.double()))  # float64: untouched
        assert d.dtype == torch.float64 and torch.equal(d, a.double() @ w.double().T) and not calls
        o = torch.zeros(5, 3)
        _, calls = widened_calls(lambda: torch.mm(a, w.T, out=o))        # out=: autocast does not cast it
        with torch.autocast("cpu", enabled=False):
            assert torch.equal(o, a @ w.T) and not calls
        e, calls = widened_calls(lambda: torch.einsum("i,j->ij", a[0], w[0]))   # a product, no sum
        assert not calls and e.dtype == torch.einsum("i,j->ij", a[0], w[0]).dtype
        with torch.autocast("cpu", enabled=False):
            y, _ = widened_calls(lambda: F.linear(a, w))
            assert torch.equal(y, a @ w.T)                                # float32, not rounded


def test_autocast_widens_only_where_onednn_lacks_bf16(monkeypatch):
    for native_bf16 in (True, False):
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: native_bf16)
        with precision.autocast("cpu", BF16):
            mode = torch.overrides._get_current_function_mode()
            assert isinstance(mode, precision.WidenedBf16) != native_bf16
            assert torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == BF16
        assert torch.overrides._get_current_function_mode() is None and not torch.is_autocast_enabled("cpu")


def test_attention_projections_widen_the_tokens_once_with_the_same_numbers(monkeypatch):
    """accelerate's q/k/v under bf16 emulation: one float32 copy of the tokens for the three
    projections (one widening of the tokens, three float32 matmuls), bit for bit what three
    widened F.linear calls give, each a bf16 linear (float64 bound); a hooked projection is
    called as its module."""
    from types import SimpleNamespace

    from diffcore.accelerate import _qkv
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    g = torch.Generator().manual_seed(random.randrange(2**31))
    lins = [nn.Linear(40, 24, bias=b) for b in (True, False, True)]
    for lin in lins:
        nn.init.normal_(lin.weight, generator=g)
    attn = SimpleNamespace(to_q=lins[0], to_k=lins[1], to_v=lins[2])
    tokens = torch.randn(3, 17, 40, generator=g).to(BF16)
    with torch.no_grad():
        with Recorder() as rec, precision.autocast("cpu", BF16):
            got = _qkv(attn, tokens)
        with precision.autocast("cpu", BF16):
            each = [F.linear(tokens, lin.weight, lin.bias) for lin in lins]
    widened = [c for c in rec.firsts if c[0] in ("float", "to") and c[1:] == (BF16, tuple(tokens.shape))]
    matmuls = [c for c in rec.firsts if "linear" in c[0]]
    assert len(widened) == 1 and len(matmuls) == 3 and all(c[1] == torch.float32 for c in matmuls), rec.firsts
    for y, e, lin in zip(got, each, lins):
        assert torch.equal(y, e)
        b = None if lin.bias is None else r16(lin.bias)
        check_bf16(y, F.linear(r16(tokens), r16(lin.weight), b),
                   F.linear(r16(tokens).abs(), r16(lin.weight).abs(), None if b is None else b.abs()), "qkv")
    calls = []
    lins[1].register_forward_hook(lambda m, i, o: calls.append(1))
    with torch.no_grad(), precision.autocast("cpu", BF16):
        hooked = _qkv(attn, tokens)
    assert calls == [1] and all(torch.equal(y, e) for y, e in zip(hooked, each))


# ---- a bf16 sampling run ----------------------------------------------------------------------

class SmallNet(nn.Module):
    """Convolutions the Winograd op takes, one it does not (stride 2), a linear time embedding
    and GroupNorm: a U-Net's ops at toy size."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Conv2d(3, 32, 3, padding=1)
        self.t = nn.Linear(1, 32)
        self.norm = nn.GroupNorm(8, 32)
        self.mid = nn.Conv2d(32, 32, 3, padding=1)
        self.down = nn.Conv2d(32, 32, 3, stride=2, padding=1)
        self.out = nn.Conv2d(32, 3, 3, padding=1)

    def forward(self, x, t):
        h = self.inp(x) + self.t(t.float().view(-1, 1) / 1000)[:, :, None, None]
        h = self.mid(F.silu(self.norm(h)))
        h = h + F.interpolate(self.down(h), scale_factor=2.0)
        return self.out(F.silu(h))


def test_bf16_sampling_run_is_as_accurate_as_torchs_bf16(monkeypatch):
    """The same DDPM run in float32, in bf16 through diffcore (Winograd bf16 + widened ops) and in
    bf16 through PyTorch's autocast alone: diffcore's bf16 samples differ from float32 by bf16
    rounding, about as much as PyTorch's bf16 (it is not float32 in disguise, and no worse)."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    torch.manual_seed(0)
    net = SmallNet().eval()
    fast = diffcore.accelerate(copy.deepcopy(net)).to(memory_format=torch.channels_last)
    assert isinstance(fast.mid, winograd.WinogradConv2d)
    process = diffcore.DDPM(diffcore.schedules.linear_betas(100))
    run = dict(process=process, n=8, shape=(3, 16, 16), method="ancestral", steps=5, seed=3, backend="torch")
    with torch.no_grad():
        fp32 = diffcore.sample(net, **run)
        calls = count_calls(monkeypatch)
        ours = diffcore.sample(fast, precision="bf16", **run)
        assert calls and all(calls)                                      # the bf16 Winograd path ran
        monkeypatch.setattr(precision, "cpu_has_bf16", lambda: True)    # plain torch.autocast
        theirs = diffcore.sample(net, precision="bf16", **run)
    err_ours, err_theirs = (ours - fp32).abs().max().item(), (theirs - fp32).abs().max().item()
    assert ours.dtype == torch.float32 and torch.isfinite(ours).all()
    assert 0.25 * err_theirs <= err_ours <= 2 * err_theirs, (err_ours, err_theirs)
    assert (ours - theirs).abs().max().item() <= 2 * err_theirs


def test_compiled_model_under_widened_autocast(monkeypatch):
    """torch.compile of a model run inside diffcore.precision.autocast: a bf16 result within the
    bf16 bound of float64 on bf16 operands (per layer the bound compounds: checked loosely)."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    torch.manual_seed(0)
    m = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.Conv2d(16, 5, 1)).eval()
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        with precision.autocast("cpu", BF16):
            eager = m(x)
            y = torch.compile(m)(x)
        ref = m.double()(x.double())
    assert y.dtype == eager.dtype == BF16
    scale = ref.abs().max().item()
    assert (y.double() - ref).abs().max().item() <= 4 * HALF_ULP * scale
    assert (y.double() - eager.double()).abs().max().item() <= 2 * HALF_ULP * scale


@pytest.mark.parametrize("autocast", [False, True], ids=["bf16 module", "autocast"])
def test_module_past_the_cache_limit_is_a_widened_bf16_convolution(monkeypatch, autocast):
    """No room for the bf16 transform (winograd.CACHE_LIMIT_MB): oneDNN's float32 convolution on
    the bf16 values, rounded once, not PyTorch's slow bf16 reference kernels."""
    monkeypatch.setattr(precision, "cpu_has_bf16", lambda: False)
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", 0)
    monkeypatch.setattr(winograd, "_WARNED", False)
    conv = nn.Conv2d(16, 24, 3, padding=1)
    m = swapped(conv) if autocast else swapped(conv).to(BF16)
    x = cl(torch.randn(2, 16, 16, 16)) if autocast else cl(torch.randn(2, 16, 16, 16)).to(BF16)
    slow = []
    monkeypatch.setattr(nn.Conv2d, "_conv_forward", lambda self, i, w, b: slow.append(i.dtype) or
                        torch.nn.functional.conv2d(i, w, b, padding=1))
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="CACHE_LIMIT_MB"), \
            torch.autocast("cpu", dtype=BF16, enabled=autocast):
        y = m(x)
    assert slow == [torch.float32] and y.is_contiguous(memory_format=torch.channels_last)
    check_bf16(y, *conv_ref(x, m.weight.detach(), m.bias.detach()), what="past the limit")
