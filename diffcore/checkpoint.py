"""Model files: safetensors for tensors plus a JSON file for the configuration. Never pickle.

A model directory holds `model.safetensors` (weights) and `model.json` (what they are: the
family, the process, the network's config, the data shape). Training checkpoints add
`checkpoint.safetensors` / `checkpoint.json` (raw and EMA weights, optimizer state, step).
Every file is written to a temporary name and renamed, so a crash never leaves a torn file.
"""
from __future__ import annotations

import json
import os
import tempfile

import torch

PICKLE_SUFFIXES = (".pt", ".pth", ".ckpt", ".bin", ".pkl", ".pickle")


def _atomic(path: str, write) -> str:
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, prefix=".tmp-", suffix=os.path.basename(path))
    os.close(fd)
    try:
        write(tmp)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a model file is as readable as any other
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def save_tensors(path: str, tensors: dict[str, torch.Tensor], metadata: dict | None = None) -> str:
    from safetensors.torch import save_file

    if not isinstance(tensors, dict):
        raise ValueError(f"tensors must be a dict of name -> torch.Tensor; got {type(tensors).__name__}")
    bad = sorted(str(k) for k, v in tensors.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"tensors must map str names to torch.Tensors; bad entries {_short(bad)}")
    flat = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    meta = {k: str(v) for k, v in (metadata or {}).items()}
    return _atomic(path, lambda tmp: save_file(flat, tmp, metadata=meta))


def save_json(path: str, obj: dict) -> str:
    def write(tmp):
        with open(tmp, "w") as f:
            json.dump(obj, f, indent=2, sort_keys=True)
            f.write("\n")
    return _atomic(path, write)


def refuse_pickle(path: str, sniff: bool = False) -> None:
    """A ValueError explaining why and how to convert when `path` names a pickle checkpoint:
    by its suffix, or (sniff=True, for a file safetensors could not parse) by its first bytes."""
    path = os.fspath(path)
    head = b""
    if sniff and os.path.isfile(path):
        with open(path, "rb") as f:
            head = f.read(4)
    pickled = head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05") or head == b"PK\x03\x04"
    if path.lower().endswith(PICKLE_SUFFIXES) or pickled:
        kind = os.path.splitext(path)[1] or "no suffix"
        if pickled:
            kind += ", but pickle or torch.save data inside"
        raise ValueError(
            f"{path!r} looks like a pickle checkpoint ({kind}); diffcore loads weights "
            f"from safetensors only, because unpickling can run arbitrary code. Convert it once, in an "
            f"environment you trust: `import torch, safetensors.torch as st; "
            f"st.save_file(torch.load(p, weights_only=True), 'model.safetensors')`")


def load_tensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    path = os.fspath(path)
    refuse_pickle(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    try:
        return load_file(path)
    except (SafetensorError, OSError, ValueError) as e:
        refuse_pickle(path, sniff=True)  # a pickle renamed .safetensors gets the pickle explanation
        raise ValueError(f"{path!r} is not a readable safetensors file (corrupt or truncated?): {e}") from e


def read_metadata(path: str) -> dict:
    """The string metadata of a safetensors file, without reading its tensors."""
    from safetensors import SafetensorError, safe_open

    path = os.fspath(path)
    refuse_pickle(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights file {path!r} does not exist")
    try:
        with safe_open(path, "pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as e:
        refuse_pickle(path, sniff=True)
        raise ValueError(f"{path!r} is not a readable safetensors file (corrupt or truncated?): {e}") from e


def load_json(path: str) -> dict:
    if not os.path.exists(path):
        raise FileNotFoundError(f"config file {path!r} does not exist")
    try:
        with open(path) as f:
            obj = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"{path!r} is not valid JSON (corrupt or truncated?): {e}") from e
    if not isinstance(obj, dict):
        raise ValueError(f"{path!r} must hold a JSON object; got {type(obj).__name__}")
    return obj


def load_state(module: torch.nn.Module, state: dict[str, torch.Tensor], what: str = "checkpoint") -> None:
    """load_state_dict with an error that names every missing, unexpected and mis-shaped key."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shapes = sorted(f"{k}: {what} {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in set(own) & set(state) if tuple(own[k].shape) != tuple(state[k].shape))
    if missing or unexpected or shapes:
        parts = []
        if missing:
            parts.append(f"missing keys {_short(missing)}")
        if unexpected:
            parts.append(f"unexpected keys {_short(unexpected)}")
        if shapes:
            parts.append(f"shape mismatches {_short(shapes)}")
        raise ValueError(f"{what} does not match the model ({'; '.join(parts)}): was it saved with another config?")
    with torch.no_grad():
        module.load_state_dict(state)


def _short(items, n: int = 8) -> str:
    return "[" + ", ".join(items[:n]) + (f", ... {len(items) - n} more" if len(items) > n else "") + "]"
