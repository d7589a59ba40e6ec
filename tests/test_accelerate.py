"""diffcore.accelerate on diffusers' U-Nets, a guided-diffusion-style ResBlock and our own U-Net:
outputs equal the originals (per backend, fp32 and bf16), state_dicts round-trip, the report
says what was swapped and why the rest was not.

Tolerances. float32: atol 2e-5 + rtol 1e-4 on outputs of scale ~1 (the fused ops accumulate
in float32 like torch's; measured <= ~4e-6). bfloat16: the accelerated model's error against
the float64 original is at most 2x the plain bfloat16 original's, + 1e-2 absolute slack
(STYLE.md's flash-attention rule).
"""
import copy
import os

import pytest
import torch
from torch import nn

diffusers = pytest.importorskip("diffusers")

import diffcore  # noqa: E402
from diffcore.accelerate import FusedAttnProcessor, Report  # noqa: E402
from diffcore.nn import GroupNormSiLU  # noqa: E402

try:
    from diffcore import native
    NATIVE_CPU = native.available(torch.device("cpu"))
except ImportError:   # not built, or switched off (DIFFCORE_NO_EXT=1): the other backends still run
    NATIVE_CPU = False

BACKENDS = [
    "torch",
    pytest.param("native", marks=pytest.mark.skipif(not NATIVE_CPU,
                                                    reason="diffcore._C not built")),
    pytest.param("triton", marks=pytest.mark.skipif(os.environ.get("TRITON_INTERPRET") != "1",
                                                    reason="Triton on CPU needs TRITON_INTERPRET=1")),
]
F32 = dict(atol=2e-5, rtol=1e-4)


# ---- tiny models -------------------------------------------------------------------------------
def unet2d(seed=0, **kw):
    """The ddpm-cifar10-32 configuration's block types at toy size (plus 2 attention heads)."""
    torch.manual_seed(seed)
    cfg = dict(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
               down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
               norm_num_groups=4, attention_head_dim=8, resnet_time_scale_shift="default", add_attention=True,
               flip_sin_to_cos=False, freq_shift=1, dropout=0.1)
    cfg.update(kw)
    return _randomize(diffusers.UNet2DModel(**cfg)).eval()


def unet2d_condition(seed=0):
    torch.manual_seed(seed)
    m = diffusers.UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(8, 16),
                                       layers_per_block=1, norm_num_groups=4, cross_attention_dim=8,
                                       attention_head_dim=4,
                                       down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
                                       up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"))
    return _randomize(m).eval()


def _randomize(m):
    """Random norms' affine parameters (not 1/0) so a swapped-out weight or bias would show;
    conv_out is zero-initialised in some configs, which would hide everything."""
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for name, p in m.named_parameters():
            if p.dim() == 1:
                p.copy_(1 + 0.3 * torch.randn(p.shape, generator=g) if name.endswith("weight") else
                        0.3 * torch.randn(p.shape, generator=g))
            elif "conv_out" in name or "proj_out" in name or "to_out" in name:
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
    return m


def accelerated(m, **kw):
    return diffcore.accelerate(copy.deepcopy(m), **kw)


def inputs(c=3, b=3, res=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, c, res, res, generator=g), torch.tensor([0, 417, 999][:b])


def run(m, x, t, **kw):
    with torch.no_grad():
        return m(x, t, **kw).sample


