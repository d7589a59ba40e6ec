"""`diffcore sample`: sample a model (the embedded digits DDPM by default) and write a PNG grid,
the samples as .npz (uint8 NHWC under arr_0, the layout FID tools read) and run.json."""
from __future__ import annotations

import json
import os
import sys
import time

from ..sampling import METHODS
from .common import positive_int

GRID_MAX = 1024  # samples drawn in samples.png (all of them go to samples.npz)
DEFAULT_STEPS = {"ddim": 50, "ancestral": 250, "pc": 500, "ode": None, "annealed_langevin": 20, "langevin": 200}


def add_parser(sub):
    s = sub.add_parser(
        "sample", help="sample a model (default: the embedded digits model) and write images",
        description="Sample a trained model and write OUT/samples.png (a grid), OUT/samples.npz (uint8 NHWC "
                    "under arr_0) and OUT/run.json (settings, timing). With no arguments: 64 digits from the "
                    "embedded DDPM with 50 DDIM steps. --model gmm samples the closed-form 2-D mixture demo.")
    s.add_argument("--model", default=None,
                   help="model directory (model.json + model.safetensors), or 'gmm' for the closed-form "
                        "2-D mixture demo (default: the embedded digits DDPM)")
    s.add_argument("--method", choices=sorted(METHODS), default=None,
                   help="sampler (default: ddim for DDPM models, pc for SDEs, annealed_langevin for NCSN)")
    s.add_argument("--steps", type=positive_int("--steps"), default=None, help="sampler steps (default: the method's; for ode, --steps picks Heun over adaptive RK45)")
    s.add_argument("--n", "--num-samples", dest="n", type=positive_int("--n"), default=None,
                   help="number of samples (default: 64; gmm: 20000). Under torchrun write --num-samples: "
                        "torchrun reads --n as an abbreviation of its own options")
    s.add_argument("--batch-size", "--max-batch", dest="batch_size", type=positive_int("--batch-size"), default=None,
                   help="samples per chunk (default on CPU: at least 256, up to 2^20 values per chunk; on CUDA: from free memory); the samples do not depend on it")
    s.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="network precision; sampler state stays fp32 (default: fp32)")
    s.add_argument("--backend", choices=["auto", "torch", "native", "triton"], default="auto",
                   help="backend of the fused step ops (default: auto = DIFFCORE_BACKEND, else the fastest present)")
    s.add_argument("--no-cuda-graph", dest="cuda_graph", action="store_false",
                   help="on CUDA, run steps eagerly instead of replaying one captured CUDA graph per step")
    s.add_argument("--check-finite", action="store_true",
                   help="stop at the first NaN/Inf and report the step and sample index (exit 1)")
    s.add_argument("--quiet", action="store_true", help="no progress line")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    s.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    s.add_argument("--process", choices=["vp", "ve", "subvp", "ddpm", "ncsn"], default=None,
                   help="gmm demo only: the process (default: vp for pc/ode, ddpm for ancestral/ddim, ncsn for Langevin)")
    s.add_argument("--out", default="samples", help="output directory (default: ./samples)")
    s.add_argument("--shard-size", type=positive_int("--shard-size"), default=None,
                   help="samples per shard (default: min(n, 256)). Shards go to OUT/shards/ with OUT/manifest.json; "
                        "the same command run again resumes an interrupted job. Under torchrun shard i is sampled "
                        "by rank i %% WORLD_SIZE and rank 0 merges: the samples depend on n, seed and shard size, "
                        "not on the number of ranks")
    s.add_argument("--restart", action="store_true",
                   help="discard the job already in OUT (manifest and shards) and start over, instead of resuming "
                        "it; without it, a job started with other settings is refused")
    s.set_defaults(func=run)


def run(args) -> int:
    if args.model == "gmm":
        from .sample_gmm import run_gmm
        return run_gmm(args)
    if args.process is not None:
        raise ValueError("--process applies to --model gmm only; a trained model carries its own process")
    import numpy as np
    import torch

    from ..models.spec import DEFAULT_MODEL, as_sde, load_model
    from ..png import image_grid, to_uint8_nhwc
    from ..sampling import sample
    from ..discrete import DDPM, NCSN

    from . import sample_job

    path = args.model or DEFAULT_MODEL
    ctx = sample_job.start(args)  # under torchrun: this rank of the process group, on cuda:LOCAL_RANK for CUDA
    model, process, spec = load_model(path, device=args.device)
    default_method = "ddim" if isinstance(process, DDPM) else ("annealed_langevin" if isinstance(process, NCSN) else "pc")
    method = args.method or default_method
    if isinstance(process, DDPM) and method in ("pc", "ode"):
        model, process = as_sde(model, process)  # a linear-beta DDPM is its VP SDE's discretization
    n = args.n or 64
    steps = args.steps if args.steps is not None else DEFAULT_STEPS.get(method)
    shape = tuple(spec["data"]["shape"])
    options = {"init_range": (-1.0, 1.0)} if method in ("annealed_langevin", "langevin") else {}
    if method == "ode":
        options["solver"] = "rk45" if steps is None else "heun"  # --steps asks for a fixed-step solver
    if method in ("ddim", "ancestral"):
        options["clip_denoised"] = True  # the data live in [-1, 1]: clip the predicted x0 (DDPM's sampler)

    def sample_range(start, count):  # samples start..start+count-1: one shard of the job
        return sample(model, process, n=count, start=start, shape=shape, method=method, steps=steps, seed=args.seed,
                      max_batch=args.batch_size, device=args.device, precision=args.precision,
                      backend=args.backend, cuda_graph="auto" if args.cuda_graph else False,
                      check_finite=args.check_finite, progress=not args.quiet, **options).float().cpu()

    t0 = time.perf_counter()
    job_settings = sample_job.settings(args, path, method=method, steps=steps, shape=list(shape), family=spec["family"],
                                       options={k: list(v) if isinstance(v, tuple) else v for k, v in options.items()})
    x = sample_job.run(args, ctx, sample_range, n, job_settings)
    seconds = time.perf_counter() - t0
    if x is None:
        return 0  # a rank other than 0: its shards are written and recorded; rank 0 merges
    x = x.clamp(-1, 1)
    images = x.numpy()
    shown = min(n, GRID_MAX)  # the grid shows the first samples: a 50 000-sample job would make a gigapixel PNG
    scale = max(1, 256 // (shape[-1] * int(np.ceil(np.sqrt(shown)))))
    png = os.path.abspath(sample_job.write_png(os.path.join(args.out, "samples.png"),
                                               image_grid(images[:shown], scale=max(scale, 4))))
    npz = os.path.join(args.out, "samples.npz")
    u8 = to_uint8_nhwc(images)
    sample_job.write_npz(npz, arr_0=u8)
    report = {"model": os.path.abspath(path), "family": spec["family"], "method": method, "steps": steps,
              "options": {k: list(v) if isinstance(v, tuple) else v for k, v in options.items()},
              "n": n, "seed": args.seed, "precision": args.precision, "backend": args.backend, "device": str(args.device),
              "seconds": round(seconds, 3), "samples_per_s": round(n / seconds, 2),
              "png": png, "npz": os.path.abspath(npz)}
    sample_job.write_json(os.path.join(args.out, "run.json"), report)
    print(json.dumps(report, indent=2))
    print(f"wrote {png}, {os.path.abspath(npz)} and run.json", file=sys.stderr)
    print(f"wrote {png}")
    return 0
