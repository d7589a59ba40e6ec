"""Fused step plans: each sampling method as one fixed step function over diffcore.ops.

A plan splits a method into the parts the engine needs to run it fast:
- `init(noise, x_init)`: the start state (the reference's, so samples start identically);
- `inputs(k)`: step k's per-step tensors, each [B] (the model's t, the op's coefficients);
- `draws(k)`: the noise addresses (step, stream) step k consumes, in order;
- `step(x, inp, noises)`: the step itself, (x, x_mean) out; `noises` holds one keyword set
  per draw, either {"noise": z} or the generator address for in-kernel noise;
- `finish(x, x_mean)`: what the last step hands back (x_mean when the method denoises).
Only `inputs` and the noise change from step to step, so the engine can replay one step
(eagerly, or captured once as a CUDA graph) with new inputs.

Each plan computes exactly its reference sampler's formulas (diffcore.samplers), with the
coefficients from diffcore.step_coeffs; tests compare the two on every method.
"""
from __future__ import annotations

import torch

from . import noise as _noise
from . import ops
from . import parameterization as P
from . import step_coeffs as C
from .discrete import DDPM, NCSN
from .samplers import ancestral as _ancestral
from .samplers import ddim as _ddim
from .samplers import pc as _pc
from .samplers.common import call_model, initial_state, lowest_noise_time, require
from .sde import SDE
from .validation import check_choice, check_int, check_positive


def _rows(d: dict, B: int, device) -> dict:
    """Coefficients [1] or [B] -> contiguous float64 [B] on device (the ops cast them)."""
    return {k: v.to(device=device, dtype=torch.float64).expand(B).contiguous() for k, v in d.items()}


class Plan:
    """Base: subclasses set self.n_steps and self.nfe_per_step and implement the parts."""

    denoise_with_mean = False
    final_nfe = 0  # model calls in finish() (a final denoising step)
    time_dtype = torch.float32  # continuous times for the model; the engine sets float64 for float64 state

    def __init__(self, model, process, shape, backend):
        self.model, self.process, self.shape, self.backend = model, process, tuple(shape), backend

    def call(self, x, t):
        # a channels_last network hands back NHWC; the ops want x's layout
        return call_model(self.model, x, t).contiguous()

    def init(self, noise, x_init):
        return initial_state(self.process, noise, x_init)

    def draws(self, k):
        return [(k, _noise.STREAM_STEP)]

    def finish(self, x, x_mean):
        return x_mean if self.denoise_with_mean else x


class AncestralPlan(Plan):
    """DDPM ancestral sampling (three variances, clipping, respacing) with ops.ddpm_step_."""

    def __init__(self, model, process, shape, backend, steps, clip_denoised=False, spacing="leading", timesteps=None):
        require("ancestral", process, DDPM, "a DDPM process")
        super().__init__(model, process, shape, backend)
        self.chain = _ancestral.chain_for(process, steps, spacing, timesteps)
        self.clip = bool(clip_denoised)
        self.n_steps, self.nfe_per_step = self.chain.T, 1

    def init(self, noise, x_init):
        return initial_state(self.chain, noise, x_init)

    def inputs(self, k, B, device):
        i = self.chain.T - 1 - k
        t = torch.full((1,), i, dtype=torch.int64)
        inp = _rows(C.ddpm(self.chain, t), B, device)
        inp["t"] = self.chain.timestep_map[t].expand(B).to(device)
        return inp

    def step(self, x, inp, noises):
        eps, v = self.chain.split_output(self.call(x, inp["t"]), x)
        kw = {k: inp[k] for k in ("sqrt_recip_abar", "sqrt_recipm1_abar", "coef_x0", "coef_xt", "log_var")}
        # in place: the engine owns x (initial_state clones x_init), and ancestral sampling
        # returns x itself, never the mean, so the step streams two arrays instead of five
        x = ops.ddpm_step_(x, eps, **kw, clip_denoised=self.clip, v=v, log_var_max=inp.get("log_var_max"),
                           backend=self.backend, **noises[0])
        return x, x


class DDIMPlan(Plan):
    def __init__(self, model, process, shape, backend, steps, eta=0.0, clip_denoised=False, spacing="leading",
                 timesteps=None):
        require("ddim", process, DDPM, "a DDPM process")
        super().__init__(model, process, shape, backend)
        self.eta = _ddim.check_eta(eta)
        self.ts = _ddim.schedule(process, steps, spacing, timesteps)
        self.clip = bool(clip_denoised)
        self.n_steps, self.nfe_per_step = self.ts.numel(), 1

    def inputs(self, k, B, device):
        i = self.ts.numel() - 1 - k
        t = self.ts[i:i + 1]
        t_prev = self.ts[i - 1:i] if i > 0 else torch.tensor([-1])
        inp = _rows(C.ddim(self.process, t, t_prev, self.eta), B, device)
        inp["t"] = self.process.timestep_map[t].expand(B).to(device)
        return inp

    def draws(self, k):
        return [(k, _noise.STREAM_STEP)] if self.eta > 0 else []

    def step(self, x, inp, noises):
        eps, _ = self.process.split_output(self.call(x, inp["t"]), x)
        noise = noises[0] if noises else {"noise": torch.zeros_like(x)}
        x_prev, x0 = ops.ddim_step(x, eps, inp["abar_t"], inp["abar_prev"], inp["eta"],
                                   clip_denoised=self.clip, backend=self.backend, **noise)
        return x_prev, x0


