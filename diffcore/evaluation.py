"""Sample quality on the digits: a small classifier trained by this project on the digits'
training split gives (a) a Frechet distance in its feature space against the held-out
digits and (b) class coverage (the samples' 10-class histogram) -- the quality and
mode-coverage sides of the generative trilemma. Reports print the real-vs-real floor (a
training-split subset of the same size against the held-out set) and the noise ceiling
beside the model's figure, since a Frechet distance means little on its own.
"""
from __future__ import annotations

import math
import os

import torch
from torch import nn

from . import data as datasets
from .checkpoint import load_json, load_state, load_tensors, save_json, save_tensors
from .models.spec import ASSETS
from .validation import check_int

CLASSIFIER_DIR = os.path.join(ASSETS, "digits-classifier")


class DigitClassifier(nn.Module):
    """[B, 1, 8, 8] in [-1, 1] -> 10 logits; `features` is the 128-d penultimate layer."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.SiLU(),
            nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(64 * 16, 128), nn.SiLU())
        self.head = nn.Linear(128, 10)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or tuple(x.shape[1:]) != (1, 8, 8):
            raise ValueError(f"images must be [B, 1, 8, 8]; got {tuple(x.shape)}")
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))


def train_digit_classifier(out_dir: str = CLASSIFIER_DIR, steps: int = 1500, seed: int = 0) -> dict:
    """Train on the digits' training split (with one-pixel shifts as augmentation); report the
    held-out accuracy; save model.safetensors + model.json into out_dir."""
    check_int("steps", steps, lo=1)
    torch.manual_seed(seed)
    x, y = datasets.digits("train", with_labels=True)
    xh, yh = datasets.digits("heldout", with_labels=True)
    net = DigitClassifier()
    opt = torch.optim.Adam(net.parameters(), 1e-3, weight_decay=1e-4)
    g = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        idx = torch.randint(0, len(x), (128,), generator=g)
        dx, dy = torch.randint(-1, 2, (2,), generator=g).tolist()
        xb = torch.roll(x[idx], shifts=(dy, dx), dims=(2, 3))
        loss = nn.functional.cross_entropy(net(xb), y[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    net.eval()
    with torch.no_grad():
        acc = (net(xh).argmax(1) == yh).double().mean().item()
    save_tensors(os.path.join(out_dir, "model.safetensors"), net.state_dict())
    info = {"format": "diffcore-digit-classifier", "steps": steps, "seed": seed, "heldout_accuracy": round(acc, 4),
            "trained_on": "digits train split (1297 images)", "heldout": "digits held-out split (500 images)"}
    save_json(os.path.join(out_dir, "model.json"), info)
    return info


def load_classifier(path: str = CLASSIFIER_DIR) -> DigitClassifier:
    meta = load_json(os.path.join(path, "model.json"))
    if meta.get("format") != "diffcore-digit-classifier":
        raise ValueError(f"{path}: not a diffcore digit classifier")
    net = DigitClassifier()
    load_state(net, load_tensors(os.path.join(path, "model.safetensors")), "classifier weights")
    return net.eval()


def frechet_distance(f1: torch.Tensor, f2: torch.Tensor) -> float:
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^(1/2)) of two feature sets [n, d], in float64.
    tr((S1 S2)^(1/2)) = sum of sqrt(eigenvalues) of S1^(1/2) S2 S1^(1/2), symmetric PSD."""
    for name, f in (("features", f1), ("reference features", f2)):
        if f.dim() != 2 or f.shape[0] < 2:
            raise ValueError(f"{name} must be [n >= 2, d]; got {tuple(f.shape)}")
    a, b = f1.double(), f2.double()
    mu1, mu2 = a.mean(0), b.mean(0)
    s1, s2 = torch.cov(a.T), torch.cov(b.T)
    w, v = torch.linalg.eigh(s1)
    root1 = (v * w.clamp(min=0).sqrt()) @ v.T
    inner = torch.linalg.eigvalsh(root1 @ s2 @ root1).clamp(min=0).sqrt().sum()
    return float((mu1 - mu2).pow(2).sum() + s1.trace() + s2.trace() - 2 * inner)


def class_coverage(labels: torch.Tensor, classes: int = 10) -> dict:
    hist = torch.bincount(labels, minlength=classes).double() / max(len(labels), 1)
    p = hist[hist > 0]
    return {"histogram": [round(v, 4) for v in hist.tolist()], "smallest_share": float(hist.min()),
            "entropy_bits": float(-(p * p.log2()).sum()), "max_entropy_bits": math.log2(classes)}


@torch.no_grad()
def evaluate_digits(samples: torch.Tensor, classifier: DigitClassifier | None = None, seed: int = 0) -> dict:
    """Frechet distance and class coverage of digit samples [n, 1, 8, 8] in [-1, 1] (quantized
    to the data's 17 grey levels first), with the real-vs-real floor and the noise ceiling."""
    if samples.dim() != 4 or tuple(samples.shape[1:]) != (1, 8, 8):
        raise ValueError(f"samples must be [n, 1, 8, 8] digits; got {tuple(samples.shape)}")
    if not torch.isfinite(samples).all():
        raise ValueError("samples contain NaN or Inf")
    n = samples.shape[0]
    if n < 10:
        raise ValueError(f"need at least 10 samples for a Frechet distance; got {n}")
    clf = classifier or load_classifier()
    held = datasets.digits("heldout")
    train = datasets.digits("train")
    g = torch.Generator().manual_seed(seed)
    real = train[torch.randperm(len(train), generator=g)[: min(n, len(train))]]
    noise = datasets.quantize_digits(torch.rand(n, 1, 8, 8, generator=g) * 2 - 1)
    x = datasets.quantize_digits(samples.float())
    f_held = clf.features(held)
    fd = frechet_distance(clf.features(x), f_held)
    floor = frechet_distance(clf.features(real), f_held)
    ceiling = frechet_distance(clf.features(noise), f_held)
    cov = class_coverage(clf(x).argmax(1))
    return {"n": n, "frechet_distance": fd, "real_vs_real_floor": floor, "noise_ceiling": ceiling,
            "ratio_to_floor": fd / floor, **{f"classes_{k}": v for k, v in cov.items()}}
