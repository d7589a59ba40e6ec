"""3x3 convolutions of diffusers' CIFAR-10 UNet2DModel (the google/ddpm-cifar10-32 configuration),
layer by layer: diffcore's Winograd convolution (diffcore.winograd.WinogradConv2d, what accelerate
swaps in, weight checks included: F(4x4, 3x3) where a call has MIN_TILES_F4 4x4 tiles, else
F(2x2, 3x3); the direct convolution under MIN_TILES 2x2 tiles), the same module held to F(2x2)
(winograd.FP32_F4 = False), PyTorch's convolution (oneDNN's direct kernels) on the same
channels_last float32 input, and PyTorch on NCHW input (the model's default layout). Every distinct shape
of the layers accelerate swaps (recorded from one forward at the batch given) is timed
side by side, interleaved; the per-forward total weights each shape by its number of layers.
Each shape's max |error| against the float64 convolution is reported for each layout and F,
and diffcore's worst in units of eps32 times each output's scale (|x| conv |w| + |b|).

--bf16: diffcore's bf16 path (winograd.conv3x3 on bf16 input: F(4x4, 3x3) or F(2x2) as
pick_tile chooses, F(4x4) for every layer at batch 16; the weight rounded to bf16, float32
arithmetic, a bf16 output) beside its float32 path (the same choice) and PyTorch's
float32 channels_last convolution; the bf16 error is against the float64 convolution of the
bf16-rounded operands, in units of half a bf16 ulp of each output plus eps32 times its scale
(|x| conv |w| + |b|): a bf16 convolution's rounding with float32 accumulation.

    python benchmarks/conv.py [--threads N] [--batch 16] [--repeats 9] [--quick] [--bf16]
    (results/conv.json; results/conv_batchN.json for another batch; conv_bf16*.json)
"""
from __future__ import annotations

import argparse
import collections
import copy
import os
import sys

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved, print_table, write_results  # noqa: E402
from sampling import cifar_unet  # noqa: E402

from diffcore import winograd  # noqa: E402


def layer_shapes(batch: int) -> collections.Counter:
    """(C_in, C_out, H, W) -> number of the U-Net's layers that accelerate swaps, at this batch."""
    unet = cifar_unet()
    seen = collections.Counter()
    hooks = [m.register_forward_pre_hook(lambda m, a: seen.update([(m.in_channels, m.out_channels) + tuple(a[0].shape[2:])]))
             for m in unet.modules() if isinstance(m, torch.nn.Conv2d) and winograd.why_not(m) is None]
    with torch.no_grad():
        unet(torch.randn(batch, 3, 32, 32), torch.tensor([500] * batch))
    for h in hooks:
        h.remove()
    return seen


def bf16_row(C, K, H, W, count, x_cl, w, b, ours, conv_cl, repeats, totals) -> dict:
    """One shape of the --bf16 table (totals gains each contender's time x count)."""
    xb = x_cl.to(torch.bfloat16)
    with torch.no_grad():
        med = {k: v["median_s"] for k, v in interleaved({
            "diffcore bf16": lambda: winograd.conv3x3(xb, w, b),
            "diffcore fp32": lambda: ours(x_cl),
            "torch fp32": lambda: conv_cl(x_cl),
        }, repeats).items()}
        r16 = [t.to(torch.bfloat16).double() for t in (xb, w, b)]
        ref = F.conv2d(*r16, padding=1)
        scale = F.conv2d(*(t.abs() for t in r16), padding=1)
        err = (winograd.conv3x3(xb, w, b).double() - ref).abs() / (2.0 ** -8 * ref.abs() + 2.0 ** -23 * scale)
    for k, v in med.items():
        totals[k] += count * v
    return {"shape": f"{C}->{K} {H}x{W}", "layers": count, **{f"{k} ms": round(v * 1e3, 2) for k, v in med.items()},
            "bf16 vs diffcore fp32": round(med["diffcore fp32"] / med["diffcore bf16"], 2),
            "bf16 vs torch fp32": round(med["torch fp32"] / med["diffcore bf16"], 2),
            "bf16 err / bound": round(err.max().item(), 3)}