# ---- outputs equal the originals --------------------------------------------------------------
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("backend", BACKENDS)
def test_unet2d_matches_original_fp32(backend, channels_last):
    m = unet2d()
    a = accelerated(m, backend=backend)
    x, t = inputs()
    if channels_last:
        a = a.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(run(a, x, t), run(m, x, t), **F32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_unet2d_condition_matches_original_fp32(backend):
    m = unet2d_condition()
    a = accelerated(m, backend=backend)
    x, t = inputs(c=4)
    ctx = torch.randn(3, 5, 8, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(run(a, x, t, encoder_hidden_states=ctx), run(m, x, t, encoder_hidden_states=ctx), **F32)


def test_backend_env_variable_routes_the_fused_ops(monkeypatch):
    """backend=None follows DIFFCORE_BACKEND per call: with it set to torch the result is the
    reference's, and the output still equals the original."""
    m = unet2d()
    a = accelerated(m)
    x, t = inputs()
    monkeypatch.setenv("DIFFCORE_BACKEND", "torch")
    torch.testing.assert_close(run(a, x, t), run(m, x, t), **F32)


def _bf16_check(make, x, t, **kw):
    m = make()
    ref = run(copy.deepcopy(m).double(), x.double(), t, **{k: v.double() for k, v in kw.items()})
    plain = run(copy.deepcopy(m).bfloat16(), x.bfloat16(), t, **{k: v.bfloat16() for k, v in kw.items()})
    fused = run(accelerated(m).bfloat16(), x.bfloat16(), t, **{k: v.bfloat16() for k, v in kw.items()})
    err_plain = (plain.double() - ref).abs().max().item()
    err_fused = (fused.double() - ref).abs().max().item()
    assert err_fused <= 2 * err_plain + 1e-2, (err_fused, err_plain)


def test_unet2d_bf16_error_at_most_twice_plain_bf16():
    x, t = inputs()
    _bf16_check(unet2d, x, t)


def test_unet2d_condition_bf16_error_at_most_twice_plain_bf16():
    x, t = inputs(c=4)
    _bf16_check(unet2d_condition, x, t, encoder_hidden_states=torch.randn(3, 5, 8))


def test_unet2d_autocast_bf16_close_to_original_autocast():
    m = unet2d()
    a = accelerated(m)
    x, t = inputs()
    ref = run(copy.deepcopy(m).double(), x.double(), t)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        plain, fused = run(m, x, t), run(a, x, t)
    err_plain = (plain.double() - ref).abs().max().item()
    err_fused = (fused.double() - ref).abs().max().item()
    assert err_fused <= 2 * err_plain + 1e-2, (err_fused, err_plain)


def test_float64_matches_to_float64_rounding():
    """In float64 every fused op computes in float64: the difference is rounding only."""
    m = unet2d().double()
    a = accelerated(m)
    x, t = inputs()
    torch.testing.assert_close(run(a, x.double(), t), run(m, x.double(), t), atol=1e-12, rtol=1e-10)


@pytest.mark.parametrize("backend", ["torch", None])
def test_gradients_match_original(backend):
    """Training through the accelerated model: the fused ops' backward (or the reference's)
    gives the original's parameter gradients."""
    m = unet2d(dropout=0.0).train()
    a = accelerated(m, backend=backend).train()
    x, t = inputs()
    m(x, t).sample.square().sum().backward()
    a(x, t).sample.square().sum().backward()
    ga = dict(a.named_parameters())
    for name, p in m.named_parameters():
        torch.testing.assert_close(ga[name].grad, p.grad, atol=1e-4, rtol=1e-3, msg=name)


# ---- diffusers ResnetBlock2D variants --------------------------------------------------------
RESNET_CASES = {
    "plain": dict(in_channels=8, out_channels=8),
    "shortcut": dict(in_channels=8, out_channels=16),
    "conv_shortcut": dict(in_channels=8, out_channels=16, conv_shortcut=True),
    "scale": dict(in_channels=8, out_channels=8, output_scale_factor=2.0),
    "up": dict(in_channels=8, out_channels=8, up=True),
    "down": dict(in_channels=8, out_channels=16, down=True),
    "down_sde_vp": dict(in_channels=8, out_channels=8, down=True, kernel="sde_vp"),
    "no_temb": dict(in_channels=8, out_channels=8, temb_channels=None),
    "skip_time_act": dict(in_channels=8, out_channels=8, skip_time_act=True),
    "scale_shift": dict(in_channels=8, out_channels=8, time_embedding_norm="scale_shift"),
}


@pytest.mark.parametrize("case", sorted(RESNET_CASES))
def test_resnet_block_variants(case):
    from diffusers.models.resnet import ResnetBlock2D
    kw = dict(temb_channels=12, groups=4, eps=1e-6, dropout=0.0)
    kw.update(RESNET_CASES[case])
    torch.manual_seed(0)
    blk = _randomize(ResnetBlock2D(**kw)).eval()
    acc, rep = accelerated(blk, report=True)
    assert isinstance(acc, ResnetBlock2D) and type(acc) is not ResnetBlock2D
    x = torch.randn(2, 8, 6, 6)
    temb = None if kw["temb_channels"] is None else torch.randn(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(acc(x, temb), blk(x, temb), **F32)
    assert list(acc.state_dict()) == list(blk.state_dict())
    (entry,) = [e for e in rep if e.name == ""]
    assert entry.kind == "ResnetBlock2D"
    if case == "scale_shift":
        assert entry.action == "partly fused" and "scale_shift" in entry.detail
        assert isinstance(acc.norm2, nn.GroupNorm)  # kept
    else:
        assert entry.action == "fused" and isinstance(acc.norm2, GroupNormSiLU)
    assert isinstance(acc.norm1, GroupNormSiLU)


def test_resnet_block_with_another_activation_is_left():
    from diffusers.models.resnet import ResnetBlock2D
    blk = ResnetBlock2D(in_channels=8, out_channels=8, temb_channels=4, groups=4, non_linearity="mish").eval()
    acc, rep = accelerated(blk, report=True)
    assert type(acc) is ResnetBlock2D
    (entry,) = [e for e in rep if e.name == ""]
    assert entry.action == "left" and "Mish" in entry.detail


# ---- state_dict round trips -------------------------------------------------------------------
@pytest.mark.parametrize("make", [unet2d, unet2d_condition])
def test_state_dict_round_trips(make):
    m = make(seed=0)
    a = accelerated(make(seed=1))              # other weights
    assert list(a.state_dict()) == list(m.state_dict())
    a.load_state_dict(m.state_dict(), strict=True)   # original -> accelerated
    fresh = make(seed=2)
    fresh.load_state_dict(a.state_dict(), strict=True)  # accelerated -> original
    for k, v in m.state_dict().items():
        assert torch.equal(fresh.state_dict()[k], v), k
    x, t = inputs(c=m.config.in_channels)
    kw = {"encoder_hidden_states": torch.randn(3, 5, 8)} if make is unet2d_condition else {}
    torch.testing.assert_close(run(a, x, t, **kw), run(m, x, t, **kw), **F32)
    torch.testing.assert_close(run(fresh, x, t, **kw), run(m, x, t, **kw), atol=0, rtol=0)


def test_parameters_are_the_same_objects():
    """Swapping keeps the Parameter objects (an optimizer built before accelerate still works)."""
    m = unet2d()
    before = dict(m.named_parameters())
    diffcore.accelerate(m)
    after = dict(m.named_parameters())
    assert before.keys() == after.keys() and all(after[k] is before[k] for k in before)


# ---- the report ---------------------------------------------------------------------------------
def test_report_unet2d():
    m, rep = diffcore.accelerate(unet2d(), report=True)
    assert isinstance(rep, Report)
    by_name = {e.name: e for e in rep}
    assert by_name["down_blocks.0.resnets.0"].action == "fused"
    assert "norm1+SiLU, temb+norm2+SiLU, residual" in by_name["down_blocks.0.resnets.0"].detail
    assert by_name["conv_norm_out"].action == "fused" and isinstance(m.conv_norm_out, GroupNormSiLU)
    assert isinstance(m.conv_act, nn.Identity)
    assert by_name["mid_block.attentions.0"].action == "fused"
    assert isinstance(m.mid_block.attentions[0].processor, FusedAttnProcessor)
    n_resnets = sum(type(mod).__name__ == "FusedResnetBlock2D" for mod in m.modules())
    assert n_resnets == 2 + 2 + 4  # down 1+1, mid 2, up 2+2
    assert n_resnets == len([e for e in rep if e.kind == "ResnetBlock2D"])
    text = str(rep)
    assert "down_blocks.0.resnets.0: ResnetBlock2D -> fused (norm1+SiLU, temb+norm2+SiLU, residual)" in text
    assert "swapped" in text.splitlines()[-1]


def test_report_unet2d_condition_says_why_not():
    m, rep = diffcore.accelerate(unet2d_condition(), report=True)
    left = {e.name: e.detail for e in rep.left()}
    # the transformer's GroupNorm has no SiLU after it; its attentions have no group norm
    assert "GroupNorm without SiLU" in left["down_blocks.0.attentions.0.norm"]
    assert "no group norm" in left["down_blocks.0.attentions.0.transformer_blocks.0.attn1"]
    assert "no group norm" in left["down_blocks.0.attentions.0.transformer_blocks.0.attn2"]
    assert {e.name for e in rep.swapped()} >= {"down_blocks.0.resnets.0", "mid_block.resnets.0", "conv_norm_out"}


def test_accelerate_twice_changes_nothing():
    m = unet2d()
    x, t = inputs()
    once = run(diffcore.accelerate(m), x, t)
    m2, rep = diffcore.accelerate(m, report=True)
    assert m2 is m and not rep.swapped() and all(e.action in ("already fused", "left") for e in rep)
    torch.testing.assert_close(run(m, x, t), once, atol=0, rtol=0)


def test_fallback_processor_handles_uncovered_calls():
    """A 3-D call to a fused Attention goes to the original AttnProcessor2_0."""
    m = unet2d()
    attn = m.mid_block.attentions[0]
    ref = copy.deepcopy(attn)
    diffcore.accelerate(attn)
    h = torch.randn(2, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(attn(h), ref(h), atol=0, rtol=0)


# ---- guided-diffusion-style blocks ------------------------------------------------------------
class GroupNorm32(nn.GroupNorm):
    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


def normalization(c):
    return GroupNorm32(4, c)


class GDResBlock(nn.Module):
    """guided-diffusion's ResBlock (unet.py), minus checkpointing; up/down by nearest/avg-pool."""

    def __init__(self, channels, emb_channels, out_channels=None, use_scale_shift_norm=False, up=False, down=False):
        super().__init__()
        out_channels = out_channels or channels
        self.use_scale_shift_norm = use_scale_shift_norm
        self.in_layers = nn.Sequential(normalization(channels), nn.SiLU(), nn.Conv2d(channels, out_channels, 3, padding=1))
        self.updown = up or down
        if up:
            self.h_upd = self.x_upd = nn.Upsample(scale_factor=2, mode="nearest")
        elif down:
            self.h_upd = self.x_upd = nn.AvgPool2d(2)
        else:
            self.h_upd = self.x_upd = nn.Identity()
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, 2 * out_channels if use_scale_shift_norm
                                                             else out_channels))
        self.out_layers = nn.Sequential(normalization(out_channels), nn.SiLU(), nn.Dropout(0.0),
                                        nn.Conv2d(out_channels, out_channels, 3, padding=1))
        self.skip_connection = nn.Identity() if out_channels == channels else nn.Conv2d(channels, out_channels, 1)

    def forward(self, x, emb):
        if self.updown:
            in_rest, in_conv = self.in_layers[:-1], self.in_layers[-1]
            h = in_rest(x)
            h = self.h_upd(h)
            x = self.x_upd(x)
            h = in_conv(h)
        else:
            h = self.in_layers(x)
        emb_out = self.emb_layers(emb).type(h.dtype)
        while len(emb_out.shape) < len(h.shape):
            emb_out = emb_out[..., None]
        if self.use_scale_shift_norm:
            out_norm, out_rest = self.out_layers[0], self.out_layers[1:]
            scale, shift = torch.chunk(emb_out, 2, dim=1)
            h = out_norm(h) * (1 + scale) + shift
            h = out_rest(h)
        else:
            h = h + emb_out
            h = self.out_layers(h)
        return self.skip_connection(x) + h


class GDNet(nn.Module):
    """Two guided-diffusion ResBlocks and an output head Sequential(norm, SiLU, conv)."""

    def __init__(self, **kw):
        super().__init__()
        self.blocks = nn.ModuleList([GDResBlock(8, 12, 16, **kw), GDResBlock(16, 12, **kw)])
        self.out = nn.Sequential(normalization(16), nn.SiLU(), nn.Conv2d(16, 3, 3, padding=1))

    def forward(self, x, emb):
        for b in self.blocks:
            x = b(x, emb)
        return self.out(x)


@pytest.mark.parametrize("variant", ["plain", "up", "down", "scale_shift"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_guided_diffusion_blocks(variant, backend):
    kw = {"plain": {}, "up": {"up": True}, "down": {"down": True}, "scale_shift": {"use_scale_shift_norm": True}}[variant]
    torch.manual_seed(0)
    net = _randomize(GDNet(**kw)).eval()
    acc, rep = accelerated(net, report=True, backend=backend)
    x, emb = torch.randn(2, 8, 6, 6), torch.randn(2, 12)
    with torch.no_grad():
        torch.testing.assert_close(acc(x, emb), net(x, emb), **F32)
    assert list(acc.state_dict()) == list(net.state_dict())
    by_name = {e.name: e for e in rep}
    assert by_name["out.0"].action == "fused" and isinstance(acc.out[1], nn.Identity)
    assert by_name["blocks.0.in_layers.0"].action == "fused"
    if variant == "scale_shift":
        assert by_name["blocks.0.out_layers.0"].action == "left"
        assert "use_scale_shift_norm" in by_name["blocks.0.out_layers.0"].detail
        assert isinstance(acc.blocks[0].out_layers[1], nn.SiLU)
    else:
        assert by_name["blocks.0"].action == "fused"
        assert isinstance(acc.blocks[0].out_layers[0], GroupNormSiLU)


# ---- our own U-Net --------------------------------------------------------------------------------
def test_diffcore_unet_is_reported_already_fused():
    from diffcore.models import UNet, UNetConfig
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=1, resolution=8, ch=16, ch_mult=(1, 2), num_res_blocks=1,
                          attn_resolutions=(4,), num_groups=4, dropout=0.0)).eval()
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 700])
    with torch.no_grad():
        before = net(x, t)
    sd = {k: v.clone() for k, v in net.state_dict().items()}
    out, rep = diffcore.accelerate(net, report=True)
    assert out is net and rep.swapped()
    assert all(e.kind == "Conv2d" and "Winograd" in e.detail for e in rep.swapped())   # only its 3x3 convolutions
    assert any(e.action == "already fused" and "ResBlock" in e.detail for e in rep)
    assert any(e.name == "norm_out" and e.action == "already fused" for e in rep)
    with torch.no_grad():   # float32 tolerance: layers after the attention see channels_last input (Winograd)
        torch.testing.assert_close(net(x, t), before)
    assert sd.keys() == net.state_dict().keys()


