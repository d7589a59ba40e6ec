"""Precision policy: the network runs in the precision asked for, sampler state and schedule
arithmetic stay float32 (the wrapper hands back float32 outputs)."""
from __future__ import annotations

import torch

from .validation import check_choice

PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


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
        with torch.autocast(x.device.type, dtype=dtype, cache_enabled=not capturing):
            out = self.model(x, t)
        return out.to(x.dtype)
