"""Compile every kernel for a GPU target without a GPU: catches what the interpreter lets
through (non-constexpr globals, type errors, constexpr-1 specialisations).

    python -m diffcore.kernels.compile_check [--quick | --minimal] [--arch 90]

Must run without TRITON_INTERPRET (kernels defined for the compiler). Needs triton's NVIDIA
backend (bundled in the triton wheel); compiles down to PTX and cubin with triton's ptxas.
"""
from __future__ import annotations

import argparse
import itertools
import os
import sys


def _cases(quick: bool):
    """(kernel, {arg: type}, {constexpr: value}, label) for the kernel variants to compile."""
    import triton.language as tl

    from . import affine_step as af, ddim_step as di, ddpm_step as dd, group_norm_silu as gn
    from . import heun_step as hs, langevin_step as lg, residual_add as ra

    dtypes = [("fp32", "fp32", tl.float32), ("bf16", "fp32", tl.float32)]
    if not quick:
        dtypes += [("fp16", "fp32", tl.float32), ("fp64", "fp64", tl.float64)]
    for xdt, a, acc in dtypes:
        gn_fwd = dict(X_ptr=f"*{xdt}", EMB_ptr=f"*{xdt}", W_ptr=f"*{xdt}", B_ptr=f"*{xdt}", Y_ptr=f"*{xdt}",
                      PART_ptr=f"*{a}", MEAN_ptr=f"*{a}", RSTD_ptr=f"*{a}", C="i32", S="i32", G="i32", CG="i32",
                      eps="fp32", S_PER_SPLIT="i32")
        gn_bwd = dict(X_ptr=f"*{xdt}", EMB_ptr=f"*{xdt}", W_ptr=f"*{xdt}", B_ptr=f"*{xdt}", DY_ptr=f"*{xdt}",
                      MEAN_ptr=f"*{a}", RSTD_ptr=f"*{a}", DX_ptr=f"*{xdt}", DWP_ptr=f"*{a}", DBP_ptr=f"*{a}",
                      DEP_ptr=f"*{a}", PART_ptr=f"*{a}", C="i32", S="i32", G="i32", CG="i32", S_PER_SPLIT="i32",
                      N="i32")
        stages = [(True, True), (True, False), (False, True)]
        combos = itertools.product((False, True), (False, True), (False, True), stages)
        if quick:
            combos = [(False, True, True, stages[0]), (True, False, False, stages[1]), (True, True, True, stages[2])]
        for cl, emb, affine, (stats, apply) in combos:
            split = 1 if (stats and apply) else 4
            const = dict(CHANNELS_LAST=cl, HAS_EMB=emb, HAS_W=affine, HAS_B=affine, SILU=affine, STATS=stats,
                         APPLY=apply, SPLIT=split, SPLIT_P2=split, ACC=acc, BLOCK_C=8, BLOCK_S=128)
            yield gn._gn_fwd_kernel, gn_fwd, const, f"group_norm fwd {xdt} {const}"
            yield gn._gn_bwd_kernel, gn_bwd, const, f"group_norm bwd {xdt} {const}"
        ones = dict(CHANNELS_LAST=False, HAS_EMB=True, HAS_W=True, HAS_B=True, SILU=True, STATS=True, APPLY=True,
                    SPLIT=1, SPLIT_P2=1, ACC=acc, BLOCK_C=1, BLOCK_S=1, CG=1, S=1, G=1, S_PER_SPLIT=1)
        yield gn._gn_fwd_kernel, gn_fwd, ones, f"group_norm fwd {xdt} scalars = 1"
        yield gn._gn_bwd_kernel, gn_bwd, {**ones, "N": 1}, f"group_norm bwd {xdt} scalars = 1"
        yield (ra._residual_add_kernel, dict(SKIP_ptr=f"*{xdt}", H_ptr=f"*{xdt}", OUT_ptr=f"*{xdt}", numel="i64",
                                             scale="fp32"), dict(ACC=acc, BLOCK=1024), f"residual_add {xdt}")
        yield (hs._heun_step_kernel, dict(X_ptr=f"*{xdt}", S1_ptr=f"*{xdt}", XP_ptr=f"*{xdt}", S2_ptr=f"*{xdt}",
                                          A_ptr=f"*{a}", B_ptr=f"*{a}", C_ptr=f"*{a}", D_ptr=f"*{a}",
                                          OUT_ptr=f"*{xdt}", M="i32", nblocks="i32"),
               dict(ACC=acc, BLOCK_G=256), f"heun_step {xdt}")
        for has_z, seed_t in ((True, "i32"), (False, "i32"), (False, "i64")):
            if quick and seed_t == "i64":
                continue
            addr = dict(M="i32", nblocks="i32", seed_lo=seed_t, seed_hi=seed_t, step="i32", stream="i32")
            common = dict(HAS_Z=has_z, ACC=acc, BLOCK_G=256)
            tag = f"{xdt} z={has_z} seed {seed_t}"
            yield (af._affine_step_kernel, dict(X_ptr=f"*{xdt}", SCORE_ptr=f"*{xdt}", Z_ptr=f"*{xdt}", IDX_ptr="*i64",
                                                A_ptr=f"*{a}", B_ptr=f"*{a}", STD_ptr=f"*{a}", OUT_ptr=f"*{xdt}",
                                                MEAN_ptr=f"*{xdt}", **addr), common, f"affine_step {tag}")
            for clip, has_v in ((False, False), (True, True)):
                yield (dd._ddpm_step_kernel, dict(X_ptr=f"*{xdt}", EPS_ptr=f"*{xdt}", V_ptr=f"*{xdt}", Z_ptr=f"*{xdt}",
                                                  IDX_ptr="*i64", SRA_ptr=f"*{a}", SRM1_ptr=f"*{a}", CX0_ptr=f"*{a}",
                                                  CXT_ptr=f"*{a}", LV_ptr=f"*{a}", LVMAX_ptr=f"*{a}",
                                                  OUT_ptr=f"*{xdt}", MEAN_ptr=f"*{xdt}", X0_ptr=f"*{xdt}", **addr),
                       {**common, "CLIP": clip, "HAS_V": has_v}, f"ddpm_step {tag} clip={clip} v={has_v}")
            yield (di._ddim_step_kernel, dict(X_ptr=f"*{xdt}", EPS_ptr=f"*{xdt}", Z_ptr=f"*{xdt}", IDX_ptr="*i64",
                                              AT_ptr=f"*{a}", AP_ptr=f"*{a}", ETA_ptr=f"*{a}", OUT_ptr=f"*{xdt}",
                                              X0_ptr=f"*{xdt}", **addr), {**common, "CLIP": True}, f"ddim_step {tag}")
            yield (lg._langevin_norms_kernel, dict(SCORE_ptr=f"*{xdt}", Z_ptr=f"*{xdt}", IDX_ptr="*i64",
                                                   PART_ptr=f"*{a}", **addr), common, f"langevin norms {tag}")
            yield (lg._langevin_update_kernel, dict(X_ptr=f"*{xdt}", SCORE_ptr=f"*{xdt}", Z_ptr=f"*{xdt}",
                                                    IDX_ptr="*i64", STEP_ptr=f"*{a}", NSTD_ptr=f"*{a}",
                                                    OUT_ptr=f"*{xdt}", MEAN_ptr=f"*{xdt}", **addr),
                   common, f"langevin update {tag}")
        yield (af._affine_step_kernel, dict(X_ptr=f"*{xdt}", SCORE_ptr=f"*{xdt}", Z_ptr=f"*{xdt}", IDX_ptr="*i64",
                                            A_ptr=f"*{a}", B_ptr=f"*{a}", STD_ptr=f"*{a}", OUT_ptr=f"*{xdt}",
                                            MEAN_ptr=f"*{xdt}", seed_lo="i32", seed_hi="i32", step="i32",
                                            stream="i32"),
               dict(HAS_Z=False, ACC=acc, BLOCK_G=256, M=1, nblocks=1), f"affine_step {xdt} M = nblocks = 1")


