"""diffcore: a diffusion-model engine built for speed.

The reference engine (plain PyTorch, float64-capable) defines every result:
processes (NCSN, DDPM, VE/VP/sub-VP SDEs), losses, samplers and closed-form models.
"""
from . import controllable, interop, losses, noise, parameterization, schedules
from .accelerate import accelerate
from .closed_form import GaussianMixture
from .gaussian import Gaussian
from .likelihood import bits_per_dim, decode, encode, likelihood
from .discrete import DDPM, NCSN
from .engine import NonFiniteError, Sampler
from .sampling import sample
from .sde import SDE, SubVPSDE, VESDE, VPSDE

__version__ = "0.1.0"
__all__ = ["likelihood", "bits_per_dim", "encode", "decode", "Gaussian", "NCSN", "DDPM", "SDE", "VESDE", "VPSDE", "SubVPSDE", "GaussianMixture", "sample", "Sampler", "NonFiniteError",
           "schedules", "losses", "noise", "parameterization", "controllable", "accelerate", "interop"]
