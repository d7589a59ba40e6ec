"""Interop with diffusers: its U-Nets as diffcore models, its DDPM scheduler as a diffcore.DDPM.

    unet = diffusers.UNet2DModel(...)                     # or .from_pretrained(...)
    scheduler = diffusers.DDPMScheduler(...)
    process = diffcore.interop.ddpm_from_diffusers(scheduler)
    model = diffcore.interop.DiffusersUNet(diffcore.accelerate(unet.eval()))
    x = diffcore.sample(model, process, n=16, shape=(3, 32, 32), method="ancestral", steps=50,
                        seed=0, **diffcore.interop.sample_options(scheduler))

diffusers' DDPMScheduler.set_timesteps(N) + step is diffcore's ancestral sampler on the chain
respaced to the same timesteps (leading spacing by default), with the same variances: given
the same noise, the two loops give the same samples (tests/test_interop.py).
"""
from __future__ import annotations

import math

import torch
from torch import nn

from . import noise as _noise
from . import parameterization as P
from .discrete import DDPM

__all__ = ["DiffusersUNet", "ddpm_from_diffusers", "diffusers_betas", "sample_options", "diffusers_ddpm_loop"]

PREDICTION_TYPES = ("epsilon", "sample", "v_prediction")
# diffusers variance_type -> diffcore DDPM variance. fixed_small_log draws with
# exp(0.5 log beta~) = sqrt(beta~): the same numbers as fixed_small.
_VARIANCES = {"fixed_small": "fixed_small", "fixed_small_log": "fixed_small",
              "fixed_large": "fixed_large", "learned_range": "learned_range"}
_SPACINGS = {"leading": "leading", "trailing": "trailing", "linspace": "even"}


class DiffusersUNet(nn.Module):
    """A diffusers U-Net (UNet2DModel, or any module called as unet(x, t) returning a tensor, a
    tuple or an output object with .sample) as a diffcore DDPM model: model(x, t) -> eps
    (or [eps, v] along dim 1, 2C channels, for variance="learned_range": the layout diffusers'
    learned_range U-Nets already have).

    t: integer timesteps [B] of the trained chain (what diffcore's DDPM samplers pass), sent to
    the U-Net as int64 [B]. prediction_type "sample" and "v_prediction" outputs are mapped to
    eps with `process` (the trained, unrespaced DDPM): eps = (x - sqrt(abar) x0) / sqrt(1 - abar)
    and eps = sqrt(abar) v + sqrt(1 - abar) x. Extra keyword arguments (class_labels=...,
    encoder_hidden_states=...) are passed to every call.

    The U-Net is held as .unet: its state_dict keys carry a "unet." prefix here; load
    weights into .unet (or before wrapping).
    """

    def __init__(self, unet: nn.Module, prediction_type: str = "epsilon", process: DDPM | None = None,
                 **unet_kwargs):
        super().__init__()
        if not callable(unet):
            raise ValueError(f"unet must be callable as unet(x, t); got {type(unet).__name__}")
        if prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"prediction_type must be one of {PREDICTION_TYPES}; got {prediction_type!r}")
        if prediction_type != "epsilon" and not isinstance(process, DDPM):
            raise ValueError(f"prediction_type={prediction_type!r} needs process= (the trained diffcore.DDPM) "
                             f"to map the output to eps")
        self.unet = unet
        self.prediction_type = prediction_type
        self.process = process
        self.unet_kwargs = unet_kwargs

    def forward(self, x: torch.Tensor, t) -> torch.Tensor:
        t = torch.as_tensor(t, device=x.device)
        if t.dtype.is_floating_point or t.dtype == torch.bool:
            raise ValueError(f"t must be integer timesteps; got dtype {t.dtype}")
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}]; got {tuple(t.shape)}")
        out = self.unet(x, t.to(torch.int64), **self.unet_kwargs)
        if hasattr(out, "sample"):
            out = out.sample
        elif isinstance(out, (tuple, list)):
            out = out[0]
        if not isinstance(out, torch.Tensor):
            raise ValueError(f"the U-Net returned {type(out).__name__}; expected a tensor, a tuple or an "
                             f"output with .sample")
        if self.prediction_type == "epsilon":
            return out
        C = x.shape[1]
        pred, rest = out[:, :C], out[:, C:]   # learned_range: [prediction, v]
        m, s = self.process.marginal_coeffs(t.long())
        m, s = P.bcast(m.to(x.dtype), x), P.bcast(s.to(x.dtype), x)
        pred = pred.to(x.dtype)
        eps = (x - m * pred) / s if self.prediction_type == "sample" else m * pred + s * x
        return eps.to(out.dtype) if rest.shape[1] == 0 else torch.cat([eps.to(out.dtype), rest], dim=1)


