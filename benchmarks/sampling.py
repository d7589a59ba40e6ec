"""Whole-loop DDPM sampling with diffusers' UNet2DModel (the google/ddpm-cifar10-32
configuration, random init), side by side in one run, the same weights, steps and batch:

  diffusers          DDPMPipeline(unet, scheduler)(batch_size=B, num_inference_steps=S)
  diffusers+compile  the same pipeline with pipe.unet = torch.compile(unet)
                     (mode "max-autotune" on CUDA, the default mode on CPU)
  diffcore           diffcore.sample(DiffusersUNet(diffcore.accelerate(copy of unet)),
                     ddpm_from_diffusers(scheduler), method="ancestral", steps=S,
                     precision=P, channels_last network) — fused GroupNorm+SiLU, residual
                     and attention, fused DDPM step with in-op noise, CUDA graphs on CUDA

in each precision: fp32, bf16 (diffusers under torch.autocast(bfloat16); diffcore
precision="bf16") and on CUDA fp16 (diffusers' unet.half(), diffcore precision="fp16").
On a CPU where oneDNN has no bf16 (AVX2 only), bf16 adds "diffusers widened bf16": the
pipeline under diffcore.precision.autocast, whose widened convolutions and matrix products
any model gets without accelerate. On CPU the bf16 contest also times diffusers and diffcore
in fp32 in the same rounds ("bf16 diffcore vs diffusers fp32", "... vs diffcore fp32").
Equality: diffcore's fp32 samples against diffusers' own loop fed the same noise (its
randn_tensor replaced by diffcore's generator for the same step), max |difference| reported.

    python benchmarks/sampling.py [--quick] [--threads N] [--batch 16] [--steps 10]
                                  [--repeats 5] [--device cpu|cuda] [--no-compile]
"""
from __future__ import annotations

import argparse
import copy
import logging
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved, print_table, write_results  # noqa: E402

import diffcore  # noqa: E402
from diffcore.interop import DiffusersUNet, ddpm_from_diffusers, diffusers_ddpm_loop, sample_options  # noqa: E402

SHAPE = (3, 32, 32)


def cifar_unet(seed=0):
    import diffusers
    torch.manual_seed(seed)
    return diffusers.UNet2DModel(
        sample_size=32, in_channels=3, out_channels=3, block_out_channels=(128, 256, 256, 256), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D", "DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D", "AttnUpBlock2D", "UpBlock2D"), dropout=0.1, norm_num_groups=32,
        attention_head_dim=None, resnet_time_scale_shift="default", add_attention=True, flip_sin_to_cos=False,
        freq_shift=1).eval()


def scheduler():
    import diffusers
    # google/ddpm-cifar10-32's scheduler_config.json
    return diffusers.DDPMScheduler(num_train_timesteps=1000, beta_start=1e-4, beta_end=0.02, beta_schedule="linear",
                                   variance_type="fixed_small", clip_sample=True)


def diffusers_runner(unet, steps, batch, precision, device, widened=False):
    """widened: bf16 under diffcore.precision.autocast (diffusers' own model, diffcore's widened
    convolutions and matrix products) instead of torch.autocast."""
    import diffusers
    pipe = diffusers.DDPMPipeline(unet=unet, scheduler=scheduler()).to(device)
    pipe.set_progress_bar_config(disable=True)
    g = torch.Generator(device=device).manual_seed(0)
    cast = diffcore.precision.autocast if widened else torch.autocast

    def run():
        if precision == "bf16":
            with cast(device, dtype=torch.bfloat16):
                return pipe(batch_size=batch, num_inference_steps=steps, generator=g, output_type="np")
        return pipe(batch_size=batch, num_inference_steps=steps, generator=g, output_type="np")
    return run


def diffcore_runner(unet, steps, batch, precision, device):
    s = scheduler()
    net = diffcore.accelerate(copy.deepcopy(unet)).to(device=device, memory_format=torch.channels_last)
    if precision == "fp16" and device == "cuda":
        net = net.half()
    model = DiffusersUNet(net)
    process = ddpm_from_diffusers(s)
    opts = sample_options(s)
    prec = "fp32" if precision == "fp16" and device == "cuda" else precision  # .half() net: fp16 weights

    def run():
        return diffcore.sample(model if prec == precision else _HalfIO(model), process, n=batch, shape=SHAPE,
                               method="ancestral", steps=steps, seed=0, precision=prec, device=device, **opts)
    return run


