"""F.linear for float32 CPU inference through oneDNN's matmul (the library PyTorch's CPU
convolutions use) instead of the default BLAS GEMM: on the CIFAR U-Net's attention projections,
[4096, 256] x [256, 256], that measured 4.0 ms against 6.2 ms (2 threads, AMD EPYC, torch 2.13).
The same sums up to rounding order. Everything else (gradients, torch.compile, jit tracing,
other devices and dtypes) takes F.linear."""
from __future__ import annotations

import torch

F = torch.nn.functional


def _available() -> bool:
    try:
        return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")
    except (AttributeError, RuntimeError):
        return False


AVAILABLE = _available()


def _wrapped(t: torch.Tensor) -> bool:   # vmap / grad transforms' tensors: the op has no rules for them
    try:
        return torch._C._functorch.is_functorch_wrapped_tensor(t)
    except AttributeError:
        return False


def usable(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> bool:
    """Whether linear(x, weight, bias) runs on oneDNN: float32 CPU tensors of F.linear's plain
    shapes (x [..., in], weight [out, in], bias [out] or None), no gradients, no autocast (which
    would run F.linear in its own dtype), oneDNN enabled, not compiling or tracing."""
    return (AVAILABLE and torch.backends.mkldnn.enabled and not torch.is_autocast_enabled("cpu")
            and not torch.compiler.is_compiling()   # Inductor lowers the op only for frozen weights
            and not torch.jit.is_tracing()           # nor can TorchScript trace its empty scalar list
            and x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
            and weight.dim() == 2 and x.dim() >= 1 and x.shape[-1] == weight.shape[1] > 0
            and (bias is None or (bias.dtype == torch.float32 and tuple(bias.shape) == (weight.shape[0],)))
            and not (torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in (x, weight, bias)))
            and not any(t is not None and _wrapped(t) for t in (x, weight, bias)))


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ weight.T + bias (F.linear's numbers), on oneDNN where `usable`."""
    if usable(x, weight, bias):
        return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")
    return F.linear(x, weight, bias)
