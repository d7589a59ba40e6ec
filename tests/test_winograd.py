"""Winograd F(2x2, 3x3) and F(4x4, 3x3) convolutions (diffcore.winograd, csrc/cpu/winograd.cpp)
against the float64 convolution, and WinogradConv2d as accelerate swaps it in."""
import copy
import io
import os
import random

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from diffcore import winograd

native = pytest.importorskip("diffcore.native", reason="the native extension did not load here")
if not hasattr(torch.ops.diffcore, "conv3x3_winograd"):
    pytest.skip("the loaded extension predates conv3x3_winograd", allow_module_level=True)

EPS32 = torch.finfo(torch.float32).eps


def cl(t):
    return t.contiguous(memory_format=torch.channels_last)


# |y - conv64| / (eps32 * (|x| conv |w| + |b|)), the float32 rounding scale of each output (a sum
# of 9 C products): F(2x2, 3x3) with room for the transforms' few extra roundings (measured at
# most 2.4 over 540 random layers); F(4x4, 3x3), whose transforms have coefficients up to 8 and
# longer sums (measured at most 36 over the same layers)
BOUND = {2: 16, 4: 128}


def check_close(y, x, w, b, what="", tile=None):
    """|y - conv64| <= BOUND[tile] eps32 * (|x| conv |w| + |b|); tile None: the one a call on x
    picks (winograd.pick_tile)."""
    tile = winograd.pick_tile(x) if tile is None else tile
    ref = F.conv2d(x.double(), w.double(), None if b is None else b.double(), padding=1)
    scale = F.conv2d(x.double().abs(), w.double().abs(), None if b is None else b.double().abs(), padding=1)
    err = (y.double() - ref).abs()
    bound = BOUND[tile] * EPS32 * scale + 1e-30
    worst = (err / bound).max().item()
    assert worst <= 1.0, f"{what}: error {err.max().item():.3g} is {worst:.2f}x the float32 bound"
    return worst


# odd sizes: tiles cut by the image edge, channel counts off the 8-lane and 16-column blocks,
# tile counts across the 24-tile (F(4x4): 12-tile) blocks and their 6-row GEMM tiles, 1x1 and 1xN images
SHAPES = [(2, 5, 7, 9, 11), (3, 16, 8, 1, 1), (1, 8, 3, 2, 3), (5, 33, 40, 7, 6), (1, 17, 16, 1, 13),
          (2, 64, 48, 8, 8), (3, 9, 33, 5, 19), (1, 128, 20, 4, 4)]


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("with_bias", [True, False])
@pytest.mark.parametrize("tile", [None, 2], ids=["picked", "F2"])
def test_op_matches_float64_convolution(shape, with_bias, tile):
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    B, C, K, H, W = shape
    x = cl(torch.randn(B, C, H, W, generator=g))
    w = torch.randn(K, C, 3, 3, generator=g) / 3
    b = torch.randn(K, generator=g) if with_bias else None
    y = winograd.conv3x3(x, w, b, tile=tile)
    assert y.shape == (B, K, H, W) and y.dtype == torch.float32
    assert y.is_contiguous(memory_format=torch.channels_last)
    check_close(y, x, w, b, f"shape {shape}, seed {seed}", tile=tile)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_f4_op_matches_float64_convolution(shape):
    """F(4x4, 3x3) (a 36-element transform): 4x4 output tiles cut by the image edge at every
    offset (the shapes' H, W mod 4), the same channel and block edges."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    B, C, K, H, W = shape
    x = cl(torch.randn(B, C, H, W, generator=g))
    w = torch.randn(K, C, 3, 3, generator=g) / 3
    for b in (torch.randn(K, generator=g), None):
        y = torch.ops.diffcore.conv3x3_winograd(x, winograd.transform_weight(w, tile=4), b, K)
        assert y.shape == (B, K, H, W) and y.dtype == torch.float32
        check_close(y, x, w, b, f"F(4x4) shape {shape}, seed {seed}", tile=4)


def test_f4_large_weight_blocks_match_float64_convolution():
    """A weight whose per-product panel set reaches 384 KB (C x Kp = 384 x 272 floats) takes
    F(4x4)'s large blocks (72 tiles at most; 320 tiles on one thread: 5 blocks of up to 66)."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x = cl(torch.randn(5, 384, 29, 29, generator=g))
    w, b = torch.randn(257, 384, 3, 3, generator=g) / 60, torch.randn(257, generator=g)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)        # all 320 tiles on one thread
    try:
        y = torch.ops.diffcore.conv3x3_winograd(x, winograd.transform_weight(w, tile=4), b, 257)
    finally:
        torch.set_num_threads(threads)
    check_close(y, x, w, b, f"F(4x4) 384 -> 257 channels, seed {seed}", tile=4)


