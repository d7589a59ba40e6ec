"""Whole-trajectory sampling of a Gaussian mixture's exact score in one native op.

`integrate_gmm(gm, sde, n, method=...)` runs every step of every sample inside the C++/CUDA
extension (diffcore._C: OpenMP over blocks of samples with vectorised lane loops on CPU, one
thread per sample on CUDA), with the score of the noised mixture computed in closed form and
the noise drawn in-op from the counter generator at the addresses the reference sampler uses:
so its samples equal

    diffcore.sample(gm.model(sde), sde, n=n, shape=(gm.D,), method=method, seed=seed, ...)

to float rounding (same initial state, same noise, same coefficients).

    samples, info = integrate_gmm(gm, VPSDE(), 65536, method="pc", steps=1000,
                                  predictor="euler_maruyama", corrector="none", seed=0)

method="pc": predictor euler_maruyama | reverse_diffusion | ancestral | none, corrector
langevin | none (per-sample norms: the batch-averaged norm couples samples and is not
offered), snr, corrector_steps, denoise (return the last x_mean).
method="ode": solver euler | heun (fixed steps, default 100) | rk45 (per-sample adaptive
Dormand-Prince, rtol/atol/h0/max_steps as diffcore.samplers.ode.rk45), denoise (one
reverse-diffusion step at eps, as the reference).
info["nfe"] counts score evaluations per sample as the reference counts its model calls
(rk45: the largest per-sample count, info["nfe_per_sample"] each sample's).
"""
from __future__ import annotations

import math

import torch

from . import noise as _noise
from .closed_form import GaussianMixture
from .samplers.common import time_dtype
from .samplers.pc import reverse_diffusion_step
from .sde import SDE, SubVPSDE, VESDE, VPSDE
from . import step_coeffs
from .validation import check_choice, check_int, check_positive

METHODS = ("pc", "ode")
PC_PREDICTORS = ("euler_maruyama", "reverse_diffusion", "ancestral", "none")
PC_CORRECTORS = ("langevin", "none")
SOLVERS = ("euler", "heun", "rk45")


def _score_coefs(gm: GaussianMixture, m: torch.Tensor, s: torch.Tensor, dtype) -> torch.Tensor:
    """Rows [P, 2KD + K]: m mu, 1 / var, log w - 1/2 sum_d log(2 pi var) at each (m, s)."""
    m, s = m.reshape(-1, 1, 1).double(), s.reshape(-1, 1, 1).double()
    var = m * m * gm.vars[None] + s * s                                  # [P, K, D]
    ck = torch.log(gm.weights)[None] - 0.5 * torch.log(2 * math.pi * var).sum(-1)
    P = var.shape[0]
    return torch.cat([(m * gm.means[None]).reshape(P, -1), (1 / var).reshape(P, -1), ck], dim=1).to(dtype)


def _sde_kind(sde: SDE) -> tuple[int, float, float]:
    if isinstance(sde, VESDE):
        return 0, sde.sigma_min, sde.sigma_max
    if isinstance(sde, SubVPSDE):
        return 2, sde.beta_0, sde.beta_1
    if isinstance(sde, VPSDE):
        return 1, sde.beta_0, sde.beta_1
    raise ValueError(f"integrate_gmm needs a VESDE, VPSDE or SubVPSDE; got {type(sde).__name__}")


