"""The `diffcore` command.

Until the embedded U-Net lands, `diffcore sample` samples a closed-form 2-D Gaussian
mixture (whose exact score stands in for a trained network) and writes a scatter-plot PNG,
printing how well the samples match the mixture's weights and means.
"""
from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from . import schedules
from .closed_form import GaussianMixture
from .discrete import DDPM, NCSN
from .sampling import METHODS, sample
from .sde import SubVPSDE, VESDE, VPSDE
from .validation import check_int

PROCESSES = {
    "vp": lambda: VPSDE(),
    "ve": lambda: VESDE(),
    "subvp": lambda: SubVPSDE(),
    "ddpm": lambda: DDPM(schedules.linear_betas()),
    "ncsn": lambda: NCSN(schedules.geometric_sigmas(12.0, 0.01, 30)),
}
DEFAULT_PROCESS = {"pc": "vp", "ode": "vp", "ancestral": "ddpm", "ddim": "ddpm",
                   "annealed_langevin": "ncsn", "langevin": "ncsn"}


def demo_mixture() -> GaussianMixture:
    """The survey's classic example: weights 0.8 / 0.2 at (+-4, 0), std 0.5."""
    return GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])


def _method_options(method: str) -> dict:
    if method == "pc":
        return {"corrector": "none"}
    if method in ("annealed_langevin", "langevin"):
        return {"init_range": (-8.0, 8.0)}
    return {}


def cmd_sample(args) -> int:
    from .png import scatter_image, write_png

    gm = demo_mixture()
    process = PROCESSES[args.process or DEFAULT_PROCESS[args.method]]()
    t0 = time.perf_counter()
    x = sample(gm.model(process), process, n=args.n, shape=(2,), method=args.method, steps=args.steps,
               seed=args.seed, batch_size=args.batch_size, **_method_options(args.method))
    seconds = time.perf_counter() - t0
    comp = gm.assign(x.double())
    weights = [(comp == k).double().mean().item() for k in range(gm.K)]
    means = [x[comp == k].double().mean(0).tolist() if (comp == k).any() else None for k in range(gm.K)]
    path = write_png(args.out, scatter_image(x.numpy(), extent=8.0))
    report = {"process": repr(process), "method": args.method, "n": args.n, "seconds": round(seconds, 3),
              "samples_per_s": round(args.n / seconds, 1), "weights": weights,
              "true_weights": gm.weights.tolist(), "means": means, "png": path}
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


def cmd_likelihood(args) -> int:
    from .likelihood import bits_per_dim, likelihood

    gm = demo_mixture()
    sde = PROCESSES[args.process]()
    x = gm.sample(args.n, seed=args.seed)
    t0 = time.perf_counter()
    nll, info = likelihood(gm.model(sde), sde, x, divergence=args.divergence, probes=args.probes,
                           rtol=args.tol, atol=args.tol, seed=args.seed, return_info=True)
    seconds = time.perf_counter() - t0
    exact = -gm.log_prob(x)
    report = {"process": repr(sde), "n": args.n, "divergence": args.divergence, "probes": args.probes,
              "nll_nats": nll.mean().item(), "exact_nll_nats": exact.mean().item(),
              "relative_error": abs(nll.mean().item() / exact.mean().item() - 1),
              "bits_per_dim": bits_per_dim(nll, 2).mean().item(),
              "nfe_per_sample_mean": info["nfe_per_sample"].double().mean().item(), "seconds": round(seconds, 3)}
    print(json.dumps(report, indent=2))
    return 0


def cmd_info(args) -> int:
    import diffcore

    print(json.dumps({"diffcore": diffcore.__version__, "torch": torch.__version__,
                      "cuda": torch.cuda.is_available(), "backends": ["torch"],
                      "methods": sorted(METHODS)}, indent=2))
    return 0


def _positive_int(name):
    def parse(text):
        try:
            return check_int(name, int(text), lo=1)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    return parse


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="diffcore", description="A fast diffusion-model engine.")
    sub = p.add_subparsers(dest="command", required=True)
    s = sub.add_parser("sample", help="sample the default model and write a PNG",
                       description="Sample the closed-form 2-D Gaussian-mixture model (the default "
                                   "until the embedded U-Net lands) and write a scatter-plot PNG.")
    s.add_argument("--method", choices=sorted(METHODS), default="pc", help="sampler (default: pc)")
    s.add_argument("--process", choices=sorted(PROCESSES), default=None,
                   help="diffusion process (default: vp for pc/ode, ddpm for ancestral/ddim, ncsn for Langevin)")
    s.add_argument("--steps", type=_positive_int("--steps"), default=None, help="sampler steps (default: the method's)")
    s.add_argument("--n", type=_positive_int("--n"), default=20000, help="number of samples (default: 20000)")
    s.add_argument("--batch-size", type=_positive_int("--batch-size"), default=None,
                   help="samples per chunk (default: all at once); results do not depend on it")
    s.add_argument("--seed", type=int, default=0, help="noise seed (default: 0)")
    s.add_argument("--out", default="samples.png", help="PNG to write (default: samples.png)")
    s.set_defaults(func=cmd_sample)
    lk = sub.add_parser("likelihood", help="NLL and bits/dim through the probability-flow ODE",
                        description="Negative log-likelihood (nats) and bits/dim of points drawn from the "
                                    "closed-form 2-D mixture under its exact score, by the probability-flow "
                                    "ODE, beside the exact value (trained models come with the U-Net).")
    lk.add_argument("--process", choices=["vp", "ve", "subvp"], default="vp", help="SDE (default: vp)")
    lk.add_argument("--n", type=_positive_int("--n"), default=256, help="number of points (default: 256)")
    lk.add_argument("--divergence", choices=["exact", "hutchinson"], default="exact",
                    help="trace of the Jacobian: exact, or Hutchinson-Skilling probes (default: exact)")
    lk.add_argument("--probes", type=_positive_int("--probes"), default=8, help="Hutchinson probes (default: 8)")
    lk.add_argument("--tol", type=float, default=1e-5, help="RK45 rtol and atol (default: 1e-5)")
    lk.add_argument("--seed", type=int, default=0, help="seed of the points and probes (default: 0)")
    lk.set_defaults(func=cmd_likelihood)
    i = sub.add_parser("info", help="versions, device and available backends")
    i.set_defaults(func=cmd_info)
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"diffcore: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
