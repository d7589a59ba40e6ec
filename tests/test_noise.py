"""The counter-based generator: Philox4x32-10 known answers, counter layout, distribution."""
import math

import numpy as np
import pytest
import torch

from diffcore import noise


# Known-answer vectors of Random123 (kat_vectors, philox4x32 with 10 rounds).
KAT = [
    ((0, 0, 0, 0), (0, 0), (0x6627E8D5, 0xE169C58D, 0xBC57AC4C, 0x9B00DBD8)),
    ((0xFFFFFFFF,) * 4, (0xFFFFFFFF,) * 2, (0x408F276D, 0x41C83B0E, 0xA20BC7C6, 0x6D5451FD)),
    ((0x243F6A88, 0x85A308D3, 0x13198A2E, 0x03707344), (0xA4093822, 0x299F31D0),
     (0xD16CFE09, 0x94FDCCEB, 0x5001E420, 0x24126EA1)),
]


@pytest.mark.parametrize("counter,key,expected", KAT)
def test_philox_known_answers(counter, key, expected):
    out = noise.philox4x32(tuple(torch.tensor([c]) for c in counter), key)
    assert tuple(o.item() for o in out) == expected


def _philox_numpy(counter, key):
    """Independent scalar Philox4x32-10 with Python integers."""
    c, k = list(counter), list(key)
    for r in range(10):
        if r:
            k = [(k[0] + 0x9E3779B9) & 0xFFFFFFFF, (k[1] + 0xBB67AE85) & 0xFFFFFFFF]
        p0, p1 = 0xD2511F53 * c[0], 0xCD9E8D57 * c[2]
        c = [(p1 >> 32) ^ c[1] ^ k[0], p1 & 0xFFFFFFFF, (p0 >> 32) ^ c[3] ^ k[1], p0 & 0xFFFFFFFF]
    return c


def test_philox_matches_scalar_reference_on_random_counters():
    rng = np.random.default_rng(0)
    ctr = rng.integers(0, 2**32, size=(64, 4), dtype=np.uint64)
    key = (int(rng.integers(0, 2**32)), int(rng.integers(0, 2**32)))
    out = noise.philox4x32(tuple(torch.tensor(ctr[:, j].astype(np.int64)) for j in range(4)), key)
    got = torch.stack(out, 1).numpy()
    for i in range(64):
        assert list(got[i]) == _philox_numpy([int(v) for v in ctr[i]], key)


def test_counter_layout_element_sample_step_stream():
    """normal() uses counter (element // 4, sample, step, stream) and key (seed lo, seed hi)."""
    seed = (7 << 32) | 3
    z = noise.normal(seed, torch.tensor([5]), 9, (8,), stream=noise.STREAM_CORRECTOR + 2)
    for group in range(2):
        w = _philox_numpy([group, 5, 9, noise.STREAM_CORRECTOR + 2], [3, 7])
        u = [((v >> 8) + 0.5) / 2**24 for v in w]
        expect = []
        for a, b in ((u[0], u[1]), (u[2], u[3])):
            r = math.sqrt(-2 * math.log(a))
            expect += [r * math.cos(2 * math.pi * b), r * math.sin(2 * math.pi * b)]
        assert z[0, 4 * group:4 * group + 4].tolist() == pytest.approx(expect, rel=1e-5, abs=1e-5)


def test_sample_noise_does_not_depend_on_batch():
    full = noise.normal(11, torch.arange(0, 50), 3, (3, 5))
    part = noise.normal(11, torch.arange(20, 27), 3, (3, 5))
    assert torch.equal(full[20:27], part)


def test_streams_steps_seeds_are_independent():
    idx = torch.arange(2000)  # 32 000 pairs: correlation's standard error is 0.0056
    a = noise.normal(1, idx, 0, (16,))
    for other in (noise.normal(2, idx, 0, (16,)), noise.normal(1, idx, 1, (16,)),
                  noise.normal(1, idx, 0, (16,), stream=noise.STREAM_INIT),
                  noise.normal(1 + (1 << 32), idx, 0, (16,))):
        assert abs(torch.corrcoef(torch.stack([a.flatten(), other.flatten()]))[0, 1]) < 0.03


def test_normal_distribution_matches_exact_cdf():
    z = noise.normal(123, torch.arange(4000), 0, (25,), dtype=torch.float64).flatten()
    assert abs(z.mean().item()) < 4 / math.sqrt(z.numel())
    assert abs(z.var().item() - 1) < 6 * math.sqrt(2 / z.numel())
    # Kolmogorov-Smirnov against the exact normal CDF; 1.95/sqrt(n) is the 0.1% critical value.
    zs, _ = torch.sort(z)
    cdf = torch.special.ndtr(zs)
    n = zs.numel()
    ecdf_hi = torch.arange(1, n + 1, dtype=torch.float64) / n
    d = torch.maximum(ecdf_hi - cdf, cdf - (ecdf_hi - 1 / n)).max().item()
    assert d < 1.95 / math.sqrt(n)


def test_uniform_is_open_unit_interval():
    u = noise.uniform(0, torch.arange(1000), 0, (64,), dtype=torch.float64)
    assert (u > 0).all() and (u < 1).all()
    assert abs(u.mean().item() - 0.5) < 0.005


@pytest.mark.parametrize("kwargs,match", [
    (dict(seed=-1), "seed"), (dict(seed=1.5), "seed"), (dict(step=-2), "step"),
    (dict(sample_idx=torch.zeros(3)), "sample_idx"), (dict(stream=2**33), "stream"),
])
def test_bad_arguments(kwargs, match):
    args = dict(seed=0, sample_idx=torch.arange(3), step=0, shape=(2,), stream=0)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        noise.normal(**args)
