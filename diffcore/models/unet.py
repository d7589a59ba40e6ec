"""The DDPM U-Net (Ho et al. 2020, Appendix B), built from diffcore.nn so the fused kernels
speed it up with no change here.

CIFAR-10 configuration (the defaults): base channels 128, multipliers (1, 2, 2, 2), two
residual blocks per resolution, self-attention at 16x16, dropout 0.1: 35.7 M parameters.
Each residual block: GroupNorm+SiLU -> conv -> (+ projection of the timestep embedding,
fused into the next norm) -> GroupNorm+SiLU -> dropout -> conv, then (skip + h) * scale.

Conditioning: "discrete" (integer t, sinusoidal), "continuous" (t in [0, 1] scaled by
`time_scale` before the sinusoid, as score_sde feeds DDPM-style networks) or "sigma"
(Gaussian Fourier features of log sigma, NCSN++ for VE / NCSN).
"""
from __future__ import annotations

import dataclasses
import math

import torch
from torch import nn

from .. import nn as dnn
from ..validation import check_choice, check_int

CONDITIONINGS = ("discrete", "continuous", "sigma")


@dataclasses.dataclass
class UNetConfig:
    in_channels: int = 3
    resolution: int = 32
    ch: int = 128
    ch_mult: tuple = (1, 2, 2, 2)
    num_res_blocks: int = 2
    attn_resolutions: tuple = (16,)
    dropout: float = 0.1
    num_groups: int = 32
    conditioning: str = "discrete"
    time_scale: float = 1000.0       # continuous t -> t * time_scale before the sinusoid
    learned_variance: bool = False   # output 2C channels: eps and the variance interpolant v
    skip_rescale: bool = False       # residual (skip + h) / sqrt(2), as NCSN++
    channels_last: bool = False

    def __post_init__(self):
        self.ch_mult = tuple(int(m) for m in self.ch_mult)
        self.attn_resolutions = tuple(int(r) for r in self.attn_resolutions)
        check_int("in_channels", self.in_channels, lo=1)
        check_int("ch", self.ch, lo=1)
        check_int("num_res_blocks", self.num_res_blocks, lo=1)
        check_int("num_groups", self.num_groups, lo=1)
        check_choice("conditioning", self.conditioning, CONDITIONINGS)
        if not self.ch_mult or min(self.ch_mult) < 1:
            raise ValueError(f"ch_mult must be a non-empty tuple of positive integers; got {self.ch_mult}")
        res = check_int("resolution", self.resolution, lo=1)
        if res % (2 ** (len(self.ch_mult) - 1)):
            raise ValueError(f"resolution {res} must be divisible by 2^(len(ch_mult) - 1) = {2 ** (len(self.ch_mult) - 1)}")
        for m in self.ch_mult:
            if (self.ch * m) % self.num_groups:
                raise ValueError(f"every ch * ch_mult ({self.ch} * {m}) must be divisible by num_groups ({self.num_groups})")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must lie in [0, 1); got {self.dropout}")

    @property
    def out_channels(self) -> int:
        return self.in_channels * (2 if self.learned_variance else 1)

    def to_dict(self) -> dict:
        d = dataclasses.asdict(self)
        d["ch_mult"], d["attn_resolutions"] = list(self.ch_mult), list(self.attn_resolutions)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown U-Net config key(s) {sorted(unknown)}; accepted: {sorted(known)}")
        return cls(**d)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, temb_ch: int, dropout: float, groups: int, skip_rescale: bool):
        super().__init__()
        self.norm1 = dnn.GroupNormSiLU(groups, cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1)
        self.temb_proj = nn.Linear(temb_ch, cout)
        self.norm2 = dnn.GroupNormSiLU(groups, cout)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1)
        self.nin_shortcut = nn.Conv2d(cin, cout, 1) if cin != cout else None
        self.scale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x, temb_act):
        h = self.conv1(self.norm1(x))
        emb = self.temb_proj(temb_act)
        h = self.conv2(self.dropout(self.norm2(h, emb=emb.to(h.dtype))))
        skip = x if self.nin_shortcut is None else self.nin_shortcut(x)
        return dnn.residual_add(skip, h, self.scale)


class AttnBlock(nn.Module):
    """Single-head self-attention over the spatial positions."""

    def __init__(self, c: int, groups: int, skip_rescale: bool):
        super().__init__()
        self.norm = dnn.GroupNormSiLU(groups, c, silu=False)
        self.qkv = nn.Conv2d(c, 3 * c, 1)
        self.proj_out = nn.Conv2d(c, c, 1)
        self.scale = 1 / math.sqrt(2) if skip_rescale else 1.0

    def forward(self, x):
        B, C, H, W = x.shape
        q, k, v = self.qkv(self.norm(x)).reshape(B, 3, C, H * W).transpose(-1, -2).unbind(1)
        h = nn.functional.scaled_dot_product_attention(q[:, None], k[:, None], v[:, None])[:, 0]
        h = self.proj_out(h.transpose(-1, -2).reshape(B, C, H, W))
        return dnn.residual_add(x, h, self.scale)


class Downsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, stride=2, padding=1)

    def forward(self, x):
        return self.conv(x)


class Upsample(nn.Module):
    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv2d(c, c, 3, padding=1)

    def forward(self, x):
        return self.conv(nn.functional.interpolate(x, scale_factor=2.0, mode="nearest"))


class UNet(nn.Module):
    """model(x [B, C, H, W], t [B]) -> [B, out_channels, H, W]."""

    def __init__(self, config: UNetConfig | None = None, **kwargs):
        super().__init__()
        if config is None:
            config = UNetConfig(**kwargs)
        elif kwargs:
            raise ValueError("give either a UNetConfig or keyword options, not both")
        if not isinstance(config, UNetConfig):
            raise ValueError(f"config must be a UNetConfig (UNetConfig.from_dict for a dict); got {type(config).__name__}")
        self.config = c = config
        ch, temb_ch, G = c.ch, 4 * c.ch, c.num_groups
        if c.conditioning == "sigma":
            self.fourier = dnn.GaussianFourierProjection(ch)
        self.temb = nn.Sequential(nn.Linear(ch, temb_ch), nn.SiLU(), nn.Linear(temb_ch, temb_ch))
        self.conv_in = nn.Conv2d(c.in_channels, ch, 3, padding=1)

        self.down = nn.ModuleList()
        chans, cur, res = [ch], ch, c.resolution
        for level, mult in enumerate(c.ch_mult):
            for _ in range(c.num_res_blocks):
                blocks = [ResBlock(cur, ch * mult, temb_ch, c.dropout, G, c.skip_rescale)]
                cur = ch * mult
                if res in c.attn_resolutions:
                    blocks.append(AttnBlock(cur, G, c.skip_rescale))
                self.down.append(nn.ModuleList(blocks))
                chans.append(cur)
            if level != len(c.ch_mult) - 1:
                self.down.append(nn.ModuleList([Downsample(cur)]))
                chans.append(cur)
                res //= 2

        self.mid = nn.ModuleList([ResBlock(cur, cur, temb_ch, c.dropout, G, c.skip_rescale),
                                  AttnBlock(cur, G, c.skip_rescale),
                                  ResBlock(cur, cur, temb_ch, c.dropout, G, c.skip_rescale)])

        self.up = nn.ModuleList()
        for level, mult in reversed(list(enumerate(c.ch_mult))):
            for _ in range(c.num_res_blocks + 1):
                blocks = [ResBlock(cur + chans.pop(), ch * mult, temb_ch, c.dropout, G, c.skip_rescale)]
                cur = ch * mult
                if res in c.attn_resolutions:
                    blocks.append(AttnBlock(cur, G, c.skip_rescale))
                self.up.append(nn.ModuleList(blocks))
            if level != 0:
                self.up.append(nn.ModuleList([Upsample(cur)]))
                res *= 2

        self.norm_out = dnn.GroupNormSiLU(G, cur)
        self.conv_out = nn.Conv2d(cur, c.out_channels, 3, padding=1)
        if c.channels_last:
            self.to(memory_format=torch.channels_last)

    def embed(self, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        if c.conditioning == "sigma":
            feats = self.fourier(torch.log(t.to(torch.float32)))
        else:
            tt = t.to(torch.float32) * (c.time_scale if c.conditioning == "continuous" else 1.0)
            feats = dnn.timestep_embedding(tt, c.ch)
        return self.temb(feats)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise ValueError(f"x must be a floating-point tensor; got {x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.dim() != 4 or x.shape[1] != c.in_channels:
            raise ValueError(f"x must be [B, {c.in_channels}, H, W]; got {tuple(x.shape)}")
        if x.shape[-1] % 2 ** (len(c.ch_mult) - 1) or x.shape[-2] % 2 ** (len(c.ch_mult) - 1):
            raise ValueError(f"H and W must be divisible by {2 ** (len(c.ch_mult) - 1)}; got {tuple(x.shape[-2:])}")
        t = torch.as_tensor(t, device=x.device)
        if t.dim() == 0:
            t = t.expand(x.shape[0])
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}]; got {tuple(t.shape)}")
        if c.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        temb_act = nn.functional.silu(self.embed(t))
        h = self.conv_in(x)
        hs = [h]
        for blocks in self.down:
            h = _run(blocks, h, temb_act)
            hs.append(h)
        h = _run(self.mid, h, temb_act)
        for blocks in self.up:
            if isinstance(blocks[0], ResBlock):
                h = torch.cat([h, hs.pop()], dim=1)
            h = _run(blocks, h, temb_act)
        return self.conv_out(self.norm_out(h))


def _run(blocks, h, temb_act):
    """A level's blocks in order; residual blocks also take the timestep embedding."""
    for blk in blocks:
        h = blk(h, temb_act) if isinstance(blk, ResBlock) else blk(h)
    return h
