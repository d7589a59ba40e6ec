"""Exact likelihoods of score SDEs through the probability-flow ODE (Song et al. 2021, App. D).

The probability-flow ODE dx/dt = f~(x, t) = f(x, t) - 1/2 g(t)^2 score(x, t) moves p_t to
p_t' deterministically, and along a trajectory d/dt log p_t(x(t)) = -div f~(x(t), t)
(the instantaneous change of variables). Integrating the augmented state (x, delta) with
d delta/dt = div f~ from t = eps to T gives
    log p_eps(x) = log p_T(x(T)) + delta(T)   ~=   prior_logp(x(T)) + delta(T),
so the NLL of x, treated as a sample of p_eps, is -(prior_logp(x(T)) + delta(T)) nats.

The divergence is either exact (trace of the Jacobian, one backward pass per dimension) or
Hutchinson's estimate E_v[v^T J v] with a fixed set of probe vectors per sample, drawn from
the counter generator keyed by (seed, sample index), so a sample's estimate does not
depend on the rest of its batch. The state is integrated in float64 by the per-sample
adaptive Dormand-Prince solver of samplers.ode; the model runs in x's dtype.

bits_per_dim and dequantize convert to the usual bits/dim of 8-bit data (see there).
"""
from __future__ import annotations

import math

import torch

from . import noise as _noise
from .samplers.ode import rk45
from .sde import SDE
from .validation import check_choice, check_finite, check_int, check_positive

DIVERGENCES = ("hutchinson", "exact")
PROBES = ("rademacher", "gaussian")
DATA_RANGES = ("[0,1]", "[-1,1]")

STREAM_PROBE = 4 << 16    # Hutchinson probe vectors (step = probe number)
STREAM_DEQUANT = 5 << 16  # uniform dequantization noise


# ---- checks ------------------------------------------------------------------------------
def _check_common(model, sde, x, name, rtol, atol, eps):
    if not isinstance(sde, SDE):
        raise ValueError(f"sde must be a VESDE, VPSDE or SubVPSDE (an SDE); got {type(sde).__name__}")
    if not callable(model):
        raise ValueError(f"model must be callable as model(x, t); got {type(model).__name__}")
    check_finite(name, x)
    if x.dim() < 2 or x.shape[0] < 1 or x[0].numel() < 1:
        raise ValueError(f"{name} must have shape [B, ...] with B >= 1 and at least one value per sample; "
                         f"got {tuple(x.shape)}")
    rtol, atol = check_positive("rtol", rtol), check_positive("atol", atol)
    return rtol, atol, float(sde.check_eps(eps))


def _call(model, x, t):
    out = model(x, t)
    if not isinstance(out, torch.Tensor) or out.shape != x.shape:
        got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ValueError(f"model must return a score shaped like x {tuple(x.shape)}; got {got}")
    return out


def _flow(model, sde, x, t):
    """f~(x, t) = f - 1/2 g^2 score, with t cast to x's dtype as the samplers do."""
    t = t.to(x.dtype)
    return sde.probability_flow_drift(x, t, _call(model, x, t))


