"""The op table: one public function per fused op, routed to a backend.

Backends: "torch" (the reference below: plain PyTorch, float64-capable, defines every
result), "native" (the C++/CUDA extension diffcore._C, through diffcore.native) and
"triton" (diffcore.kernels). Each fast backend module exposes

    IMPLS: dict[str, callable]     op name -> implementation with the reference's signature
    def available(device) -> bool  whether it can run on that device here
    DIFFERENTIABLE: set[str]       ops whose implementation supports autograd (optional)

A call that needs gradients (grad mode on and an input requiring grad) goes only to a backend
that lists the op in DIFFERENTIABLE; otherwise the reference, which autograd handles, runs it.

The default order is triton, native, torch on CUDA and native, torch on CPU (Triton runs on
CPU only under TRITON_INTERPRET=1, and only when asked for). `backend=` or the environment
variable DIFFCORE_BACKEND overrides; an explicitly named backend that cannot run raises.

Sampler steps take per-sample coefficients (tensors of shape [B]; diffcore.step_coeffs
computes them from a process) and either an explicit `noise` tensor or the counter
generator's address (seed, sample_idx, step, stream), from which the fused backends draw
the same numbers as diffcore.noise inside the kernel.
"""
from __future__ import annotations

import importlib
import math
import os
import warnings

import torch

from . import noise as _noise
from .validation import check_choice, check_int, check_real, check_tensor

BACKENDS = ("torch", "native", "triton")
_MODULES = {"native": "diffcore.native", "triton": "diffcore.kernels"}
_loaded: dict[str, object] = {}
_warned: set[str] = set()


class BackendUnavailable(RuntimeError, ValueError):
    """An explicitly asked backend cannot run the op here: a RuntimeError (what it always was)
    and a ValueError (a usage error: the `diffcore` command exits 2 with the message)."""


def _backend_module(name: str):
    """The backend's module, or None when it cannot be imported (warned once)."""
    if name not in _loaded:
        try:
            _loaded[name] = importlib.import_module(_MODULES[name])
        except Exception as e:  # a missing triton or a failed build must never break import
            _loaded[name] = None
            if name not in _warned:
                _warned.add(name)
                warnings.warn(f"diffcore: the {name} backend is unavailable ({type(e).__name__}: {e}); "
                              f"using the torch reference", RuntimeWarning, stacklevel=3)
    return _loaded[name]


def _has(name: str, op: str, device: torch.device, needs_grad: bool = False) -> bool:
    mod = _backend_module(name)
    if mod is None or op not in getattr(mod, "IMPLS", {}) or not mod.available(device):
        return False
    return not needs_grad or op in getattr(mod, "DIFFERENTIABLE", ())


def _needs_grad(*tensors) -> bool:
    return torch.is_grad_enabled() and any(isinstance(t, torch.Tensor) and t.requires_grad for t in tensors)


# Under torch.compile the choice is made once at trace time (the backend module may be
# imported there, which dynamo cannot trace): without this, a compiled first call fails.
@torch.compiler.assume_constant_result
def resolve(op: str, device: torch.device, backend: str | None = None, needs_grad: bool = False) -> str:
    """The backend that runs `op` on `device`: explicit > DIFFCORE_BACKEND > fastest present
    (among those that support autograd for it when the call needs gradients)."""
    check_choice("op", op, tuple(REFERENCE))
    asked = backend if backend is not None else (os.environ.get("DIFFCORE_BACKEND") or None)
    if asked is not None:
        check_choice("backend" if backend is not None else "DIFFCORE_BACKEND", asked, BACKENDS + ("auto",))
        if asked == "torch":
            return "torch"
        if asked != "auto":
            if not _has(asked, op, device):
                raise BackendUnavailable(f"backend={asked!r} cannot run {op} on {device.type} here "
                                   f"(not built, not importable, or no such op); use 'torch' or 'auto'")
            if needs_grad and not _has(asked, op, device, True):
                return "torch"  # that backend has no backward for this op: autograd runs the reference
            return asked
    order = ("triton", "native") if device.type == "cuda" else ("native",)
    for name in order:
        if _has(name, op, device, needs_grad):
            return name
    return "torch"


def _impl(op: str, device: torch.device, backend: str | None, *inputs):
    name = resolve(op, device, backend, _needs_grad(*inputs))
    return REFERENCE[op] if name == "torch" else _loaded[name].IMPLS[op]


