"""The project's counter-based generator (diffcore.noise) as Triton device functions.

Philox4x32-10 with key (seed & 0xFFFFFFFF, seed >> 32) and counter
(element // 4, sample index, step, stream); words (w0, w1) and (w2, w3) become two normals
each by Box-Muller in float32, so element e of a sample is slot e % 4 of word group e // 4.
`normal4` returns the four normals of a block of word groups; the step kernels select the
slot of each element. Tests check it against diffcore.noise.normal to float32 rounding (and
the words bit for bit against diffcore.noise.philox4x32).
"""
import triton
import triton.language as tl

# Philox4x32 constants (Salmon et al. 2011), the same as diffcore.noise; globals a kernel
# reads must be tl.constexpr instances (an annotation is not enough for the compiler).
PHILOX_M0 = tl.constexpr(0xD2511F53)
PHILOX_M1 = tl.constexpr(0xCD9E8D57)
PHILOX_W0 = tl.constexpr(0x9E3779B9)
PHILOX_W1 = tl.constexpr(0xBB67AE85)
TWO_PI = tl.constexpr(6.283185307179586)


@triton.jit
def philox4x32_10(c0, c1, c2, c3, k0, k1):
    """Ten Philox rounds on uint32 counters (c0..c3) with uint32 key (k0, k1)."""
    for _ in tl.static_range(10):
        hi0 = tl.umulhi(c0, PHILOX_M0)
        lo0 = c0 * PHILOX_M0
        hi1 = tl.umulhi(c2, PHILOX_M1)
        lo1 = c2 * PHILOX_M1
        c0, c1, c2, c3 = hi1 ^ c1 ^ k0, lo1, hi0 ^ c3 ^ k1, lo0
        k0 = k0 + PHILOX_W0
        k1 = k1 + PHILOX_W1
    return c0, c1, c2, c3


@triton.jit
def uniform_from_word(w):
    """Top 24 bits of a uint32 word -> ((w >> 8) + 0.5) / 2**24 in (0, 1), exact in float32."""
    return ((w >> 8).to(tl.float32) + 0.5) * (1.0 / 16777216.0)


@triton.jit
def _low_word(v):
    """v mod 2**32 as an int64 scalar tensor, whether v arrives as a tensor or, as Triton
    passes an integer argument equal to 1, a constexpr (tl.to_tensor is not in Triton 3.6)."""
    return (tl.zeros([], tl.int64) + v) & 0xFFFFFFFF


@triton.jit
def normal4(group, sample, step, stream, seed_lo, seed_hi):
    """Four standard normals (slots 0..3) for each word group in `group` (an int64 block).

    sample: the sample's index (int scalar, taken modulo 2**32); step, stream, seed_lo,
    seed_hi: integer scalars below 2**32. Returns (z0, z1, z2, z3) in float32, group's shape.
    """
    zero = tl.zeros_like(group)
    c0 = (group & 0xFFFFFFFF).to(tl.uint32)
    c1 = (zero + _low_word(sample)).to(tl.uint32)
    c2 = (zero + _low_word(step)).to(tl.uint32)
    c3 = (zero + _low_word(stream)).to(tl.uint32)
    k0 = _low_word(seed_lo).to(tl.uint32)
    k1 = _low_word(seed_hi).to(tl.uint32)
    w0, w1, w2, w3 = philox4x32_10(c0, c1, c2, c3, k0, k1)
    r01 = tl.sqrt(-2.0 * tl.log(uniform_from_word(w0)))
    t01 = TWO_PI * uniform_from_word(w1)
    r23 = tl.sqrt(-2.0 * tl.log(uniform_from_word(w2)))
    t23 = TWO_PI * uniform_from_word(w3)
    return r01 * tl.cos(t01), r01 * tl.sin(t01), r23 * tl.cos(t23), r23 * tl.sin(t23)


@triton.jit
def normal_tile(group, sample, step, stream, seed_lo, seed_hi):
    """The [BLOCK_G, 4] tile of normals for elements 4 g + j (g in the 1-D int64 block
    `group`, j = 0..3): one Philox call per word group, its four slots spread over a row."""
    z0, z1, z2, z3 = normal4(group, sample, step, stream, seed_lo, seed_hi)
    slot = tl.arange(0, 4)[None, :]
    return tl.where(slot == 0, z0[:, None],
                    tl.where(slot == 1, z1[:, None], tl.where(slot == 2, z2[:, None], z3[:, None])))
