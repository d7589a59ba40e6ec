"""Input checks shared by every public entry point. Each error names the argument and
what is accepted, so a user can fix the call from the message alone."""
from __future__ import annotations

import numbers

import torch


def check_int(name: str, value, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise ValueError(f"{name} must be an integer; got {value!r}")
    value = int(value)
    if lo is not None and value < lo:
        raise ValueError(f"{name} must be >= {lo}; got {value}")
    if hi is not None and value > hi:
        raise ValueError(f"{name} must be <= {hi}; got {value}")
    return value


def check_positive(name: str, value, allow_zero: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {value!r}")
    value = float(value)
    ok = value >= 0 if allow_zero else value > 0
    if not ok or value != value or value == float("inf"):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(f"{name} must be finite and {bound}; got {value}")
    return value


def check_choice(name: str, value, choices) -> str:
    if value not in choices:
        raise ValueError(f"{name} must be one of {sorted(choices)}; got {value!r}")
    return value


def check_finite(name: str, x: torch.Tensor) -> torch.Tensor:
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if not torch.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or Inf; every entry must be finite")
    return x


def check_batch_time(name: str, t, batch: int, lo: float, hi: float, like: torch.Tensor) -> torch.Tensor:
    """t as a tensor of shape [batch] within [lo, hi]; a Python scalar is broadcast."""
    t = torch.as_tensor(t, device=like.device)
    if t.dtype == torch.bool or t.dtype.is_complex:
        raise ValueError(f"{name} must be a real tensor; got dtype {t.dtype}")
    if t.dim() == 0:
        t = t.expand(batch)
    if t.shape != (batch,):
        raise ValueError(f"{name} must have shape [B] = [{batch}] (one time per sample); got {tuple(t.shape)}")
    if not torch.isfinite(t.double()).all():
        raise ValueError(f"{name} contains NaN or Inf")
    t_min, t_max = t.double().min().item(), t.double().max().item()
    if t_min < lo or t_max > hi:
        raise ValueError(f"{name} must lie in [{lo}, {hi}]; got values in [{t_min}, {t_max}]")
    return t



def check_real(name: str, value, finite: bool = True) -> float:
    """A real Python number or 0-d tensor as a float (NaN, and Inf when finite, refused)."""
    if isinstance(value, torch.Tensor) and value.dim() == 0 and not value.dtype.is_complex and value.dtype != torch.bool:
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"{name} must be a real number; got {type(value).__name__} {value!r}")
    value = float(value)
    if value != value or (finite and value in (float("inf"), float("-inf"))):
        raise ValueError(f"{name} must be {'finite' if finite else 'a number, not NaN'}; got {value}")
    return value


def check_tensor(name: str, x, floating: bool = True, min_dim: int = 0, shape: str | None = None) -> torch.Tensor:
    """x is a torch.Tensor (floating-point unless floating=False) with at least min_dim dims;
    `shape` (e.g. "[B, ...]") words the too-few-dimensions message as "must be <shape>"."""
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor; got {type(x).__name__}")
    if floating and not x.dtype.is_floating_point:
        raise ValueError(f"{name} must be a floating-point tensor; got dtype {x.dtype}")
    if x.dim() < min_dim:
        if shape is not None:
            raise ValueError(f"{name} must be {shape}; got shape {tuple(x.shape)}")
        raise ValueError(f"{name} must have at least {min_dim} dimension(s); got shape {tuple(x.shape)}")
    return x


def check_device(name: str, device) -> torch.device:
    """A torch.device that exists here: a bad string or an absent CUDA gives a ValueError."""
    if device is None:
        return torch.device("cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"{name} must be a torch device such as 'cpu', 'cuda' or 'cuda:1'; got {device!r}") from None
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"{name}={device!r}: CUDA is not available here; use 'cpu'")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise ValueError(f"{name}={device!r}: there are only {torch.cuda.device_count()} CUDA device(s)")
    elif dev.type != "cpu":
        raise ValueError(f"{name}={device!r}: diffcore runs on 'cpu' or 'cuda'; got device type {dev.type!r}")
    return dev
