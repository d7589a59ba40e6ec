"""A time-conditioned MLP for low-dimensional data (the 2-D toys)."""
from __future__ import annotations

import dataclasses

import torch
from torch import nn

from .. import nn as dnn
from ..validation import check_choice, check_int


@dataclasses.dataclass
class MLPConfig:
    dim: int = 2
    hidden: int = 128
    depth: int = 3
    conditioning: str = "discrete"
    time_scale: float = 1000.0
    learned_variance: bool = False

    def __post_init__(self):
        check_int("dim", self.dim, lo=1)
        check_int("hidden", self.hidden, lo=1)
        check_int("depth", self.depth, lo=1)
        check_choice("conditioning", self.conditioning, ("discrete", "continuous", "sigma"))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "MLPConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        if set(d) - known:
            raise ValueError(f"unknown MLP config key(s) {sorted(set(d) - known)}; accepted: {sorted(known)}")
        return cls(**d)


class MLP(nn.Module):
    """model(x [B, dim], t [B]) -> [B, dim] (or [B, 2 dim] with learned variance)."""

    def __init__(self, config: MLPConfig | None = None, **kwargs):
        super().__init__()
        if config is not None and kwargs:
            raise ValueError("give either an MLPConfig or keyword options, not both")
        if config is not None and not isinstance(config, MLPConfig):
            raise ValueError(f"config must be an MLPConfig (MLPConfig.from_dict for a dict); got {type(config).__name__}")
        self.config = c = config or MLPConfig(**kwargs)
        if c.conditioning == "sigma":
            self.fourier = dnn.GaussianFourierProjection(c.hidden)
        self.temb = nn.Sequential(nn.Linear(c.hidden, c.hidden), nn.SiLU(), nn.Linear(c.hidden, c.hidden))
        self.inp = nn.Linear(c.dim, c.hidden)
        self.layers = nn.ModuleList(nn.Linear(c.hidden, c.hidden) for _ in range(c.depth))
        self.out = nn.Linear(c.hidden, c.dim * (2 if c.learned_variance else 1))

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        c = self.config
        if not isinstance(x, torch.Tensor) or not x.dtype.is_floating_point:
            raise ValueError(f"x must be a floating-point tensor; got {x.dtype if isinstance(x, torch.Tensor) else type(x).__name__}")
        if x.dim() != 2 or x.shape[1] != c.dim:
            raise ValueError(f"x must be [B, {c.dim}]; got {tuple(x.shape)}")
        t = torch.as_tensor(t, device=x.device).expand(x.shape[0]) if torch.as_tensor(t).dim() == 0 else t
        if t.shape != (x.shape[0],):
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}]; got {tuple(t.shape)}")
        if c.conditioning == "sigma":
            feats = self.fourier(torch.log(t.to(torch.float32)))
        else:
            feats = dnn.timestep_embedding(t.to(torch.float32) * (c.time_scale if c.conditioning == "continuous" else 1.0), c.hidden)
        emb = self.temb(feats)
        h = self.inp(x)
        for layer in self.layers:
            h = h + layer(nn.functional.silu(h + emb))
        return self.out(nn.functional.silu(h))