class PCPlan(Plan):
    """Predictor-corrector (score_sde Algorithms 1-3): one predictor op and `corrector_steps`
    corrector ops per step, each with its own noise stream."""

    denoise_with_mean = True

    def __init__(self, model, process, shape, backend, steps, predictor="reverse_diffusion", corrector="langevin",
                 snr=0.16, corrector_steps=1, denoise=True, eps=None, norm="per_sample", init="prior"):
        self.snr, corrector_steps, eps = _pc.check_run_options(process, predictor, corrector, snr, corrector_steps,
                                                               eps, norm)
        self.n_corr = corrector_steps if corrector != "none" else 0
        sde = process.with_steps(check_int("steps", steps, lo=1)) if steps is not None else process
        super().__init__(model, sde, shape, backend)
        self.predictor, self.corrector, self.norm, self.init_kind = predictor, corrector, norm, init
        self.denoise_with_mean = bool(denoise)
        self.grid = torch.linspace(sde.T, eps, sde.N, dtype=torch.float64)
        self.dt = -sde.T / sde.N
        self.n_steps = sde.N
        self.nfe_per_step = self.n_corr + (predictor != "none")

    def init(self, noise, x_init):
        return initial_state(self.process, noise, x_init, self.init_kind)

    def inputs(self, k, B, device):
        sde = self.process
        t = self.grid[k:k + 1]
        inp = {}
        if self.corrector == "langevin":
            inp["alpha"] = C.langevin_alpha(sde, t)
        elif self.corrector == "ald":  # x + step score + sqrt(2 step) z, step = 2 alpha (snr std)^2
            _, std = sde.marginal_coeffs(t)
            step = 2 * C.langevin_alpha(sde, t) * (self.snr * std) ** 2
            inp.update(ald_b=step, ald_std=(2 * step).sqrt())
        if self.predictor != "none":
            kind = self.predictor
            pc = C.predictor(sde, t, kind, self.dt if kind == "euler_maruyama" else None)
            inp.update({f"p_{k2}": v for k2, v in pc.items()})
        inp = _rows(inp, B, device)
        inp["t"] = t.to(device=device, dtype=self.time_dtype).expand(B)
        return inp

    def draws(self, k):
        d = [(k, _noise.STREAM_CORRECTOR + j) for j in range(self.n_corr)]
        return d + ([(k, _noise.STREAM_STEP)] if self.predictor != "none" else [])

    def step(self, x, inp, noises):
        x_mean = x
        t = inp["t"]
        for j in range(self.n_corr):
            score = self.call(x, t)
            if self.corrector == "langevin":
                x, x_mean = ops.langevin_step(x, score, inp["alpha"], self.snr, norm=self.norm,
                                              backend=self.backend, **noises[j])
            else:
                one = torch.ones_like(inp["ald_b"])
                x, x_mean = ops.affine_step(x, score, one, inp["ald_b"], inp["ald_std"], backend=self.backend, **noises[j])
        if self.predictor != "none":
            score = self.call(x, t)
            x, x_mean = ops.affine_step(x, score, inp["p_a"], inp["p_b"], inp["p_std"], backend=self.backend,
                                        **noises[self.n_corr])
        return x, x_mean


class ODEPlan(Plan):
    """Probability-flow ODE with fixed-step Euler (one affine op) or Heun (an affine op and a
    heun op), then score_sde's denoising step at eps (the reverse-diffusion mean)."""

    def __init__(self, model, process, shape, backend, steps, solver="heun", denoise=True, eps=None, init="prior"):
        require("ode", process, SDE, "a VESDE, VPSDE or SubVPSDE")
        check_choice("solver", solver, ("euler", "heun"))
        super().__init__(model, process, shape, backend)
        self.eps = process.check_eps(eps)
        steps = check_int("steps", 100 if steps is None else steps, lo=1)
        self.grid = torch.linspace(process.T, self.eps, steps + 1, dtype=torch.float64)
        self.solver, self.denoise, self.init_kind = solver, bool(denoise), init
        self.n_steps, self.nfe_per_step = steps, 1 if solver == "euler" else 2
        self.final_nfe = int(self.denoise)

    def init(self, noise, x_init):
        return initial_state(self.process, noise, x_init, self.init_kind)

    def draws(self, k):
        return []

    def inputs(self, k, B, device):
        t = self.grid[k:k + 1]
        h = (self.grid[k + 1] - self.grid[k]).item()
        tdt = self.time_dtype
        if self.solver == "euler":
            inp = _rows(C.predictor(self.process, t, "probability_flow", h), B, device)
        else:
            s1, s2 = C.heun(self.process, t, h)
            inp = _rows({**{f"e_{k2}": v for k2, v in s1.items()}, **s2}, B, device)
            inp["t2"] = (t + h).to(device=device, dtype=tdt).expand(B)
        inp["t"] = t.to(device=device, dtype=tdt).expand(B)
        return inp

    def step(self, x, inp, noises):
        zero = {"noise": torch.zeros_like(x)}
        s1 = self.call(x, inp["t"])
        if self.solver == "euler":
            return ops.affine_step(x, s1, inp["a"], inp["b"], inp["std"], backend=self.backend, **zero)
        x_pred, _ = ops.affine_step(x, s1, inp["e_a"], inp["e_b"], inp["e_std"], backend=self.backend, **zero)
        s2 = self.call(x_pred, inp["t2"])
        x = ops.heun_step(x, s1, x_pred, s2, inp["a"], inp["b"], inp["c"], inp["d"], backend=self.backend)
        return x, x

    def finish(self, x, x_mean):
        if not self.denoise:
            return x
        t = torch.full((x.shape[0],), self.eps, dtype=self.time_dtype, device=x.device)
        co = _rows(C.predictor(self.process, t[:1].double(), "reverse_diffusion"), x.shape[0], x.device)
        _, mean = ops.affine_step(x, self.call(x, t), co["a"], co["b"], co["std"], backend=self.backend,
                                  noise=torch.zeros_like(x))
        return mean


