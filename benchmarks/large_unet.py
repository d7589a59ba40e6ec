"""A Stable-Diffusion-1.5-sized U-Net on CPU (diffusers' UNet2DConditionModel, its published
configuration, random weights: 860 M parameters, 47 3x3 layers accelerate swaps holding 1.9 GiB
of float32 weights): one forward of a classifier-free-guidance batch (2 x 4 x 64 x 64 latents,
77 text tokens) in float32, channels_last, by diffusers as it is and by diffcore.accelerate under
three limits on the cached Winograd transforms (diffcore.winograd.CACHE_LIMIT_MB): 0 (every
3x3 layer on oneDNN, the rest fused), 2048 MB (the default on an 8 GB machine, a quarter of its
memory: some layers on Winograd) and none (every layer's transform: 4x its weight for F(4x4),
16/9 for F(2x2), which the 8x8 layers take at this batch). Each contender's forwards run in
turn in one process (switching limits clears the cache, so rounds are not interleaved); the
table gives each one's first forward (the transforms are made then), the median of the others,
the memory its transforms hold, and the largest output difference from diffusers'.

    python benchmarks/large_unet.py [--threads N] [--repeats 3] [--limit-mb MB]
    (results/large_unet.json)
"""
from __future__ import annotations

import argparse
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import print_table, timeit, write_results  # noqa: E402

import diffcore  # noqa: E402
from diffcore import winograd  # noqa: E402


def sd15_unet():
    from diffusers import UNet2DConditionModel
    torch.manual_seed(0)
    return UNet2DConditionModel(
        sample_size=64, in_channels=4, out_channels=4, cross_attention_dim=768, layers_per_block=2,
        block_out_channels=(320, 640, 1280, 1280), attention_head_dim=8,
        down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
        up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3).eval()


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--limit-mb", type=float, default=2048.0, help="the middle contender's limit")
    a = ap.parse_args()
    if a.threads:
        torch.set_num_threads(a.threads)
    unet = sd15_unet().to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 4, 64, 64, generator=g).contiguous(memory_format=torch.channels_last)
    t, text = torch.tensor([500, 500]), torch.randn(2, 77, 768, generator=g)
    rows, outs = [], {}

    def run(label, limit_mb=None):
        forward = lambda: outs.__setitem__(label, unet(x, t, text).sample)  # noqa: E731
        with torch.no_grad():
            first = timeit(forward, repeats=1, warmup=0)["median_s"]
            stats = timeit(forward, repeats=a.repeats, warmup=0)
        diff = (outs[label] - outs["diffusers"]).abs().max().item() if label != "diffusers" else 0.0
        rows.append({"contender": label, "first_s": round(first, 3), "median_s": round(stats["median_s"], 3),
                     "transforms_MiB": round(winograd.cache_bytes() / 2**20),
                     "limit_MiB": None if limit_mb is None else round(limit_mb), "max_abs_diff": diff})
        print_table(rows[-1:])

    run("diffusers")
    diffcore.accelerate(unet)                    # in place: one copy of the weights
    for label, limit in (("diffcore, limit 0", 0.0), (f"diffcore, limit {a.limit_mb:.0f} MB", a.limit_mb),
                         ("diffcore, no limit", None)):
        winograd.clear_cache()
        winograd.CACHE_LIMIT_MB = 1e12 if limit is None else limit
        run(label, limit)
    base = rows[0]["median_s"]
    ratios = {f"{r['contender']} vs diffusers": round(base / r["median_s"], 3) for r in rows[1:]}
    print_table(rows)
    for k, v in ratios.items():
        print(f"{k}: {v}")
    print(f"wrote {write_results('large_unet', rows, ratios)}")


if __name__ == "__main__":
    main()