def test_bad_arguments():
    with pytest.raises(ValueError, match="nn.Module"):
        diffcore.accelerate(lambda x: x)
    with pytest.raises(ValueError, match="backend"):
        diffcore.accelerate(nn.Linear(2, 2), backend="cuda")


def test_accelerated_diffusers_unet_pickles():
    import io
    m = diffcore.accelerate(unet2d())
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    m2 = torch.load(buf, weights_only=False)
    x, t = inputs()
    assert type(m2.mid_block.resnets[0]) is type(m.mid_block.resnets[0])
    torch.testing.assert_close(run(m2, x, t), run(m, x, t), atol=0, rtol=0)


# ---- on a GPU (gpu_check.sh runs the gpu-marked tests) --------------------------------------------
@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("backend", [None, "triton"])
def test_unet2d_on_cuda(backend):
    """fp32 within F32 of the original on the GPU's fused kernels; under bf16 autocast the
    accelerated model's error against the float64 original is at most 2x plain autocast's."""
    m = unet2d().cuda()
    a = accelerated(m, backend=backend)
    x, t = inputs()
    x, t = x.cuda(), t.cuda()
    torch.testing.assert_close(run(a, x, t), run(m, x, t), **F32)
    ref = run(copy.deepcopy(m).double(), x.double(), t)
    with torch.autocast("cuda", dtype=torch.bfloat16):
        plain, fused = run(m, x, t), run(a, x, t)
    err_plain = (plain.double() - ref).abs().max().item()
    err_fused = (fused.double() - ref).abs().max().item()
    assert err_fused <= 2 * err_plain + 1e-2, (err_fused, err_plain)


@pytest.mark.parametrize("bias", [True, False])
def test_attention_projections_through_onednn_equal_the_linear(bias):
    """_project: oneDNN's matmul in float32 CPU inference, the module itself otherwise (gradients,
    hooks, other dtypes), with Linear's numbers either way."""
    from diffcore.accelerate import _project
    torch.manual_seed(0)
    lin = torch.nn.Linear(37, 19, bias=bias)
    x = torch.randn(3, 11, 37)
    with torch.no_grad():
        torch.testing.assert_close(_project(lin, x), lin(x), atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(_project(lin.double(), x.double()), lin(x.double()), atol=0, rtol=0)
    lin.float()
    xg = x.clone().requires_grad_()
    _project(lin, xg).sum().backward()       # the module path: differentiable
    assert xg.grad is not None and lin.weight.grad is not None
    calls = []
    lin.register_forward_hook(lambda m, i, o: calls.append(1))
    with torch.no_grad():
        _project(lin, x)
    assert calls == [1]                       # a hooked module is called as a module