class LangevinPlan(Plan):
    """Plain Langevin at the lowest noise level, or annealed Langevin over an NCSN ladder:
    x + (alpha / 2) score + sqrt(alpha) z as one affine op; NCSNv2's final denoising step."""

    def __init__(self, model, process, shape, backend, steps, annealed, step_size=1e-3, eps=2e-5, denoise=True,
                 init="uniform", init_range=(-1.0, 1.0)):
        super().__init__(model, process, shape, backend)
        self.annealed = annealed
        self.init_kind, self.init_range = init, init_range
        if annealed:
            require("annealed_langevin", process, NCSN, "an NCSN process (a sigma ladder)")
            self.per_level = check_int("steps", 100 if steps is None else steps, lo=1)
            eps = check_positive("eps", eps)
            sigmas = process.sigmas
            self.sigma_of_step = sigmas.repeat_interleave(self.per_level)
            self.alpha_of_step = eps * (self.sigma_of_step / process.sigma_min) ** 2
            self.denoise = bool(denoise)
        else:
            steps = check_int("steps", 1000 if steps is None else steps, lo=1)
            step_size = check_positive("step_size", step_size)
            self.alpha_of_step = torch.full((steps,), step_size, dtype=torch.float64)
            self.denoise = False
        self.n_steps, self.nfe_per_step = self.alpha_of_step.numel(), 1
        self.final_nfe = int(self.denoise)

    def init(self, noise, x_init):
        return initial_state(self.process, noise, x_init, self.init_kind, self.init_range)

    def score(self, x, t):
        out = self.call(x, t)
        if isinstance(self.process, DDPM):
            eps, _ = self.process.split_output(out, x)
            _, s = self.process.marginal_coeffs(t)
            return P.score_from_eps(eps, P.bcast(s.to(x.dtype), x))
        return out

    def inputs(self, k, B, device):
        alpha = self.alpha_of_step[k:k + 1]
        inp = _rows({"a": torch.ones(1), "b": alpha / 2, "std": alpha.sqrt()}, B, device)
        if self.annealed:
            inp["t"] = self.sigma_of_step[k:k + 1].to(device=device, dtype=self.time_dtype).expand(B)
        else:
            inp["t"] = lowest_noise_time(self.process, torch.empty(B, device=device, dtype=self.time_dtype))
        return inp

    def step(self, x, inp, noises):
        return ops.affine_step(x, self.score(x, inp["t"]), inp["a"], inp["b"], inp["std"], backend=self.backend,
                               **noises[0])

    def finish(self, x, x_mean):
        if not self.denoise:
            return x
        s = self.process.sigma_min
        t = torch.full((x.shape[0],), s, dtype=self.time_dtype, device=x.device)
        return P.x0_from_score(x, self.score(x, t), 1.0, s)


# method -> how to build its plan; options a plan does not take fall back to the reference
def build(method, model, process, shape, steps, backend, options):
    """The fused plan for (method, options), or None when only the reference sampler can run it
    (rk45's per-sample adaptive steps; controllable generation's observation)."""
    if options.get("observation") is not None:
        return None
    opts = {k: v for k, v in options.items() if k != "observation"}
    if method == "ancestral":
        return AncestralPlan(model, process, shape, backend, steps, **opts)
    if method == "ddim":
        return DDIMPlan(model, process, shape, backend, steps, **opts)
    if method == "pc":
        return PCPlan(model, process, shape, backend, steps, **opts)
    if method == "ode":
        check_choice("solver", opts.get("solver", "rk45"), ("euler", "heun", "rk45"))
        if opts.get("solver", "rk45") == "rk45" or any(k in opts for k in ("rtol", "atol", "h0")):
            return None
        return ODEPlan(model, process, shape, backend, steps, **opts)
    if method in ("langevin", "annealed_langevin"):
        return LangevinPlan(model, process, shape, backend, steps, method == "annealed_langevin", **opts)
    return None
