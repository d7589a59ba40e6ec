"""The `diffcore` command: sample, train, eval, likelihood, bench, info. Usage errors exit 2."""
from __future__ import annotations

import argparse
import json
import sys

import torch

from .sampling import METHODS


def _cpu_name() -> str:
    import platform
    try:
        with open("/proc/cpuinfo") as f:
            return next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or platform.machine()


def cmd_info(args) -> int:
    import warnings

    import diffcore
    from . import ops

    cpu = torch.device("cpu")
    backends = {"torch": {"available": True, "ops": sorted(ops.REFERENCE)}}
    for name in ("native", "triton"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            mod = ops._backend_module(name)
        if mod is None:
            backends[name] = {"available": False}
            continue
        devices = [d for d in ("cpu", "cuda") if (d == "cpu" or torch.cuda.is_available()) and mod.available(torch.device(d))]
        backends[name] = {"available": bool(devices), "devices": devices, "ops": sorted(mod.IMPLS)}
        if name == "native":  # how the extension was found: prebuilt or compiled on first use, and its flags
            backends[name]["build"] = {"origin": mod.origin(), "info": mod.BUILD_INFO}
    chosen = {op: ops.resolve(op, cpu) for op in sorted(ops.REFERENCE)}
    from . import winograd
    conv = (f"Winograd in accelerated models: F(4x4, 3x3) from {winograd.MIN_TILES_F4} 4x4 output tiles, else "
            f"F(2x2, 3x3); float32 " + ("may take F(4x4)" if winograd.FP32_F4 else
                                        "held to F(2x2) (DIFFCORE_WINOGRAD_FP32_F4=0)") +
            f"; weight transforms cached up to {winograd.cache_limit_mb():.0f} MB (DIFFCORE_WINOGRAD_CACHE_MB)"
            if winograd._native_loaded() else "oneDNN (the native extension did not load: no Winograd op)")
    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else _cpu_name()
    print(json.dumps({"diffcore": diffcore.__version__, "torch": torch.__version__,
                      "cuda": torch.cuda.is_available(), "device": device, "threads": torch.get_num_threads(), "backends": backends, "cpu_backend_per_op": chosen,
                      "cpu_bf16": "oneDNN" if diffcore.precision.cpu_has_bf16() else
                      "widened: bf16 operands, float32 arithmetic (oneDNN has no bf16 kernels here; diffcore.precision)",
                      "cpu_conv3x3": conv, "methods": sorted(METHODS)}, indent=2))
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffcore", description="A fast diffusion-model engine.")
    sub = p.add_subparsers(dest="command", required=True)
    from .commands import sample as sample_cmd
    sample_cmd.add_parser(sub)
    from .commands import likelihood as likelihood_cmd
    likelihood_cmd.add_parser(sub)
    from .commands import train as train_cmd
    train_cmd.add_parser(sub)
    from .commands import eval as eval_cmd
    eval_cmd.add_parser(sub)
    from .commands import bench as bench_cmd
    bench_cmd.add_parser(sub)
    i = sub.add_parser("info", help="versions, device and available backends")
    i.set_defaults(func=cmd_info)
    return p


def _check_shared_flags(args) -> None:
    """Flags several subcommands share, checked before any work: --device exists here, --out
    is a directory (or not there yet)."""
    import os

    from .validation import check_device

    if getattr(args, "device", None) is not None:
        check_device("--device", args.device)
    out = getattr(args, "out", None)
    if out is not None and os.path.exists(out) and not os.path.isdir(out):
        raise ValueError(f"--out {out!r} exists and is not a directory")


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)  # argparse's own usage errors exit 2
    from .engine import NonFiniteError
    try:
        _check_shared_flags(args)
        return args.func(args)
    except NonFiniteError as e:  # --check-finite: the run itself failed, not its usage
        print(f"diffcore: error: {e}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as e:  # bad values, a missing model or data set: usage errors
        print("diffcore: error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        return 2


if __name__ == "__main__":
    sys.exit(main())
