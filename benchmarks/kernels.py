"""Fused Triton kernels against torch eager and torch.compile, and against copy bandwidth:
GroupNorm+SiLU (U-Net shapes, fp32/bf16, NCHW/channels-last, forward and forward+backward),
the residual block's second norm with the embedding add fused, residual_add, and a DDPM step
with in-kernel Philox noise at (256, 3, 64, 64) fp32.

    python benchmarks/kernels.py [--quick]       (needs a CUDA GPU; exits 0 without one)
    python benchmarks/kernels.py --smoke         (CPU: the same code path under TRITON_INTERPRET=1
                                                  at toy sizes, to catch errors; figures meaningless)

GB/s come from an explicit byte count (what the op must read and write once: inputs, outputs,
parameters); "% copy" divides it by the bandwidth of a device-to-device copy of a tensor of
x's size measured in the same run. Times are medians over repeats (20/80% quantiles kept)
of a loop of launches timed with CUDA events, after warm-up (and compilation).
Writes benchmarks/results/kernels.json (kernels_smoke.json for --smoke) and a plot.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import sys
import time

SMOKE = "--smoke" in sys.argv
if SMOKE:
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import machine, print_table  # noqa: E402

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


# ---- timing ---------------------------------------------------------------------------------------
def bench(fn, repeats: int, inner: int) -> dict:
    """Median and 20/80% quantiles of one call's time (s): `repeats` timings of `inner` calls."""
    fn()
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
    times = []
    for _ in range(repeats):
        if cuda:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            for _ in range(inner):
                fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3 / inner)
        else:
            t0 = time.perf_counter()
            for _ in range(inner):
                fn()
            times.append((time.perf_counter() - t0) / inner)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]  # noqa: E731
    return {"median_s": statistics.median(times), "q20_s": q(0.2), "q80_s": q(0.8)}


def copy_gbs(numel: int, dtype, device, cfg) -> float:
    """Bandwidth (GB/s, read + write) of a device-to-device copy of `numel` elements."""
    src = torch.randn(numel, device=device).to(dtype)
    dst = torch.empty_like(src)
    t = bench(lambda: dst.copy_(src), cfg.repeats, cfg.inner)["median_s"]
    return 2 * src.numel() * src.element_size() / t / 1e9


def compiled(fn, cfg):
    """torch.compile of fn, fresh (no recompile limit, no automatic dynamic shapes)."""
    torch.compiler.reset()
    return torch.compile(fn, dynamic=False, backend=cfg.compile_backend)


def ms(t: dict) -> float:
    return round(t["median_s"] * 1e3, 4)


def geomean(xs):
    xs = [x for x in xs if x and x > 0 and math.isfinite(x)]
    return math.exp(sum(map(math.log, xs)) / len(xs)) if xs else float("nan")


# ---- cases ----------------------------------------------------------------------------------------
def layout(x, channels_last):
    return x.movedim(1, -1).contiguous().movedim(-1, 1) if channels_last else x.contiguous()


