"""Training for every family: ncsn, ddpm (L_simple or hybrid with learned variance), sde-ve,
sde-vp, sde-subvp.

Adam with linear warm-up and gradient clipping, an EMA of the weights, bf16/fp16 autocast.
Every random draw of step k (batch indices, timesteps, noise, dropout) comes from generators
seeded by (seed, k), so a run resumed from its checkpoint at step k continues exactly as the
uninterrupted run would (bitwise on CPU). Checkpoints are safetensors + JSON, written
atomically; the finished model is exported as model.safetensors (EMA weights) + model.json.
"""
from __future__ import annotations

import copy
import dataclasses
import math
import os
import time

import torch

from . import losses
from . import data as datasets
from .checkpoint import load_json, load_state, load_tensors, read_metadata, save_json, save_tensors
from .discrete import DDPM, NCSN
from .models.process_model import ProcessModel
from .models.spec import CONDITIONING, FAMILIES, FORMAT, build_network, build_process
from .progress import Progress
from .schedules import sigma_max_from_data
from .validation import check_choice, check_device, check_int, check_positive

PRECISIONS = ("fp32", "bf16", "fp16")
LOSSES = ("simple", "hybrid")
# Options that may differ between a run and its resumption (everything else must match).
RESUMABLE = ("steps", "checkpoint_every")


@dataclasses.dataclass
class TrainConfig:
    family: str = "ddpm"
    data: str = "digits"
    steps: int = 2000
    batch_size: int = 64
    lr: float = 2e-4
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    precision: str = "fp32"
    seed: int = 0
    loss: str = "simple"
    process: dict = dataclasses.field(default_factory=dict)
    network: dict = dataclasses.field(default_factory=dict)
    checkpoint_every: int = 500

    def __post_init__(self):
        check_choice("family", self.family, FAMILIES)
        check_int("steps", self.steps, lo=1)
        check_int("batch_size", self.batch_size, lo=1)
        check_positive("lr", self.lr)
        check_int("warmup", self.warmup, lo=0)
        check_positive("grad_clip", self.grad_clip)
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay must lie in [0, 1); got {self.ema_decay}")
        check_choice("precision", self.precision, PRECISIONS)
        check_int("seed", self.seed, lo=0, hi=2**63 - 1)
        check_choice("loss", self.loss, LOSSES)
        if self.loss == "hybrid" and self.family != "ddpm":
            raise ValueError(f"loss='hybrid' (learned variance) is for family='ddpm'; got family={self.family!r}")
        check_int("checkpoint_every", self.checkpoint_every, lo=1)
        if not isinstance(self.data, str) or not self.data:
            raise ValueError(f"data must be a data spec string (digits, toy:NAME, folder:PATH, cifar10:PATH); got {self.data!r}")
        if not isinstance(self.process, dict) or not isinstance(self.network, dict):
            raise ValueError("process and network must be dicts of options")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _step_seed(seed: int, step: int, stream: int) -> int:
    """A 63-bit seed per (run seed, step, stream): splitmix64 of the three."""
    z = (seed * 0x9E3779B97F4A7C15 + step * 0xBF58476D1CE4E5B9 + stream * 0x94D049BB133111EB) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return (z ^ (z >> 31)) >> 1


