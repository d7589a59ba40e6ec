"""The native backend (diffcore._C) against the libraries people use today, side by side:

(a) the VP reverse SDE of the 2-D mixture (weights 0.8 / 0.2) with its exact score,
    Euler-Maruyama: diffcore.trajectory.integrate_gmm (all steps of all samples in one op)
    vs torchsde.sdeint(method="euler") vs an eager PyTorch loop; each must recover the
    weights within +-0.01;
(b) one DDPM ancestral step on (256, 3, 32, 32) fp32 with its noise: diffcore.ops.ddpm_step
    (native, noise drawn in-op, three outputs) and ddpm_step_ (in place: the step the engine's
    ancestral loop runs) vs diffusers' DDPMScheduler.step;
(c) GroupNorm(32) + SiLU on (64, 128, 32, 32) fp32: native vs torch.compile of the same
    function vs eager, with GB/s and % of a copy of the same bytes measured in the run;
(d) the same in bfloat16 (16-bit storage, float32 arithmetic), NCHW and channels_last (the
    layout of an accelerated U-Net under bf16 autocast): native vs compile vs eager in bf16, and
    vs the float32 round trip (diffcore.ops' reference, what 16-bit input ran before).

Timings are medians over repeats interleaved across the contenders (each round times every
contender once), after a warm-up; every contender runs with the same torch thread count.
The native CPU ops take their large outputs from the extension's buffer pool (csrc/cpu/pool.h);
run with DIFFCORE_CPU_POOL_MB=0 to time them on plain torch allocations (the header line says
which).

    python benchmarks/sde.py [--quick] [--threads N] [--cases abcd]
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved, print_table, write_results  # noqa: E402

import diffcore  # noqa: E402
from diffcore import ops, schedules, step_coeffs  # noqa: E402


def row(case, impl, t, **extra):
    """One table row; case-specific figures go into `note` (every row has the same keys)."""
    note = ", ".join(f"{k}={v}" for k, v in extra.items())
    return {"case": case, "impl": impl, "median_ms": round(t["median_s"] * 1e3, 2),
            "q20_ms": round(t["q20_s"] * 1e3, 2), "q80_ms": round(t["q80_s"] * 1e3, 2), "note": note}


# ---- (a) reverse SDE ------------------------------------------------------------------------
def reverse_sde(n: int, steps: int, repeats: int, rows: list, ratios: dict) -> None:
    import torchsde
    from diffcore.trajectory import integrate_gmm

    gm = diffcore.GaussianMixture([[4.0, 0.0], [-4.0, 0.0]], 0.5, [0.8, 0.2])
    sde = diffcore.VPSDE(N=steps)
    eps = sde.eps
    model = gm.model(sde)
    weights = {}

    def native():
        x, _ = integrate_gmm(gm, sde, n, method="pc", steps=steps, predictor="euler_maruyama", corrector="none",
                             seed=0)
        weights["native"] = x
        return x

    class Reverse(torch.nn.Module):   # torchsde time s = T - t runs forward
        noise_type, sde_type = "diagonal", "ito"

        def f(self, s, y):
            t = (sde.T - s).expand(y.shape[0])
            drift, _ = sde.reverse_sde(y, t, model(y, t))
            return -drift

        def g(self, s, y):
            t = (sde.T - s).expand(y.shape[0])
            return sde.diffusion(t)[:, None].expand_as(y)

    rev = Reverse()
    ts = torch.tensor([0.0, sde.T - eps])
    dt = (sde.T - eps) / steps

    def run_torchsde():
        torch.manual_seed(0)
        y0 = torch.randn(n, 2) * sde.prior_std
        with torch.no_grad():
            x = torchsde.sdeint(rev, y0, ts, method="euler", dt=dt)[-1]
        weights["torchsde"] = x
        return x

    grid = torch.linspace(sde.T, eps, steps)
    h = -sde.T / steps

    def eager():
        torch.manual_seed(0)
        x = torch.randn(n, 2) * sde.prior_std
        with torch.no_grad():
            for i in range(steps):
                t = grid[i].expand(n).float()
                drift, g = sde.reverse_sde(x, t, model(x, t))
                x = x + drift * h + g[:, None] * math.sqrt(-h) * torch.randn_like(x)
        weights["eager"] = x
        return x

    t = interleaved({"native": native, "torchsde": run_torchsde, "eager": eager}, repeats)
    case = f"VP reverse SDE, EM, 2-D GMM, n={n}, steps={steps}"
    for k in ("native", "torchsde", "eager"):
        w0 = (gm.assign(weights[k]) == 0).double().mean().item()
        ok = abs(w0 - 0.8) <= 0.01
        print(f"  {k:9s} weight of the 0.8 component: {w0:.4f} ({'within' if ok else 'OUTSIDE'} +-0.01)")
        rows.append(row(case, k, t[k], weight0=round(w0, 4), weight_ok=ok,
                        sample_steps_per_s=f"{n * steps / t[k]['median_s']:.3g}"))
    ratios["sde_native_vs_torchsde"] = t["torchsde"]["median_s"] / t["native"]["median_s"]
    ratios["sde_native_vs_eager_loop"] = t["eager"]["median_s"] / t["native"]["median_s"]


# ---- (b) DDPM step ---------------------------------------------------------------------------
def ddpm_step(repeats: int, rows: list, ratios: dict) -> None:
    from diffusers import DDPMScheduler

    shape = (256, 3, 32, 32)
    g = torch.Generator().manual_seed(0)
    x, eps = torch.randn(*shape, generator=g), torch.randn(*shape, generator=g)
    proc = diffcore.DDPM(schedules.linear_betas(1000))
    tt = torch.full((shape[0],), 500)
    kw = step_coeffs.ddpm(proc, tt)
    idx = torch.arange(shape[0])
    sched = DDPMScheduler(num_train_timesteps=1000, beta_schedule="linear", clip_sample=True)
    gen = torch.Generator().manual_seed(0)

    def native():
        return ops.ddpm_step(x, eps, **kw, clip_denoised=True, seed=0, sample_idx=idx, step=500, backend="native")

    state = x.clone()   # the in-place step updates a sampler's state: here the same step, over and over

    def native_inplace():
        return ops.ddpm_step_(state, eps, **kw, clip_denoised=True, seed=0, sample_idx=idx, step=500,
                              backend="native")

    def diffusers_step():
        return sched.step(eps, 500, x, generator=gen)

    x_prev, mean, x0 = native()
    same = torch.equal(ops.ddpm_step_(x.clone(), eps, **kw, clip_denoised=True, seed=0, sample_idx=idx, step=500,
                                      backend="native"), x_prev)
    ref = diffusers_step()
    agree = (x0 - ref.pred_original_sample).abs().max().item()
    t = interleaved({"native": native, "native_inplace": native_inplace, "diffusers": diffusers_step}, repeats)
    case = f"DDPM ancestral step {tuple(shape)} fp32 (+ noise), clip"
    names = (("native", "diffcore native ddpm_step (in-op Philox noise; x, mean, pred_x0)"),
             ("native_inplace", "diffcore native ddpm_step_ (in place, as the engine runs it)"),
             ("diffusers", "DDPMScheduler.step (prev_sample, pred_original_sample)"))
    for k, name in names:
        rows.append(row(case, name, t[k], pred_x0_max_diff=f"{agree:.1e}", inplace_equals_out_of_place=same))
    print(f"  DDPM step: pred_x0 native vs diffusers max |diff| = {agree:.2e}; in place == out of place: {same}")
    if not same:
        raise SystemExit("ddpm_step_ differs from ddpm_step's x_prev")
    ratios["ddpm_step_native_vs_diffusers"] = t["diffusers"]["median_s"] / t["native"]["median_s"]
    ratios["ddpm_step_inplace_vs_diffusers"] = t["diffusers"]["median_s"] / t["native_inplace"]["median_s"]


# ---- (c) GroupNorm + SiLU ---------------------------------------------------------------------
def group_norm(repeats: int, rows: list, ratios: dict, quick: bool, dtype=torch.float32,
               channels_last: bool = False) -> None:
    from diffcore import native

    shape = (16, 128, 32, 32) if quick else (64, 128, 32, 32)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(*shape, generator=g).to(dtype)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    w, b = torch.randn(shape[1], generator=g), torch.randn(shape[1], generator=g)

    def f(x, w, b):   # torch's own op in x's dtype (parameters cast to it, as a bf16 module holds them)
        return torch.nn.functional.silu(torch.nn.functional.group_norm(x, 32, w.to(x.dtype), b.to(x.dtype), 1e-5))

    compiled = torch.compile(f)
    out = torch.empty_like(x)
    fns = {"native": lambda: native.group_norm_silu(x, 32, w, b, 1e-5, None, True),
           "compile": lambda: compiled(x, w, b), "eager": lambda: f(x, w, b), "copy": lambda: out.copy_(x)}
    if dtype != torch.float32:   # what 16-bit input ran before the native 16-bit op: the float32 round trip
        from diffcore.ops import group_norm_silu_reference
        fns["reference"] = lambda: group_norm_silu_reference(x, 32, w, b, 1e-5, None, True)
    with torch.no_grad():
        err = (fns["native"]().double() - f(x.double(), w.double(), b.double())).abs().max().item()
        fns["compile"]()   # compile outside the timing
        t = interleaved(fns, repeats, warmup=2)
    nbytes = 2 * x.numel() * x.element_size()   # one read + one write
    copy_gbs = nbytes / t["copy"]["median_s"] / 1e9
    tag = {torch.float32: "fp32", torch.bfloat16: "bf16"}[dtype] + (" channels_last" if channels_last else "")
    case = f"GroupNorm(32)+SiLU {tuple(shape)} {tag}"
    for k, name in (("native", "diffcore native"), ("compile", "torch.compile"), ("eager", "eager"),
                    ("reference", "float32 round trip (the 16-bit path before)"), ("copy", "copy (same bytes)")):
        if k not in t:
            continue
        gbs = nbytes / t[k]["median_s"] / 1e9
        rows.append(row(case, name, t[k], GB_s=round(gbs, 1), pct_of_copy=round(100 * gbs / copy_gbs)))
    print(f"  GroupNorm+SiLU {tag} native max |err| vs float64: {err:.2e}")
    key = "gn_silu" if dtype == torch.float32 and not channels_last else "gn_silu_" + tag.replace(" ", "_")
    ratios[f"{key}_native_vs_compile"] = t["compile"]["median_s"] / t["native"]["median_s"]
    ratios[f"{key}_native_vs_eager"] = t["eager"]["median_s"] / t["native"]["median_s"]
    if "reference" in t:
        ratios[f"{key}_native_vs_float32_round_trip"] = t["reference"]["median_s"] / t["native"]["median_s"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes, fewer repeats")
    ap.add_argument("--threads", type=int, default=None,
                    help="torch threads for every contender (default: torch's); on a machine shared with "
                         "other jobs, 1 avoids OpenMP oversubscription stalls that hit many-op loops hardest")
    ap.add_argument("--cases", default="abcd", help="which cases to run: any of a (SDE), b (DDPM step), c (GroupNorm), "
                                                 "d (GroupNorm bf16)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    import diffcore.native as native   # build or load the extension before any timing
    pool = os.environ.get("DIFFCORE_CPU_POOL_MB", "256 (default)")
    print(f"native extension: {native.origin()} ({native.BUILD_INFO}); torch threads {torch.get_num_threads()}; "
          f"CPU output pool MiB: {pool}")
    repeats = 3 if args.quick else 5
    rows, ratios = [], {}
    if "a" in args.cases:
        print("(a) reverse SDE")
        reverse_sde(8192 if args.quick else 65536, 200 if args.quick else 1000, repeats, rows, ratios)
    if "b" in args.cases:
        print("(b) DDPM step")
        ddpm_step(repeats if args.quick else 9, rows, ratios)
    if "c" in args.cases:
        print("(c) GroupNorm + SiLU")
        group_norm(repeats if args.quick else 9, rows, ratios, args.quick)
    if "d" in args.cases:
        print("(d) GroupNorm + SiLU in bfloat16")
        for cl in (False, True):
            group_norm(repeats if args.quick else 9, rows, ratios, args.quick, torch.bfloat16, cl)
    print_table(rows)
    print("ratios:", {k: round(v, 2) for k, v in ratios.items()})
    name = "sde_quick" if args.quick else "sde"
    if args.cases != "abcd":
        name += "_" + args.cases
    print("wrote", write_results(name, rows, ratios))


if __name__ == "__main__":
    main()