def gn_case(ops, shape, G, dtype, cl, cfg, *, with_emb, backward=False):
    """One GroupNorm+SiLU row: triton vs eager vs torch.compile of the same expression."""
    dev = cfg.device
    N, C = shape[:2]
    x = layout(torch.randn(shape, device=dev).to(dtype), cl)
    w = torch.randn(C, device=dev).to(dtype)
    b = torch.randn(C, device=dev).to(dtype)
    emb = torch.randn(N, C, device=dev).to(dtype) if with_emb else None

    def torch_fn(x, w, b, emb):
        h = x + emb[:, :, None, None] if emb is not None else x
        return F.silu(F.group_norm(h, G, w, b, 1e-5))

    def triton_fn(x, w, b, emb):
        return ops.group_norm_silu(x, G, w, b, emb=emb, backend="triton")

    comp = compiled(torch_fn, cfg)
    if backward:
        dy = torch.randn_like(x)
        xs = x.clone().requires_grad_()
        ws, bs = w.clone().requires_grad_(), b.clone().requires_grad_()
        es = emb.clone().requires_grad_() if emb is not None else None

        def wrap(f):
            def run():
                for t in (xs, ws, bs, es):
                    if t is not None:
                        t.grad = None
                f(xs, ws, bs, es).backward(dy)
            return run
        fns = {"triton": wrap(triton_fn), "eager": wrap(torch_fn), "compile": wrap(comp)}
        nbytes = 5 * x.numel() * x.element_size()   # fwd: read x, write y; bwd: read x, dy, write dx
    else:
        fns = {"triton": lambda: triton_fn(x, w, b, emb), "eager": lambda: torch_fn(x, w, b, emb),
               "compile": lambda: comp(x, w, b, emb)}
        nbytes = 2 * x.numel() * x.element_size()   # read x, write y
    nbytes += 2 * C * w.element_size() + (N * C * emb.element_size() if emb is not None else 0)
    if not backward:   # the fused result must be the compiled expression's, to rounding
        torch.testing.assert_close(fns["triton"]().float(), fns["compile"]().float(), atol=5e-2, rtol=5e-2)
    t = {k: bench(f, cfg.repeats, cfg.inner) for k, f in fns.items()}
    copy = copy_gbs(x.numel(), dtype, dev, cfg)
    gbs = nbytes / t["triton"]["median_s"] / 1e9
    return {"case": ("gn+silu+emb" if with_emb else "gn+silu") + (" fwd+bwd" if backward else ""),
            "shape": "x".join(map(str, shape)), "G": G, "dtype": str(dtype).replace("torch.", ""),
            "layout": "NHWC" if cl else "NCHW", "bytes": nbytes, "triton_ms": ms(t["triton"]), "eager_ms": ms(t["eager"]),
            "compile_ms": ms(t["compile"]), "GB_s": round(gbs, 1), "copy_GB_s": round(copy, 1),
            "pct_copy": round(100 * gbs / copy, 1),
            "speedup_vs_eager": round(t["eager"]["median_s"] / t["triton"]["median_s"], 3),
            "speedup_vs_compile": round(t["compile"]["median_s"] / t["triton"]["median_s"], 3),
            "triton_q20_ms": round(t["triton"]["q20_s"] * 1e3, 4), "triton_q80_ms": round(t["triton"]["q80_s"] * 1e3, 4)}


def residual_case(ops, shape, dtype, cfg):
    dev = cfg.device
    s, h = torch.randn(shape, device=dev).to(dtype), torch.randn(shape, device=dev).to(dtype)
    scale = 2 ** -0.5

    def torch_fn(s, h):
        return (s + h) * scale

    comp = compiled(torch_fn, cfg)
    fns = {"triton": lambda: ops.residual_add(s, h, scale, backend="triton"), "eager": lambda: torch_fn(s, h),
           "compile": lambda: comp(s, h)}
    t = {k: bench(f, cfg.repeats, cfg.inner) for k, f in fns.items()}
    nbytes = 3 * h.numel() * h.element_size()
    copy = copy_gbs(h.numel(), dtype, dev, cfg)
    gbs = nbytes / t["triton"]["median_s"] / 1e9
    return {"case": "residual_add", "shape": "x".join(map(str, shape)), "dtype": str(dtype).replace("torch.", ""),
            "triton_ms": ms(t["triton"]), "eager_ms": ms(t["eager"]), "compile_ms": ms(t["compile"]),
            "GB_s": round(gbs, 1), "copy_GB_s": round(copy, 1), "pct_copy": round(100 * gbs / copy, 1),
            "speedup_vs_eager": round(t["eager"]["median_s"] / t["triton"]["median_s"], 3),
            "speedup_vs_compile": round(t["compile"]["median_s"] / t["triton"]["median_s"], 3)}


