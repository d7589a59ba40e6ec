"""`diffcore.sample`: one entry point for every sampler, run by the engine (diffcore.engine:
fused ops on the fastest backend, precision, CUDA graphs, chunking); and `reference_sample`,
the reference samplers in plain PyTorch that define every result.

Samples are produced in chunks; sample i's noise comes from the counter generator keyed by
(seed, i, step), so the result does not depend on the chunking.
"""
from __future__ import annotations

import torch

from .discrete import DDPM, NCSN
from .noise import NoiseSource
from .samplers import ancestral, ddim, langevin, ode, pc
from .samplers.common import check_options
from .sde import SDE
from .validation import check_choice, check_finite, check_int

# method -> (runner, accepted options)
METHODS = {
    "langevin": (langevin.run_langevin, langevin.LANGEVIN_OPTIONS),
    "annealed_langevin": (langevin.run_annealed, langevin.ANNEALED_OPTIONS),
    "ancestral": (ancestral.run, ancestral.OPTIONS),
    "ddim": (ddim.run, ddim.OPTIONS),
    "pc": (pc.run, pc.OPTIONS),
    "ode": (ode.run, ode.OPTIONS),
}
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def sample(model, process, n: int, shape, method: str, steps: int | None = None, seed: int = 0,
           batch_size: int | None = None, x_init: torch.Tensor | None = None, device=None,
           dtype: torch.dtype = torch.float32, return_info: bool = False, start: int = 0, *,
           backend: str | None = None, precision: str = "fp32", cuda_graph="auto", max_batch: int | None = None,
           progress: bool = False, check_finite: bool = False, **options):
    """Draw samples start..start+n-1 of per-sample `shape` from `model` under `process` with
    `method`, on the engine (see diffcore.engine.Sampler for backend, precision, cuda_graph,
    max_batch (batch_size is its older name), progress and check_finite).

    model: any callable model(x, t) -> tensor, t of shape [B] (see the process's docstring for
    what t holds and what the model returns). steps: sampler steps (per noise level for
    annealed_langevin; None picks the method's default). x_init: optional start [n, *shape].
    Returns the samples [n, *shape], or (samples, info) with return_info (info["nfe"]: model
    calls per chunk; "path": "fused" or "reference"; "cuda_graph"; "samples_per_s").
    backend="torch" runs the fused plan on the torch reference ops.
    """
    from .engine import Sampler
    if batch_size is not None and max_batch is not None and batch_size != max_batch:
        raise ValueError(f"batch_size and max_batch name the same thing; give one (got {batch_size} and {max_batch})")
    if batch_size is not None:
        check_int("batch_size", batch_size, lo=1)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {[str(d) for d in DTYPES]}; got {dtype}")
    if dtype in (torch.float16, torch.bfloat16):
        # low-precision *state* is the reference's business; the engine keeps state fp32
        return reference_sample(model, process, n, shape, method, steps, seed, batch_size or max_batch, x_init,
                                device, dtype, return_info, start, **options)
    s = Sampler(model, process, shape, method, steps, backend=backend, precision=precision, cuda_graph=cuda_graph,
                max_batch=max_batch if max_batch is not None else batch_size, progress=progress,
                check_finite=check_finite, dtype=dtype, device=device, **options)
    return s.sample(n, seed, start, x_init, return_info)


def reference_sample(model, process, n: int, shape, method: str, steps: int | None = None, seed: int = 0,
           batch_size: int | None = None, x_init: torch.Tensor | None = None, device=None,
           dtype: torch.dtype = torch.float32, return_info: bool = False, start: int = 0, **options):
    """Draw n samples of per-sample `shape` from `model` under `process` with `method`.

    model: any callable model(x, t) -> tensor, t of shape [B] (see the process's docstring
    for what t holds and what the model returns). start: the global index of the first
    sample: samples start..start+n-1 are drawn, each with its own noise, so a job split into
    index ranges (shards, ranks) gives exactly the samples of one call. steps: sampler steps (per noise level for
    annealed_langevin; None picks the method's default). x_init: optional start [n, *shape].
    Returns the samples [n, *shape], or (samples, info) with return_info (info["nfe"]: the
    number of model calls per chunk; rk45 adds "nfe_per_sample").
    """
    if not callable(model):
        raise ValueError(f"model must be callable as model(x, t); got {type(model).__name__}")
    if not isinstance(process, (NCSN, DDPM, SDE)):
        raise ValueError(f"process must be an NCSN, DDPM, VESDE, VPSDE or SubVPSDE; got {type(process).__name__}")
    check_choice("method", method, METHODS)
    n = check_int("n", n, lo=1)
    if isinstance(shape, int):
        shape = (shape,)
    shape = tuple(shape)
    if not shape or not all(isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in shape):
        raise ValueError(f"shape must be a tuple of positive ints (one sample's shape); got {shape!r}")
    if steps is not None:
        check_int("steps", steps, lo=1)
    check_int("seed", seed, lo=0, hi=2**64 - 1)
    check_int("start", start, lo=0, hi=2**62)
    batch_size = n if batch_size is None else check_int("batch_size", batch_size, lo=1)
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {[str(d) for d in DTYPES]}; got {dtype}")
    if x_init is not None:
        check_finite("x_init", x_init)
        if tuple(x_init.shape) != (n, *shape):
            raise ValueError(f"x_init must have shape [n, *shape] = {(n, *shape)}; got {tuple(x_init.shape)}")
    run, accepted = METHODS[method]
    check_options(method, options, accepted)
    device = torch.device(device) if device is not None else (x_init.device if x_init is not None else torch.device("cpu"))

    chunks, infos = [], []
    with torch.no_grad():
        for lo in range(0, n, batch_size):
            hi = min(n, lo + batch_size)
            noise = NoiseSource(seed, torch.arange(start + lo, start + hi, device=device), shape, dtype=dtype)
            x0 = None if x_init is None else x_init[lo:hi].to(device)
            x, info = run(model, process, noise, steps, x0, **options)
            chunks.append(x)
            infos.append(info)
    x = torch.cat(chunks)
    if not return_info:
        return x
    info = {"nfe": infos[0]["nfe"] if len(infos) == 1 else [i["nfe"] for i in infos]}
    if "nfe_per_sample" in infos[0]:
        info["nfe_per_sample"] = torch.cat([i["nfe_per_sample"] for i in infos])
    return x, info
