"""A network as the model a process expects: what the samplers, losses and likelihood call.

Every network here predicts the noise eps (the DSM-optimal target for every family); the
wrapper turns it into the process's output: eps for DDPM (2C channels with learned variance),
the score -eps / sigma for NCSN and the SDEs. With lambda = sigma^2 the DSM and
continuous-time losses of the score are then exactly the eps MSE.
"""
from __future__ import annotations

import torch
from torch import nn

from .. import parameterization as P
from ..discrete import DDPM, NCSN
from ..sde import SDE, VESDE, VPSDE


class ProcessModel(nn.Module):
    def __init__(self, net: nn.Module, process):
        super().__init__()
        if not isinstance(process, (DDPM, NCSN, SDE)):
            raise ValueError(f"process must be a DDPM, NCSN or SDE; got {type(process).__name__}")
        if not isinstance(net, nn.Module) or not hasattr(getattr(net, "config", None), "conditioning"):
            raise ValueError(f"net must be a diffcore network (UNet or MLP, with .config.conditioning); "
                             f"got {type(net).__name__}")
        self.net, self.process = net, process
        self.conditioning = net.config.conditioning
        if isinstance(process, DDPM) and self.conditioning != "discrete":
            raise ValueError(f"a DDPM process needs a network with conditioning='discrete'; got {self.conditioning!r}")
        if isinstance(process, (NCSN, VESDE)) and self.conditioning != "sigma":
            raise ValueError(f"{type(process).__name__} needs a network with conditioning='sigma'; got {self.conditioning!r}")
        if isinstance(process, VPSDE) and self.conditioning == "sigma":
            raise ValueError(f"{type(process).__name__} needs conditioning='continuous' or 'discrete'; got 'sigma'")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        p = self.process
        if isinstance(p, DDPM):
            return self.net(x, t)
        if isinstance(p, NCSN):
            sigma = t
        elif isinstance(p, VESDE):
            sigma = p.sigma(t)
        else:
            sigma = p.marginal_coeffs(t)[1]
        if isinstance(p, (NCSN, VESDE)):
            label = sigma
        elif self.conditioning == "discrete":
            label = t * (p.N - 1)  # a DDPM-trained network on its VP SDE (score_sde's convention)
        else:
            label = t
        eps = self.net(x, label)
        if eps.shape[1] != x.shape[1]:  # a learned-variance network: the score needs eps only
            eps = eps[:, : x.shape[1]]
        return -eps / P.bcast(sigma.to(eps.dtype), eps)
