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
// log, cos and sin are evaluated in double from the float argument and rounded to float, so
// they are (almost always) the correctly rounded float values: the same numbers as the
// reference to float rounding on every backend, and bitwise equal between the CPU and CUDA
// builds. Everything here is branch-free straight-line code so loops over lanes vectorise.
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

// log of a positive normal float, evaluated in double (relative error ~1e-11), rounded to float.
DC_HD float log_float(float u) {
  const uint32_t b = float_bits(u);
  int e = static_cast<int>(b >> 23) - 127;
  float mf = bits_float((b & 0x007FFFFFu) | 0x3F800000u);   // [1, 2)
  const bool big = mf > 1.41421356f;
  const float half = mf * 0.5f;                             // unconditional: selects, no branches
  mf = big ? half : mf;                                     // [0.707, 1.414)
  e = big ? e + 1 : e;
  const double m = static_cast<double>(mf);
  const double s = (m - 1.0) / (m + 1.0);
  const double s2 = s * s;
  const double p = 1.0 + s2 * (1.0 / 3 + s2 * (1.0 / 5 + s2 * (1.0 / 7 + s2 * (1.0 / 9 + s2 * (1.0 / 11 + s2 * (1.0 / 13))))));
  const double lg = static_cast<double>(e) * 0.69314718055994530942 + 2.0 * s * p;
  return static_cast<float>(lg);
}

// sin and cos of a float in [0, 8), evaluated in double (error ~1e-15), rounded to float.
DC_HD void sincos_float(float theta, float* s_out, float* c_out) {
  const double x = static_cast<double>(theta);
  const int k = static_cast<int>(x * 0.63661977236758134308 + 0.5);   // nearest quadrant (x >= 0)
  const double kd = static_cast<double>(k);
  const double r = (x - kd * 1.57079632679489655800e+00) - kd * 6.12323399573676603587e-17;
  const double r2 = r * r;
  const double sn = r * (1.0 + r2 * (-1.0 / 6 + r2 * (1.0 / 120 + r2 * (-1.0 / 5040 + r2 * (1.0 / 362880 +
                    r2 * (-1.0 / 39916800 + r2 * (1.0 / 6227020800.0)))))));
  const double cs = 1.0 + r2 * (-0.5 + r2 * (1.0 / 24 + r2 * (-1.0 / 720 + r2 * (1.0 / 40320 + r2 * (-1.0 / 3628800 +
                    r2 * (1.0 / 479001600.0 + r2 * (-1.0 / 87178291200.0)))))));
  const int q = k & 3;
  const double sv = q == 0 ? sn : (q == 1 ? cs : (q == 2 ? -sn : -cs));
  const double cv = q == 0 ? cs : (q == 1 ? -sn : (q == 2 ? -cs : sn));
  *s_out = static_cast<float>(sv);
  *c_out = static_cast<float>(cv);
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
