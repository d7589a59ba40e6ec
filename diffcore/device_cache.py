"""Constant tables (schedules, mixture parameters) copied to a device once, not on every call.

A host-to-device copy inside a sampling step synchronises the stream: CUDA-graph capture
forbids it (the capture fails and the engine falls back to eager steps), and in an eager loop it
stalls the host once per call. The first call on a device (a warm-up step, before any capture)
makes the copy; later calls reuse it while the table is unchanged (its version counter moves on
any in-place write, and then the copy is made again). Copies live in a registry keyed by the
table's id and dropped with the table, so nothing extra travels with a pickled or deep-copied
object. Tables that require grad are copied on every call (autograd needs the copy in its graph).
"""
from __future__ import annotations

import weakref

import torch

_COPIES: dict[int, dict[torch.device, tuple[int, torch.Tensor]]] = {}


def on_device(t: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """t on `device`: t itself if it is there, else its cached copy (made on first use)."""
    device = torch.device(device)
    if t.device == device:
        return t
    if t.requires_grad or torch.compiler.is_compiling():
        return t.to(device)
    copies = _COPIES.get(id(t))
    if copies is None:
        copies = _COPIES[id(t)] = {}
        weakref.finalize(t, _COPIES.pop, id(t), None)
    hit = copies.get(device)
    if hit is None or hit[0] != t._version:
        # a plain tensor whatever mode the first call ran in (an inference-mode copy could not
        # be saved for a later backward)
        with torch.inference_mode(False), torch.no_grad():
            hit = copies[device] = (t._version, t.detach().to(device))
    return hit[1]
