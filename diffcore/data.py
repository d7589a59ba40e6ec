"""Training data, all local (nothing is downloaded): scikit-learn's bundled 8x8 digits, 2-D toy
distributions, a folder of images, CIFAR-10 from a local copy of its python batches.

Every loader returns a float32 tensor [N, C, H, W] (or [N, 2] for toys) scaled to [-1, 1],
and `load(spec)` parses the one-string form the CLI takes:
    digits | digits:heldout | toy:NAME | folder:PATH | cifar10:PATH
"""
from __future__ import annotations

import io
import math
import os
import pickle

import numpy as np
import torch

from .validation import check_choice, check_int

DIGITS_HELDOUT = 500        # digits kept out of training: the eval reference set
DIGITS_SPLIT_SEED = 0
TOYS = ("two_gaussians", "eight_gaussians", "checkerboard", "moons")


# ---- digits ----------------------------------------------------------------------------------
def _digits_arrays():
    try:
        from sklearn.datasets import load_digits
    except ImportError as e:
        raise ImportError("the digits data set comes with scikit-learn: pip install scikit-learn "
                          "(or pip install 'diffcore[data]')") from e
    d = load_digits()
    return d.images.astype(np.float32), d.target.astype(np.int64)


def digits_split():
    """The fixed split of the 1797 digits: (train indices, held-out indices)."""
    perm = torch.randperm(1797, generator=torch.Generator().manual_seed(DIGITS_SPLIT_SEED))
    return perm[DIGITS_HELDOUT:].sort().values, perm[:DIGITS_HELDOUT].sort().values


def digits(split: str = "train", with_labels: bool = False):
    """8x8 digits as [N, 1, 8, 8] in [-1, 1] (pixel values 0..16 scaled), one split of them."""
    check_choice("split", split, ("train", "heldout", "all"))
    images, labels = _digits_arrays()
    x = torch.from_numpy(images)[:, None] / 8.0 - 1.0
    y = torch.from_numpy(labels)
    if split != "all":
        idx = digits_split()[0 if split == "train" else 1]
        x, y = x[idx], y[idx]
    return (x, y) if with_labels else x


def quantize_digits(x: torch.Tensor) -> torch.Tensor:
    """Model output in [-1, 1] -> the data's 17 grey levels (0..16), back in [-1, 1]."""
    return (torch.round((x.clamp(-1, 1) + 1) * 8) / 8 - 1).to(x.dtype)


# ---- 2-D toys ------------------------------------------------------------------------------
def toy(name: str, n: int = 10000, seed: int = 0) -> torch.Tensor:
    """n points of a 2-D toy distribution, scaled to roughly [-1, 1]^2."""
    check_choice("toy", name, TOYS)
    n = check_int("n", n, lo=1)
    seed = check_int("seed", seed, lo=0, hi=2**63 - 1)
    g = torch.Generator().manual_seed(seed)
    if name == "two_gaussians":
        k = (torch.rand(n, generator=g) < 0.2).double()
        centers = torch.stack([0.5 - k, torch.zeros(n, dtype=torch.float64)], 1)
        x = centers + 0.0625 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    elif name == "eight_gaussians":
        ang = torch.randint(0, 8, (n,), generator=g).double() * (math.pi / 4)
        x = 0.7 * torch.stack([ang.cos(), ang.sin()], 1) + 0.05 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    elif name == "checkerboard":
        x1 = torch.rand(n, generator=g, dtype=torch.float64) * 4 - 2
        x2 = torch.rand(n, generator=g, dtype=torch.float64) - torch.randint(0, 2, (n,), generator=g).double() * 2
        x2 = x2 + (torch.floor(x1) % 2)
        x = torch.stack([x1, x2], 1) / 2
    else:
        t = torch.rand(n, generator=g, dtype=torch.float64) * math.pi
        upper = torch.rand(n, generator=g) < 0.5
        x = torch.where(upper[:, None], torch.stack([t.cos(), t.sin()], 1), torch.stack([1 - t.cos(), 0.5 - t.sin()], 1))
        x = (x - torch.tensor([0.5, 0.25], dtype=torch.float64)) / 1.5
        x = x + 0.03 * torch.randn(n, 2, generator=g, dtype=torch.float64)
    return x.float()