def f2x2(module, x):
    """module(x) with float32 calls held to F(2x2, 3x3), as winograd.FP32_F4 = False holds them."""
    before, winograd.FP32_F4 = winograd.FP32_F4, False
    try:
        return module(x)
    finally:
        winograd.FP32_F4 = before


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--quick", action="store_true", help="batch 2, 2 repeats")
    ap.add_argument("--bf16", action="store_true", help="diffcore bf16 vs its float32 and torch float32")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    batch, repeats = (2, 2) if a.quick else (a.batch, a.repeats)
    torch.manual_seed(0)
    rows, totals = [], collections.Counter()
    for (C, K, H, W), count in sorted(layer_shapes(batch).items()):
        conv = torch.nn.Conv2d(C, K, 3, padding=1).eval()
        conv_cl = torch.nn.Conv2d(C, K, 3, padding=1).eval().to(memory_format=torch.channels_last)
        conv_cl.load_state_dict(conv.state_dict())
        ours = copy.deepcopy(conv_cl)
        ours.__class__ = winograd.WinogradConv2d     # what accelerate swaps in (direct under MIN_TILES tiles)
        x = torch.randn(batch, C, H, W)
        x_cl = x.contiguous(memory_format=torch.channels_last)
        w, b = conv.weight.detach(), conv.bias.detach()
        if a.bf16:
            rows.append(bf16_row(C, K, H, W, count, x_cl, w, b, ours, conv_cl, repeats, totals))
            print_table(rows[-1:])
            continue
        with torch.no_grad():
            med = {k: v["median_s"] for k, v in interleaved({
                "diffcore": lambda: ours(x_cl),
                "diffcore F(2x2)": lambda: f2x2(ours, x_cl),
                "torch channels_last": lambda: conv_cl(x_cl),
                "torch NCHW": lambda: conv(x),
            }, repeats).items()}
            ref = F.conv2d(x.double(), w.double(), b.double(), padding=1)
            scale = F.conv2d(x.double().abs(), w.double().abs(), b.double().abs(), padding=1)
            y = ours(x_cl).double()
            err_w = (y - ref).abs().max().item()
            err_2 = (f2x2(ours, x_cl).double() - ref).abs().max().item()
            err_t = (conv_cl(x_cl).double() - ref).abs().max().item()
            ulps = ((y - ref).abs() / (torch.finfo(torch.float32).eps * scale)).max().item()
            t = winograd.pick_tile(x_cl)
            which = f"F({t}x{t})" if ours._winograd(x_cl) else "direct"
        for k, v in med.items():
            totals[k] += count * v
        rows.append({"shape": f"{C}->{K} {H}x{W}", "layers": count,
                     **{f"{k} ms": round(v * 1e3, 2) for k, v in med.items()},
                     "F": which,
                     "vs F(2x2)": round(med["diffcore F(2x2)"] / med["diffcore"], 2),
                     "vs channels_last": round(med["torch channels_last"] / med["diffcore"], 2),
                     "vs NCHW": round(med["torch NCHW"] / med["diffcore"], 2),
                     "max err diffcore": f"{err_w:.1e}", "max err F(2x2)": f"{err_2:.1e}",
                     "max err torch": f"{err_t:.1e}",
                     "eps32 x scale": round(ulps, 1)})
        print_table(rows[-1:])
    if a.bf16:
        rows.append({"shape": "per forward (sum over layers)", "layers": sum(r["layers"] for r in rows),
                     **{f"{k} ms": round(v * 1e3, 1) for k, v in totals.items()},
                     "bf16 vs diffcore fp32": round(totals["diffcore fp32"] / totals["diffcore bf16"], 2),
                     "bf16 vs torch fp32": round(totals["torch fp32"] / totals["diffcore bf16"], 2),
                     "bf16 err / bound": max(r["bf16 err / bound"] for r in rows)})
        print_table(rows)
        name = "conv_bf16" + ("_quick" if a.quick else (f"_batch{batch}" if batch != 16 else ""))
        print("wrote", write_results(name, rows, {k: rows[-1][k] for k in ("bf16 vs diffcore fp32", "bf16 vs torch fp32")}))
        return
    rows.append({"shape": "per forward (sum over layers)", "layers": sum(r["layers"] for r in rows),
                 **{f"{k} ms": round(v * 1e3, 1) for k, v in totals.items()},
                 "F": "", "vs F(2x2)": round(totals["diffcore F(2x2)"] / totals["diffcore"], 2),
                 "vs channels_last": round(totals["torch channels_last"] / totals["diffcore"], 2),
                 "vs NCHW": round(totals["torch NCHW"] / totals["diffcore"], 2),
                 "max err diffcore": "", "max err F(2x2)": "", "max err torch": "",
                 "eps32 x scale": max(r["eps32 x scale"] for r in rows)})
    print_table(rows)
    print(f"(batch {batch}, {torch.get_num_threads()} threads)")
    ratios = {"per forward vs channels_last": rows[-1]["vs channels_last"], "per forward vs NCHW": rows[-1]["vs NCHW"],
              "per forward vs F(2x2)": rows[-1]["vs F(2x2)"]}
    name = "conv" + ("_quick" if a.quick else (f"_batch{batch}" if batch != 16 else ""))
    print("wrote", write_results(name, rows, ratios))


if __name__ == "__main__":
    main()
