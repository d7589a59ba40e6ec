"""Precision policy: the network runs in the precision asked for, sampler state and schedule
arithmetic stay float32 (the wrapper hands back float32 outputs).

bf16 on CPUs without bf16 instructions (no AVX-512 BF16 / AMX, so oneDNN has no bf16
convolutions or GEMMs): under torch.autocast PyTorch sends every bf16 convolution and matrix
product to its slow reference kernels (about 7x slower than float32 on the CIFAR-10 U-Net).
`autocast` then also widens those ops, as oneDNN's own bf16 emulation does: their operands
rounded to bf16 (what autocast's cast does), the arithmetic in float32 (exact products of bf16
values, float32 accumulation) by the fast float32 kernels, the output rounded to bf16. The
values are those of a bf16 op with float32 accumulation; diffcore.winograd's 3x3 convolutions
take bf16 directly.
"""
from __future__ import annotations

import contextlib
import functools

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

from .validation import check_choice

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_LOW = (torch.float32, torch.float16, torch.bfloat16)   # what autocast casts to bf16 (not float64)

F = torch.nn.functional
# the ops CPU autocast runs in bf16 whose bf16 kernels are slow without bf16 instructions
# (scaled_dot_product_attention has its own vectorised bf16 kernel and is left to autocast)
WIDENED = frozenset({
    F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.linear,
    torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.einsum,
    torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.mm, torch.Tensor.bmm,
})


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether oneDNN runs bf16 convolutions and GEMMs natively on this CPU (AVX-512 BF16, AMX)."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):   # a build without oneDNN: assume native, change nothing
        return True


def _cpu_bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


class WidenedBf16(TorchFunctionMode):
    """Runs WIDENED ops on CPU under bf16 autocast as bf16 ops with float32 arithmetic (see the
    module docstring); everything else, and these ops outside CPU bf16 autocast or with float64
    or non-CPU operands, as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func not in WIDENED or not _cpu_bf16_autocast():
            return func(*args, **kwargs)
        tensors = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not tensors or any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype not in _LOW)
                              for t in tensors):
            return func(*args, **kwargs)

        def widen(t):   # bf16 values, held in float32 (exact)
            return t.to(torch.bfloat16).float() if isinstance(t, torch.Tensor) and t.is_floating_point() else t
        args, kwargs = tree_map(widen, (args, kwargs))
        with torch.autocast("cpu", enabled=False):
            out = func(*args, **kwargs)
        return tree_map(lambda t: t.to(torch.bfloat16) if isinstance(t, torch.Tensor) and t.is_floating_point()
                        else t, out)


@contextlib.contextmanager
def autocast(device_type: str, dtype: torch.dtype, cache_enabled: bool = True):
    """torch.autocast(device_type, dtype), plus WidenedBf16 for bf16 on CPUs without bf16
    instructions (see the module docstring)."""
    with torch.autocast(device_type, dtype=dtype, cache_enabled=cache_enabled):
        if device_type == "cpu" and dtype == torch.bfloat16 and not cpu_has_bf16():
            with WidenedBf16():
                yield
        else:
            yield


class AutocastModel(torch.nn.Module):
    """model(x, t) run under autocast in `precision`; the output is cast back to x's dtype."""

    def __init__(self, model, precision: str = "fp32"):
        super().__init__()
        check_choice("precision", precision, PRECISIONS)
        self.model, self.precision = model, precision

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        dtype = PRECISIONS[self.precision]
        if dtype is None:
            return self.model(x, t)
        # no weight-cast cache while a CUDA graph is being captured (torch's advice for autocast
        # under capture): each replay then casts the weights itself, inside the graph
        capturing = x.device.type == "cuda" and torch.cuda.is_current_stream_capturing()
        with autocast(x.device.type, dtype, cache_enabled=not capturing):
            out = self.model(x, t)
        return out.to(x.dtype)