def _config(scheduler_or_config) -> dict:
    cfg = getattr(scheduler_or_config, "config", scheduler_or_config)
    try:
        return dict(cfg)
    except (TypeError, ValueError):
        raise ValueError(f"expected a diffusers DDPMScheduler or its config (a mapping); got "
                         f"{type(scheduler_or_config).__name__}") from None


def _betas_for_alpha_bar(T: int, max_beta: float = 0.999) -> torch.Tensor:
    """diffusers' betas_for_alpha_bar with the cosine (squaredcos_cap_v2) alpha_bar: Python
    floats, then float32, as diffusers computes them."""
    def alpha_bar(t):
        return math.cos((t + 0.008) / 1.008 * math.pi / 2) ** 2
    return torch.tensor([min(1 - alpha_bar((i + 1) / T) / alpha_bar(i / T), max_beta) for i in range(T)],
                        dtype=torch.float32)


def diffusers_betas(scheduler_or_config) -> torch.Tensor:
    """The float32 betas diffusers' DDPMScheduler builds from this config, as float64
    (the scheduler's own .betas when a scheduler is given)."""
    betas = getattr(scheduler_or_config, "betas", None)
    if isinstance(betas, torch.Tensor):
        return betas.detach().double().cpu()
    cfg = _config(scheduler_or_config)
    T = int(cfg.get("num_train_timesteps", 1000))
    start, end = float(cfg.get("beta_start", 0.0001)), float(cfg.get("beta_end", 0.02))
    schedule = cfg.get("beta_schedule", "linear")
    if cfg.get("trained_betas") is not None:
        b = torch.tensor(cfg["trained_betas"], dtype=torch.float32)
    elif schedule == "linear":
        b = torch.linspace(start, end, T, dtype=torch.float32)
    elif schedule == "scaled_linear":
        b = torch.linspace(start ** 0.5, end ** 0.5, T, dtype=torch.float32) ** 2
    elif schedule == "squaredcos_cap_v2":
        b = _betas_for_alpha_bar(T)
    else:
        raise ValueError(f"beta_schedule={schedule!r} is not supported from a config (supported: 'linear', "
                         f"'scaled_linear', 'squaredcos_cap_v2', or trained_betas); pass the scheduler "
                         f"itself to use its .betas")
    return b.double()


def _check_config(cfg: dict) -> None:
    unsupported = []
    if cfg.get("rescale_betas_zero_snr"):
        unsupported.append("rescale_betas_zero_snr=True (beta_T = 1: a zero-SNR chain has no Gaussian "
                           "prior, which diffcore.DDPM needs)")
    if cfg.get("thresholding"):
        unsupported.append("thresholding=True (dynamic thresholding of x0; diffcore clips to [-1, 1] only)")
    if cfg.get("clip_sample", True) and float(cfg.get("clip_sample_range", 1.0)) != 1.0:
        unsupported.append(f"clip_sample_range={cfg.get('clip_sample_range')} (diffcore clips x0 to [-1, 1] only)")
    v = cfg.get("variance_type", "fixed_small")
    if v not in _VARIANCES:
        why = {"learned": "the network's raw variance", "fixed_large_log": "diffusers takes sqrt of log beta "
               "there, which is NaN"}.get(v, "unknown")
        unsupported.append(f"variance_type={v!r} ({why}; supported: {sorted(_VARIANCES)})")
    if unsupported:
        raise ValueError("diffusers scheduler setting(s) not supported by diffcore.DDPM: " + "; ".join(unsupported))