# On this layer the largest error against float64, over 40 seeds, was 0.22-0.52x oneDNN's direct
# convolution's for F(2x2) and 4.2-11.8x (mean 7.1x) for F(4x4)
@pytest.mark.parametrize("tile, factor", [(2, 2), (4, 24)])
def test_rounding_is_comparable_to_torchs_float32_convolution(tile, factor):
    """On a U-Net-sized layer the error against float64 stays within a small factor of oneDNN's own."""
    seed = random.randrange(2**31)
    g = torch.Generator().manual_seed(seed)
    x, w, b = cl(torch.randn(2, 128, 16, 16, generator=g)), torch.randn(96, 128, 3, 3, generator=g) / 30, \
        torch.randn(96, generator=g)
    ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
    ours = (winograd.conv3x3(x, w, b, tile=tile).double() - ref).abs().max().item()
    theirs = (F.conv2d(x, w, b, padding=1).double() - ref).abs().max().item()
    assert ours <= factor * theirs, (ours, theirs, seed)


@pytest.mark.parametrize("B, H, W", [(1, 16, 16), (1, 15, 13), (1, 12, 16), (3, 5, 9), (16, 4, 4), (15, 4, 4),
                                     (2, 8, 8), (4, 8, 8), (1, 1, 64)])
def test_pick_tile_takes_f4_from_min_tiles_f4_tiles(B, H, W, monkeypatch):
    monkeypatch.setattr(winograd, "FP32_F4", True)
    tiles4 = B * ((H + 3) // 4) * ((W + 3) // 4)
    x = torch.empty(B, 16, H, W)
    assert winograd.pick_tile(x) == (4 if tiles4 >= winograd.MIN_TILES_F4 else 2)
    assert winograd.pick_tile(x.bfloat16()) == winograd.pick_tile(x)
    monkeypatch.setattr(winograd, "FP32_F4", False)         # float32 held to F(2x2); bf16 not
    assert winograd.pick_tile(x) == 2
    assert winograd.pick_tile(x.bfloat16()) == (4 if tiles4 >= winograd.MIN_TILES_F4 else 2)


def test_module_runs_the_picked_tile(monkeypatch):
    monkeypatch.setattr(winograd, "FP32_F4", True)
    m = swapped(nn.Conv2d(16, 24, 3, padding=1))
    w, b = m.weight.detach(), m.bias.detach()
    big, small = cl(torch.randn(2, 16, 13, 15)), cl(torch.randn(1, 16, 8, 8))   # 32 and 4 4x4 tiles
    with torch.no_grad():
        f4, f2 = (winograd.conv3x3(big, w, b, tile=t) for t in (4, 2))
        assert not torch.equal(f4, f2)                      # the two round differently
        assert torch.equal(m(big), f4)
        assert torch.equal(m(small), winograd.conv3x3(small, w, b, tile=2))
        monkeypatch.setattr(winograd, "FP32_F4", False)
        assert torch.equal(m(big), f2)
    for bad in (6, 4.0, "4"):
        with pytest.raises(ValueError, match="tile must be None .* 2 .* or 4"):
            winograd.conv3x3(big, w, b, tile=bad)
    with pytest.raises(ValueError, match="x must be a 4-D"):
        winograd.conv3x3(big[0], w, b)


def test_fp32_f4_can_be_turned_off_from_the_environment():
    import subprocess
    import sys
    code = "from diffcore import winograd; print(winograd.FP32_F4)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "DIFFCORE_WINOGRAD_FP32_F4": "0"}).stdout
    assert out.strip() == "False"
    env = {k: v for k, v in os.environ.items() if k != "DIFFCORE_WINOGRAD_FP32_F4"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.strip() == "True"                                              # on unless turned off


def test_empty_inputs():
    w = torch.randn(20, 16, 3, 3)
    assert winograd.conv3x3(cl(torch.randn(0, 16, 5, 5)), w).shape == (0, 20, 5, 5)
    assert winograd.conv3x3(cl(torch.randn(2, 16, 0, 5)), w).shape == (2, 20, 0, 5)


def test_transform_weight_layout():
    w = torch.randn(20, 3, 3, 3, dtype=torch.float64)
    u = winograd.transform_weight(w)
    assert u.shape == (16, 2, 3, 16) and u.dtype == torch.float32 and u.is_contiguous()
    G = winograd._GS[2]
    full = torch.einsum("ar,kcrs,bs->abck", G, w, G).reshape(16, 3, 20)    # [16, C, K]
    unpacked = u.permute(0, 2, 1, 3).reshape(16, 3, 32)
    torch.testing.assert_close(unpacked[..., :20].double(), full, atol=1e-6, rtol=1e-6)
    assert (unpacked[..., 20:] == 0).all()                                   # padding columns
    u4 = winograd.transform_weight(w, tile=4)
    G4 = winograd._GS[4]
    full4 = torch.einsum("ar,kcrs,bs->abck", G4, w, G4).reshape(36, 3, 20)
    assert u4.shape == (36, 2, 3, 16)
    torch.testing.assert_close(u4.permute(0, 2, 1, 3).reshape(36, 3, 32)[..., :20].double(), full4, atol=1e-6,
                               rtol=1e-6)
    with pytest.raises(ValueError, match="tile must be 2 .* or 4"):
        winograd.transform_weight(w, tile=3)


@pytest.mark.parametrize("bad, match", [
    (lambda x, u, b: (x.contiguous(), u, b, 20), "channels_last"),
    (lambda x, u, b: (x.double(), u, b, 20), "float32"),
    (lambda x, u, b: (x, u[:, :1].contiguous(), b, 20), "packed weight"),
    (lambda x, u, b: (x, u, b[:5], 20), "bias"),
    (lambda x, u, b: (x, u, b, 0), "out_channels"),
    (lambda x, u, b: (x[:, :, :, :, None], u, b, 20), "4-D"),
])
def test_op_rejects_bad_input_with_a_named_argument(bad, match):
    x, w = cl(torch.randn(2, 16, 5, 5)), torch.randn(20, 16, 3, 3)
    args = bad(x, winograd.transform_weight(w), torch.randn(20))
    with pytest.raises(RuntimeError, match=match):
        torch.ops.diffcore.conv3x3_winograd(*args)


def test_conv3x3_rejects_a_weight_of_the_wrong_shape_or_dtype():
    with pytest.raises(ValueError, match=r"weight must be \[out_channels, 16, 3, 3\]"):
        winograd.conv3x3(cl(torch.randn(1, 16, 4, 4)), torch.randn(8, 16, 5, 5))
    with pytest.raises(ValueError, match="weight must be a CPU tensor of dtype torch.float32 for x of dtype torch.float32"):
        winograd.conv3x3(cl(torch.randn(1, 16, 4, 4)), torch.randn(8, 16, 3, 3, dtype=torch.bfloat16))


def test_opcheck():
    x, w = cl(torch.randn(2, 16, 5, 7)), torch.randn(20, 16, 3, 3)
    torch.library.opcheck(torch.ops.diffcore.conv3x3_winograd, (x, winograd.transform_weight(w), torch.randn(20), 20),
                          test_utils=("test_schema", "test_faketensor"))


# ---- WinogradConv2d ------------------------------------------------------------------------------
def swapped(conv):
    m = copy.deepcopy(conv)
    assert winograd.why_not(m) is None
    m.__class__ = winograd.WinogradConv2d
    return m


def test_module_uses_the_op_for_channels_last_inference_only():
    torch.manual_seed(random.randrange(2**31))
    conv = nn.Conv2d(24, 40, 3, padding=1)
    m = swapped(conv)
    assert m.state_dict().keys() == conv.state_dict().keys()
    x = cl(torch.randn(2, 24, 9, 6))                  # 2 x 5 x 3 = 30 tiles >= MIN_TILES
    with torch.no_grad():
        y = m(x)
        check_close(y, x, conv.weight, conv.bias, "module")
        assert not torch.equal(y, conv(x))            # the Winograd path ran (its rounding differs)
        # NCHW input, grad mode with a parameter that needs grad, float64: nn.Conv2d's forward, exactly
        assert torch.equal(m(x.contiguous()), conv(x.contiguous()))
        assert torch.equal(m.double()(x.double()), conv.double()(x.double()))
    m.float()
    conv.float()
    y = m(x)
    assert y.requires_grad and torch.equal(y, conv(x))


def test_module_follows_in_place_weight_updates():
    conv = nn.Conv2d(16, 16, 3, padding=1)
    m = swapped(conv)
    x = cl(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        m(x)
        m.load_state_dict({k: v * 2 for k, v in conv.state_dict().items()})   # copy_: a new weight version
        check_close(m(x), x, conv.weight * 2, conv.bias * 2, "after load_state_dict")


def test_module_pickles_and_deep_copies():
    m = swapped(nn.Conv2d(16, 32, 3, padding=1))
    x = cl(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        y = m(x)
        buf = io.BytesIO()
        torch.save(m, buf)
        buf.seek(0)
        m2 = torch.load(buf, weights_only=False)
        assert type(m2) is winograd.WinogradConv2d
        torch.testing.assert_close(m2(x), y, atol=0, rtol=0)
        torch.testing.assert_close(copy.deepcopy(m)(x), y, atol=0, rtol=0)


@pytest.mark.parametrize("conv, why", [
    (nn.Conv2d(16, 16, 1), "kernel"),
    (nn.Conv2d(16, 16, 3, stride=2, padding=1), "stride"),
    (nn.Conv2d(16, 16, 3, padding=1, groups=2), "groups"),
    (nn.Conv2d(16, 16, 3, padding=0), "padding"),
    (nn.Conv2d(16, 16, 3, padding=1, padding_mode="reflect"), "padding"),
    (nn.Conv2d(3, 128, 3, padding=1), "under 16"),
])
def test_why_not(conv, why):
    assert why in winograd.why_not(conv)


def test_subclass_is_left():
    class MyConv(nn.Conv2d):
        pass
    assert "subclass" in winograd.why_not(MyConv(16, 16, 3, padding=1))


def count_winograd_calls(monkeypatch) -> list:
    """Record every call that takes the Winograd path (each fetches the weight transform once)."""
    calls = []
    real = winograd._transformed
    monkeypatch.setattr(winograd, "_transformed", lambda w, bf16=False, tile=2, **kw: calls.append(tuple(w.shape)) or real(w, bf16, tile, **kw))
    return calls


def test_accelerate_swaps_a_unets_3x3_convolutions(monkeypatch):
    import diffcore
    net = nn.Sequential(nn.Conv2d(3, 32, 3, padding=1), nn.Conv2d(32, 32, 3, padding=1),
                        nn.Conv2d(32, 32, 3, stride=2, padding=1), nn.Conv2d(32, 16, 1))
    ref = copy.deepcopy(net)
    _, rep = diffcore.accelerate(net, report=True)
    by = {e.name: e for e in rep}
    assert by["1"].action == "swapped" and type(net[1]) is winograd.WinogradConv2d
    assert by["0"].action == "left" and "under 16" in by["0"].detail
    assert by["2"].action == "left" and "stride" in by["2"].detail
    assert "3" not in by and type(net[3]) is nn.Conv2d
    x = cl(torch.randn(2, 3, 16, 16))
    calls = count_winograd_calls(monkeypatch)
    with torch.no_grad():
        torch.testing.assert_close(net(x), ref(x), atol=1e-5, rtol=1e-5)
    assert calls == [(32, 32, 3, 3)]
    _, rep2 = diffcore.accelerate(net, report=True)
    assert not rep2.swapped() and by["1"].name in {e.name for e in rep2 if e.action == "already fused"}
    # backend="torch" pins the reference: no native convolution
    other = copy.deepcopy(ref)
    diffcore.accelerate(other, backend="torch")
    assert type(other[1]) is nn.Conv2d


def test_falls_back_without_the_extension(monkeypatch):
    m = swapped(nn.Conv2d(16, 16, 3, padding=1))
    monkeypatch.setattr(winograd, "_native_loaded", lambda: False)
    x = cl(torch.randn(1, 16, 4, 4))
    with torch.no_grad():
        assert torch.equal(m(x), nn.Conv2d.forward(m, x))
    with pytest.raises(RuntimeError, match="native extension"):
        winograd.conv3x3(x, m.weight)


@pytest.mark.skipif(os.environ.get("DIFFCORE_NO_EXT") == "1", reason="no extension")
def small_diffusers_unet():
    """A small diffusers UNet2DModel (seeded) whose 3x3 layers accelerate swaps."""
    diffusers = pytest.importorskip("diffusers")
    torch.manual_seed(0)
    return diffusers.UNet2DModel(sample_size=16, in_channels=3, out_channels=3, block_out_channels=(32, 64),
                                 layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                                 up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=8).eval()


def test_accelerated_diffusers_unet_in_channels_last_matches_the_original(monkeypatch):
    import diffcore
    unet = small_diffusers_unet()
    acc = diffcore.accelerate(copy.deepcopy(unet)).to(memory_format=torch.channels_last)
    n = sum(type(m) is winograd.WinogradConv2d for m in acc.modules())
    assert n >= 8
    x, t = cl(torch.randn(2, 3, 16, 16)), torch.tensor([10, 900])
    calls = count_winograd_calls(monkeypatch)
    with torch.no_grad():
        ref = unet.double()(x.double(), t).sample          # the float64 original
        out = acc(x, t).sample
    err = (out.double() - ref).abs().max().item()
    assert err < 1e-4 * ref.abs().max().item(), err
    assert len(calls) == n      # every swapped layer took the Winograd path once


def test_module_follows_writes_through_data():
    """EMA weight swaps write through .data, which moves no version counter: the probed values move."""
    conv = nn.Conv2d(16, 16, 3, padding=1)
    m = swapped(conv)
    x = cl(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        m(x)
        m.weight.data.copy_(torch.randn_like(m.weight))       # as diffusers' EMAModel.copy_to does
        check_close(m(x), x, m.weight, conv.bias, "after a .data write")


def test_a_write_the_probes_miss_is_caught_at_the_next_epoch():
    m = swapped(nn.Conv2d(16, 16, 3, padding=1))
    x = cl(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        m(x)
        probed = set(range(0, m.weight.numel(), max(1, m.weight.numel() // winograd._PROBES)))
        i = next(i for i in range(m.weight.numel()) if i not in probed)
        m.weight.data.view(-1)[i] += 1.0
        winograd.revalidate()                                   # what every diffcore.sample run does
        check_close(m(x), x, m.weight, m.bias, "after an unprobed .data write and a new epoch")


def test_sampling_run_starts_an_epoch():
    import diffcore
    before = winograd._EPOCH
    diffcore.sample(lambda x, t: torch.zeros_like(x), diffcore.DDPM(diffcore.schedules.linear_betas(10)), n=2,
                    shape=(2,), method="ancestral", steps=2)
    assert winograd._EPOCH > before


def test_module_with_a_trainable_bias_keeps_autograd():
    conv = nn.Conv2d(16, 16, 3, padding=1)
    conv.weight.requires_grad_(False)
    m = swapped(conv)
    x = cl(torch.randn(2, 16, 8, 8))
    m(x).sum().backward()
    conv(x).sum().backward()
    torch.testing.assert_close(m.bias.grad, conv.bias.grad)


@pytest.mark.parametrize("change", [dict(stride=(2, 2)), dict(padding=(0, 0)), dict(dilation=(2, 2)),
                                    dict(padding_mode="reflect")])
def test_module_honours_a_changed_geometry(change):
    conv = nn.Conv2d(16, 16, 3, padding=1)
    m = swapped(conv)
    for k, v in change.items():
        setattr(m, k, v)
        setattr(conv, k, v)
    x = cl(torch.randn(2, 16, 9, 9))
    with torch.no_grad():
        assert torch.equal(m(x), conv(x))


# autocast: tests/test_bf16_cpu.py


def test_few_tiles_take_the_direct_convolution(monkeypatch):
    m = swapped(nn.Conv2d(16, 16, 3, padding=1))
    calls = count_winograd_calls(monkeypatch)
    with torch.no_grad():
        small = cl(torch.randn(1, 16, 6, 6))                # 9 tiles < MIN_TILES
        assert torch.equal(m(small), nn.Conv2d.forward(m, small)) and not calls
        m(cl(torch.randn(1, 16, 8, 8)))                     # 16 tiles
    assert len(calls) == 1


def test_module_traces_with_fx():
    m = nn.Sequential(swapped(nn.Conv2d(16, 16, 3, padding=1)))
    gm = torch.fx.symbolic_trace(m)
    x = cl(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        assert torch.equal(gm(x), nn.Conv2d.forward(m[0], x))


def test_inference_mode_weight_is_not_cached():
    with torch.inference_mode():
        conv = nn.Conv2d(16, 16, 3, padding=1)
        x = cl(torch.randn(1, 16, 5, 5))
        y = winograd.conv3x3(x, conv.weight, conv.bias)
    check_close(y, x, conv.weight, conv.bias, "inference-mode weight")
    assert id(conv.weight) not in winograd._U


def _outputs(seed):
    """Winograd outputs of SHAPES from one seed, F(2x2) and F(4x4), each checked against float64."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for B, C, K, H, W in SHAPES:
        x, w = cl(torch.randn(B, C, H, W, generator=g)), torch.randn(K, C, 3, 3, generator=g) / 3
        b = torch.randn(K, generator=g)
        out.append(winograd.conv3x3(x, w, b, tile=2))
        check_close(out[-1], x, w, b, f"{(B, C, K, H, W)}, seed {seed}", tile=2)
        out.append(torch.ops.diffcore.conv3x3_winograd(x, winograd.transform_weight(w, tile=4), b, K))
        check_close(out[-1], x, w, b, f"F(4x4) {(B, C, K, H, W)}, seed {seed}", tile=4)
    return out


def test_portable_code_matches(tmp_path):
    """DIFFCORE_SCALAR_WINOGRAD=1: the transforms and GEMM tiles a CPU without AVX2 runs, in a
    subprocess (the switch is read once per process)."""
    import subprocess
    import sys
    seed = random.randrange(2**31)
    path = tmp_path / "scalar.pt"
    script = ("import sys, torch; sys.path.insert(0, 'tests'); import test_winograd as t\n"
              f"torch.save(t._outputs({seed}), {str(path)!r})\n")
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    env = {**os.environ, "DIFFCORE_SCALAR_WINOGRAD": "1"}
    r = subprocess.run([sys.executable, "-c", script], cwd=root, env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, (seed, r.stderr[-2000:])
    scalar = torch.load(path)
    if torch.backends.cpu.get_cpu_capability() != "DEFAULT":
        # the switch took effect: the AVX2 code (FMA, other summation order) rounds differently
        assert any(not torch.equal(a, b) for a, b in zip(scalar, _outputs(seed)))


def test_cache_follows_writes_for_both_tiles(monkeypatch):
    """A layer called with and without MIN_TILES_F4 tiles keeps both transforms; a write through
    .data makes both stale."""
    monkeypatch.setattr(winograd, "FP32_F4", True)
    m = swapped(nn.Conv2d(16, 24, 3, padding=1))
    big, small = cl(torch.randn(2, 16, 13, 15)), cl(torch.randn(1, 16, 8, 8))
    with torch.no_grad():
        m(big), m(small)
        assert set(winograd._U[id(m.weight)].u) == {(False, 4), (False, 2)}
        m.weight.data.copy_(torch.randn_like(m.weight))
        check_close(m(big), big, m.weight, m.bias, "F(4x4) after a .data write", tile=4)
        check_close(m(small), small, m.weight, m.bias, "F(2x2) after a .data write", tile=2)


def test_cache_follows_a_channels_last_weight_and_replaced_data():
    m = swapped(nn.Conv2d(16, 24, 3, padding=1)).to(memory_format=torch.channels_last)
    assert m.weight.is_contiguous(memory_format=torch.channels_last)
    x = cl(torch.randn(2, 16, 8, 8))
    with torch.no_grad():
        m(x)
        m.weight.data.copy_(torch.randn_like(m.weight))             # in place, probed in memory order
        check_close(m(x), x, m.weight, m.bias, "channels_last weight after a .data write")
        m.weight.data = torch.randn(24, 16, 3, 3)                   # new storage
        check_close(m(x), x, m.weight, m.bias, "after weight.data = ...")


def test_weights_that_are_not_dense_or_hold_nan():
    base = torch.randn(20, 16, 3, 3 * 2)
    w = base[..., ::2]                                              # stride 2: not dense
    x = cl(torch.randn(2, 16, 8, 8))
    check_close(winograd.conv3x3(x, w), x, w, None, "strided weight")
    nan = torch.randn(20, 16, 3, 3)
    nan.view(-1)[0] = float("nan")
    e0 = None
    for _ in range(2):
        winograd.conv3x3(x, nan)
        e = winograd._U[id(nan)]
        assert e0 is None or e is e0                                 # NaN at a probe: still one entry
        e0 = e


def test_cache_entries_and_finalizers_go_with_the_weight():
    import gc
    w = torch.randn(16, 16, 3, 3)
    x = cl(torch.randn(2, 16, 8, 8))
    winograd.conv3x3(x, w)
    finalizer = winograd._WATCHED[id(w)]
    winograd.clear_cache()
    winograd.conv3x3(x, w)
    assert winograd._WATCHED[id(w)] is finalizer and id(w) in winograd._U     # no second finalizer
    i = id(w)
    del w
    gc.collect()
    assert i not in winograd._U and i not in winograd._WATCHED
