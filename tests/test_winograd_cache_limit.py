"""The memory limit on cached Winograd weight transforms (diffcore.winograd.CACHE_LIMIT_MB):
what the cache holds is counted exactly, layers past the limit run the direct convolution (or
the transform they have), and the limit's settings are checked."""
import copy
import gc
import warnings

import pytest
import torch
from torch import nn

from diffcore import winograd

pytest.importorskip("diffcore.native", reason="the native extension did not load here")
if not hasattr(torch.ops.diffcore, "conv3x3_winograd"):
    pytest.skip("the loaded extension predates conv3x3_winograd", allow_module_level=True)

from test_winograd import check_close, cl, small_diffusers_unet  # noqa: E402


@pytest.fixture(autouse=True)
def fresh_cache(monkeypatch):
    """An empty cache, an unspent warning and room to spare, whatever the environment says (the
    limit is restored after each test)."""
    winograd.clear_cache()
    monkeypatch.setattr(winograd, "_WARNED", False)
    monkeypatch.setattr(winograd, "FP32_F4", True)
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", 1e6)
    yield
    winograd.clear_cache()


def swapped(conv):
    m = copy.deepcopy(conv)
    m.__class__ = winograd.WinogradConv2d
    return m


def mb(*tensors) -> float:
    return sum(t.nbytes for t in tensors) / 2**20


def test_cache_bytes_counts_every_transform_once_and_frees_it():
    w = torch.randn(24, 16, 3, 3)
    big, small = cl(torch.randn(2, 16, 16, 16)), cl(torch.randn(1, 16, 8, 8))   # 32 and 4 4x4 tiles
    u2, u4 = winograd.transform_weight(w, tile=2), winograd.transform_weight(w, tile=4)
    winograd.conv3x3(big, w)
    assert winograd.cache_bytes() == u4.nbytes == 36 * 16 * 32 * 4                # K = 24 padded to 32
    winograd.conv3x3(small, w)
    assert winograd.cache_bytes() == u4.nbytes + u2.nbytes
    w.copy_(torch.randn_like(w))              # stale: the entry is remade, its bytes not counted twice
    check_close(winograd.conv3x3(big, w), big, w, None, "after a write")
    assert winograd.cache_bytes() == u4.nbytes
    del w
    gc.collect()
    assert winograd.cache_bytes() == 0


def test_a_layer_past_the_limit_runs_the_direct_convolution(monkeypatch):
    m1, m2 = swapped(nn.Conv2d(16, 24, 3, padding=1)), swapped(nn.Conv2d(24, 16, 3, padding=1))
    x = cl(torch.randn(2, 16, 16, 16))
    u1 = winograd.transform_weight(m1.weight.detach(), tile=4)
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", mb(u1))                 # room for m1's transform alone
    with torch.no_grad():
        with pytest.warns(RuntimeWarning, match="CACHE_LIMIT_MB"):
            h = m1(x)
            y = m2(h)
        assert torch.equal(h, torch.ops.diffcore.conv3x3_winograd(x, u1, m1.bias, 24))   # the Winograd op
        assert torch.equal(y, nn.Conv2d.forward(m2, h))                                 # oneDNN's
        assert winograd.cache_bytes() == u1.nbytes
        with warnings.catch_warnings():
            warnings.simplefilter("error")                                                # one warning only
            assert torch.equal(m2(h), y)
        winograd.clear_cache()                                                            # room again
        check_close(m2(h), h, m2.weight, m2.bias, "m2 with room")
        assert winograd.cache_bytes() == winograd.transform_weight(m2.weight.detach(), tile=4).nbytes


def test_a_layer_holding_f4_alone_takes_it_for_few_tiles(monkeypatch):
    m = swapped(nn.Conv2d(16, 16, 3, padding=1))
    big, small = cl(torch.randn(2, 16, 16, 16)), cl(torch.randn(1, 16, 8, 8))
    assert (winograd.pick_tile(big), winograd.pick_tile(small)) == (4, 2)
    u4 = winograd.transform_weight(m.weight.detach(), tile=4)
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", mb(u4))
    with torch.no_grad(), pytest.warns(RuntimeWarning, match="CACHE_LIMIT_MB"):
        m(big)
        y = m(small)                          # F(2x2) would cross the limit: F(4x4), already there
    assert torch.equal(y, torch.ops.diffcore.conv3x3_winograd(small, u4, m.bias, 16))
    check_close(y, small, m.weight, m.bias, "F(4x4) for few tiles", tile=4)
    assert winograd.cache_bytes() == u4.nbytes