# ---- shared argument checks ---------------------------------------------------------------
def _tensor(name: str, x, floating: bool = True, min_dim: int = 0) -> torch.Tensor:
    """validation.check_tensor, worded for the ops' per-sample inputs (min_dim 1: [B, ...])."""
    return check_tensor(name, x, floating, min_dim, shape="[B, ...] (one row per sample)")


def _same(name: str, y: torch.Tensor, x: torch.Tensor) -> None:
    _tensor(name, y)
    if y.shape != x.shape:
        raise ValueError(f"{name} must have x's shape {tuple(x.shape)}; got {tuple(y.shape)}")
    if y.device != x.device:
        raise ValueError(f"{name} must be on x's device {x.device}; got {y.device}")


def _per_sample(name: str, c, x: torch.Tensor) -> torch.Tensor:
    """A coefficient as a float tensor [B] on x's device (a Python number is broadcast)."""
    if not isinstance(c, torch.Tensor):
        check_real(name, c, finite=False)  # -inf is a valid log-variance (no noise at t = 0)
    elif c.dtype == torch.bool or c.dtype.is_complex:
        raise ValueError(f"{name} must be a real tensor; got dtype {c.dtype}")
    c = torch.as_tensor(c, device=x.device)
    if not c.dtype.is_floating_point:
        c = c.to(torch.float64 if x.dtype == torch.float64 else torch.float32)
    if c.dim() == 0:
        c = c.expand(x.shape[0])
    if c.shape != (x.shape[0],):
        raise ValueError(f"{name} must be a number or a tensor of shape [B] = [{x.shape[0]}]; got {tuple(c.shape)}")
    return c


def _check_address(x: torch.Tensor, seed, sample_idx, step, stream) -> None:
    """The counter generator's address: seed in [0, 2**64), step and stream in [0, 2**32),
    sample_idx an integer tensor [B]."""
    if seed is None or sample_idx is None:
        raise ValueError("give either noise= (a tensor like x) or seed= and sample_idx= for in-kernel noise")
    check_int("seed", seed, lo=0, hi=2**64 - 1)
    check_int("step", step, lo=0, hi=2**32 - 1)
    check_int("stream", stream, lo=0, hi=2**32 - 1)
    if (not isinstance(sample_idx, torch.Tensor) or sample_idx.shape != (x.shape[0],)
            or sample_idx.dtype.is_floating_point or sample_idx.dtype.is_complex or sample_idx.dtype == torch.bool):
        got = (f"{sample_idx.dtype} {tuple(sample_idx.shape)}" if isinstance(sample_idx, torch.Tensor)
               else type(sample_idx).__name__)
        raise ValueError(f"sample_idx must be an integer tensor of shape [B] = [{x.shape[0]}]; got {got}")


def draw_noise(x: torch.Tensor, noise, seed, sample_idx, step: int, stream: int) -> torch.Tensor:
    """The step's noise: the given tensor, or the counter generator's draw for that address."""
    if noise is not None:
        _same("noise", noise, x)
        return noise
    _check_address(x, seed, sample_idx, step, stream)
    z = _noise.normal(seed, sample_idx.to(x.device), step, x.shape[1:], stream, dtype=torch.float32)
    return z.to(x.dtype)


