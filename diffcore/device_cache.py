"""Constant tables (schedules, mixture parameters) copied to a device once, not on every call.

A host-to-device copy inside a sampling step synchronises the stream: CUDA-graph capture
forbids it (the capture fails and the engine falls back to eager steps), and in an eager loop it
stalls the host once per call. The first call on a device (a warm-up step, before any capture)
makes the copy; later calls reuse it. The copy is kept on the source tensor itself, so it lives
as long as the table does; the tables are never modified in place after construction.
"""
from __future__ import annotations

import torch


def on_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """t on `device`: t itself if it is there, else its cached copy (made on first use)."""
    device = torch.device(device)
    if t.device == device:
        return t
    copies = getattr(t, "_diffcore_copies", None)
    if copies is None:
        copies = t._diffcore_copies = {}
    copy = copies.get(device)
    if copy is None:
        copy = copies[device] = t.to(device)
    return copy
