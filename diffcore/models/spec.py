"""Model specs: the JSON that says what a weights file is, and building a model from it.

    {"format": "diffcore-model", "version": 1,
     "family": "ddpm" | "ncsn" | "sde-ve" | "sde-vp" | "sde-subvp",
     "process": {...process parameters...},
     "network": {"type": "unet" | "mlp", "config": {...}},
     "data": {"spec": "digits", "shape": [1, 8, 8]}, ...}
"""
from __future__ import annotations

import os

import torch

from .. import schedules
from ..checkpoint import load_json, load_state, load_tensors, refuse_pickle
from ..discrete import DDPM, NCSN
from ..sde import SubVPSDE, VESDE, VPSDE
from ..validation import check_choice
from .mlp import MLP, MLPConfig
from .process_model import ProcessModel
from .unet import UNet, UNetConfig

FAMILIES = ("ncsn", "ddpm", "sde-ve", "sde-vp", "sde-subvp")
CONDITIONING = {"ncsn": "sigma", "ddpm": "discrete", "sde-ve": "sigma", "sde-vp": "continuous",
                "sde-subvp": "continuous"}
FORMAT = "diffcore-model"
ASSETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets")
DEFAULT_MODEL = os.path.join(ASSETS, "digits-ddpm")


def build_process(family: str, p: dict):
    check_choice("family", family, FAMILIES)
    if not isinstance(p, dict):
        raise ValueError(f"process must be a dict of options; got {type(p).__name__}")
    need = {"ncsn": "sigma_max", "sde-ve": "sigma_max"}.get(family)
    if need is not None and need not in p:
        raise ValueError(f"process options for family={family!r} need {need!r}; got keys {sorted(p)}")
    if family == "ddpm":
        sched = check_choice("schedule", p.get("schedule", "linear"), ("linear", "cosine"))
        betas = schedules.linear_betas(p.get("T", 1000)) if sched == "linear" else schedules.cosine_betas(p.get("T", 1000))
        return DDPM(betas, variance=p.get("variance", "fixed_small"))
    if family == "ncsn":
        return NCSN(schedules.geometric_sigmas(p["sigma_max"], p.get("sigma_min", 0.01), p.get("num_levels", 50)))
    if family == "sde-ve":
        return VESDE(p.get("sigma_min", 0.01), p["sigma_max"], p.get("N", 1000))
    cls = VPSDE if family == "sde-vp" else SubVPSDE
    return cls(p.get("beta_min", 0.1), p.get("beta_max", 20.0), p.get("N", 1000))


def build_network(net: dict) -> torch.nn.Module:
    if not isinstance(net, dict):
        raise ValueError(f"network must be a dict {{'type': ..., 'config': {{...}}}}; got {type(net).__name__}")
    kind = check_choice("network type", net.get("type"), ("unet", "mlp"))
    if not isinstance(net.get("config", {}), dict):
        raise ValueError(f"network config must be a dict of options; got {type(net.get('config')).__name__}")
    cfg = dict(net.get("config", {}))
    return UNet(UNetConfig.from_dict(cfg)) if kind == "unet" else MLP(MLPConfig.from_dict(cfg))


def check_spec(spec: dict, where: str = "model.json") -> dict:
    if spec.get("format") != FORMAT:
        raise ValueError(f"{where}: not a diffcore model spec (format must be {FORMAT!r}; got {spec.get('format')!r})")
    for key in ("family", "process", "network", "data"):
        if key not in spec:
            raise ValueError(f"{where}: missing key {key!r}")
    check_choice(f"{where} family", spec["family"], FAMILIES)
    return spec


def load_model(path: str = DEFAULT_MODEL, device=None):
    """(model(x, t) for the process, the process, the spec) from a model directory holding
    model.json and model.safetensors (or from the .safetensors file beside its .json)."""
    if not isinstance(path, (str, os.PathLike)):
        raise ValueError(f"path must be a model directory or a .safetensors file; got {type(path).__name__}")
    path = os.fspath(path)
    refuse_pickle(path)
    if os.path.isdir(path):
        spec_path, weights = os.path.join(path, "model.json"), os.path.join(path, "model.safetensors")
    elif path.endswith(".safetensors"):
        spec_path, weights = path[: -len(".safetensors")] + ".json", path
    else:
        raise ValueError(f"model must be a directory with model.json + model.safetensors, or a .safetensors "
                         f"file with a .json beside it; got {path!r}")
    spec = check_spec(load_json(spec_path), spec_path)
    process = build_process(spec["family"], spec["process"])
    net = build_network(spec["network"])
    load_state(net, load_tensors(weights), what=os.path.basename(weights))
    net.eval()
    if device is not None:
        net.to(device)
    return ProcessModel(net, process), process, spec


def as_sde(model: ProcessModel, process):
    """A DDPM model as a model of its VP SDE (linear betas b_i = beta(t_i) / T; the network
    sees t * (T - 1), score_sde's convention), for the pc / ode samplers and likelihoods.
    SDE models are returned as they are."""
    if not isinstance(process, DDPM):
        return model, process
    T = process.T
    b = process.betas
    linear = torch.allclose(b, torch.linspace(float(b[0]), float(b[-1]), T, dtype=b.dtype))
    if not linear:
        raise ValueError("only a DDPM with the linear beta schedule is the discretization of a VP SDE; "
                         "this model's schedule is not linear")
    sde = VPSDE(float(b[0]) * T, float(b[-1]) * T, T)
    return ProcessModel(model.net, sde), sde