def _b(c: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return c.reshape(-1, *([1] * (x.dim() - 1)))


# ---- reference implementations -----------------------------------------------------------
def _check_norm_args(x, num_groups, weight, bias, eps, emb):
    _tensor("x", x)
    if x.dim() < 2:
        raise ValueError(f"x must be [N, C, *spatial]; got shape {tuple(x.shape)}")
    C = x.shape[1]
    if isinstance(num_groups, bool) or not isinstance(num_groups, int) or num_groups < 1 or C % num_groups:
        raise ValueError(f"num_groups must be a positive integer dividing C = {C}; got {num_groups!r}")
    for name, p in (("weight", weight), ("bias", bias)):
        if p is not None:
            _tensor(name, p)
            if p.shape != (C,):
                raise ValueError(f"{name} must have shape [C] = [{C}]; got {tuple(p.shape)}")
            if p.device != x.device:
                raise ValueError(f"{name} must be on x's device {x.device}; got {p.device}")
    if emb is not None:
        _tensor("emb", emb)
        if emb.shape != (x.shape[0], C):
            raise ValueError(f"emb must have shape [N, C] = [{x.shape[0]}, {C}]; got {tuple(emb.shape)}")
        if emb.device != x.device:
            raise ValueError(f"emb must be on x's device {x.device}; got {emb.device}")
    if not check_real("eps", eps) > 0:
        raise ValueError(f"eps must be > 0; got {eps}")


def group_norm_silu_reference(x, num_groups, weight=None, bias=None, eps=1e-5, emb=None, silu=True):
    """SiLU(GroupNorm(x + emb[:, :, None, ...])) with float32 (float64 for float64) statistics;
    the output has x's dtype and memory format."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    h = x.to(acc)
    if emb is not None:
        h = h + emb.to(acc).reshape(*emb.shape, *([1] * (x.dim() - 2)))
    y = torch.nn.functional.group_norm(h, num_groups, None if weight is None else weight.to(acc),
                                       None if bias is None else bias.to(acc), eps)
    if silu:
        y = torch.nn.functional.silu(y)
    return y.to(x.dtype)


def residual_add_reference(skip, h, scale=1.0):
    """(skip + h) * scale, accumulated in float32 at least."""
    acc = torch.float64 if h.dtype == torch.float64 else torch.float32
    return ((skip.to(acc) + h.to(acc)) * scale).to(h.dtype)


def affine_step_reference(x, score, a, b, std, z):
    """x_mean = a x + b score; x = x_mean + std z  (a, b, std: [B])."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    x_mean = _b(a, x).to(acc) * x.to(acc) + _b(b, x).to(acc) * score.to(acc)
    out = x_mean + _b(std, x).to(acc) * z.to(acc)
    return out.to(x.dtype), x_mean.to(x.dtype)


def heun_step_reference(x, score1, x_pred, score2, a, b, c, d):
    """x_next = a x + b score1 + c x_pred + d score2 (the trapezoid of a linear-drift ODE)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    out = (_b(a, x).to(acc) * x.to(acc) + _b(b, x).to(acc) * score1.to(acc)
           + _b(c, x).to(acc) * x_pred.to(acc) + _b(d, x).to(acc) * score2.to(acc))
    return out.to(x.dtype)


def ddpm_step_reference(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var,
                        z, clip_denoised=False, v=None, log_var_max=None):
    """DDPM ancestral step: x0 = sqrt(1/abar) x - sqrt(1/abar - 1) eps (clipped to [-1, 1] if
    asked); mean = coef_x0 x0 + coef_xt x; x_prev = mean + exp(log_var / 2) z.

    log_var: [B] (fixed variances; 0 contribution where the caller zeroed it at t = 0 by
    passing -inf) or, with v (learned_range), the minimum log-variance and log_var_max the
    maximum: log_var = (v + 1)/2 * max + (1 - v)/2 * min per element.
    Returns (x_prev, mean, pred_x0).
    """
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xa, ea = x.to(acc), eps.to(acc)
    x0 = _b(sqrt_recip_abar, x).to(acc) * xa - _b(sqrt_recipm1_abar, x).to(acc) * ea
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    mean = _b(coef_x0, x).to(acc) * x0 + _b(coef_xt, x).to(acc) * xa
    lv = _b(log_var, x).to(acc)
    if v is not None:
        frac = (v.to(acc) + 1) / 2
        lv = frac * _b(log_var_max, x).to(acc) + (1 - frac) * lv
    out = mean + torch.exp(0.5 * lv) * z.to(acc)
    return out.to(x.dtype), mean.to(x.dtype), x0.to(x.dtype)


def ddim_step_reference(x, eps, abar_t, abar_prev, eta, z, clip_denoised=False):
    """DDIM (eq. 12): x0 from eps; x_prev = sqrt(abar_prev) x0 + sqrt(1 - abar_prev - std^2) eps
    + std z with std = eta sqrt((1 - abar_prev)/(1 - abar_t) (1 - abar_t/abar_prev)).
    Returns (x_prev, pred_x0)."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    xa, ea = x.to(acc), eps.to(acc)
    at, ap = _b(abar_t, x).to(acc), _b(abar_prev, x).to(acc)
    x0 = (xa - (1 - at).sqrt() * ea) / at.sqrt()
    if clip_denoised:
        x0 = x0.clamp(-1, 1)
    std = _b(eta, x).to(acc) * ((1 - ap) / (1 - at) * (1 - at / ap)).sqrt()
    out = ap.sqrt() * x0 + (1 - ap - std ** 2).clamp(min=0).sqrt() * ea + std * z.to(acc)
    return out.to(x.dtype), x0.to(x.dtype)


def langevin_step_reference(x, score, alpha, snr, z, norm="per_sample"):
    """Langevin corrector: step = 2 alpha (snr |z| / |score|)^2 with norms per sample or
    batch-averaged (score_sde); x_mean = x + step score; x = x_mean + sqrt(2 step) z."""
    acc = torch.float64 if x.dtype == torch.float64 else torch.float32
    sa, za = score.to(acc), z.to(acc)
    flat = (x.shape[0], math.prod(x.shape[1:]))  # [B] (one value per sample) and B = 0 included
    g = torch.linalg.vector_norm(sa.reshape(flat), dim=1)
    n = torch.linalg.vector_norm(za.reshape(flat), dim=1)
    if norm == "batch":
        g, n = g.mean().expand_as(g), n.mean().expand_as(n)
    step = 2 * alpha.to(acc) * (snr * n / g) ** 2
    x_mean = x.to(acc) + _b(step, x) * sa
    out = x_mean + _b((2 * step).sqrt(), x) * za
    return out.to(x.dtype), x_mean.to(x.dtype)


REFERENCE = {
    "group_norm_silu": group_norm_silu_reference,
    "residual_add": residual_add_reference,
    "affine_step": affine_step_reference,
    "heun_step": heun_step_reference,
    "ddpm_step": ddpm_step_reference,
    "ddim_step": ddim_step_reference,
    "langevin_step": langevin_step_reference,
}

# Fast backends receive noise as (z tensor) or, for in-kernel draws, the generator address.
# Their IMPLS entries for step ops take keyword `noise_address=(seed, sample_idx, step, stream)`
# when z is None, and must produce diffcore.noise.normal's numbers for it.


def _step_noise(op, x, noise, seed, sample_idx, step, stream, backend, *inputs):
    """(backend name, z, address): the torch reference always materialises z."""
    name = resolve(op, x.device, backend, _needs_grad(x, *inputs))
    if noise is not None or name == "torch":
        return name, draw_noise(x, noise, seed, sample_idx, step, stream), None
    _check_address(x, seed, sample_idx, step, stream)
    return name, None, (int(seed), sample_idx.to(x.device), int(step), int(stream))


def _call_step(op, name, args, z, address, **kw):
    if name == "torch":
        return REFERENCE[op](*args, z, **kw)
    return _loaded[name].IMPLS[op](*args, z, noise_address=address, **kw)


# ---- public ops ----------------------------------------------------------------------------
def group_norm_silu(x, num_groups, weight=None, bias=None, eps=1e-5, emb=None, silu=True, *, backend=None):
    """SiLU(GroupNorm(x + emb)) in one pass (emb: [N, C], added before the statistics).
    silu=False gives plain GroupNorm. Differentiable on every backend."""
    _check_norm_args(x, num_groups, weight, bias, eps, emb)
    impl = _impl("group_norm_silu", x.device, backend, x, weight, bias, emb)
    return impl(x, num_groups, weight, bias, eps, emb, silu)


def residual_add(skip, h, scale=1.0, *, backend=None):
    """(skip + h) * scale: the residual block's epilogue (scale 1/sqrt(2) for skip rescaling)."""
    _tensor("h", h)
    _same("skip", skip, h)
    scale = check_real("scale", scale)
    return _impl("residual_add", h.device, backend, skip, h)(skip, h, scale)


def affine_step(x, score, a, b, std, *, noise=None, seed=None, sample_idx=None, step=0, stream=0, backend=None):
    """x_mean = a x + b score, x = x_mean + std z: Euler-Maruyama, reverse-diffusion and
    ancestral predictors of every SDE, and the probability-flow Euler step (std = 0).
    Returns (x, x_mean)."""
    _tensor("x", x, min_dim=1)
    _same("score", score, x)
    a, b, std = (_per_sample(n, c, x) for n, c in (("a", a), ("b", b), ("std", std)))
    name, z, addr = _step_noise("affine_step", x, noise, seed, sample_idx, step, stream, backend, score, a, b, std)
    return _call_step("affine_step", name, (x, score, a, b, std), z, addr)


def heun_step(x, score1, x_pred, score2, a, b, c, d, *, backend=None):
    """x_next = a x + b score1 + c x_pred + d score2: Heun's second stage for an ODE whose drift
    is linear in x and the score (step_coeffs.heun gives a, b, c, d)."""
    _tensor("x", x, min_dim=1)
    for n, y in (("score1", score1), ("x_pred", x_pred), ("score2", score2)):
        _same(n, y, x)
    co = [_per_sample(n, v, x) for n, v in (("a", a), ("b", b), ("c", c), ("d", d))]
    return _impl("heun_step", x.device, backend, x, score1, x_pred, score2)(x, score1, x_pred, score2, *co)


def _ddpm_args(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, v, log_var_max):
    """ddpm_step's checked arguments: (coefficient list, log_var_max)."""
    _tensor("x", x, min_dim=1)
    _same("eps", eps, x)
    co = [_per_sample(n, c, x) for n, c in (("sqrt_recip_abar", sqrt_recip_abar),
                                              ("sqrt_recipm1_abar", sqrt_recipm1_abar),
                                              ("coef_x0", coef_x0), ("coef_xt", coef_xt), ("log_var", log_var))]
    if v is not None:
        _same("v", v, x)
        if log_var_max is None:
            raise ValueError("v (learned_range) needs log_var_max: the per-sample log beta_t")
        log_var_max = _per_sample("log_var_max", log_var_max, x)
    return co, log_var_max


def ddpm_step(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, *,
              clip_denoised=False, v=None, log_var_max=None,
              noise=None, seed=None, sample_idx=None, step=0, stream=0, backend=None):
    """DDPM ancestral step with fixed (log_var [B]) or learned-range (v like x, log_var and
    log_var_max [B]) variance; see ddpm_step_reference. Returns (x_prev, mean, pred_x0)."""
    co, log_var_max = _ddpm_args(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, v,
                                 log_var_max)
    name, z, addr = _step_noise("ddpm_step", x, noise, seed, sample_idx, step, stream, backend, eps, v)
    return _call_step("ddpm_step", name, (x, eps, *co), z, addr, clip_denoised=bool(clip_denoised),
                      v=v, log_var_max=log_var_max)


def ddpm_step_(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, *,
               clip_denoised=False, v=None, log_var_max=None,
               noise=None, seed=None, sample_idx=None, step=0, stream=0, backend=None):
    """ddpm_step in place: x becomes x_prev (the same numbers as ddpm_step's first output) and is
    returned; no mean or pred_x0 is written. This is the step a sampling loop runs: on the native
    backend it streams x and eps only, against five arrays out of place. Not differentiable."""
    co, log_var_max = _ddpm_args(x, eps, sqrt_recip_abar, sqrt_recipm1_abar, coef_x0, coef_xt, log_var, v,
                                 log_var_max)
    if _needs_grad(x, eps, v):
        raise ValueError("ddpm_step_ updates x in place and is not differentiable; use ddpm_step for gradients "
                         "(or run under torch.no_grad())")
    name, z, addr = _step_noise("ddpm_step", x, noise, seed, sample_idx, step, stream, backend, eps, v)
    kw = dict(clip_denoised=bool(clip_denoised), v=v, log_var_max=log_var_max)
    impl = None if name == "torch" else getattr(_loaded[name], "INPLACE", {}).get("ddpm_step_")
    if impl is None:
        return x.copy_(_call_step("ddpm_step", name, (x, eps, *co), z, addr, **kw)[0])
    return impl(x, eps, *co, z, noise_address=addr, **kw)


def ddim_step(x, eps, abar_t, abar_prev, eta, *, clip_denoised=False,
              noise=None, seed=None, sample_idx=None, step=0, stream=0, backend=None):
    """DDIM step (eta = 0 needs no noise: pass noise=torch.zeros_like(x) or a seed).
    Returns (x_prev, pred_x0)."""
    _tensor("x", x, min_dim=1)
    _same("eps", eps, x)
    co = [_per_sample(n, c, x) for n, c in (("abar_t", abar_t), ("abar_prev", abar_prev), ("eta", eta))]
    name, z, addr = _step_noise("ddim_step", x, noise, seed, sample_idx, step, stream, backend, eps)
    return _call_step("ddim_step", name, (x, eps, *co), z, addr, clip_denoised=bool(clip_denoised))


def langevin_step(x, score, alpha, snr, *, norm="per_sample",
                  noise=None, seed=None, sample_idx=None, step=0, stream=0, backend=None):
    """Langevin corrector step with its norm reductions fused. Returns (x, x_mean)."""
    _tensor("x", x, min_dim=1)
    _same("score", score, x)
    check_choice("norm", norm, ("per_sample", "batch"))
    alpha = _per_sample("alpha", alpha, x)
    if not check_real("snr", snr) > 0:
        raise ValueError(f"snr must be > 0; got {snr}")
    name, z, addr = _step_noise("langevin_step", x, noise, seed, sample_idx, step, stream, backend, score)
    return _call_step("langevin_step", name, (x, score, alpha, float(snr)), z, addr, norm=norm)