# ---- a folder of images -----------------------------------------------------------------------
def folder(path: str, size: int | None = None) -> torch.Tensor:
    """Every .png / .npy image in a folder as [N, C, H, W] in [-1, 1] (PNG: 8-bit grey, RGB
    or RGBA, non-interlaced; RGBA loses alpha). All must share one shape unless `size` resizes."""
    from .png import read_png

    if not os.path.isdir(path):
        raise FileNotFoundError(f"data folder {path!r} does not exist")
    if size is not None:
        size = check_int("size", size, lo=1)
    names = sorted(f for f in os.listdir(path) if f.lower().endswith((".png", ".npy")))
    if not names:
        raise ValueError(f"data folder {path!r} has no .png or .npy images")
    out = []
    for name in names:
        full = os.path.join(path, name)
        try:
            arr = np.load(full, allow_pickle=False) if name.lower().endswith(".npy") else read_png(full)
        except (ValueError, OSError, EOFError) as e:
            raise ValueError(f"{full}: not a readable image (.npy without objects, or an 8-bit PNG): {e}") from None
        if arr.ndim == 2:
            arr = arr[:, :, None]
        if arr.ndim != 3:
            raise ValueError(f"{full}: expected an image [H, W] or [H, W, C]; got shape {arr.shape}")
        img = torch.from_numpy(np.ascontiguousarray(arr[:, :, :3])).permute(2, 0, 1).float()
        img = img / 127.5 - 1 if arr.dtype == np.uint8 else img
        if size is not None:
            img = torch.nn.functional.interpolate(img[None], size=(size, size), mode="bilinear", antialias=True,
                                                  align_corners=False)[0]
        out.append(img)
    shapes = {tuple(i.shape) for i in out}
    if len(shapes) > 1:
        raise ValueError(f"images in {path!r} have different shapes {sorted(shapes)}; pass a size to resize them")
    return torch.stack(out)


# ---- CIFAR-10 ----------------------------------------------------------------------------------
class _NumpyOnlyUnpickler(pickle.Unpickler):
    """CIFAR-10's python batches are pickles of dicts of numpy arrays; refuse anything else, so a
    tampered file cannot run code."""
    ALLOWED = {("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
               ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
               ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar")}

    def find_class(self, module, name):
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"refusing {module}.{name} in a CIFAR-10 batch file")
        return super().find_class(module, name)


def cifar10(root: str, split: str = "train") -> torch.Tensor:
    """CIFAR-10 from a local copy of `cifar-10-batches-py` (data_batch_1..5, test_batch)."""
    check_choice("split", split, ("train", "test"))
    names = [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]
    base = root if os.path.exists(os.path.join(root, names[0])) else os.path.join(root, "cifar-10-batches-py")
    missing = [n for n in names if not os.path.exists(os.path.join(base, n))]
    if missing:
        raise FileNotFoundError(
            f"CIFAR-10 batch file(s) {missing} not found under {root!r}. diffcore downloads nothing: "
            f"get cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html, unpack it and "
            f"pass the cifar-10-batches-py folder (cifar10:/path/to/cifar-10-batches-py)")
    parts = []
    for n in names:
        path = os.path.join(base, n)
        try:
            with open(path, "rb") as f:
                d = _NumpyOnlyUnpickler(io.BytesIO(f.read()), encoding="bytes").load()
            parts.append(np.asarray(d[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
        except (pickle.UnpicklingError, EOFError, KeyError, TypeError, ValueError, IndexError) as e:
            raise ValueError(f"{path}: not a CIFAR-10 python batch (corrupt, truncated or tampered): "
                             f"{type(e).__name__}: {e}") from None
    return torch.from_numpy(np.concatenate(parts)).float() / 127.5 - 1


# ---- the CLI's one-string form ----------------------------------------------------------------
def load(spec: str) -> torch.Tensor:
    """digits | digits:heldout | toy:NAME | folder:PATH[:SIZE] | cifar10:PATH"""
    if not isinstance(spec, str) or not spec:
        raise ValueError(f"data must be a string: digits, toy:NAME, folder:PATH or cifar10:PATH; got {spec!r}")
    kind, _, arg = spec.partition(":")
    if kind == "digits":
        return digits(arg or "train")
    if kind == "toy":
        return toy(arg)
    if kind == "folder":
        path, _, size = arg.rpartition(":") if arg.rsplit(":", 1)[-1].isdigit() else (arg, "", "")
        return folder(path, int(size) if size else None)
    if kind == "cifar10":
        return cifar10(arg)
    raise ValueError(f"data must be digits, digits:heldout, toy:NAME ({', '.join(TOYS)}), folder:PATH or "
                     f"cifar10:PATH; got {spec!r}")


def dequantize_digits(x: torch.Tensor, seed: int = 0, start: int = 0) -> torch.Tensor:
    """Digits in [-1, 1] (17 grey levels k / 8 - 1) -> continuous values k / 8 - 1 + (u - 1/2) / 8,
    u ~ U(0, 1) from the counter generator keyed by (seed, start + i). Each bin has width 1/8,
    so a continuous NLL plus D log 8 bounds the discrete one: +3 bits/dim."""
    from . import noise as _noise
    from .likelihood import STREAM_DEQUANT

    idx = torch.arange(start, start + x.shape[0])
    u = _noise.uniform(seed, idx, 0, tuple(x.shape[1:]), stream=STREAM_DEQUANT, dtype=torch.float64)
    return (x.double() + (u - 0.5) / 8).float()


DIGITS_DEQUANT_OFFSET_BITS = 3.0  # log2 of 1 / bin width (1/8)
