// Philox4x32-10 and the Box-Muller normals of diffcore.noise, header-only, for C++ and CUDA.
//
// Every random number is a pure function of
//     key     = (seed & 0xFFFFFFFF, seed >> 32)
//     counter = (element / 4, sample index, step, stream)
// element e of a sample (x[b].flatten() order) takes slot e % 4 of the call for group e / 4.
// Uniforms: u = ((w >> 8) + 0.5) / 2^24 (computed in double, rounded to float as the reference
// does). Normals: Box-Muller in float32 on word pairs (w0, w1) and (w2, w3):
//     slot 0 = r01 cos(t01), slot 1 = r01 sin(t01), slot 2 = r23 cos(t23), slot 3 = r23 sin(t23)
//     r = sqrt(-2 log u_first), t = 2 pi u_second (2 pi rounded to float, product in float).
// log, cos and sin are float32 polynomials written with explicit fmaf (below), within 0.84 ulp
// of the correctly rounded values: the same numbers as the reference to float rounding on every
// backend, and bitwise equal between the CPU (scalar or AVX2, cpu/noise_avx2.h) and CUDA builds.
// Everything here is branch-free straight-line code so loops over lanes vectorise. (On x86-64
// CPUs without FMA, fmaf is libm's exact software routine: the same numbers, much slower.)
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#if defined(__CUDACC__)
#define DC_HD __host__ __device__ __forceinline__
#else
#define DC_HD inline __attribute__((always_inline))
#endif

// `#pragma omp simd` on host compilers; nothing under nvcc's device pass.
#if defined(__CUDA_ARCH__) || !defined(_OPENMP)
#define DC_SIMD
#else
#define DC_SIMD _Pragma("omp simd")
#endif