# ---- probe vectors -----------------------------------------------------------------------
def probe_vectors(seed: int, sample_idx: torch.Tensor, shape, probes: int = 1, probe: str = "rademacher",
                  dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """Hutchinson probes [probes, B, *shape]: probe k of sample i depends only on (seed, i, k).

    rademacher: +-1 with probability 1/2 each; gaussian: standard normal. Both have
    E[v v^T] = I, which is all the estimator needs to be unbiased.
    """
    check_choice("probe", probe, PROBES)
    probes = check_int("probes", probes, lo=1)
    out = []
    for k in range(probes):
        if probe == "gaussian":
            v = _noise.normal(seed, sample_idx, k, shape, stream=STREAM_PROBE, dtype=torch.float64)
        else:
            u = _noise.uniform(seed, sample_idx, k, shape, stream=STREAM_PROBE, dtype=torch.float64)
            v = torch.where(u < 0.5, -1.0, 1.0).to(torch.float64)
        out.append(v)
    return torch.stack(out).to(dtype).contiguous()


def divergence(fn, x: torch.Tensor, method: str = "exact", probe_v: torch.Tensor | None = None):
    """(fn(x), div fn(x)) for fn mapping [B, ...] -> [B, ...] per sample; div as x.dtype [B].

    exact: sum_i d fn_i / d x_i, one vector-Jacobian product per dimension (the i-th
    one-hot vector gives row i of the Jacobian). hutchinson: mean over the probes
    v in probe_v [P, B, ...] of v^T J v, one vector-Jacobian product each.
    Both outputs are detached.
    """
    check_choice("divergence", method, DIVERGENCES)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        y = fn(xg)
        if y.shape != x.shape:
            raise ValueError(f"the drift must be shaped like x {tuple(x.shape)}; got {tuple(y.shape)}")
        B = x.shape[0]
        if method == "exact":
            D = x[0].numel()
            div = torch.zeros(B, dtype=x.dtype, device=x.device)
            e = torch.zeros(B, D, dtype=x.dtype, device=x.device)
            for i in range(D):
                e.zero_()
                e[:, i] = 1
                (row,) = torch.autograd.grad(y, xg, e.reshape(x.shape), retain_graph=i < D - 1)
                div = div + row.reshape(B, D)[:, i]
        else:
            if probe_v is None:
                raise ValueError("divergence='hutchinson' needs probe vectors")
            P = probe_v.shape[0]
            div = torch.zeros(B, dtype=x.dtype, device=x.device)
            for k in range(P):
                v = probe_v[k].to(x.dtype)
                (vj,) = torch.autograd.grad(y, xg, v, retain_graph=k < P - 1)
                div = div + (vj * v).flatten(1).sum(1)
            div = div / P
    return y.detach(), div.detach()


_divergence = divergence  # likelihood's argument of the same name shadows the function


# ---- likelihood --------------------------------------------------------------------------
def likelihood(model, sde, x: torch.Tensor, divergence: str = "hutchinson", probes: int = 1,
               probe: str = "rademacher", rtol: float = 1e-5, atol: float = 1e-5, eps: float | None = None,
               seed: int = 0, start: int = 0, h0: float | None = None, max_steps: int = 100_000,
               return_info: bool = False):
    """Negative log-likelihood of x [B, ...] in nats per sample (float64 [B]) under the
    probability-flow ODE of `sde` with score model `model(x, t)` (t continuous [B]).

    x is treated as a sample of p_eps, the marginal at t = eps, and the prior N(0,
    prior_std^2 I) stands in for p_T. divergence="exact" is the Jacobian's trace (D
    backward passes per evaluation: small D only); "hutchinson" averages v^T J v over
    `probes` fixed probe vectors per sample ("rademacher" or "gaussian"), keyed by
    (seed, start + sample index): an unbiased estimate of the NLL's flow term.
    start: the batch's first sample index (chunked runs give each sample the same probes).
    return_info: also {"nfe": batched drift evaluations (each one forward pass plus D or
    `probes` backward passes), "nfe_per_sample" [B], "z": x(T) typed like x, "delta_logp"
    and "prior_logp" (float64 [B])}.
    """
    check_choice("divergence", divergence, DIVERGENCES)
    check_choice("probe", probe, PROBES)
    probes = check_int("probes", probes, lo=1)
    seed = check_int("seed", seed, lo=0, hi=2**64 - 1)
    start = check_int("start", start, lo=0)
    rtol, atol, eps = _check_common(model, sde, x, "x", rtol, atol, eps)

    shape, dtype, B = tuple(x.shape[1:]), x.dtype, x.shape[0]
    D = math.prod(shape)
    v_all = None
    if divergence == "hutchinson":
        idx = torch.arange(start, start + B, device=x.device)
        v_all = probe_vectors(seed, idx, shape, probes, probe, dtype)      # [P, B, *shape]

    def f(state, t, idx):
        xx = state[:, :D].reshape(-1, *shape).to(dtype)
        v = None if v_all is None else v_all[:, idx]
        drift, div = _divergence(lambda xg: _flow(model, sde, xg, t), xx, divergence, v)
        return torch.cat([drift.reshape(-1, D).to(torch.float64), div.to(torch.float64)[:, None]], dim=1)

    state = torch.cat([x.detach().reshape(B, D).to(torch.float64),
                       torch.zeros(B, 1, dtype=torch.float64, device=x.device)], dim=1)
    with torch.no_grad():
        out, info = rk45(f, state, eps, sde.T, rtol, atol, h0, max_steps, with_index=True)
    z64 = out[:, :D].reshape(B, *shape)
    delta = out[:, D]
    prior = sde.prior_logp(z64)
    nll = -(prior + delta)
    if return_info:
        return nll, {"nfe": info["nfe"], "nfe_per_sample": info["nfe_per_sample"],
                     "z": z64.to(dtype).contiguous(), "delta_logp": delta, "prior_logp": prior}
    return nll


# ---- encode / decode ---------------------------------------------------------------------
def _integrate(model, sde, x, t0, t1, rtol, atol, h0, max_steps, return_info):
    shape, dtype = tuple(x.shape[1:]), x.dtype

    def f(state, t):
        return _flow(model, sde, state.to(dtype), t).to(torch.float64)

    with torch.no_grad():
        out, info = rk45(f, x.detach().to(torch.float64), t0, t1, rtol, atol, h0, max_steps)
    out = out.reshape(x.shape[0], *shape).to(dtype).contiguous()
    return (out, {"nfe": info["nfe"], "nfe_per_sample": info["nfe_per_sample"]}) if return_info else out


def encode(model, sde, x: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5, eps: float | None = None,
           h0: float | None = None, max_steps: int = 100_000, return_info: bool = False):
    """The latent x(T) of x = x(eps) under the probability-flow ODE (no gradients); typed like x."""
    rtol, atol, eps = _check_common(model, sde, x, "x", rtol, atol, eps)
    return _integrate(model, sde, x, eps, sde.T, rtol, atol, h0, max_steps, return_info)


def decode(model, sde, z: torch.Tensor, rtol: float = 1e-5, atol: float = 1e-5, eps: float | None = None,
           h0: float | None = None, max_steps: int = 100_000, return_info: bool = False):
    """x(eps) from the latent z = x(T) under the probability-flow ODE: encode's inverse
    (no final denoising step); typed like z."""
    rtol, atol, eps = _check_common(model, sde, z, "z", rtol, atol, eps)
    return _integrate(model, sde, z, sde.T, eps, rtol, atol, h0, max_steps, return_info)


# ---- bits per dimension and dequantization -----------------------------------------------
def dequantization_offset(data_range: str | None) -> float:
    """Bits/dim added to a continuous NLL of uniformly dequantized 8-bit data.

    Integers k in {0..255} become y = (k + u) / 256, u ~ U[0, 1)^D, for "[0,1]" (or
    y' = 2 y - 1 for "[-1,1]"). The bin of k has volume 256^-D in y, so by Jensen
        -log P(k) <= E_u[-log p_y(y)] + D log 256,
    and y' = 2 y - 1 gives p_y = 2^D p_y', hence D log 256 - D log 2 = D log 128.
    Offset in bits/dim: 8 for "[0,1]", 7 for "[-1,1]", 0 for None (continuous data).
    """
    if data_range is None:
        return 0.0
    check_choice("data_range", data_range, DATA_RANGES)
    return 8.0 if data_range == "[0,1]" else 7.0


def bits_per_dim(nll, x_shape_or_D, data_range: str | None = None, offset: float | None = None) -> torch.Tensor:
    """nll (nats per sample) -> bits per dimension: nll / (D log 2) + offset.

    x_shape_or_D: D, or a sample's shape (without the batch), or a batch tensor x whose
    x[0].numel() is D. offset defaults to dequantization_offset(data_range); pass one or
    the other, not both. Returns float64 like nll's shape.
    """
    if isinstance(x_shape_or_D, torch.Tensor):
        if x_shape_or_D.dim() < 2:
            raise ValueError("x_shape_or_D as a tensor must be a batch [B, ...]; pass D or a shape otherwise")
        D = x_shape_or_D[0].numel()
    elif isinstance(x_shape_or_D, (tuple, list, torch.Size)):
        sizes = list(x_shape_or_D)
        if not sizes or any(isinstance(d, bool) or not isinstance(d, int) or d < 1 for d in sizes):
            raise ValueError(f"x_shape_or_D as a shape must be non-empty with positive integer sizes; got {sizes}")
        D = math.prod(sizes)
    else:
        D = check_int("x_shape_or_D", x_shape_or_D, lo=1)
    if offset is not None and data_range is not None:
        raise ValueError("pass data_range or offset, not both")
    if offset is None:
        offset = dequantization_offset(data_range)
    elif isinstance(offset, bool) or not isinstance(offset, (int, float)) or not math.isfinite(offset):
        raise ValueError(f"offset must be a finite number (bits/dim); got {offset!r}")
    nll = torch.as_tensor(nll, dtype=torch.float64)
    return nll / (D * math.log(2.0)) + float(offset)


def dequantize(x: torch.Tensor, seed: int = 0, data_range: str = "[-1,1]", start: int = 0,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Uniformly dequantized 8-bit data: y = (x + u) / 256 for "[0,1]", 2 (x + u) / 256 - 1
    for "[-1,1]", with u ~ U(0, 1) from the counter generator keyed by (seed, start + i):
    sample i gets the same noise in any batch. x: integers in [0, 255] (uint8 or any
    integer dtype), shape [B, ...]. Computed in float64; y stays inside x's bin (strictly
    in float64; a float32 result may round onto the bin's edge).
    """
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch.Tensor of 8-bit integers; got {type(x).__name__}")
    if x.dtype.is_floating_point or x.dtype.is_complex or x.dtype == torch.bool:
        raise ValueError(f"x must be an integer tensor (uint8) with values in [0, 255]; got dtype {x.dtype}")
    if x.dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape [B, ...] with at least one value per sample; got {tuple(x.shape)}")
    if x.numel() and (x.min().item() < 0 or x.max().item() > 255):
        raise ValueError(f"x must hold values in [0, 255]; got [{x.min().item()}, {x.max().item()}]")
    check_choice("data_range", data_range, DATA_RANGES)
    seed = check_int("seed", seed, lo=0, hi=2**64 - 1)
    start = check_int("start", start, lo=0)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"dtype must be a floating-point torch.dtype; got {dtype!r}")
    idx = torch.arange(start, start + x.shape[0], device=x.device)
    u = _noise.uniform(seed, idx, 0, tuple(x.shape[1:]), stream=STREAM_DEQUANT, dtype=torch.float64)
    y = (x.to(torch.float64) + u) / 256.0
    if data_range == "[-1,1]":
        y = 2.0 * y - 1.0
    return y.to(dtype).contiguous()
