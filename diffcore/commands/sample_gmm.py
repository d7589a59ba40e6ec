"""`diffcore sample --model gmm`: the closed-form 2-D mixture demo (weights 0.8 / 0.2 at
(+-4, 0), std 0.5) whose exact score stands in for a network; a scatter PNG and the
recovered weights and means."""
from __future__ import annotations

import json
import os
import time

from .. import schedules
from ..closed_form import GaussianMixture
from ..discrete import DDPM, NCSN
from ..sde import SubVPSDE, VESDE, VPSDE

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
    return GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])


def _method_options(method: str) -> dict:
    if method == "pc":
        return {"corrector": "none"}
    if method in ("annealed_langevin", "langevin"):
        return {"init_range": (-8.0, 8.0)}
    return {}


def run_gmm(args) -> int:
    from ..checkpoint import save_json
    from ..png import scatter_image, write_png
    from ..sampling import sample

    gm = demo_mixture()
    method = args.method or "pc"
    process = PROCESSES[args.process or DEFAULT_PROCESS[method]]()
    n = args.n or 20000
    t0 = time.perf_counter()
    x = sample(gm.model(process), process, n=n, shape=(2,), method=method, steps=args.steps,
               seed=args.seed, batch_size=args.batch_size, **_method_options(method))
    seconds = time.perf_counter() - t0
    comp = gm.assign(x.double())
    weights = [(comp == k).double().mean().item() for k in range(gm.K)]
    means = [x[comp == k].double().mean(0).tolist() if (comp == k).any() else None for k in range(gm.K)]
    os.makedirs(args.out, exist_ok=True)
    path = write_png(os.path.join(args.out, "samples.png"), scatter_image(x.numpy(), extent=8.0))
    report = {"model": "gmm", "process": repr(process), "method": method, "n": n, "seconds": round(seconds, 3),
              "samples_per_s": round(n / seconds, 1), "weights": weights,
              "true_weights": gm.weights.tolist(), "means": means, "png": path}
    save_json(os.path.join(args.out, "run.json"), report)
    print(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0