def ddpm_case(ops, shape, cfg):
    """DDPM step at `shape` fp32: in-kernel noise vs z given vs the torch reference (which
    draws the same noise with the vectorised generator), vs copy bandwidth."""
    from diffcore import noise as N
    dev = cfg.device
    B = shape[0]
    x, eps = torch.randn(shape, device=dev), torch.randn(shape, device=dev)
    co = [torch.rand(B, device=dev) + 0.5 for _ in range(4)] + [torch.full((B,), -3.0, device=dev)]
    idx = torch.arange(B, device=dev)
    z = N.normal(1, idx, 5, shape[1:])
    fns = {
        "triton_in_kernel_noise": lambda: ops.ddpm_step(x, eps, *co, seed=1, sample_idx=idx, step=5, backend="triton"),
        "triton_z_given": lambda: ops.ddpm_step(x, eps, *co, noise=z, backend="triton"),
        "torch_reference_with_generator": lambda: ops.ddpm_step(x, eps, *co, seed=1, sample_idx=idx, step=5,
                                                                backend="torch"),
    }
    got = fns["triton_in_kernel_noise"]()[0]
    want = fns["torch_reference_with_generator"]()[0]
    torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)
    t = {k: bench(f, cfg.repeats, cfg.inner) for k, f in fns.items()}
    copy = copy_gbs(x.numel(), torch.float32, dev, cfg)
    rows = []
    for k, tk in t.items():
        n_in = 2 if k != "triton_z_given" else 3           # x, eps (+ z)
        nbytes = (n_in + 3) * x.numel() * 4                 # + x_prev, mean, x0
        gbs = nbytes / tk["median_s"] / 1e9
        rows.append({"case": f"ddpm_step {k}", "shape": "x".join(map(str, shape)), "dtype": "float32",
                     "ms": ms(tk), "GB_s": round(gbs, 1), "copy_GB_s": round(copy, 1),
                     "pct_copy": round(100 * gbs / copy, 1)})
    ratios = {"ddpm_in_kernel_noise_pct_copy": rows[0]["pct_copy"],
              "ddpm_in_kernel_vs_z_given_time": t["triton_in_kernel_noise"]["median_s"] / t["triton_z_given"]["median_s"],
              "ddpm_in_kernel_speedup_vs_torch_reference":
                  t["torch_reference_with_generator"]["median_s"] / t["triton_in_kernel_noise"]["median_s"]}
    return rows, ratios


# ---- output ---------------------------------------------------------------------------------------
def write(name: str, sections: dict, ratios: dict) -> str:
    """benchmarks/results/NAME.json in the house layout (+ triton's version); rewritten after
    every section so a run cut short still leaves what it measured."""
    import triton
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.json")
    rows = [r for rs in sections.values() for r in rs]
    payload = {"machine": machine(), "torch": torch.__version__, "triton": triton.__version__,
               "rows": rows, "ratios": ratios}
    with open(path + ".tmp", "w") as f:
        json.dump(payload, f, indent=2)
    os.replace(path + ".tmp", path)
    return path


