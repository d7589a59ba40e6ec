"""A Stable-Diffusion-1.5-sized U-Net on CPU (diffusers' UNet2DConditionModel, its published
configuration, random weights: 860 M parameters, 47 3x3 layers accelerate swaps holding 1.9 GiB
of float32 weights): one forward of a classifier-free-guidance batch (2 x 4 x 64 x 64 latents,
77 text tokens) in float32, channels_last, by diffusers as it is and by diffcore.accelerate
under limits on the memory of the cached Winograd transforms (diffcore.winograd.CACHE_LIMIT_MB).
Three models side by side, timed in interleaved rounds: diffusers; diffcore with every layer's
transform (no limit: 4x its weight for F(4x4), 16/9 for F(2x2), which the 8x8 layers take at
this batch); diffcore with none (every 3x3 layer on oneDNN, the rest fused: what a layer that
finds no room runs). Then, alone, diffcore under a limit that holds some (2048 MiB: the default
on an 8 GB machine, a quarter of its memory; the layers that save most per byte, the
high-resolution ones, keep theirs). The table gives each one's first forward (where the
transforms are made), the median of the rest, the memory its transforms hold, and the largest
output difference from diffusers'. Needs about 18 GB (three copies of the 3.4 GB model and 5.7
GB of transforms: 17.3 GB measured at most).

    python benchmarks/large_unet.py [--threads N] [--repeats 3] [--limit-mb MB] [--quick]
    (results/large_unet.json; --quick: a smoke run, results/large_unet_quick.json)
"""
from __future__ import annotations

import argparse
import copy
import gc
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import interleaved, print_table, timeit, write_results  # noqa: E402

import diffcore  # noqa: E402
from diffcore import winograd  # noqa: E402


def sd15_unet(quick: bool = False):
    """SD 1.5's U-Net configuration (quick: the same blocks, 32 and 64 channels, one layer each)."""
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=TEXT[quick],
        layers_per_block=1 if quick else 2, block_out_channels=(32, 64) if quick else (320, 640, 1280, 1280),
        attention_head_dim=8, norm_num_groups=16 if quick else 32,
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D") if quick else
        ("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D") if quick else
        ("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).eval()


TEXT = {False: 768, True: 32}   # text-embedding width


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a small U-Net of the same blocks, 16x16 latents, 1 repeat")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit-mb", type=float, default=None,
                    help="the last contender's limit (default 2048; --quick: 1)")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    unet = sd15_unet(a.quick).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    size, repeats = (16, 1) if a.quick else (64, a.repeats)
    x = torch.randn(2, 4, size, size, generator=g).contiguous(memory_format=torch.channels_last)
    t, text = torch.tensor([500, 500]), torch.randn(2, 77, TEXT[a.quick], generator=g)
    outs, first, held = {}, {}, {}

    def forward(label, model):
        return lambda: outs.__setitem__(label, model(x, t, text).sample)

    def first_forward(label, model):   # the transforms are made here
        first[label] = timeit(forward(label, model), repeats=1, warmup=0)["median_s"]

    with torch.no_grad():
        # 1. three models side by side, interleaved: diffusers; diffcore with every transform
        # (no limit); diffcore with none (its 3x3 layers plain nn.Conv2d again: what a layer that
        # finds no room runs; a limit cannot stand in here, since better layers evict worse ones)
        full, none = diffcore.accelerate(copy.deepcopy(unet)), diffcore.accelerate(copy.deepcopy(unet))
        for m in none.modules():
            if type(m) is winograd.WinogradConv2d:
                m.__class__ = torch.nn.Conv2d
        winograd.clear_cache()
        winograd.CACHE_LIMIT_MB = 1e12
        first_forward("diffcore, no limit", full)
        held["diffcore, no limit"] = winograd.cache_bytes()
        first_forward("diffcore, no room", none)
        held["diffcore, no room"] = winograd.cache_bytes() - held["diffcore, no limit"]
        first_forward("diffusers", unet)
        fns = {k: forward(k, m) for k, m in (("diffusers", unet), ("diffcore, no limit", full),
                                             ("diffcore, no room", none))}
        med = {k: v["median_s"] for k, v in interleaved(fns, repeats, warmup=0).items()}
        del full, none, fns   # the closures hold the models too
        gc.collect()
        # 2. then, alone: a limit that holds some of the transforms
        limit_mb = a.limit_mb if a.limit_mb is not None else 1.0 if a.quick else 2048.0
        label = f"diffcore, limit {limit_mb:g} MB"
        part = diffcore.accelerate(copy.deepcopy(unet))
        winograd.clear_cache()
        winograd.CACHE_LIMIT_MB = limit_mb
        first_forward(label, part)
        held[label] = winograd.cache_bytes()
        med[label] = timeit(forward(label, part), repeats=repeats, warmup=0)["median_s"]
    rows = [{"contender": k, "first_s": round(first[k], 3), "median_s": round(v, 3),
             "transforms_MiB": round(held.get(k, 0) / 2**20),
             "max_abs_diff": (outs[k] - outs["diffusers"]).abs().max().item()} for k, v in med.items()]
    ratios = {f"{k} vs diffusers": round(med["diffusers"] / v, 3) for k, v in med.items() if k != "diffusers"}
    print_table(rows)
    for k, v in ratios.items():
        print(f"{k}: {v}")
    print(f"({repeats} interleaved rounds of the first three; the last timed alone after them; "
          f"{torch.get_num_threads()} threads)")
    print(f"wrote {write_results('large_unet' + ('_quick' if a.quick else ''), rows, ratios)}")


if __name__ == "__main__":
    main()
