"""Probability-flow ODE sampling: dx/dt = f(x, t) - 1/2 g(t)^2 score(x, t), from T to eps.

Solvers: fixed-step Euler and Heun on linspace(T, eps, steps + 1), and adaptive
Dormand-Prince RK45 with a step size per sample (samples never share error control,
so a sample's trajectory does not depend on the rest of the batch).
"""
from __future__ import annotations

import torch

from .. import parameterization as P
from ..sde import SDE
from ..validation import check_choice, check_int, check_positive
from .common import call_model, initial_state, require, time_dtype
from ..controllable import check_observation, observation_noise
from .pc import reverse_diffusion_step

SOLVERS = ("euler", "heun", "rk45")

# Dormand-Prince 5(4) tableau (Dormand & Prince 1980), as in scipy's RK45.
_C = (0.0, 1 / 5, 3 / 10, 4 / 5, 8 / 9, 1.0)
_A = (
    (),
    (1 / 5,),
    (3 / 40, 9 / 40),
    (44 / 45, -56 / 15, 32 / 9),
    (19372 / 6561, -25360 / 2187, 64448 / 6561, -212 / 729),
    (9017 / 3168, -355 / 33, 46732 / 5247, 49 / 176, -5103 / 18656),
)
_B = (35 / 384, 0.0, 500 / 1113, 125 / 192, -2187 / 6784, 11 / 84)
# b - b*: the embedded 4th-order error estimate (the 7th stage is f at the new point: FSAL).
_E = (71 / 57600, 0.0, -71 / 16695, 71 / 1920, -17253 / 339200, 22 / 525, -1 / 40)


def euler_step(f, x, t, h):
    return x + h * f(x, t)


def heun_step(f, x, t, h):
    k1 = f(x, t)
    k2 = f(x + h * k1, t + h)
    return x + 0.5 * h * (k1 + k2)


def rk45(f, x: torch.Tensor, t0: float, t1: float, rtol: float = 1e-5, atol: float = 1e-5,
         h0: float | None = None, max_steps: int = 100_000, with_index: bool = False):
    """Integrate dx/dt = f(x, t) from t0 to t1 with per-sample adaptive Dormand-Prince.

    f takes x [b, ...] and t [b] (any subset of the batch; with_index=True also passes the
    subset's indices into the batch as a third argument). Returns (x(t1), info) with
    info["nfe"] the number of batched f calls and info["nfe_per_sample"] a tensor [B].
    """
    if h0 is not None:
        h0 = check_positive("h0", h0)
    max_steps = check_int("max_steps", max_steps, lo=1)
    B = x.shape[0]
    dev = x.device
    sign = 1.0 if t1 > t0 else -1.0
    span = abs(t1 - t0)
    t = torch.full((B,), float(t0), dtype=torch.float64, device=dev)
    h = torch.full((B,), span * 0.01 if h0 is None else float(h0), dtype=torch.float64, device=dev)
    x = x.clone()
    if with_index:
        fi = f
    else:
        def fi(xx, tt, idx):
            return f(xx, tt)
    k1 = fi(x, t, torch.arange(B, device=dev))
    calls, attempts = 1, 0
    nfe = torch.ones(B, dtype=torch.int64, device=dev)
    remaining = lambda tt: (t1 - tt) * sign  # noqa: E731  distance still to go, >= 0
    active = remaining(t) > 0
    while active.any():
        attempts += 1
        if attempts > max_steps:
            raise RuntimeError(f"rk45 took more than max_steps={max_steps} steps; loosen rtol/atol")
        a = active.nonzero().squeeze(1)
        xa, ta, ka = x[a], t[a], k1[a]
        last = h[a] >= remaining(ta)
        ha = torch.where(last, remaining(ta), h[a])
        hs = P.bcast((ha * sign).to(xa.dtype), xa)
        ks = [ka]
        for i in range(1, 6):
            xi = xa + hs * sum(c * k for c, k in zip(_A[i], ks) if c != 0.0)
            ks.append(fi(xi, ta + _C[i] * ha * sign, a))
        y = xa + hs * sum(b * k for b, k in zip(_B, ks) if b != 0.0)
        t_new = torch.where(last, torch.full_like(ta, float(t1)), ta + ha * sign)
        k7 = fi(y, t_new, a)
        ks.append(k7)
        calls += 6
        nfe[a] += 6
        err = hs * sum(e * k for e, k in zip(_E, ks) if e != 0.0)
        scale = atol + rtol * torch.maximum(xa.abs(), y.abs())
        err_norm = (err / scale).flatten(1).pow(2).mean(1).sqrt().to(torch.float64)
        accept = err_norm <= 1.0
        factor = torch.where(err_norm == 0, torch.full_like(err_norm, 10.0),
                             (0.9 * err_norm.clamp(min=1e-300) ** -0.2).clamp(0.2, 10.0))
        acc = a[accept]
        x[acc] = y[accept]
        t[acc] = t_new[accept]
        k1[acc] = k7[accept]
        h[a] = ha * factor
        active = remaining(t) > 0
    return x, {"nfe": calls, "nfe_per_sample": nfe}


