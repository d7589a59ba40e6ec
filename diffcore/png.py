"""A dependency-free PNG writer (8-bit RGB), written atomically: temporary file, then rename,
so an interrupted run never leaves a half-written image behind."""
from __future__ import annotations

import os
import struct
import tempfile
import zlib

import numpy as np


def _chunk(tag: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)


def encode_png(rgb: np.ndarray) -> bytes:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.shape[0] < 1 or rgb.shape[1] < 1:
        raise ValueError(f"image must be uint8 [H, W, 3]; got {rgb.dtype} {rgb.shape}")
    h, w, _ = rgb.shape
    raw = b"".join(b"\x00" + rgb[y].tobytes() for y in range(h))  # filter type 0 per row
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", header) + _chunk(b"IDAT", zlib.compress(raw, 6)) + _chunk(b"IEND", b"")


def write_png(path: str, rgb: np.ndarray) -> str:
    data = encode_png(rgb)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=directory, suffix=".png.tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return os.path.abspath(path)


def scatter_image(points: np.ndarray, size: int = 512, extent: float | None = None) -> np.ndarray:
    """2-D points as a density image: log-scaled 2-D histogram on a dark background."""
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2:
        raise ValueError(f"points must have shape [N, 2]; got {pts.shape}")
    pts = pts[np.isfinite(pts).all(1)]
    if extent is None:
        extent = float(np.abs(pts).max()) * 1.1 if len(pts) else 1.0
    hist, _, _ = np.histogram2d(pts[:, 1], pts[:, 0], bins=size, range=[[-extent, extent], [-extent, extent]])
    hist = np.log1p(hist[::-1])  # y up
    v = hist / hist.max() if hist.max() > 0 else hist
    img = np.empty((size, size, 3), dtype=np.float64)
    # dark blue -> orange -> white ramp
    img[..., 0] = np.clip(20 + 235 * v * 1.5, 0, 255)
    img[..., 1] = np.clip(24 + 231 * (v ** 1.5), 0, 255)
    img[..., 2] = np.clip(40 + 180 * (v ** 3), 0, 255)
    axis = size // 2
    img[axis, :, :] = np.maximum(img[axis, :, :], 60)
    img[:, axis, :] = np.maximum(img[:, axis, :], 60)
    return img.astype(np.uint8)
