"""A warmed-up sampling step copies nothing from the host to the device.

Inside CUDA-graph capture such a copy is a stream sync that CUDA forbids (the capture fails and
the engine falls back to eager steps); in an eager loop it stalls the host once per call. Checked
without a GPU: the step runs on "meta" tensors while a dispatch mode records every op that turns
a CPU tensor into a meta one (what a CPU -> CUDA copy would be).
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import diffcore
from diffcore import plans, schedules


class HostToDevice(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.copies = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        ins = [a for a in (*args, *(kwargs or {}).values()) if isinstance(a, torch.Tensor)]
        outs = out if isinstance(out, (tuple, list)) else [out]
        if any(a.device.type == "cpu" and a.dim() > 0 for a in ins) and any(
                isinstance(o, torch.Tensor) and o.device.type == "meta" for o in outs):
            self.copies.append(f"{func}: {[tuple(a.shape) for a in ins]}")
        return out


MIXTURE = diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])
CASES = [("ancestral", lambda: diffcore.DDPM(schedules.linear_betas(100)), {}),
         ("pc", lambda: diffcore.VPSDE(N=30), {}),
         ("pc", lambda: diffcore.VESDE(N=30), {}),
         ("ode", lambda: diffcore.VPSDE(N=30), {"solver": "heun"}),
         ("ddim", lambda: diffcore.DDPM(schedules.linear_betas(100)), {})]


@pytest.mark.parametrize("method, make_process, opts", CASES, ids=[c[0] + str(i) for i, c in enumerate(CASES)])
def test_a_warm_step_makes_no_host_to_device_copy(method, make_process, opts):
    process = make_process()
    try:
        plan = plans.build(method, MIXTURE.model(process), process, (2,), 30, "torch", opts)
    except (ValueError, NotImplementedError) as e:
        pytest.skip(f"no plan: {e}")
    dev, B = torch.device("meta"), 8
    x = torch.empty(B, 2, device=dev)
    inp = plan.inputs(0, B, dev)
    noises = [{"noise": torch.empty_like(x)} for _ in plan.draws(0)]
    with torch.no_grad():
        plan.step(x, inp, noises)                     # warm-up: tables are copied here, once
        with HostToDevice() as seen:
            plan.step(x, inp, noises)
    assert seen.copies == [], seen.copies


def test_cached_copy_follows_in_place_changes_and_works_under_autograd():
    from diffcore.device_cache import _COPIES, on_device
    table = torch.arange(4.0, dtype=torch.float64)
    dev = torch.device("meta")
    with torch.inference_mode():
        first = on_device(table, dev)
    assert on_device(table, dev) is first                 # reused
    assert not first.is_inference()                       # made as a plain tensor under inference mode
    table.mul_(2)                                         # an in-place change: copied again
    assert on_device(table, dev) is not first
    x = torch.ones(3, 4, dtype=torch.float64, device=dev, requires_grad=True)
    (x * on_device(table, dev)).sum().backward()          # saved for backward without complaint
    w = torch.ones(4, dtype=torch.float64, requires_grad=True)
    assert on_device(w, dev).requires_grad and id(w) not in _COPIES   # grad tables: never cached
    key = id(table)
    del table, first
    import gc
    gc.collect()
    assert key not in _COPIES                             # dropped with the table