def default_network(family: str, loss: str, sample: torch.Tensor, overrides: dict) -> dict:
    """A network sized for the data: an MLP for vectors, a U-Net for images (the DDPM CIFAR-10
    configuration at 32x32 and above, a small one for tiny images such as the 8x8 digits)."""
    cfg = {"conditioning": CONDITIONING[family], "learned_variance": loss == "hybrid"}
    if family in ("sde-vp", "sde-subvp"):
        cfg["time_scale"] = 999.0  # t in [0, 1] labelled like DDPM's 0..999 (score_sde)
    if sample.dim() == 1:
        return {"type": "mlp", "config": {**cfg, "dim": sample.shape[0], **overrides}}
    C, H, W = sample.shape
    if H != W:
        raise ValueError(f"images must be square for the U-Net; got {H}x{W}")
    cfg.update(in_channels=C, resolution=H)
    if H < 32:
        cfg.update(ch=32, ch_mult=[1, 2], num_res_blocks=1, attn_resolutions=[max(H // 2, 1)], num_groups=8)
    return {"type": "unet", "config": {**cfg, **overrides}}


def default_process(family: str, loss: str, data: torch.Tensor, overrides: dict) -> dict:
    p = dict(overrides)
    if family == "ddpm":
        p.setdefault("T", 1000)
        p.setdefault("schedule", "linear")
        p.setdefault("variance", "learned_range" if loss == "hybrid" else "fixed_small")
    elif family in ("ncsn", "sde-ve"):
        # sigma_max from the largest pairwise distance (Song & Ermon 2020, technique 1)
        p.setdefault("sigma_max", round(sigma_max_from_data(data[:2000].flatten(1).double()), 4))
        p.setdefault("sigma_min", 0.01)
        p.setdefault("num_levels" if family == "ncsn" else "N", 50 if family == "ncsn" else 1000)
    else:
        p.setdefault("beta_min", 0.1)
        p.setdefault("beta_max", 20.0)
        p.setdefault("N", 1000)
    return p


class Trainer:
    """Trainer(config, out_dir).run() trains, checkpoints into out_dir and exports the model.

    data: a tensor [N, ...] in [-1, 1] to train on instead of config.data (tests use this).
    """

    def __init__(self, config: TrainConfig, out_dir: str, data: torch.Tensor | None = None,
                 device: str | torch.device = "cpu", progress: bool = True, command: str | None = None):
        if not isinstance(config, TrainConfig):
            raise ValueError(f"config must be a TrainConfig; got {type(config).__name__}")
        if not isinstance(out_dir, (str, os.PathLike)):
            raise ValueError(f"out_dir must be a directory path; got {type(out_dir).__name__}")
        if os.path.exists(out_dir) and not os.path.isdir(out_dir):
            raise ValueError(f"out_dir {os.fspath(out_dir)!r} exists and is not a directory")
        if data is not None and not isinstance(data, torch.Tensor):
            raise ValueError(f"data must be a torch.Tensor [N, ...] (or None to load config.data); got {type(data).__name__}")
        self.config, self.out_dir, self.command = config, os.fspath(out_dir), command
        self.device = check_device("device", device)
        self.data = datasets.load(config.data) if data is None else data.float()
        if self.data.dim() < 2 or self.data.shape[0] < 1:
            raise ValueError(f"data must be [N, ...] with N >= 1; got {tuple(self.data.shape)}")
        if not torch.isfinite(self.data).all():
            raise ValueError("data contains NaN or Inf")
        c = config
        self.process_cfg = default_process(c.family, c.loss, self.data, c.process)
        self.network_cfg = default_network(c.family, c.loss, self.data[0], c.network)
        self.process = build_process(c.family, self.process_cfg)
        torch.manual_seed(_step_seed(c.seed, 0, 7))  # the initial weights are part of the run
        self.net = build_network(self.network_cfg).to(self.device)
        self.ema = copy.deepcopy(self.net).requires_grad_(False)
        self.model = ProcessModel(self.net, self.process)
        self.params = [p for p in self.net.parameters() if p.requires_grad]
        self.opt = torch.optim.Adam(self.params, lr=c.lr)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=c.precision == "fp16")
        self.step = 0
        self.seconds = 0.0
        self.progress = progress

    # ---- one step ------------------------------------------------------------------------
    def loss(self, x0: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        c, p = self.config, self.process
        if isinstance(p, DDPM):
            fn = losses.ddpm_hybrid_loss if c.loss == "hybrid" else losses.ddpm_simple_loss
            return fn(self.model, p, x0, generator=g).mean()
        if isinstance(p, NCSN):  # 1/2 |sigma s + z|^2 summed -> the per-dimension eps MSE
            return (losses.dsm_loss(self.model, p, x0, generator=g) * (2.0 / x0[0].numel())).mean()
        return losses.sde_score_loss(self.model, p, x0, generator=g, reduce="mean").mean()

    def train_step(self) -> float:
        c, k = self.config, self.step
        g_idx = torch.Generator().manual_seed(_step_seed(c.seed, k, 1))
        idx = torch.randint(0, self.data.shape[0], (c.batch_size,), generator=g_idx)
        x0 = self.data[idx].to(self.device)
        g = torch.Generator(device=self.device).manual_seed(_step_seed(c.seed, k, 2))
        for group in self.opt.param_groups:
            group["lr"] = c.lr * min(1.0, (k + 1) / c.warmup) if c.warmup else c.lr
        devices = [self.device.index or 0] if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):  # dropout draws from the global generator
            torch.manual_seed(_step_seed(c.seed, k, 3))
            dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(c.precision)
            with torch.autocast(self.device.type, dtype=dtype or torch.float32, enabled=dtype is not None):
                loss = self.loss(x0, g)
            self.opt.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.params, c.grad_clip)
        self.scaler.step(self.opt)
        self.scaler.update()
        with torch.no_grad():
            for pe, p in zip(self.ema.parameters(), self.net.parameters()):
                pe.lerp_(p, 1.0 - c.ema_decay)
            for be, b in zip(self.ema.buffers(), self.net.buffers()):
                be.copy_(b)
        self.step += 1
        return float(loss.detach())

    # ---- checkpoints -----------------------------------------------------------------------
    def _paths(self):
        return os.path.join(self.out_dir, "checkpoint.safetensors"), os.path.join(self.out_dir, "checkpoint.json")

    def save_checkpoint(self) -> None:
        tensors = {f"model.{k}": v for k, v in self.net.state_dict().items()}
        tensors.update({f"ema.{k}": v for k, v in self.ema.state_dict().items()})
        for i, p in enumerate(self.params):
            for name, v in self.opt.state.get(p, {}).items():
                tensors[f"optim.{i}.{name}"] = v if isinstance(v, torch.Tensor) else torch.tensor(v)
        st, js = self._paths()
        # tensors first, then the JSON naming their step: a crash between the two renames
        # leaves a pair whose steps disagree, which resume refuses
        save_tensors(st, tensors, {"step": self.step})
        save_json(js, {"format": "diffcore-checkpoint", "step": self.step, "config": self.config.to_dict(),
                       "scaler": {k: v for k, v in self.scaler.state_dict().items()} if self.scaler.is_enabled() else None,
                       "seconds": self.seconds})

    def resume(self) -> bool:
        """Load the checkpoint in out_dir if there is one; False when starting fresh."""
        st, js = self._paths()
        if not os.path.exists(js):
            return False
        meta = load_json(js)
        if meta.get("format") != "diffcore-checkpoint" or not isinstance(meta.get("step"), int):
            raise ValueError(f"{js}: not a diffcore training checkpoint (format 'diffcore-checkpoint' with an integer step)")
        saved = meta.get("config", {})
        now = self.config.to_dict()
        differ = sorted(k for k in set(saved) | set(now) if k not in RESUMABLE and saved.get(k) != now.get(k))
        if differ:
            raise ValueError(f"cannot resume {self.out_dir!r}: its checkpoint was trained with other settings for "
                             f"{differ} (saved {[saved.get(k) for k in differ]}, now {[now.get(k) for k in differ]}); "
                             f"use the same options or another output directory")
        try:
            tensor_step = int(read_metadata(st).get("step", -1))
        except FileNotFoundError:
            raise ValueError(f"{js} names step {meta['step']} but {st} is missing: the checkpoint is incomplete; "
                             f"delete {js} to restart") from None
        if tensor_step != meta["step"]:
            raise ValueError(f"{st} (step {tensor_step}) and {js} (step {meta['step']}) disagree: "
                             f"the last checkpoint write was interrupted; delete both to restart")
        tensors = load_tensors(st)
        load_state(self.net, {k[6:]: v for k, v in tensors.items() if k.startswith("model.")}, "checkpoint model")
        load_state(self.ema, {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}, "checkpoint ema")
        for i, p in enumerate(self.params):
            state = {k.split(".", 2)[2]: v.to(self.device) for k, v in tensors.items() if k.startswith(f"optim.{i}.")}
            if state:
                self.opt.state[p] = state
        if meta.get("scaler") and self.scaler.is_enabled():
            self.scaler.load_state_dict(meta["scaler"])
        self.step, self.seconds = int(meta["step"]), float(meta.get("seconds", 0.0))
        return True

    def export(self) -> str:
        """model.safetensors (EMA weights) + model.json in out_dir; returns the directory."""
        c = self.config
        shape = list(self.data.shape[1:])
        network = {"type": self.network_cfg["type"], "config": self.net.config.to_dict()}  # every option, defaults too
        spec = {"format": FORMAT, "version": 1, "family": c.family, "process": self.process_cfg,
                "network": network, "data": {"spec": c.data, "shape": shape, "range": [-1, 1]},
                "train": {**c.to_dict(), "steps_done": self.step, "seconds": round(self.seconds, 1),
                          "command": self.command, "torch": torch.__version__}}
        save_tensors(os.path.join(self.out_dir, "model.safetensors"), self.ema.state_dict())
        save_json(os.path.join(self.out_dir, "model.json"), spec)
        return self.out_dir

    # ---- the loop --------------------------------------------------------------------------
    def run(self, resume: bool = True, stop_at: int | None = None) -> dict:
        """Train to config.steps (or stop early after step `stop_at`, checkpointing there, as an
        interrupted run would). Returns {"step", "loss", "seconds", "out_dir"}."""
        c = self.config
        if stop_at is not None:
            check_int("stop_at", stop_at, lo=1)
        if resume:
            self.resume()
        self.net.train()
        end = c.steps if stop_at is None else min(stop_at, c.steps)
        bar = Progress(c.steps, f"train {c.family}", enabled=self.progress)
        bar.n = self.step
        smooth = None
        t0 = time.perf_counter()
        last = None
        while self.step < end:
            last = self.train_step()
            if not math.isfinite(last):
                raise FloatingPointError(f"loss became {last} at step {self.step}; lower lr or use fp32")
            smooth = last if smooth is None else 0.98 * smooth + 0.02 * last
            bar.update(1, loss=smooth)
            if self.step % c.checkpoint_every == 0 or self.step == end:
                self.seconds += time.perf_counter() - t0
                t0 = time.perf_counter()
                self.save_checkpoint()
        bar.close()
        if self.step >= c.steps:
            self.export()
        return {"step": self.step, "loss": last, "seconds": self.seconds, "out_dir": self.out_dir}