def integrate_gmm(gm: GaussianMixture, sde: SDE, n: int, method: str = "pc", steps: int | None = None,
                  seed: int = 0, *, start: int = 0, x_init: torch.Tensor | None = None,
                  dtype: torch.dtype = torch.float32, device=None,
                  predictor: str = "reverse_diffusion", corrector: str = "langevin", snr: float = 0.16,
                  corrector_steps: int = 1, denoise: bool = True, eps: float | None = None,
                  solver: str = "rk45", rtol: float = 1e-5, atol: float = 1e-5, h0: float | None = None,
                  max_steps: int = 100_000):
    """n samples [n, D] of `gm` through `sde`'s reverse process, all steps in one native op.

    Sample i uses the generator's sample index start + i (seed, step, stream as the reference
    sampler). x_init: optional start [n, D]. dtype: float32 or float64. Returns (x, info).
    """
    from . import native   # the extension (ImportError if it cannot load)
    if not isinstance(gm, GaussianMixture):
        raise ValueError(f"gm must be a GaussianMixture; got {type(gm).__name__}")
    kind, p0, p1 = _sde_kind(sde)
    check_choice("method", method, METHODS)
    n = check_int("n", n, lo=1)
    start = check_int("start", start, lo=0)
    check_int("seed", seed, lo=0, hi=2**64 - 1)
    if dtype not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32 or torch.float64; got {dtype}")
    device = torch.device(device) if device is not None else (x_init.device if x_init is not None else torch.device("cpu"))
    if not native.available(device):
        raise ValueError(f"the native extension cannot run on {device} here")
    eps = sde.check_eps(eps)
    D = gm.D
    idx = torch.arange(start, start + n, dtype=torch.int64)
    if x_init is not None:
        if tuple(x_init.shape) != (n, D):
            raise ValueError(f"x_init must have shape [n, D] = [{n}, {D}]; got {tuple(x_init.shape)}")
        x = x_init.to(dtype=dtype).clone()
    else:   # samplers.common.initial_state: prior_std * the generator's STREAM_INIT draw at step 0
        z = native.normal(seed, idx.to(device), 0, (D,), _noise.STREAM_INIT)
        x = sde.prior_std * z.to(dtype)
    x = x.to(device).contiguous()
    tdt = time_dtype(x)
    rounded = lambda t: torch.as_tensor(t, dtype=torch.float64).to(tdt).double()  # noqa: E731  t as the reference sees it
    C = torch.ops.diffcore

    if method == "pc":
        check_choice("predictor", predictor, PC_PREDICTORS)
        check_choice("corrector", corrector, PC_CORRECTORS)
        snr = check_positive("snr", snr)
        corrector_steps = check_int("corrector_steps", corrector_steps, lo=0)
        if solver != "rk45" or h0 is not None:
            raise ValueError("solver/h0 are options of method='ode'")
        if steps is not None:
            sde = sde.with_steps(check_int("steps", steps, lo=1))
        N = sde.N
        t = rounded(torch.linspace(sde.T, eps, N, dtype=torch.float64))
        if predictor != "none":
            co = step_coeffs.predictor(sde, t, predictor, -sde.T / N)
            a, b, sd = co["a"], co["b"], co["std"]
        else:
            a, b, sd = torch.ones_like(t), torch.zeros_like(t), torch.zeros_like(t)
        cs = corrector_steps if corrector != "none" else 0
        alpha = step_coeffs.langevin_alpha(sde, t) if cs else torch.ones_like(t)
        m, s = sde.marginal_coeffs(t)
        coef = torch.stack([a, b, sd, alpha], dim=1).to(dtype).to(device).contiguous()
        cf = _score_coefs(gm, m, s, dtype).to(device).contiguous()
        out, mean = C.gmm_pc(x, idx.to(device), native._seed64(seed), cf, coef, gm.K, cs, predictor != "none", float(snr))
        return (mean if denoise else out), {"nfe": N * (cs + (predictor != "none"))}

    check_choice("solver", solver, SOLVERS)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    if solver == "rk45":
        if steps is not None:
            raise ValueError("solver='rk45' chooses its own steps; pass rtol/atol instead of steps")
        if h0 is not None:
            h0 = check_positive("h0", h0)
        max_steps = check_int("max_steps", max_steps, lo=1)
        g = [v.to(dtype).to(device).contiguous() for v in (gm.means, gm.vars, torch.log(gm.weights))]
        x, nfe = C.gmm_rk45(x, *g, kind, float(p0), float(p1), float(sde.T), float(eps), float(rtol), float(atol),
                            0.0 if h0 is None else float(h0), max_steps)
        if (nfe < 0).any():
            raise RuntimeError(f"rk45 took more than max_steps={max_steps} steps; loosen rtol/atol")
        info = {"nfe": int(nfe.max()), "nfe_per_sample": nfe}
    else:
        steps = check_int("steps", 100 if steps is None else steps, lo=1)
        grid = torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64)
        h = torch.tensor([(grid[i + 1] - grid[i]).item() for i in range(steps)], dtype=torch.float64)
        if solver == "euler":
            times = grid[:-1]
            hs = h[None]
        else:
            times = torch.stack([grid[:-1], grid[:-1] + h], dim=1).reshape(-1)
            hs = torch.stack([h, 0.5 * h])
        t = rounded(times)
        c, g2 = sde._drift_coeff(t), sde.diffusion(t) ** 2
        m, s = sde.marginal_coeffs(t)
        coef = torch.stack([c, g2], dim=1).to(dtype).to(device).contiguous()
        cf = _score_coefs(gm, m, s, dtype).to(device).contiguous()
        x = C.gmm_ode(x, cf, coef, hs.to(dtype).to(device).contiguous(), gm.K, solver == "heun")
        info = {"nfe": steps * (1 if solver == "euler" else 2)}
    if denoise:   # the reference's last step: reverse diffusion at eps, keeping its mean
        te = torch.full((n,), eps, dtype=tdt, device=device)
        _, x = reverse_diffusion_step(sde, x, te, gm.model(sde)(x, te), torch.zeros_like(x))
        info["nfe"] += 1
    return x, info
