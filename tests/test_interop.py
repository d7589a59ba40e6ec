"""diffcore.interop: a diffusers UNet2DModel sampled by diffcore's DDPM sampler equals diffusers'
own DDPMScheduler loop given the same noise; DDPM processes built from scheduler configs.

Loops: diffusers' pipeline loop (set_timesteps(N), unet(x, t).sample, scheduler.step) with
its randn_tensor replaced by diffcore's counter-generator noise for the same step, against
diffcore.sample(DiffusersUNet(accelerate(unet)), ddpm_from_diffusers(scheduler), method="ancestral",
steps=N, seed=..., **sample_options(scheduler)) started from the same x_T.
Tolerances: float64 (model, schedule promoted as in test_diffusers_parity.py, data), on the
torch reference ops (DIFFCORE_BACKEND=torch: the float64 tier checks the mapping, not a
backend's float64 arithmetic): 1e-10; float32 stock diffusers on the default backend: 1e-4
absolute (the issue's bar).
"""
import copy
import logging

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

import diffcore  # noqa: E402
from diffcore import noise as dnoise  # noqa: E402
from diffcore.interop import (DiffusersUNet, ddpm_from_diffusers, diffusers_betas, diffusers_ddpm_loop,  # noqa: E402
                              sample_options)

logging.getLogger("diffusers").setLevel(logging.ERROR)

N, SHAPE, SEED = 4, (3, 8, 8), 11


def tiny_unet(out_channels=3, seed=0):
    torch.manual_seed(seed)
    m = diffusers.UNet2DModel(sample_size=8, in_channels=3, out_channels=out_channels, block_out_channels=(8, 16),
                              layers_per_block=1, down_block_types=("DownBlock2D", "AttnDownBlock2D"),
                              up_block_types=("AttnUpBlock2D", "UpBlock2D"), norm_num_groups=4,
                              attention_head_dim=None, flip_sin_to_cos=False, freq_shift=1)
    with torch.no_grad():  # conv_out starts at zero in some configs: make the output depend on the net
        m.conv_out.weight.copy_(0.2 * torch.randn_like(m.conv_out.weight))
    return m.eval()


@pytest.fixture
def reference_ops(monkeypatch):
    monkeypatch.setenv("DIFFCORE_BACKEND", "torch")


def promote(s):
    """diffusers' own float32 betas, held (and stepped) in float64."""
    s.betas = s.betas.double()
    s.alphas = 1.0 - s.betas
    s.alphas_cumprod = torch.cumprod(s.alphas, dim=0)
    s.one = torch.tensor(1.0, dtype=torch.float64)
    return s


def diffusers_loop(unet, scheduler, steps, x_T):
    """The DDPMPipeline loop from x_T; step k's variance noise is diffcore's noise of step k."""
    return diffusers_ddpm_loop(unet, scheduler, steps, seed=SEED, n=N, shape=SHAPE, dtype=x_T.dtype, x_T=x_T)


def x_T(dtype):
    return dnoise.NoiseSource(SEED, torch.arange(N), SHAPE, dtype=dtype).normal(0, dnoise.STREAM_INIT)


def ours(unet, scheduler, steps, dtype, prediction_type="epsilon"):
    process = ddpm_from_diffusers(scheduler, prediction_type_mapped=prediction_type != "epsilon")
    model = DiffusersUNet(diffcore.accelerate(copy.deepcopy(unet)), prediction_type=prediction_type,
                          process=process)
    return diffcore.sample(model, process, n=N, shape=SHAPE, method="ancestral", steps=steps, seed=SEED,
                           dtype=dtype, **sample_options(scheduler))


@pytest.mark.parametrize("clip", [True, False])
@pytest.mark.parametrize("variance", ["fixed_small", "fixed_large", "learned_range", "fixed_small_log"])
def test_sampling_matches_diffusers_loop_float64(variance, clip, reference_ops):
    unet = tiny_unet(out_channels=6 if variance == "learned_range" else 3).double()
    s = promote(diffusers.DDPMScheduler(num_train_timesteps=1000, variance_type=variance, clip_sample=clip))
    ref = diffusers_loop(unet, s, 10, x_T(torch.float64))
    got = ours(unet, s, 10, torch.float64)
    assert got.dtype == torch.float64 and torch.isfinite(ref).all()
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)


@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_sampling_matches_stock_diffusers_float32(variance):
    """Stock diffusers (float32 schedule, default clip_sample=True), 10 steps, the accelerated
    U-Net on our side: within 1e-4."""
    unet = tiny_unet(out_channels=6 if variance == "learned_range" else 3)
    s = diffusers.DDPMScheduler(num_train_timesteps=1000, variance_type=variance)
    ref = diffusers_loop(unet, s, 10, x_T(torch.float32))
    got = ours(unet, s, 10, torch.float32)
    torch.testing.assert_close(got, ref, atol=1e-4, rtol=0)


