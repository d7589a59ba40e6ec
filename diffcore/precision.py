"""Precision policy: the network runs in the precision asked for, sampler state and schedule
arithmetic stay float32 (the wrapper hands back float32 outputs).

bf16 on CPUs where oneDNN has no bf16 kernels (PyTorch's check: AVX-512 BW/VL/DQ, AVX-512
BF16, AMX or AVX-NE-CONVERT; an AVX2 machine such as the project's AMD EPYC has none): under
torch.autocast PyTorch sends every bf16 convolution and matrix product to its slow reference
kernels (about 9x slower than float32 on the CIFAR-10 U-Net here).
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
from torch.utils._pytree import tree_leaves, tree_map

from . import onednn_linear
from .validation import check_choice

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
_LOW = (torch.float32, torch.float16, torch.bfloat16)   # what autocast casts to bf16 (not float64)

F = torch.nn.functional
# the ops CPU autocast runs in bf16 whose bf16 kernels are slow without oneDNN bf16
# (scaled_dot_product_attention is left to autocast: its bf16 kernel took 54 ms of a 1.2 s
# CIFAR U-Net forward here). einsum: only a two-operand contraction, which autocast runs as one
# bf16 bmm (see _einsum_is_one_product).
WIDENED = frozenset({
    F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, F.linear,
    torch.matmul, torch.mm, torch.bmm, torch.addmm, torch.baddbmm, torch.addbmm, torch.einsum,
    torch.Tensor.matmul, torch.Tensor.__matmul__, torch.Tensor.__rmatmul__, torch.Tensor.mm, torch.Tensor.bmm,
    torch.Tensor.addmm, torch.Tensor.baddbmm, torch.Tensor.addbmm,
})


@functools.lru_cache(maxsize=None)
def cpu_has_bf16() -> bool:
    """Whether oneDNN has bf16 convolutions and GEMMs for this CPU (torch.ops.mkldnn.
    _is_mkldnn_bf16_supported: AVX-512 BW/VL/DQ or newer); without them autocast's bf16 convolutions
    and matrix products take PyTorch's slow reference kernels."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):   # a build without oneDNN: assume native, change nothing
        return True


def _cpu_bf16_autocast() -> bool:
    return torch.is_autocast_enabled("cpu") and torch.get_autocast_dtype("cpu") == torch.bfloat16


def cpu_bf16_emulated() -> bool:
    """Whether CPU autocast to bf16 is on where oneDNN has no bf16: where diffcore runs bf16 ops
    as bf16 values with float32 arithmetic (autocast's widening, diffcore.winograd)."""
    return _cpu_bf16_autocast() and not cpu_has_bf16()


def _einsum_is_one_product(args) -> bool:
    """einsum(eq, a, b) with a summed index: what autocast runs as a single bf16 bmm (others
    are elementwise products, float32 under autocast, or chains of bmms rounded in between)."""
    if not args or not isinstance(args[0], str):
        return False
    operands = args[1:] if len(args) != 2 or isinstance(args[1], torch.Tensor) else tuple(args[1])
    eq = args[0].replace(" ", "").replace("...", "")
    lhs, arrow, rhs = eq.partition("->")
    inputs = lhs.split(",")
    if len(operands) != 2 or len(inputs) != 2:
        return False
    letters = "".join(inputs)
    out = rhs if arrow else "".join(c for c in sorted(set(letters)) if letters.count(c) == 1)
    return bool(set(letters) - set(out))


class WidenedBf16(TorchFunctionMode):
    """Runs WIDENED ops on CPU under bf16 autocast as bf16 ops with float32 arithmetic (see the
    module docstring); everything else, and these ops outside CPU bf16 autocast or with float64
    or non-CPU operands, as usual."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if (func not in WIDENED or not _cpu_bf16_autocast() or "out" in kwargs   # out=: not autocast's either
                or (func is torch.einsum and not _einsum_is_one_product(args))):
            return func(*args, **kwargs)
        tensors = [t for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)]
        if not tensors or any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype not in _LOW)
                              for t in tensors):
            return func(*args, **kwargs)

        args, kwargs = tree_map(lambda t: bf16_values(t) if isinstance(t, torch.Tensor) and t.is_floating_point()
                                else t, (args, kwargs))
        with torch.autocast("cpu", enabled=False):
            out = _linear(*args, **kwargs) if func is F.linear else func(*args, **kwargs)
        return tree_map(lambda t: t.to(torch.bfloat16) if isinstance(t, torch.Tensor) and t.is_floating_point()
                        else t, out)


def bf16_values(t: torch.Tensor) -> torch.Tensor:
    """t rounded to bf16 (what autocast's cast does), held in float32 (exact)."""
    return t.float() if t.dtype == torch.bfloat16 else t.to(torch.bfloat16).float()


def _linear(input, weight, bias=None):   # F.linear's signature; float32 on oneDNN where it can
    return onednn_linear.linear(input, weight, bias)


def linear_on_bf16_values(wide: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """What WidenedBf16 makes of F.linear(x, weight, bias) with `wide` = bf16_values(x) given:
    callers that project one x several times widen it once."""
    with torch.autocast("cpu", enabled=False):
        return _linear(wide, bf16_values(weight), None if bias is None else bf16_values(bias)).to(torch.bfloat16)


@contextlib.contextmanager
def autocast(device_type: str, dtype: torch.dtype | None = None, enabled: bool = True,
             cache_enabled: bool | None = None):
    """torch.autocast(device_type, dtype, enabled, cache_enabled), plus WidenedBf16 for bf16 on
    CPUs where oneDNN has no bf16 (see the module docstring)."""
    with torch.autocast(device_type, dtype=dtype, enabled=enabled, cache_enabled=cache_enabled):
        if device_type == "cpu" and cpu_bf16_emulated():
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
        with autocast(x.device.type, dtype=dtype, cache_enabled=not capturing):
            out = self.model(x, t)
        return out.to(x.dtype)