def plot(rows: list, path: str) -> None:
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not importable: no plot")
        return
    gn = [r for r in rows if r["case"] == "gn+silu"]
    if not gn:
        return
    labels = [f"{r['shape']}\n{r['dtype']} {r['layout']}" for r in gn]
    xs = range(len(gn))
    fig, ax = plt.subplots(figsize=(max(8, 0.55 * len(gn)), 4.5))
    width = 0.27
    for k, (key, name) in enumerate((("triton_ms", "triton"), ("compile_ms", "torch.compile"), ("eager_ms", "eager"))):
        pct = [100 * r["bytes"] / (r[key] * 1e-3) / 1e9 / r["copy_GB_s"] for r in gn]
        ax.bar([x + (k - 1) * width for x in xs], pct, width, label=name)
    ax.axhline(100, color="k", lw=0.8, ls="--")
    ax.set_xticks(list(xs))
    ax.set_xticklabels(labels, rotation=90, fontsize=7)
    ax.set_ylabel("% of device copy bandwidth")
    ax.set_title(f"GroupNorm+SiLU forward, {machine()}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    print("plot:", path)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer sizes and repeats")
    ap.add_argument("--smoke", action="store_true", help="CPU, interpreter, toy sizes: checks the code path only")
    ap.add_argument("--plot", default=None, help="plot path (default benchmarks/results/kernels.png)")
    args = ap.parse_args()
    if not torch.cuda.is_available() and not args.smoke:
        print("benchmarks/kernels.py needs a CUDA GPU (none here); nothing measured. "
              "`--smoke` runs the code path on CPU under the Triton interpreter.")
        return
    from diffcore import ops
    import diffcore.kernels  # noqa: F401  (ImportError here: triton is missing)

    class Cfg:
        device = "cuda" if not args.smoke else "cpu"
        repeats = 2 if args.smoke else (5 if args.quick else 7)
        inner = 1 if args.smoke else (10 if args.quick else 20)
        compile_backend = "aot_eager" if args.smoke else "inductor"

    cfg = Cfg()
    name = "kernels_smoke" if args.smoke else "kernels"
    if args.smoke:
        gn_shapes = [((2, 8, 4, 4), 4), ((1, 16, 3, 3), 4)]
        fb_shapes, emb_shapes, res_shapes, ddpm_shape = gn_shapes[:1], gn_shapes[:1], [(2, 8, 4, 4)], (4, 3, 8, 8)
        dtypes = [torch.float32, torch.bfloat16]
    else:
        # U-Net levels: (batch, channels, resolution); N*G small for batch 1 (the split path)
        levels = [(256, 128, 64), (256, 256, 32), (256, 512, 16), (256, 512, 8), (64, 256, 32), (8, 512, 16),
                  (1, 128, 64), (1, 512, 8)]
        if args.quick:
            levels = [(256, 128, 64), (64, 256, 32), (1, 128, 64)]
        gn_shapes = [((n, c, r, r), 32) for n, c, r in levels]
        fb_shapes = gn_shapes[1:2] + ([] if args.quick else gn_shapes[-1:])
        emb_shapes = [((64, 256, 32, 32), 32), ((256, 512, 16, 16), 32)][: 1 if args.quick else 2]
        res_shapes = [(256, 128, 64, 64), (64, 256, 32, 32)][: 1 if args.quick else 2]
        ddpm_shape = (256, 3, 64, 64)
        dtypes = [torch.float32, torch.bfloat16]
    sections, ratios = {}, {}

    rows = []
    for shape, G in gn_shapes:
        for dtype in dtypes:
            for cl in (False, True):
                rows.append(gn_case(ops, shape, G, dtype, cl, cfg, with_emb=False))
    sections["gn"] = rows
    print_table(rows)
    ratios["gn_speedup_vs_eager_geomean"] = geomean([r["speedup_vs_eager"] for r in rows])
    ratios["gn_speedup_vs_compile_geomean"] = geomean([r["speedup_vs_compile"] for r in rows])
    ratios["gn_pct_copy_median"] = statistics.median(r["pct_copy"] for r in rows)
    print("wrote", write(name, sections, ratios))

    rows = [gn_case(ops, shape, G, torch.bfloat16, True, cfg, with_emb=True) for shape, G in emb_shapes]
    rows += [gn_case(ops, shape, G, torch.float32, False, cfg, with_emb=True) for shape, G in emb_shapes]
    sections["gn_emb"] = rows
    print_table(rows)
    ratios["gn_emb_speedup_vs_compile_geomean"] = geomean([r["speedup_vs_compile"] for r in rows])
    print("wrote", write(name, sections, ratios))

    rows = [gn_case(ops, shape, G, dtype, cl, cfg, with_emb=True, backward=True)
            for shape, G in fb_shapes for dtype in dtypes for cl in (False, True)]
    sections["gn_fwd_bwd"] = rows
    print_table(rows)
    ratios["gn_fwd_bwd_speedup_vs_eager_geomean"] = geomean([r["speedup_vs_eager"] for r in rows])
    ratios["gn_fwd_bwd_speedup_vs_compile_geomean"] = geomean([r["speedup_vs_compile"] for r in rows])
    print("wrote", write(name, sections, ratios))

    rows = [residual_case(ops, shape, dtype, cfg) for shape in res_shapes for dtype in dtypes]
    sections["residual"] = rows
    print_table(rows)
    ratios["residual_add_pct_copy_median"] = statistics.median(r["pct_copy"] for r in rows)
    print("wrote", write(name, sections, ratios))

    rows, r = ddpm_case(ops, ddpm_shape, cfg)
    sections["ddpm"] = rows
    ratios.update(r)
    print_table(rows)
    print("ratios:", {k: round(v, 3) for k, v in ratios.items()})
    print("wrote", write(name, sections, ratios))
    plot(sections["gn"], args.plot or os.path.join(RESULTS, f"{name}.png"))


if __name__ == "__main__":
    main()
