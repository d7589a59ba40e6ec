"""Sampling over torch.distributed ranks: the process group from torchrun's environment
(NCCL on CUDA, gloo on CPU), and `sample_sharded`, the Python API of a resumable job.

    # torchrun --nproc-per-node 4 job.py
    ctx = diffcore.distributed.init_from_env("cuda")     # rank, world, this rank's device
    x = diffcore.distributed.sample_sharded(model, process, n=50_000, shape=(3, 32, 32),
                                            method="ddim", steps=50, seed=0, out_dir="job",
                                            device=ctx.device)   # [n, ...] on rank 0, else None

Samples are split by index: shard i (of `shard_size` samples) is drawn by rank i % world with
`diffcore.sample(..., start=first index)`, whose noise depends only on (seed, sample, step),
so the merged samples are the bits one process gives for the same shard size.
"""
from __future__ import annotations

import datetime
import hashlib
import os
from dataclasses import dataclass

import torch

from . import shards
from .validation import check_int

DEFAULT_SHARD_SIZE = 256
BARRIER_TIMEOUT_H = 12


@dataclass
class Context:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    comm: "Comm | None" = None


class Comm:
    """What the shard runner needs of a process group: a barrier, and every rank's error."""

    def barrier(self) -> None:
        import torch.distributed as dist

        dist.barrier()

    def all_errors(self, message: str | None) -> list:
        import torch.distributed as dist

        out = [None] * dist.get_world_size()
        dist.all_gather_object(out, message)
        return out


def env_world() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) outside it."""
    def read(name, default):
        text = os.environ.get(name)
        if text is None:
            return default
        try:
            return int(text)
        except ValueError:
            raise ValueError(f"environment variable {name} must be an integer; got {text!r}") from None
    world = read("WORLD_SIZE", 1)
    rank = read("RANK", 0)
    local = read("LOCAL_RANK", rank)
    if world < 1 or not 0 <= rank < world:
        raise ValueError(f"RANK={rank} and WORLD_SIZE={world} do not describe a rank of a job")
    return rank, world, local


def init_from_env(device="cpu") -> Context:
    """Join torchrun's process group (if WORLD_SIZE > 1): NCCL for a CUDA device, gloo for CPU.
    A CUDA device becomes cuda:LOCAL_RANK. Outside torchrun: rank 0 of 1, no process group."""
    import torch.distributed as dist

    rank, world, local = env_world()
    device = torch.device(device)
    if device.type == "cuda" and world > 1:
        device = torch.device("cuda", local)
        torch.cuda.set_device(device)
    if world == 1:
        return Context(0, 1, 0, device, None)
    if not dist.is_available():
        raise ValueError("torch.distributed is not available in this torch build; run one process")
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs = {"device_id": device} if device.type == "cuda" else {}
        # a rank done with its shards waits at the barrier for the slowest one, which may take
        # longer than the default 10 (NCCL) / 30 (gloo) minutes; a rank that dies ends the job
        # through torchrun, not through this timeout
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(hours=BARRIER_TIMEOUT_H), **kwargs)
    if dist.get_world_size() != world or dist.get_rank() != rank:
        raise ValueError(f"the process group (rank {dist.get_rank()} of {dist.get_world_size()}) disagrees with "
                         f"RANK={rank}, WORLD_SIZE={world}")
    return Context(rank, world, local, device, Comm())


def current() -> Context:
    """The context of an already initialized process group (rank 0 of 1 without one)."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        rank, world = dist.get_rank(), dist.get_world_size()
        return Context(rank, world, int(os.environ.get("LOCAL_RANK", rank)), torch.device("cpu"),
                       Comm() if world > 1 else None)
    return Context()


def finish(ctx: Context) -> None:
    import torch.distributed as dist

    if ctx.comm is not None and dist.is_initialized():
        dist.destroy_process_group()


def model_fingerprint(model) -> str | None:
    """sha256 over a module's state_dict (names, dtypes, shapes, bytes); None for other callables."""
    module = model if isinstance(model, torch.nn.Module) else getattr(model, "net", None)
    if not isinstance(module, torch.nn.Module):
        return None
    h = hashlib.sha256()
    for name, t in sorted(module.state_dict().items()):
        t = t.detach().cpu().contiguous()
        h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def sample_sharded(model, process, n: int, shape, method: str, steps: int | None = None, seed: int = 0,
                   out_dir: str = "samples", shard_size: int = DEFAULT_SHARD_SIZE, settings: dict | None = None,
                   rank: int | None = None, world: int | None = None, comm=None, device=None, log=None,
                   **options) -> torch.Tensor | None:
    """Samples 0..n-1 as a resumable, sharded job in `out_dir` (see diffcore.shards), split over
    the ranks of the current process group (or the explicit rank/world, without a group: a
    simulated split; then call rank 0 last). Returns [n, *shape] on rank 0, None elsewhere.

    options go to diffcore.sample (batch_size, precision, sampler options...). settings: extra
    entries for the manifest (say, the model's name); the manifest also holds n, shape, method,
    steps, seed, shard_size, the options, repr(process) and a sha256 of an nn.Module's weights.
    """
    from .sampling import sample

    shard_size = check_int("shard_size", shard_size, lo=1)
    if isinstance(shape, int):
        shape = (shape,)
    ctx = current()
    if rank is not None or world is not None:
        ctx = Context(rank or 0, world or 1, rank or 0, ctx.device, comm)
    recorded = {"shape": list(shape), "method": method, "steps": steps, "seed": seed, "process": repr(process),
                "model_sha256": model_fingerprint(model),
                "options": {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(options.items())},
                **(settings or {})}

    def sample_range(start, count):
        return sample(model, process, n=count, shape=shape, method=method, steps=steps, seed=seed, start=start,
                      device=device, **options)

    return shards.run_shards(sample_range, n, shard_size, out_dir, recorded, rank=ctx.rank, world=ctx.world,
                             comm=ctx.comm, log=log)
