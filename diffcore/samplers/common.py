"""Pieces every sampler shares: turning any process's model into a score, the start state,
and option checking."""
from __future__ import annotations

import torch

from .. import noise as _noise
from .. import parameterization as P
from ..discrete import DDPM, NCSN
from ..validation import check_choice


def check_options(method: str, options: dict, accepted) -> None:
    unknown = set(options) - set(accepted)
    if unknown:
        raise ValueError(f"unknown option(s) {sorted(unknown)} for method={method!r}; "
                         f"accepted: {sorted(accepted)}")


def require(method: str, process, kinds, what: str) -> None:
    if not isinstance(process, kinds):
        raise ValueError(f"method={method!r} needs {what}; got process={type(process).__name__}")


def call_model(model, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    out = model(x, t)
    if not isinstance(out, torch.Tensor):
        raise ValueError(f"model must return a tensor; got {type(out).__name__}")
    return out


def score_at(model, process, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The score at x for any process: NCSN/SDE models give it, DDPM's eps is converted."""
    out = call_model(model, x, t)
    if isinstance(process, DDPM):
        eps, _ = process.split_output(out, x)
        _, s = process.marginal_coeffs(t)
        return P.score_from_eps(eps, P.bcast(s.to(x.dtype), x))
    return out


def time_dtype(x: torch.Tensor) -> torch.dtype:
    """Continuous times (and sigmas) are float32 at least: in fp16/bf16 the schedule lookups
    t -> index would collide (bf16 resolves only ~500 of 1000 steps near t = 1)."""
    return torch.float64 if x.dtype == torch.float64 else torch.float32


def lowest_noise_time(process, x: torch.Tensor) -> torch.Tensor:
    """The t a model takes at the process's smallest noise level, one per sample of x."""
    if isinstance(process, DDPM):
        return torch.zeros(x.shape[0], dtype=torch.int64, device=x.device)
    level = process.sigma_min if isinstance(process, NCSN) else process.eps
    return torch.full((x.shape[0],), level, dtype=time_dtype(x), device=x.device)


INIT_CHOICES = ("prior", "uniform")


def initial_state(process, noise: _noise.NoiseSource, x_init, init: str = "prior",
                  init_range=(-1.0, 1.0), prior_std: float | None = None) -> torch.Tensor:
    """x at the first step: given, uniform on init_range, or the prior (N(0, prior_std^2))."""
    if x_init is not None:
        return x_init.to(noise.dtype).clone()
    check_choice("init", init, INIT_CHOICES)
    if init == "uniform":
        lo, hi = (float(v) for v in init_range)
        if not lo < hi:
            raise ValueError(f"init_range must be (low, high) with low < high; got {init_range!r}")
        return lo + (hi - lo) * noise.uniform(0, _noise.STREAM_INIT)
    if prior_std is None:
        prior_std = process.sigmas[0].item() if isinstance(process, NCSN) else getattr(process, "prior_std", 1.0)
    return prior_std * noise.normal(0, _noise.STREAM_INIT)
