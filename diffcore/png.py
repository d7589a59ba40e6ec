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


def to_uint8_nhwc(images) -> np.ndarray:
    """[N, C, H, W] images in [-1, 1] -> uint8 [N, H, W, C] (the layout FID tools read)."""
    x = np.asarray(images, dtype=np.float64)
    return np.clip((x + 1) * 127.5 + 0.5, 0, 255).astype(np.uint8).transpose(0, 2, 3, 1)


def image_grid(images: np.ndarray, cols: int | None = None, scale: int = 1, pad: int = 1) -> np.ndarray:
    """[N, C, H, W] images in [-1, 1] (C = 1 or 3) -> one uint8 RGB grid, each image upscaled
    `scale` times by pixel repetition, `pad` dark pixels between them."""
    x = np.asarray(images, dtype=np.float64)
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"images must be [N, C, H, W] with C = 1 or 3; got {x.shape}")
    n, c, h, w = x.shape
    cols = cols or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / cols))
    x = to_uint8_nhwc(x)
    if c == 1:
        x = np.repeat(x, 3, axis=3)
    x = x.repeat(scale, axis=1).repeat(scale, axis=2)
    H, W = h * scale, w * scale
    grid = np.full((rows * (H + pad) + pad, cols * (W + pad) + pad, 3), 24, dtype=np.uint8)
    for i in range(n):
        r, q = divmod(i, cols)
        grid[pad + r * (H + pad): pad + r * (H + pad) + H, pad + q * (W + pad): pad + q * (W + pad) + W] = x[i]
    return grid


def read_png(path: str) -> np.ndarray:
    """8-bit, non-interlaced grey / grey+alpha / RGB / RGBA PNG -> uint8 [H, W] or [H, W, C]."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:8] != b"\x89PNG\r\n\x1a\n":
        raise ValueError(f"{path}: not a PNG file")
    pos, idat, header = 8, [], None
    while pos + 8 <= len(data):
        length, tag = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8: pos + 8 + length]
        if len(body) != length:
            raise ValueError(f"{path}: truncated PNG chunk {tag!r}")
        if tag == b"IHDR":
            header = struct.unpack(">IIBBBBB", body)
        elif tag == b"IDAT":
            idat.append(body)
        elif tag == b"IEND":
            break
        pos += 12 + length
    if header is None or not idat:
        raise ValueError(f"{path}: PNG without IHDR or IDAT")
    w, h, depth, ctype, _, _, interlace = header
    channels = {0: 1, 4: 2, 2: 3, 6: 4}.get(ctype)
    if depth != 8 or channels is None or interlace:
        raise ValueError(f"{path}: only 8-bit non-interlaced grey/RGB(A) PNGs are read "
                         f"(bit depth {depth}, colour type {ctype}, interlace {interlace})")
    raw = zlib.decompress(b"".join(idat))
    stride = w * channels
    out = np.zeros((h, stride), dtype=np.uint8)
    prev = np.zeros(stride, dtype=np.int64)
    for y in range(h):
        ftype, line = raw[y * (stride + 1)], np.frombuffer(raw, np.uint8, stride, y * (stride + 1) + 1).astype(np.int64)
        cur = np.zeros(stride, dtype=np.int64)
        if ftype == 0:
            cur = line
        elif ftype == 2:
            cur = (line + prev) & 255
        elif ftype in (1, 3, 4):
            for i in range(stride):  # left-dependent filters: a Python loop, fine for small images
                a = cur[i - channels] if i >= channels else 0
                b, c = prev[i], prev[i - channels] if i >= channels else 0
                if ftype == 1:
                    pred = a
                elif ftype == 3:
                    pred = (a + b) // 2
                else:
                    p = a + b - c
                    pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                    pred = a if pa <= pb and pa <= pc else (b if pb <= pc else c)
                cur[i] = (line[i] + pred) & 255
        else:
            raise ValueError(f"{path}: bad PNG filter type {ftype} on row {y}")
        out[y] = cur
        prev = cur
    img = out.reshape(h, w, channels)
    return img[:, :, 0] if channels == 1 else img