def ddpm_from_diffusers(scheduler_or_config, prediction_type_mapped: bool = False) -> DDPM:
    """diffcore.DDPM from a diffusers DDPMScheduler (or its config): the same betas (diffusers'
    float32 values, held in float64), variance_type fixed_small / fixed_small_log (-> fixed_small),
    fixed_large, learned_range. Raises ValueError naming any setting it does not support
    (variance_type learned / fixed_large_log, thresholding, clip_sample_range != 1,
    rescale_betas_zero_snr, another beta_schedule given only as a config).

    prediction_type other than "epsilon" raises unless prediction_type_mapped=True, i.e. the
    model is wrapped as DiffusersUNet(unet, prediction_type=..., process=...), which turns
    x0 or v predictions into the eps diffcore's DDPM samplers take.
    clip_sample and timestep_spacing are sampling options: see sample_options().
    """
    cfg = _config(scheduler_or_config)
    _check_config(cfg)
    pt = cfg.get("prediction_type", "epsilon")
    if pt not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={pt!r} is not supported (one of {PREDICTION_TYPES})")
    if pt != "epsilon" and not prediction_type_mapped:
        raise ValueError(f"prediction_type={pt!r}: diffcore's DDPM samplers take eps; wrap the U-Net as "
                         f"DiffusersUNet(unet, prediction_type={pt!r}, process=...) and pass "
                         f"prediction_type_mapped=True")
    betas = diffusers_betas(scheduler_or_config)
    T = int(cfg.get("num_train_timesteps", betas.numel()))
    if betas.numel() != T:
        raise ValueError(f"num_train_timesteps={T} but {betas.numel()} betas")
    if not ((betas > 0) & (betas < 1)).all():
        raise ValueError("the scheduler's betas must lie in (0, 1) for diffcore.DDPM")
    return DDPM(betas, variance=_VARIANCES[cfg.get("variance_type", "fixed_small")])


def sample_options(scheduler_or_config) -> dict:
    """diffcore.sample options of method="ancestral" (and "ddim") that reproduce the
    scheduler's loop: clip_denoised (clip_sample) and spacing (timestep_spacing: leading,
    trailing, linspace -> "even"). steps_offset != 0 with leading spacing is not supported."""
    cfg = _config(scheduler_or_config)
    _check_config(cfg)
    spacing = cfg.get("timestep_spacing", "leading")
    if spacing not in _SPACINGS:
        raise ValueError(f"timestep_spacing={spacing!r} is not supported (one of {sorted(_SPACINGS)})")
    if spacing == "leading" and int(cfg.get("steps_offset", 0)) != 0:
        raise ValueError(f"steps_offset={cfg.get('steps_offset')} with timestep_spacing='leading' is not "
                         f"supported; pass timesteps= explicitly")
    return {"clip_denoised": bool(cfg.get("clip_sample", True)), "spacing": _SPACINGS[spacing]}


def diffusers_ddpm_loop(unet, scheduler, steps: int, *, seed: int, n: int, shape, dtype=torch.float32,
                        x_T: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """diffusers' own DDPMPipeline loop (set_timesteps, unet(x, t).sample, scheduler.step) fed
    diffcore's noise: x_T and step k's variance noise are the numbers diffcore.sample(...,
    seed=seed) draws for the same n samples, so the two loops can be compared sample for
    sample (x_T overrides the start). For parity checks, not speed: for the duration of the
    call it replaces randn_tensor in diffusers' DDPM scheduler module."""
    from diffusers.schedulers import scheduling_ddpm
    shape = tuple(shape)
    src = _noise.NoiseSource(seed, torch.arange(n, device=device), shape, dtype=dtype)
    step = 0

    def our_noise(noise_shape, generator=None, device=None, dtype=None, **kw):
        if tuple(noise_shape) != (n, *shape):
            raise ValueError(f"the scheduler asked for noise of shape {tuple(noise_shape)}; this loop draws "
                             f"[n, *shape] = {(n, *shape)}")
        return src.normal(step).to(dtype)

    original = scheduling_ddpm.randn_tensor
    scheduling_ddpm.randn_tensor = our_noise
    try:
        scheduler.set_timesteps(steps)
        x = src.normal(0, _noise.STREAM_INIT) if x_T is None else x_T
        with torch.no_grad():
            for t in scheduler.timesteps:
                x = scheduler.step(unet(x, t).sample, t, x).prev_sample
                step += 1
    finally:
        scheduling_ddpm.randn_tensor = original
    return x
