"""`diffcore train`: train any family on local data; resumes from OUT's checkpoint."""
from __future__ import annotations

import json
import shlex
import sys

from ..models.spec import FAMILIES
from .common import json_object, nonneg_int, positive_float, positive_int, unit_interval


def add_parser(sub):
    t = sub.add_parser(
        "train", help="train a model (ncsn, ddpm, sde-ve, sde-vp, sde-subvp)",
        description="Train a diffusion model on local data and export OUT/model.safetensors + OUT/model.json. "
                    "Checkpoints go to OUT every --checkpoint-every steps; running the same command again "
                    "resumes from the last one and ends exactly where an uninterrupted run would.")
    t.add_argument("--family", choices=FAMILIES, default="ddpm", help="model family (default: ddpm)")
    t.add_argument("--data", default="digits",
                   help="digits | toy:NAME (two_gaussians, eight_gaussians, checkerboard, moons) | "
                        "folder:PATH[:SIZE] | cifar10:PATH (default: digits, scikit-learn's 8x8 digits)")
    t.add_argument("--loss", choices=["simple", "hybrid"], default="simple",
                   help="ddpm only: L_simple, or hybrid with learned variance (default: simple)")
    t.add_argument("--steps", type=positive_int("--steps"), default=2000, help="optimizer steps (default: 2000)")
    t.add_argument("--batch-size", type=positive_int("--batch-size"), default=64, help="batch size (default: 64)")
    t.add_argument("--lr", type=positive_float("--lr"), default=2e-4, help="Adam learning rate (default: 2e-4)")
    t.add_argument("--warmup", type=nonneg_int("--warmup"), default=100, help="linear warm-up steps (default: 100)")
    t.add_argument("--grad-clip", type=positive_float("--grad-clip"), default=1.0, help="gradient-norm clip (default: 1)")
    t.add_argument("--ema-decay", type=unit_interval("--ema-decay"), default=0.999, help="EMA rate of the exported weights (default: 0.999)")
    t.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32",
                   help="autocast precision of the network (default: fp32)")
    t.add_argument("--seed", type=nonneg_int("--seed"), default=0, help="seed of every random draw (default: 0)")
    t.add_argument("--network", type=json_object("--network"), default={},
                   help="network options as JSON, e.g. '{\"ch\": 64, \"ch_mult\": [1, 2]}' (default: sized to the data)")
    t.add_argument("--process", type=json_object("--process"), default={},
                   help="process options as JSON, e.g. '{\"T\": 1000, \"schedule\": \"cosine\"}'")
    t.add_argument("--checkpoint-every", type=positive_int("--checkpoint-every"), default=500,
                   help="steps between checkpoints (default: 500)")
    t.add_argument("--device", default="cpu", help="torch device (default: cpu)")
    t.add_argument("--threads", type=positive_int("--threads"), default=None, help="CPU threads (default: torch's)")
    t.add_argument("--out", required=True, help="output directory (checkpoints and the exported model)")
    t.add_argument("--no-progress", action="store_true", help="no progress line")
    t.set_defaults(func=run)


def run(args) -> int:
    import torch

    from ..train import TrainConfig, Trainer

    if args.threads:
        torch.set_num_threads(args.threads)
    cfg = TrainConfig(family=args.family, data=args.data, steps=args.steps, batch_size=args.batch_size, lr=args.lr,
                      warmup=args.warmup, grad_clip=args.grad_clip, ema_decay=args.ema_decay,
                      precision=args.precision, seed=args.seed, loss=args.loss, process=args.process,
                      network=args.network, checkpoint_every=args.checkpoint_every)
    command = "diffcore " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    trainer = Trainer(cfg, args.out, device=args.device, progress=not args.no_progress, command=command)
    if trainer.resume():
        print(f"resuming {args.out} from step {trainer.step}", file=sys.stderr)
    result = trainer.run(resume=False)
    print(json.dumps({**result, "model": f"{args.out}/model.safetensors"}, indent=2))
    return 0
