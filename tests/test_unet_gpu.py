"""GPU-only: a whole sampling step of the U-Net (network on the fused Triton ops + the DDPM
update with in-kernel noise) captured once as a CUDA graph and replayed, against eager."""
import pytest
import torch

from diffcore import ops, step_coeffs
from diffcore.discrete import DDPM
from diffcore.models import UNet, UNetConfig
from diffcore.schedules import linear_betas

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


def test_cuda_graph_of_a_full_unet_step_replays_the_eager_result():
    torch.manual_seed(0)
    net = UNet(UNetConfig(in_channels=3, resolution=16, ch=64, ch_mult=(1, 2), num_res_blocks=1,
                          attn_resolutions=(8,), dropout=0.0)).cuda().eval()
    proc = DDPM(linear_betas(1000))
    B = 8
    x = torch.randn(B, 3, 16, 16, device="cuda")
    t = torch.full((B,), 500, device="cuda", dtype=torch.int64)
    idx = torch.arange(B, device="cuda")
    coefs = {k: v.cuda().float() for k, v in step_coeffs.ddpm(proc, t.cpu()).items()}

    def step():
        with torch.no_grad():
            eps = net(x, t)
            return ops.ddpm_step(x, eps, **coefs, seed=3, sample_idx=idx, step=11)[0]

    assert ops.resolve("group_norm_silu", x.device) == "triton"
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        step()
    torch.cuda.current_stream().wait_stream(s)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = step()
    for seed in (1, 2):
        x.copy_(torch.randn(B, 3, 16, 16, device="cuda", generator=torch.Generator("cuda").manual_seed(seed)))
        graph.replay()
        torch.cuda.synchronize()
        torch.testing.assert_close(static_out, step(), atol=1e-5, rtol=1e-5)