def test_a_layer_that_saves_more_per_byte_takes_the_room_of_one_that_saves_less(monkeypatch):
    low, high = swapped(nn.Conv2d(32, 32, 3, padding=1)), swapped(nn.Conv2d(32, 32, 3, padding=1))
    small, big = cl(torch.randn(4, 32, 8, 8)), cl(torch.randn(2, 32, 16, 16))   # 16 and 32 4x4 tiles: F(4x4)
    u_low = winograd.transform_weight(low.weight.detach(), tile=4)
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", mb(u_low))                  # room for one of the two
    with torch.no_grad():
        low(small)                                                 # 256 output pixels per call
        assert winograd.cache_bytes() == u_low.nbytes
        y = high(big)                                              # 512: worth more per byte, evicts low's
        check_close(y, big, high.weight, high.bias, "the layer that took the room", tile=4)
        assert set(winograd._U[id(high.weight)].u) == {(False, 4)} and not winograd._U[id(low.weight)].u
        with pytest.warns(RuntimeWarning, match="CACHE_LIMIT_MB"):
            assert torch.equal(low(small), nn.Conv2d.forward(low, small))   # cannot evict it back: oneDNN
        assert winograd.cache_bytes() == u_low.nbytes


def test_conv3x3_past_the_limit_transforms_for_the_call(monkeypatch):
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", 0)
    x, w, b = cl(torch.randn(2, 9, 7, 13)), torch.randn(11, 9, 3, 3) / 3, torch.randn(11)
    with pytest.warns(RuntimeWarning, match="CACHE_LIMIT_MB"):
        check_close(winograd.conv3x3(x, w, b), x, w, b, "uncached, picked tile")
    with warnings.catch_warnings():
        warnings.simplefilter("error")                                    # warned once already
        for tile in (2, 4):
            check_close(winograd.conv3x3(x, w, b, tile=tile), x, w, b, f"uncached, tile {tile}", tile=tile)
    assert winograd.cache_bytes() == 0


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "512", True])
def test_a_bad_limit_is_rejected_by_name(monkeypatch, bad):
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", bad)
    with pytest.raises(ValueError, match="CACHE_LIMIT_MB must be None or a number of megabytes >= 0"):
        winograd.conv3x3(cl(torch.randn(1, 16, 8, 8)), torch.randn(16, 16, 3, 3))


def test_the_limit_comes_from_the_environment_unless_set(monkeypatch):
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", None)
    monkeypatch.setenv("DIFFCORE_WINOGRAD_CACHE_MB", " 0.5 ")
    assert winograd.cache_limit_mb() == 0.5
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", 7)               # set in Python: over the environment
    assert winograd.cache_limit_mb() == 7.0
    monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", None)
    for bad in ("lots", "-3", "inf", "nan"):                          # checked where used, named
        monkeypatch.setenv("DIFFCORE_WINOGRAD_CACHE_MB", bad)
        with pytest.raises(ValueError, match="DIFFCORE_WINOGRAD_CACHE_MB must be a number of megabytes >= 0"):
            winograd.conv3x3(cl(torch.randn(1, 16, 8, 8)), torch.randn(16, 16, 3, 3))
    monkeypatch.delenv("DIFFCORE_WINOGRAD_CACHE_MB")
    memory_mb = winograd.os.sysconf("SC_PAGE_SIZE") * winograd.os.sysconf("SC_PHYS_PAGES") / 2**20
    assert 0 < winograd.cache_limit_mb() <= memory_mb / 4 + 1e-6


def test_an_accelerated_unet_under_a_tight_limit_matches_the_original(monkeypatch):
    """Half the room its transforms need: some layers run Winograd, the rest oneDNN, and the
    output is still the original's (float64) within float32 rounding."""
    import diffcore
    unet = small_diffusers_unet()
    acc = diffcore.accelerate(copy.deepcopy(unet)).to(memory_format=torch.channels_last)
    x, t = cl(torch.randn(4, 3, 16, 16)), torch.tensor([10, 300, 600, 900])
    with torch.no_grad():
        ref = unet.double()(x.double(), t).sample
        acc(x, t)
        full = winograd.cache_bytes()
        winograd.clear_cache()
        monkeypatch.setattr(winograd, "CACHE_LIMIT_MB", full / 2 / 2**20)
        with pytest.warns(RuntimeWarning, match="CACHE_LIMIT_MB"):
            out = acc(x, t).sample
    assert 0 < winograd.cache_bytes() <= full / 2
    err = (out.double() - ref).abs().max().item()
    assert err < 1e-4 * ref.abs().max().item(), err