def _minimal(cases):
    """float32 only, the first variant of each kernel with and without in-kernel noise."""
    seen = set()
    for fn, sig, const, label in cases:
        key = (fn, const.get("HAS_Z"), const.get("STATS"), const.get("APPLY"))
        if " fp32 " in f" {label} " and key not in seen:
            seen.add(key)
            yield fn, sig, const, label


def check(quick: bool = False, arch: int = 90, verbose: bool = False, minimal: bool = False) -> list[str]:
    """Compile the variants for cuda sm_<arch>; returns the failures' descriptions."""
    import triton
    from triton.backends.compiler import GPUTarget
    from triton.compiler import ASTSource

    from . import INTERPRET
    if INTERPRET:
        raise RuntimeError("compile_check needs kernels defined for the compiler: unset TRITON_INTERPRET")
    target = GPUTarget("cuda", arch, 32)
    failures, n = [], 0
    cases = _minimal(_cases(True)) if minimal else _cases(quick)
    for fn, sig, const, label in cases:
        n += 1
        full = {name: ("constexpr" if name in const else sig[name]) for name in fn.arg_names}
        try:
            triton.compile(ASTSource(fn, full, const), target=target, options={"num_warps": 4})
        except Exception as e:  # report them all, not the first
            msg, cause = f"{type(e).__name__}: {e}", e.__cause__
            while cause is not None:
                msg += f"\n  caused by {type(cause).__name__}: {cause}"
                cause = cause.__cause__
            failures.append(f"{label}\n{msg}")
        if verbose:
            print(f"[{n}] {label}: {'FAILED' if failures and failures[-1].startswith(label) else 'ok'}")
    print(f"compile_check: {n - len(failures)}/{n} kernel variants compiled for sm_{arch}")
    return failures


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fp32/bf16 and a few constexpr combinations")
    ap.add_argument("--minimal", action="store_true", help="one float32 variant per kernel and mode (the test)")
    ap.add_argument("--arch", type=int, default=90)
    ap.add_argument("-v", "--verbose", action="store_true")
    args = ap.parse_args()
    failures = check(args.quick, args.arch, args.verbose, args.minimal)
    for f in failures:
        print("FAILED", f)
    sys.exit(1 if failures else 0)


if __name__ == "__main__":
    main()