class _HalfIO(torch.nn.Module):
    """fp16 weights: fp16 input, fp32 output (the engine keeps fp32 state)."""

    def __init__(self, model):
        super().__init__()
        self.model = model

    def forward(self, x, t):
        return self.model(x.half(), t).float()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="batch 2, 2 steps, 1 repeat, fp32 only (a smoke run)")
    ap.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    ap.add_argument("--batch", type=int, default=None, help="batch (default: 16 on CPU, 256 on CUDA)")
    ap.add_argument("--steps", type=int, default=None, help="steps (default: 10 on CPU, 100 on CUDA)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--precisions", default=None, help="comma list (default: fp32,bf16 on CPU; +fp16 on CUDA)")
    ap.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender")
    ap.add_argument("--no-slow-bf16", action="store_true",
                    help="where oneDNN has no bf16: skip diffusers under torch.autocast(bf16) (minutes per run), "
                         "keep 'diffusers widened bf16'")
    ap.add_argument("--compile-only", action="store_true",
                    help="only the torch.compile contests (no equality check, no eager contests): a separate "
                         "results file, for a second, later run")
    a = ap.parse_args()
    logging.getLogger("diffusers").setLevel(logging.ERROR)
    if a.threads:
        torch.set_num_threads(a.threads)
    cuda = a.device == "cuda"
    batch = a.batch or (2 if a.quick else (256 if cuda else 16))
    steps = a.steps or (2 if a.quick else (100 if cuda else 10))
    repeats = 1 if a.quick else a.repeats
    precisions = (a.precisions or ("fp32" if a.quick else ("fp32,bf16,fp16" if cuda else "fp32,bf16"))).split(",")
    slow_bf16 = not cuda and not diffcore.precision.cpu_has_bf16()
    if slow_bf16 and "bf16" in precisions:
        # oneDNN has no bf16 kernels for this CPU: diffusers under autocast runs PyTorch's slow
        # reference convolutions (a run takes minutes); diffcore runs its bf16 kernels
        print("bf16: oneDNN has no bf16 kernels for this CPU: diffusers under torch.autocast runs PyTorch's slow "
              "reference kernels (minutes per run); 'diffusers widened bf16' runs it under diffcore.precision.autocast")

    unet = cifar_unet().to(a.device)
    rows, ratios = [], {}
    name = "sampling" + ("_cuda" if cuda else "") + ("_compile" if a.compile_only else "") + \
        ("_widened" if a.no_slow_bf16 else "") + \
        ("_" + "_".join(precisions) if a.precisions else "") + \
        ("_quick" if a.quick else (f"_batch{batch}" if a.batch is not None and batch != (256 if cuda else 16) else ""))

    # equality first: fp32 diffcore vs diffusers' loop with the same noise (on CUDA without TF32,
    # which cuDNN uses for fp32 convolutions by default and which rounds inputs to 10 mantissa bits)
    max_diff = float("nan")
    if not a.compile_only:
        tf32 = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
        ours = diffcore_runner(unet, steps, batch, "fp32", a.device)()
        ref = diffusers_ddpm_loop(unet, scheduler(), steps, seed=0, n=batch, shape=SHAPE, device=a.device)
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = tf32
        max_diff = (ours - ref).abs().max().item()
        print(f"fp32 samples: max |diffcore - diffusers loop with the same noise| = {max_diff:.2e}")

    def contest(prec, fns, label="diffcore"):
        """Time fns side by side; record rows (diffcore's under `label`) and diffcore's ratio to the others."""
        med = {k: v["median_s"] for k, v in interleaved(fns, repeats).items()}
        for k, v in med.items():
            rows.append({"precision": prec, "contender": label if k == "diffcore" else k, "median_s": round(v, 3),
                         "samples_per_s": round(batch / v, 2)})
        for k in med:
            if k != "diffcore":
                ratios[f"{prec} diffcore vs {k}"] = round(med[k] / med["diffcore"], 3)
        print_table([r for r in rows if r["precision"] == prec])
        write_results(name, rows, {**ratios, **({} if a.compile_only else
                                                {"fp32 max abs diff vs diffusers loop": max_diff})})  # kept if a later run dies

    # eager contenders for every precision first, then the compiled ones (compiling, max-autotune on
    # CUDA, takes minutes: its figures come last so that a time limit cannot take the others)
    for prec in ([] if a.compile_only else precisions):
        widen = slow_bf16 and prec == "bf16"
        fns = {} if widen and a.no_slow_bf16 else {
            "diffusers": diffusers_runner(unet if prec != "fp16" else copy.deepcopy(unet).half(), steps, batch, prec,
                                          a.device)}
        if widen:
            # how much of diffcore's bf16 figure any model gets from the widened ops alone
            fns["diffusers widened bf16"] = diffusers_runner(unet, steps, batch, prec, a.device, widened=True)
        if prec == "bf16" and not cuda:
            # the CPU bf16 goal's other yardstick, and whether bf16 pays over diffcore's own fp32 on
            # this CPU, timed in the same rounds
            fns["diffusers fp32"] = diffusers_runner(unet, steps, batch, "fp32", a.device)
            fns["diffcore fp32"] = diffcore_runner(unet, steps, batch, "fp32", a.device)
        contest(prec, {**fns, "diffcore": diffcore_runner(unet, steps, batch, prec, a.device)})
    for prec in ([] if a.no_compile else [p for p in precisions if p != "fp16"]):
        cu = torch.compile(copy.deepcopy(unet), mode="max-autotune" if cuda else None)
        contest(prec, {"diffusers+compile": diffusers_runner(cu, steps, batch, prec, a.device),
                       "diffcore": diffcore_runner(unet, steps, batch, prec, a.device)}, "diffcore (beside compile)")
    fp32 = {r["contender"]: r["median_s"] for r in rows if r["precision"] == "fp32"}
    bf16 = {r["contender"]: r["median_s"] for r in rows if r["precision"] == "bf16"}
    if "diffusers" in fp32 and "diffcore" in bf16:   # across the two contests (not in --compile-only runs)
        ratios["bf16 diffcore vs fp32 diffusers (fp32 contest's figure)"] = round(fp32["diffusers"] / bf16["diffcore"], 3)
    if not a.compile_only:
        ratios["fp32 max abs diff vs diffusers loop"] = max_diff
    print_table(rows)
    for k, v in ratios.items():
        print(f"{k}: {v}")
    print(f"(batch {batch}, {steps} steps, {torch.get_num_threads()} threads, {a.device})")
    path = write_results(name, rows, ratios)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