@pytest.mark.parametrize("spacing", ["trailing", "linspace"])
def test_timestep_spacings(spacing, reference_ops):
    unet = tiny_unet().double()
    s = promote(diffusers.DDPMScheduler(num_train_timesteps=1000, timestep_spacing=spacing, clip_sample=False))
    ref = diffusers_loop(unet, s, 7, x_T(torch.float64))
    # trailing starts at t = 999, unclipped: x0 = x / sqrt(abar_999) ~ 150 x amplifies rounding
    scale = max(1.0, ref.abs().max().item())
    torch.testing.assert_close(ours(unet, s, 7, torch.float64), ref, atol=1e-10 * scale, rtol=1e-9)


@pytest.mark.parametrize("prediction_type", ["v_prediction", "sample"])
def test_prediction_types_mapped_to_eps(prediction_type, reference_ops):
    unet = tiny_unet().double()
    s = promote(diffusers.DDPMScheduler(num_train_timesteps=1000, prediction_type=prediction_type,
                                        beta_schedule="squaredcos_cap_v2"))
    ref = diffusers_loop(unet, s, 6, x_T(torch.float64))
    got = ours(unet, s, 6, torch.float64, prediction_type=prediction_type)
    torch.testing.assert_close(got, ref, atol=1e-10, rtol=0)


# ---- processes from configs --------------------------------------------------------------------
@pytest.mark.parametrize("schedule", ["linear", "scaled_linear", "squaredcos_cap_v2"])
def test_betas_are_diffusers_betas_exactly(schedule):
    kw = dict(num_train_timesteps=1000, beta_schedule=schedule)
    if schedule == "scaled_linear":
        kw.update(beta_start=0.00085, beta_end=0.012)
    s = diffusers.DDPMScheduler(**kw)
    from_config = diffusers_betas(dict(s.config))
    assert torch.equal(from_config, s.betas.double())        # bit for bit
    p = ddpm_from_diffusers(dict(s.config))
    assert torch.equal(p.betas, s.betas.double()) and p.T == 1000
    assert torch.equal(ddpm_from_diffusers(s).betas, s.betas.double())


def test_trained_betas_and_variances():
    betas = torch.linspace(1e-4, 0.05, 50).tolist()
    p = ddpm_from_diffusers({"num_train_timesteps": 50, "trained_betas": betas, "variance_type": "fixed_large"})
    assert p.variance == "fixed_large" and torch.equal(p.betas, torch.tensor(betas, dtype=torch.float32).double())
    assert ddpm_from_diffusers({"variance_type": "learned_range"}).variance == "learned_range"
    assert ddpm_from_diffusers({"variance_type": "fixed_small_log"}).variance == "fixed_small"


@pytest.mark.parametrize("cfg,match", [
    ({"prediction_type": "v_prediction"}, "prediction_type='v_prediction'"),
    ({"prediction_type": "sample"}, "prediction_type='sample'"),
    ({"variance_type": "learned"}, "variance_type='learned'"),
    ({"variance_type": "fixed_large_log"}, "variance_type='fixed_large_log'"),
    ({"thresholding": True}, "thresholding"),
    ({"clip_sample_range": 2.0}, "clip_sample_range"),
    ({"rescale_betas_zero_snr": True}, "rescale_betas_zero_snr"),
    ({"beta_schedule": "sigmoid"}, "beta_schedule='sigmoid'"),
])
def test_unsupported_settings_are_named(cfg, match):
    with pytest.raises(ValueError, match=match):
        ddpm_from_diffusers(cfg)


def test_sample_options():
    assert sample_options({}) == {"clip_denoised": True, "spacing": "leading"}
    assert sample_options({"clip_sample": False, "timestep_spacing": "linspace"}) == {"clip_denoised": False,
                                                                                      "spacing": "even"}
    with pytest.raises(ValueError, match="steps_offset"):
        sample_options({"steps_offset": 1})


# ---- the wrapper ---------------------------------------------------------------------------------
def test_wrapper_output_and_time_handling():
    unet = tiny_unet()
    model = DiffusersUNet(unet)
    x = torch.randn(2, *SHAPE)
    with torch.no_grad():
        ref = unet(x, torch.tensor([5, 5])).sample
        torch.testing.assert_close(model(x, torch.tensor([5, 5], dtype=torch.int32)), ref, atol=0, rtol=0)
        torch.testing.assert_close(model(x, torch.tensor(5)), ref, atol=0, rtol=0)   # 0-dim t broadcast
        tup = DiffusersUNet(lambda x, t: (unet(x, t).sample,))
        torch.testing.assert_close(tup(x, torch.tensor([5, 5])), ref, atol=0, rtol=0)
    with pytest.raises(ValueError, match="integer"):
        model(x, torch.tensor([0.5, 0.5]))
    with pytest.raises(ValueError, match="shape"):
        model(x, torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="process"):
        DiffusersUNet(unet, prediction_type="v_prediction")
