"""Triton kernels, installed as ``diffcore.kernels``: one file per op, reference beside it.

    group_norm_silu.py   SiLU(GroupNorm(x + emb)) forward + backward, NC* or channels-last
    residual_add.py      (skip + h) * scale
    affine_step.py, heun_step.py, ddpm_step.py, ddim_step.py, langevin_step.py
                         the sampler updates, noise read from z or drawn in-kernel
    philox.py            the project's Philox4x32-10 + Box-Muller generator (diffcore.noise)
    compile_check.py     compiles every kernel for sm_90 without a GPU (what the interpreter misses)

Each op is a torch custom op in the namespace ``diffcore_triton`` (custom_op + register_fake;
GroupNorm and residual_add also register_autograd, and are listed in `DIFFERENTIABLE`), so
torch.compile and CUDA graphs see it.
`IMPLS` maps the op table's names to callables with the reference's signatures (step ops take
``z`` or ``noise_address=(seed, sample_idx, step, stream)``); `available(device)` says where
they run: CUDA, or CPU when TRITON_INTERPRET=1 was set before triton was imported.

Importing this package raises ImportError when triton is missing (diffcore.ops warns once
and uses the reference).
"""
from __future__ import annotations

import importlib
import os
import sys

import torch

try:
    import triton  # noqa: F401
    import triton.language  # noqa: F401
except Exception as e:  # a broken triton install is as good as none
    raise ImportError(f"diffcore.kernels needs triton ({type(e).__name__}: {e})") from e

# triton reads TRITON_INTERPRET when a kernel is defined: what counts is its value now.
INTERPRET = os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on")  # as triton reads it


def _interpreted_library() -> None:
    """Under the interpreter, triton's own @triton.jit library (tl.sum, tl.zeros_like, ...)
    must be interpreted functions too. When another library imported triton before
    TRITON_INTERPRET was set (diffusers does, in a test run), those were defined for the
    compiler and calling them from an interpreted kernel fails: define them again."""
    if not INTERPRET:
        return
    try:
        from triton.runtime.interpreter import InterpretedFunction
    except ImportError:
        return
    if isinstance(triton.language.sum, InterpretedFunction):
        return
    for name in ("triton.language.standard", "triton.language.random", "triton.language"):
        if name in sys.modules:
            importlib.reload(sys.modules[name])


_interpreted_library()

from . import affine_step, ddim_step, ddpm_step, group_norm_silu, heun_step, langevin_step, residual_add  # noqa: E402

IMPLS = {
    "group_norm_silu": group_norm_silu.group_norm_silu,
    "residual_add": residual_add.residual_add,
    "affine_step": affine_step.affine_step,
    "heun_step": heun_step.heun_step,
    "ddpm_step": ddpm_step.ddpm_step,
    "ddim_step": ddim_step.ddim_step,
    "langevin_step": langevin_step.langevin_step,
}

# ops whose custom op has a registered backward (autograd calls may come here)
DIFFERENTIABLE = {"group_norm_silu", "residual_add"}


def available(device) -> bool:
    """Whether the kernels run on `device` here: CUDA (ROCm included) when present; CPU only
    under the interpreter (TRITON_INTERPRET=1 set before triton was imported)."""
    device = torch.device(device)
    if device.type == "cuda":
        return not INTERPRET and torch.cuda.is_available()
    if device.type == "cpu":
        return INTERPRET
    return False


__all__ = ["IMPLS", "DIFFERENTIABLE", "available", "INTERPRET"]