OPTIONS = ("solver", "rtol", "atol", "h0", "denoise", "eps", "init", "observation")


def run(model, sde, noise, steps, x_init, solver="rk45", rtol=1e-5, atol=1e-5, h0=None, denoise=True,
        eps=None, init="prior", observation=None):
    require("ode", sde, SDE, "a VESDE, VPSDE or SubVPSDE")
    check_choice("solver", solver, SOLVERS)
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    eps = sde.check_eps(eps)
    x = initial_state(sde, noise, x_init, init)

    everyone = torch.arange(x.shape[0], device=x.device)
    if observation is None:
        def drift(xx, tt, idx):
            tt = tt.to(time_dtype(xx))
            return sde.probability_flow_drift(xx, tt, call_model(model, xx, tt))

        def full_state(xx, tt, idx):
            return xx
    else:
        # Only the free part moves; the known part is m(t) b + s(t) P z0 (z0 fixed per sample).
        b = check_observation(observation).known_for(x, noise.sample_idx)
        z0 = observation_noise(noise, 0, 0)

        def full_state(xx, tt, idx):
            m, s = sde.marginal_coeffs(tt.to(time_dtype(xx)))
            return observation.replace(xx, P.bcast(m.to(xx.dtype), xx), P.bcast(s.to(xx.dtype), xx), b[idx], z0[idx])

        def drift(xx, tt, idx):
            tt = tt.to(time_dtype(xx))
            xh = full_state(xx, tt, idx)
            d = sde.probability_flow_drift(xh, tt, call_model(model, xh, tt))
            return d - observation.project(d)

    if solver == "rk45":
        if steps is not None:
            raise ValueError("solver='rk45' chooses its own steps; pass rtol/atol instead of steps")
        x, info = rk45(drift, x, sde.T, eps, rtol, atol, h0, with_index=True)
    else:
        steps = check_int("steps", 100 if steps is None else steps, lo=1)
        grid = torch.linspace(sde.T, eps, steps + 1, dtype=torch.float64)
        step = euler_step if solver == "euler" else heun_step
        f = lambda xx, tt: drift(xx, tt, everyone)  # noqa: E731
        for i in range(steps):
            t = grid[i].to(x.device).expand(x.shape[0])
            x = step(f, x, t, (grid[i + 1] - grid[i]).item())
        info = {"nfe": steps * (1 if solver == "euler" else 2)}
    t = torch.full((x.shape[0],), eps, dtype=time_dtype(x), device=x.device)
    x = full_state(x, t, everyone)
    if denoise:  # one reverse-diffusion step at eps, keeping its mean (score_sde's noise removal)
        _, x = reverse_diffusion_step(sde, x, t, call_model(model, x, t), torch.zeros_like(x))
        info["nfe"] += 1
    if observation is not None:
        x = observation.finalize(x, b)
    return x, info