namespace diffcore {

constexpr uint32_t kPhiloxM0 = 0xD2511F53u;
constexpr uint32_t kPhiloxM1 = 0xCD9E8D57u;
constexpr uint32_t kPhiloxW0 = 0x9E3779B9u;
constexpr uint32_t kPhiloxW1 = 0xBB67AE85u;

// Stream ids (counter word 3), as diffcore.noise.
constexpr uint32_t kStreamStep = 0;
constexpr uint32_t kStreamInit = 1u << 16;
constexpr uint32_t kStreamCorrector = 2u << 16;

struct Words4 {
  uint32_t w0, w1, w2, w3;
};

// Philox4x32 with 10 rounds on counter (c0, c1, c2, c3) and key (k0, k1).
DC_HD Words4 philox4x32_10(uint32_t c0, uint32_t c1, uint32_t c2, uint32_t c3, uint32_t k0, uint32_t k1) {
  // 10 rounds; the key is bumped after each (the bump after the last one is unused), which
  // keeps the loop free of branches so lane loops around it vectorise.
#if defined(__CUDA_ARCH__)
#pragma unroll
#elif !defined(__CUDACC__)
#pragma GCC unroll 10
#endif
  for (int r = 0; r < 10; ++r) {
    const uint64_t p0 = static_cast<uint64_t>(c0) * kPhiloxM0;
    const uint64_t p1 = static_cast<uint64_t>(c2) * kPhiloxM1;
    const uint32_t hi0 = static_cast<uint32_t>(p0 >> 32), lo0 = static_cast<uint32_t>(p0);
    const uint32_t hi1 = static_cast<uint32_t>(p1 >> 32), lo1 = static_cast<uint32_t>(p1);
    const uint32_t n0 = hi1 ^ c1 ^ k0, n2 = hi0 ^ c3 ^ k1;
    c0 = n0;
    c1 = lo1;
    c2 = n2;
    c3 = lo0;
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
  return {c0, c1, c2, c3};
}

// The generator's address for one sample: key from the seed, the rest of the counter.
struct NoiseAddress {
  uint32_t k0, k1;   // seed low / high words
  uint32_t sample;   // counter word 1
  uint32_t step;     // counter word 2
  uint32_t stream;   // counter word 3
};

DC_HD NoiseAddress make_address(uint64_t seed, uint64_t sample, uint64_t step, uint64_t stream) {
  return {static_cast<uint32_t>(seed), static_cast<uint32_t>(seed >> 32), static_cast<uint32_t>(sample),
          static_cast<uint32_t>(step), static_cast<uint32_t>(stream)};
}

DC_HD Words4 philox_words(const NoiseAddress& a, uint32_t group) {
  return philox4x32_10(group, a.sample, a.step, a.stream, a.k0, a.k1);
}

// ((w >> 8) + 0.5) / 2^24 in double (exact), as diffcore.noise.uint32_to_uniform.
DC_HD double uniform_double(uint32_t w) {
  return (static_cast<double>(w >> 8) + 0.5) * (1.0 / 16777216.0);
}

DC_HD uint32_t float_bits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#elif defined(__CUDACC__)
  uint32_t u;
  std::memcpy(&u, &f, sizeof u);
  return u;
#else
  return __builtin_bit_cast(uint32_t, f);
#endif
}

DC_HD float bits_float(uint32_t u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#elif defined(__CUDACC__)
  float f;
  std::memcpy(&f, &u, sizeof f);
  return f;
#else
  return __builtin_bit_cast(float, u);
#endif
}

// log and sin/cos for Box-Muller: float32 polynomials with explicit fmaf, so every compiler
// (GCC with or without FMA contraction, nvcc) and the AVX2 path in cpu/noise_avx2.h compute the
// same floats bit for bit: no expression below is a product feeding an addition unless that
// product is exact. Checked exhaustively over the 2^24 possible arguments (u and 2 pi u) against
// the correctly rounded values: log within 0.83 ulp (2.4 % not correctly rounded), sin and cos
// within 0.84 ulp (1.9 %).

// log of u in (0, 1) (a positive normal float): u = 2^e m, m in [0.707, 1.414), f = m - 1
// (exact); log u = e ln2_hi + f + (e ln2_lo - f^2/2 + f^3 P(f)) (Cephes logf's P), the head
// summed exactly (Fast2Sum: |e ln2_hi| >= |f| whenever e != 0) and f^2 split exactly.
DC_HD float log_float(float u) {
  const uint32_t b = float_bits(u);
  int e = static_cast<int>(b >> 23) - 127;
  float m = bits_float((b & 0x007FFFFFu) | 0x3F800000u);   // [1, 2)
  const bool big = m > 1.41421356f;
  const float half = m * 0.5f;                               // unconditional: selects, no branches
  m = big ? half : m;
  e = big ? e + 1 : e;
  const float f = m - 1.0f;
  const float z = f * f;
  const float zl = fmaf(f, f, -z);                           // f^2 = z + zl exactly
  float p = 7.0376836292e-2f;
  p = fmaf(p, f, -1.1514610310e-1f);
  p = fmaf(p, f, 1.1676998740e-1f);
  p = fmaf(p, f, -1.2420140846e-1f);
  p = fmaf(p, f, 1.4249322787e-1f);
  p = fmaf(p, f, -1.6668057665e-1f);
  p = fmaf(p, f, 2.0000714765e-1f);
  p = fmaf(p, f, -2.4999993993e-1f);
  p = fmaf(p, f, 3.3333331174e-1f);
  const float ef = static_cast<float>(e);
  float c = fmaf(f * z, p, ef * -2.12194440e-4f);            // e ln2_lo + f^3 P
  c = fmaf(z, -0.5f, c);
  const float a = ef * 0.693359375f;                          // e ln2_hi: exact
  const float s = a + f;
  const float err = (a - s) + f;
  return s + (fmaf(zl, -0.5f, err) + c);
}

// sin and cos of a float x in [0, 8): x = k pi/2 + r with r = rh + rl (Cody-Waite with a
// 21-bit second constant so k P2 is exact, and TwoSum), Taylor polynomials to r^9 / r^10 in
// rh with rl's first-order terms, and 1 - rh^2/2 as a rounded head plus its exact error.
DC_HD void sincos_float(float x, float* s_out, float* c_out) {
  const float kf = fmaf(x, 0.636619772f, 12582912.0f) - 12582912.0f;   // nearest integer (ties even)
  const int q = static_cast<int>(kf) & 3;
  const float t1 = fmaf(kf, -1.5707963705062866f, x);                    // exact
  const float m = kf * -4.3711395392165286e-08f;                         // exact (21 bits, k <= 5)
  const float rh = t1 - m;                                                // TwoSum(t1, -m)
  const float bb = rh - t1;
  float rl = (t1 - (rh - bb)) + (-m - bb);
  rl = fmaf(kf, -5.390302953474238e-15f, rl);
  const float r2 = rh * rh;
  const float r2l = fmaf(rh, rh, -r2);
  float ps = 2.7557319e-6f;
  ps = fmaf(ps, r2, -1.98412698e-4f);
  ps = fmaf(ps, r2, 8.33333333e-3f);
  ps = fmaf(ps, r2, -1.66666667e-1f);
  const float sn = rh + fmaf(rh * r2, ps, rl);
  float pc = -2.755731922e-7f;
  pc = fmaf(pc, r2, 2.48015873e-5f);
  pc = fmaf(pc, r2, -1.38888889e-3f);
  pc = fmaf(pc, r2, 4.16666667e-2f);
  const float a = fmaf(r2, -0.5f, 1.0f);
  const float ea = (1.0f - a) - 0.5f * r2;                                // exact
  const float cs = a + fmaf(r2 * r2, pc, fmaf(-rh, rl, fmaf(r2l, -0.5f, ea)));
  *s_out = q == 0 ? sn : (q == 1 ? cs : (q == 2 ? -sn : -cs));
  *c_out = q == 0 ? cs : (q == 1 ? -sn : (q == 2 ? -cs : sn));
}

struct Float4 {
  float z0, z1, z2, z3;
};

// The four float32 normals of one Philox call (slots 0..3), as diffcore.noise.normal.
// Returned by value (no arrays): lane loops around it stay vectorisable.
DC_HD Float4 box_muller4(const Words4& w) {
  const float u0 = static_cast<float>(uniform_double(w.w0));
  const float u1 = static_cast<float>(uniform_double(w.w1));
  const float u2 = static_cast<float>(uniform_double(w.w2));
  const float u3 = static_cast<float>(uniform_double(w.w3));
  const float two_pi = 6.283185307179586f;
  const float r01 = sqrtf(-2.0f * log_float(u0));
  const float r23 = sqrtf(-2.0f * log_float(u2));
  float s01, c01, s23, c23;
  sincos_float(two_pi * u1, &s01, &c01);
  sincos_float(two_pi * u3, &s23, &c23);
  return {r01 * c01, r01 * s01, r23 * c23, r23 * s23};
}

DC_HD Float4 normal4(const NoiseAddress& a, uint32_t group) { return box_muller4(philox_words(a, group)); }

// Slots 0 and 1 only (z2 = z3 = 0): for a last group that needs at most two elements.
DC_HD Float4 normal2(const NoiseAddress& a, uint32_t group) {
  const Words4 w = philox_words(a, group);
  const float u0 = static_cast<float>(uniform_double(w.w0));
  const float u1 = static_cast<float>(uniform_double(w.w1));
  const float r01 = sqrtf(-2.0f * log_float(u0));
  float s01, c01;
  sincos_float(6.283185307179586f * u1, &s01, &c01);
  return {r01 * c01, r01 * s01, 0.0f, 0.0f};
}

}  // namespace diffcore
