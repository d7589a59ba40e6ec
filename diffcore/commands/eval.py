"""`diffcore eval`: sample quality of a digits model (Frechet distance in a digit classifier's
feature space and class coverage, beside the real-vs-real floor and the noise ceiling), or a
standard Inception FID against a reference .npz through torch-fidelity / clean-fid."""
from __future__ import annotations

import json
import os
import time

from ..sampling import METHODS
from .common import nonneg_int, positive_int


def add_parser(sub):
    e = sub.add_parser(
        "eval", help="sample quality: Frechet distance and class coverage (digits), or Inception FID",
        description="Sample --n digits from the model and report the Frechet distance in the shipped digit "
                    "classifier's feature space against the 500 held-out digits, the real-vs-real floor and the "
                    "noise ceiling beside it, and class coverage (10-class histogram, smallest share, entropy). "
                    "--samples NPZ evaluates saved samples instead; --fid REF.npz computes an Inception FID.")
    e.add_argument("--model", default=None, help="model directory (default: the embedded digits model)")
    e.add_argument("--samples", default=None, help="evaluate these samples (.npz, uint8 NHWC under arr_0) instead of sampling")
    e.add_argument("--n", type=positive_int("--n"), default=500, help="samples to draw (default: 500)")
    e.add_argument("--method", choices=sorted(METHODS), default="ancestral", help="sampler (default: ancestral, DDPM models)")
    e.add_argument("--steps", type=positive_int("--steps"), default=100, help="sampler steps (default: 100)")
    e.add_argument("--seed", type=nonneg_int("--seed"), default=0, help="noise seed (default: 0)")
    e.add_argument("--fid", metavar="REF.npz", default=None,
                   help="Inception FID of the samples against a reference .npz (needs torch-fidelity or clean-fid "
                        "and their Inception weights available locally)")
    e.add_argument("--train-classifier", metavar="DIR", default=None,
                   help="train the digit classifier into DIR (how the shipped one was made) and exit")
    e.set_defaults(func=run)


def _inception_fid(samples_npz: str, ref_npz: str) -> float:
    try:
        import torch_fidelity  # noqa: F401
    except ImportError:
        torch_fidelity = None
    if torch_fidelity is None:
        try:
            import cleanfid  # noqa: F401
        except ImportError:
            raise ValueError("--fid needs torch-fidelity or clean-fid: pip install torch-fidelity (or clean-fid). "
                             "Neither downloads here by itself in an offline setting: place the Inception weights "
                             "(torch-fidelity: weights-inception-2015-12-05-6726825d.pth in $TORCH_HOME/hub/checkpoints; "
                             "clean-fid: inception-2015-12-05.pt in its cache) before running") from None
        raise ValueError("clean-fid reads image folders, not .npz: export the samples as PNGs, or install torch-fidelity")
    import numpy as np
    import torch

    from torch_fidelity import calculate_metrics

    class _Npz(torch.utils.data.Dataset):
        def __init__(self, path):
            self.x = np.load(path, allow_pickle=False)["arr_0"]

        def __len__(self):
            return len(self.x)

        def __getitem__(self, i):
            img = torch.from_numpy(self.x[i]).permute(2, 0, 1)
            return img.expand(3, -1, -1) if img.shape[0] == 1 else img

    try:
        m = calculate_metrics(input1=_Npz(samples_npz), input2=_Npz(ref_npz), fid=True, verbose=False)
    except Exception as err:  # missing weights show up as download errors offline
        raise ValueError(f"torch-fidelity could not compute the FID ({type(err).__name__}: {err}); if it tried to "
                         f"download the Inception weights, place weights-inception-2015-12-05-6726825d.pth in "
                         f"$TORCH_HOME/hub/checkpoints first") from None
    return float(m["frechet_inception_distance"])


def run(args) -> int:
    import numpy as np
    import torch

    from ..evaluation import evaluate_digits, train_digit_classifier

    if args.train_classifier:
        print(json.dumps(train_digit_classifier(args.train_classifier), indent=2))
        return 0
    if args.fid is not None and not os.path.exists(args.fid):
        raise ValueError(f"--fid reference {args.fid!r} does not exist")
    t0 = time.perf_counter()
    if args.samples:
        if not os.path.exists(args.samples):
            raise ValueError(f"--samples file {args.samples!r} does not exist")
        try:
            with np.load(args.samples, allow_pickle=False) as f:
                u8 = f["arr_0"]
        except (ValueError, OSError, KeyError, AttributeError) as e:
            raise ValueError(f"--samples {args.samples!r} must be an .npz with uint8 images [n, H, W, C] under "
                             f"arr_0 (what diffcore sample writes): {e}") from None
        if u8.dtype != np.uint8 or u8.ndim != 4 or len(u8) == 0:
            raise ValueError(f"--samples {args.samples!r} must hold uint8 images [n, H, W, C] under arr_0; "
                             f"got {u8.dtype} {u8.shape}")
        x = torch.from_numpy(u8).permute(0, 3, 1, 2).float() / 127.5 - 1
        source, npz = args.samples, args.samples
    else:
        from ..models.spec import DEFAULT_MODEL, load_model
        from ..sampling import sample

        path = args.model or DEFAULT_MODEL
        model, process, spec = load_model(path)
        method, steps = args.method, args.steps
        from ..discrete import DDPM
        opts = {"clip_denoised": True} if isinstance(process, DDPM) and method in ("ddim", "ancestral") else {}
        x = sample(model, process, n=args.n, shape=tuple(spec["data"]["shape"]), method=method, steps=steps,
                   seed=args.seed, **opts).clamp(-1, 1)
        source, npz = f"{path} ({method}, {steps} steps, seed {args.seed})", None
    report = {"samples": source}
    if tuple(x.shape[1:]) == (1, 8, 8):
        report.update(evaluate_digits(x, seed=args.seed))
    elif args.fid is None:
        raise ValueError(f"the digit metrics need [n, 1, 8, 8] samples; got {tuple(x.shape[1:])}: pass --fid REF.npz")
    if args.fid is not None:
        if npz is None:
            import tempfile
            npz = os.path.join(tempfile.mkdtemp(), "samples.npz")
            from ..png import to_uint8_nhwc
            np.savez(npz, arr_0=to_uint8_nhwc(x.numpy()))
        report["inception_fid"] = _inception_fid(npz, args.fid)
    report["seconds"] = round(time.perf_counter() - t0, 2)
    print(json.dumps(report, indent=2))
    return 0
