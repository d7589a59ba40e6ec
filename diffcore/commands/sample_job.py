"""The job side of `diffcore sample`: ranks under torchrun, the manifest's settings, the sharded
resumable run (diffcore.shards) and the final files, each written atomically."""
from __future__ import annotations

import io
import json
import os
import sys

from .. import shards
from ..distributed import DEFAULT_SHARD_SIZE, Context, finish, init_from_env

# flags that do not change a single bit of the samples: a resumed job may differ in them
NOT_SETTINGS = {"func", "command", "out", "device", "model", "n", "shard_size", "check_finite", "progress", "quiet",
                "restart"}


def start(args) -> Context:
    """Join torchrun's process group when there is one; a CUDA device becomes cuda:LOCAL_RANK."""
    ctx = init_from_env(args.device)
    if ctx.world > 1:
        args.device = str(ctx.device)
    return ctx


def model_files_sha256(path: str) -> str:
    """One sha256 over the model's JSON and weights (what defines the network)."""
    if os.path.isdir(path):
        files = [os.path.join(path, "model.json"), os.path.join(path, "model.safetensors")]
    else:
        files = [path[: -len(".safetensors")] + ".json", path]
    return shards.sha256_bytes("".join(shards.sha256_file(f) for f in files).encode())


def settings(args, model_path: str, **resolved) -> dict:
    """What the manifest records and a resumed command must repeat: every flag that can change
    the samples (device as its type only: rank r runs on cuda:r), with the resolved defaults."""
    import torch

    s = {k: v for k, v in vars(args).items() if k not in NOT_SETTINGS}
    s["device"] = torch.device(args.device).type
    s["model_sha256"] = model_files_sha256(model_path)
    s["op_backends"] = op_backends(args)
    s.update(resolved)
    return s


def op_backends(args) -> dict:
    """The backend each fused op resolves to: --backend auto depends on DIFFCORE_BACKEND and on
    what is built, and shards drawn on different backends differ in the last bits."""
    import torch

    from .. import ops

    asked = getattr(args, "backend", None)
    asked = None if asked in (None, "auto") else asked
    out = {}
    for op in sorted(ops.REFERENCE):
        try:
            out[op] = ops.resolve(op, torch.device(args.device), asked)
        except (RuntimeError, ValueError) as e:  # sampling reports it; the manifest just records it
            out[op] = f"unavailable: {e}"
    return out


def shard_size(args, n: int) -> int:
    return args.shard_size if args.shard_size is not None else min(n, DEFAULT_SHARD_SIZE)


def run(args, ctx: Context, sample_range, n: int, job_settings: dict):
    """This rank's shards of the job in args.out; the merged samples on rank 0, None elsewhere."""
    def log(msg):
        print(msg, file=sys.stderr, flush=True)
    try:
        if getattr(args, "restart", False):
            if ctx.rank == 0:
                removed = shards.discard_job(args.out)
                log(f"--restart: removed the earlier job's manifest and {sum('shard-' in p for p in removed)} shards")
            if ctx.comm is not None:
                ctx.comm.barrier()  # no rank opens the job before rank 0 has cleared it
        return shards.run_shards(sample_range, n, shard_size(args, n), args.out, job_settings, rank=ctx.rank,
                                 world=ctx.world, comm=ctx.comm, log=log)
    except shards.SettingsMismatch as e:
        raise ValueError(f"{e}, or pass --restart to discard the earlier job") from None
    finally:
        finish(ctx)


def write_bytes(path: str, data: bytes) -> str:
    return shards.atomic_write(path, data)


def write_npz(path: str, **arrays) -> str:
    import numpy as np

    buf = io.BytesIO()
    np.savez(buf, **arrays)
    return write_bytes(path, buf.getvalue())


def write_png(path: str, rgb) -> str:
    from ..png import encode_png

    return write_bytes(path, encode_png(rgb))


def write_json(path: str, obj: dict) -> str:
    return write_bytes(path, (json.dumps(obj, indent=2, sort_keys=True) + "\n").encode())
