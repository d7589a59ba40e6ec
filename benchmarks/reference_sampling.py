"""Reference-engine throughput: the counter-based noise generator against torch.randn, and
samples/s of each sampler on the closed-form 2-D mixture (the baseline every fast path
will be compared against).

    python benchmarks/reference_sampling.py [--quick]
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, timeit, write_results  # noqa: E402

import diffcore  # noqa: E402
from diffcore import noise, schedules  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    args = ap.parse_args()
    n = 2_000 if args.quick else 20_000
    steps = 50 if args.quick else 200
    repeats = 3 if args.quick else 5
    rows, ratios = [], {}

    # 1. Noise: Philox4x32-10 + Box-Muller in vectorised torch vs torch.randn (same count).
    numel = 1 << 20
    idx = torch.arange(numel // 64)
    philox = timeit(lambda: noise.normal(0, idx, 0, (64,)), repeats)
    randn = timeit(lambda: torch.randn(numel), repeats)
    for name, t in (("noise.normal (Philox)", philox), ("torch.randn", randn)):
        rows.append({"case": name, "size": numel, "median_ms": round(t["median_s"] * 1e3, 3),
                     "per_s": f"{numel / t['median_s']:.3g} normals"})
    ratios["philox_vs_randn_time"] = philox["median_s"] / randn["median_s"]

    # 2. Samplers on the exact mixture score.
    gm = diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])
    ddpm = diffcore.DDPM(schedules.linear_betas(1000))
    cases = [
        ("ancestral", ddpm, dict(steps=steps)),
        ("ddim", ddpm, dict(steps=steps)),
        ("pc", diffcore.VPSDE(), dict(steps=steps, corrector="none")),
        ("pc", diffcore.VESDE(), dict(steps=steps, corrector="langevin", norm="batch")),
        ("ode", diffcore.VPSDE(), dict(solver="heun", steps=steps // 2)),
    ]
    for method, proc, opts in cases:
        model = gm.model(proc)
        t = timeit(lambda: diffcore.sample(model, proc, n=n, shape=(2,), method=method, seed=0, **opts), repeats)
        rows.append({"case": f"{method} {type(proc).__name__} {opts}", "size": n,
                     "median_ms": round(t["median_s"] * 1e3, 1), "per_s": f"{n / t['median_s']:.3g} samples"})
    print_table(rows)
    print("ratios:", {k: round(v, 3) for k, v in ratios.items()})
    print("wrote", write_results("reference_sampling", rows, ratios))


if __name__ == "__main__":
    main()
