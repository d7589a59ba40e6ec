"""Local data sets: digits split, toys, image folders (our PNG reader), CIFAR-10 batches."""
import os
import pickle
import struct
import zlib

import numpy as np
import pytest
import torch

from diffcore import data as datasets
from diffcore.png import read_png, write_png


def test_digits_split_is_fixed_disjoint_and_complete():
    train, held = datasets.digits_split()
    assert len(train) == 1297 and len(held) == 500
    assert len(set(train.tolist()) | set(held.tolist())) == 1797
    x, y = datasets.digits("heldout", with_labels=True)
    assert x.shape == (500, 1, 8, 8) and x.min() == -1 and x.max() == 1
    assert set(torch.unique(y).tolist()) == set(range(10))
    assert torch.equal(datasets.quantize_digits(x), x)  # already on the 17 grey levels


def test_dequantized_digits_stay_in_their_bins():
    x = datasets.digits("heldout")[:20]
    y = datasets.dequantize_digits(x, seed=3)
    assert (y - x.double()).abs().max() <= 1 / 16 and not torch.equal(y, x)
    assert torch.equal(datasets.quantize_digits(y), x)


@pytest.mark.parametrize("name", datasets.TOYS)
def test_toys(name):
    x = datasets.toy(name, n=500, seed=1)
    assert x.shape == (500, 2) and torch.isfinite(x).all() and x.abs().max() < 2
    assert torch.equal(x, datasets.toy(name, n=500, seed=1))


def _png_with_filters(img: np.ndarray, filters) -> bytes:
    """An 8-bit PNG whose rows use the given filter types (encoded here, independently of the reader)."""
    h, w, c = img.shape
    raw, prev = b"", np.zeros(w * c, dtype=np.int64)
    for y in range(h):
        cur, f = img[y].reshape(-1).astype(np.int64), filters[y % len(filters)]
        left = np.concatenate([np.zeros(c, dtype=np.int64), cur[:-c]])
        upleft = np.concatenate([np.zeros(c, dtype=np.int64), prev[:-c]])
        if f == 0:
            pred = np.zeros_like(cur)
        elif f == 1:
            pred = left
        elif f == 2:
            pred = prev
        elif f == 3:
            pred = (left + prev) // 2
        else:
            p = left + prev - upleft
            pa, pb, pc = abs(p - left), abs(p - prev), abs(p - upleft)
            pred = np.where((pa <= pb) & (pa <= pc), left, np.where(pb <= pc, prev, upleft))
        raw += bytes([f]) + ((cur - pred) & 255).astype(np.uint8).tobytes()
        prev = cur

    def chunk(tag, data):
        return struct.pack(">I", len(data)) + tag + data + struct.pack(">I", zlib.crc32(tag + data) & 0xFFFFFFFF)
    ctype = {1: 0, 3: 2, 4: 6}[c]
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, ctype, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_png_reader_decodes_every_filter_type(tmp_path, channels):
    img = np.random.default_rng(channels).integers(0, 256, (7, 5, channels), dtype=np.uint8)
    p = tmp_path / "a.png"
    p.write_bytes(_png_with_filters(img, [0, 1, 2, 3, 4]))
    got = read_png(str(p))
    assert np.array_equal(got, img[:, :, 0] if channels == 1 else img)


def test_folder_loads_pngs_and_npy(tmp_path):
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (3, 4, 4, 3), dtype=np.uint8)
    for i in range(2):
        write_png(str(tmp_path / f"{i}.png"), imgs[i])
    np.save(tmp_path / "2.npy", imgs[2])
    x = datasets.load(f"folder:{tmp_path}")
    assert x.shape == (3, 3, 4, 4)
    torch.testing.assert_close(x[0], torch.from_numpy(imgs[0]).permute(2, 0, 1).float() / 127.5 - 1)
    assert datasets.load(f"folder:{tmp_path}:8").shape == (3, 3, 8, 8)


def test_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        datasets.folder(str(tmp_path / "nope"))
    with pytest.raises(ValueError, match="no .png or .npy"):
        datasets.folder(str(tmp_path))


def test_cifar10_missing_says_where_to_put_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="cifar-10-batches-py"):
        datasets.cifar10(str(tmp_path))


def test_cifar10_reads_python_batches_and_refuses_code(tmp_path):
    d = tmp_path / "cifar-10-batches-py"
    d.mkdir()
    arr = np.arange(2 * 3072, dtype=np.uint8).reshape(2, 3072)
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": arr, b"labels": [0, 1]}, f)
    x = datasets.cifar10(str(tmp_path), split="test")
    assert x.shape == (2, 3, 32, 32)
    torch.testing.assert_close(x[0, 0, 0, :3], torch.tensor([0.0, 1.0, 2.0]) / 127.5 - 1)

    class Evil:
        def __reduce__(self):
            return (os.system, ("echo pwned",))
    with open(d / "test_batch", "wb") as f:
        pickle.dump({b"data": Evil()}, f)
    with pytest.raises(ValueError, match=r"test_batch: not a CIFAR-10 python batch .*refusing posix.system"):
        datasets.cifar10(str(tmp_path), split="test")


@pytest.mark.parametrize("spec", ["", "mnist", "toy:spiral", "digits:test"])
def test_bad_data_spec_names_the_choices(spec):
    with pytest.raises(ValueError):
        datasets.load(spec)
