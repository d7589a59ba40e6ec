"""`diffcore bench`: run one of the project's benchmarks (benchmarks/NAME.py in a source
checkout) and print its table; extra arguments go to the benchmark."""
from __future__ import annotations

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
BENCH_DIR = os.path.join(ROOT, "benchmarks")
DESCRIPTIONS = {
    "sampling": "whole-loop DDPM sampling: diffusers' CIFAR-10 U-Net, diffcore vs diffusers (and torch.compile)",
    "sde": "native CPU ops: reverse SDE vs torchsde and eager, DDPM step vs diffusers, GroupNorm+SiLU vs compile",
    "conv": "3x3 convolutions of the CIFAR-10 U-Net on CPU: Winograd F(4x4|2x2, 3x3) vs torch, layer by layer",
    "large_unet": "an SD-1.5-sized U-Net on CPU: diffusers vs accelerate under limits on the Winograd transforms' memory",
    "kernels": "Triton kernels on CUDA: GB/s against a copy, vs eager and torch.compile",
    "reference_sampling": "the reference samplers on closed-form mixtures",
}


def add_parser(sub):
    s = sub.add_parser("bench", help="run a benchmark and print its table",
                       description="Run benchmarks/NAME.py from this source checkout; results go to "
                                   "benchmarks/results/NAME.json. Benchmarks: "
                                   + "; ".join(f"{k}: {v}" for k, v in DESCRIPTIONS.items()))
    s.add_argument("name", nargs="?", choices=sorted(DESCRIPTIONS), default=None,
                   help="which benchmark (default: list them)")
    s.add_argument("--quick", action="store_true", help="a small smoke run (seconds, not minutes)")
    s.add_argument("args", nargs="*", help="further arguments for the benchmark (after --), e.g. -- --threads 2")
    s.set_defaults(func=run)


def run(args) -> int:
    if args.name is None:
        for k, v in DESCRIPTIONS.items():
            print(f"{k:20s} {v}")
        return 0
    script = os.path.join(BENCH_DIR, f"{args.name}.py")
    if not os.path.isfile(script):
        raise ValueError(f"benchmark {args.name!r} needs a source checkout: {script} is not there "
                         f"(the benchmarks are not part of the installed package)")
    cmd = [sys.executable, script] + (["--quick"] if args.quick else []) + list(args.args)
    return subprocess.call(cmd, cwd=ROOT)
