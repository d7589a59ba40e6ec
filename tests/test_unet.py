"""The DDPM U-Net: the CIFAR-10 configuration's size, its options, and its input checks."""
import pytest
import torch

from diffcore.models import UNet, UNetConfig


def n_params(m):
    return sum(p.numel() for p in m.parameters())


def test_cifar10_configuration_has_35_7m_parameters():
    net = UNet()  # the defaults are Ho et al.'s CIFAR-10 model
    n = n_params(net)
    assert abs(n - 35.7e6) <= 0.01 * 35.7e6, n


def test_parameter_count_equals_diffusers_ddpm_cifar10():
    """diffusers' UNet2DModel in the google/ddpm-cifar10-32 configuration (built offline from its
    config) is the same architecture: the counts must agree exactly."""
    diffusers = pytest.importorskip("diffusers")
    ref = diffusers.UNet2DModel(sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256),
                                layers_per_block=2, down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
                                up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"),
                                dropout=0.1, norm_num_groups=32, attention_head_dim=None, resnet_time_scale_shift="default",
                                add_attention=True, flip_sin_to_cos=False, freq_shift=1)
    assert n_params(UNet()) == n_params(ref)


SMALL = dict(in_channels=1, resolution=8, ch=16, ch_mult=(1, 2), num_res_blocks=1, attn_resolutions=(4,),
             num_groups=4, dropout=0.0)


@pytest.mark.parametrize("conditioning,t", [("discrete", torch.tensor([0, 999, 5])),
                                            ("continuous", torch.tensor([1e-3, 0.5, 1.0])),
                                            ("sigma", torch.tensor([0.01, 1.0, 50.0]))])
def test_conditionings_give_distinct_outputs_per_time(conditioning, t):
    torch.manual_seed(0)
    net = UNet(UNetConfig(**SMALL, conditioning=conditioning)).eval()
    x = torch.randn(1, 1, 8, 8).expand(3, -1, -1, -1)
    with torch.no_grad():
        y = net(x, t)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert (y[0] - y[1]).abs().max() > 1e-4 and (y[1] - y[2]).abs().max() > 1e-4


def test_learned_variance_outputs_2c_channels():
    net = UNet(UNetConfig(**{**SMALL, "in_channels": 3}, learned_variance=True))
    assert net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2])).shape == (2, 6, 8, 8)


def test_skip_rescale_changes_the_output_by_the_residual_scale():
    torch.manual_seed(0)
    a = UNet(UNetConfig(**SMALL)).eval()
    b = UNet(UNetConfig(**SMALL, skip_rescale=True)).eval()
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(2, 1, 8, 8), torch.tensor([3, 400])
    with torch.no_grad():
        assert not torch.allclose(a(x, t), b(x, t))


def test_channels_last_matches_nchw():
    torch.manual_seed(0)
    a = UNet(UNetConfig(**SMALL)).eval()
    b = UNet(UNetConfig(**SMALL, channels_last=True)).eval()
    b.load_state_dict(a.state_dict())
    x, t = torch.randn(3, 1, 8, 8), torch.tensor([3, 400, 999])
    with torch.no_grad():
        torch.testing.assert_close(b(x, t), a(x, t), atol=1e-5, rtol=1e-4)


def test_every_groupnorm_silu_goes_through_diffcore_nn():
    """No torch.nn.GroupNorm or SiLU module inside residual blocks: the fused modules do it all,
    so a faster backend of diffcore.ops speeds the whole network up."""
    from diffcore.nn import GroupNormSiLU
    net = UNet()
    assert not any(isinstance(m, torch.nn.GroupNorm) for m in net.modules())
    assert sum(isinstance(m, GroupNormSiLU) for m in net.modules()) > 20


def test_gradients_flow_to_every_parameter():
    net = UNet(UNetConfig(**SMALL))
    net(torch.randn(2, 1, 8, 8), torch.tensor([1, 500])).square().mean().backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in net.parameters())


@pytest.mark.parametrize("kwargs,match", [
    ({"resolution": 12, "ch_mult": (1, 2, 2, 2)}, "resolution"),
    ({"ch": 30, "num_groups": 32}, "num_groups"),
    ({"conditioning": "time"}, "conditioning"),
    ({"dropout": 1.0}, "dropout"),
    ({"ch_mult": ()}, "ch_mult"),
])
def test_bad_config_names_the_option(kwargs, match):
    with pytest.raises(ValueError, match=match):
        UNetConfig(**kwargs)


def test_bad_inputs_name_the_argument():
    net = UNet(UNetConfig(**SMALL))
    with pytest.raises(ValueError, match="x must be"):
        net(torch.randn(2, 3, 8, 8), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="t must have shape"):
        net(torch.randn(2, 1, 8, 8), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="divisible"):
        net(torch.randn(2, 1, 7, 8), torch.tensor([1, 2]))
