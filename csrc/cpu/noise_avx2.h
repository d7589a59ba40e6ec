// diffcore.noise's normals with AVX2+FMA, 32 Philox groups (128 elements) per call: the same
// floats, bit for bit, as philox.h's normal4 (which stays the definition, and the code for CUDA,
// the integrators and CPUs without AVX2). Philox4x32-10 runs on 8 counters per 256-bit vector
// (the 32x32->64 products with vpmuludq on even and odd lanes), four vectors interleaved;
// Box-Muller repeats philox.h's float32 log and sin/cos op for op (the same fmas, the same
// order), so no step rounds differently. Checked exhaustively over the 2^24 possible arguments
// of log and of sin/cos, and over 37.7 M normals, against the scalar code (no difference).
//
// Only for callers compiled with target("avx2,fma") (x86-64 GCC or Clang); choose it at run
// time with cpu_has_avx2_fma().
#pragma once

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define DIFFCORE_HAVE_AVX2 1

#include <immintrin.h>

#include "../philox.h"

namespace diffcore {
namespace avx2 {

#define DC_AVX2 inline __attribute__((always_inline, target("avx2,fma")))

inline bool cpu_has_avx2_fma() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}

// 32x32 -> 64 products of each lane with m: (high words, low words).
DC_AVX2 void mul_hilo(__m256i a, __m256i m, __m256i* hi, __m256i* lo) {
  const __m256i ev = _mm256_mul_epu32(a, m);                         // lanes 0, 2, 4, 6
  const __m256i od = _mm256_mul_epu32(_mm256_srli_epi64(a, 32), m);  // lanes 1, 3, 5, 7
  *hi = _mm256_blend_epi32(_mm256_srli_epi64(ev, 32), od, 0xAA);
  *lo = _mm256_blend_epi32(ev, _mm256_slli_epi64(od, 32), 0xAA);
}

// ((w >> 8) + 0.5) / 2^24 rounded to float: (float)(w >> 8) is exact, the sum rounds once to
// nearest even (as the double value's conversion does), the scaling is exact.
DC_AVX2 __m256 uniform8(__m256i w) {
  const __m256 k = _mm256_cvtepi32_ps(_mm256_srli_epi32(w, 8));
  return _mm256_mul_ps(_mm256_add_ps(k, _mm256_set1_ps(0.5f)), _mm256_set1_ps(1.0f / 16777216.0f));
}

DC_AVX2 __m256 set1(float v) { return _mm256_set1_ps(v); }
DC_AVX2 __m256 fma(__m256 a, __m256 b, __m256 c) { return _mm256_fmadd_ps(a, b, c); }

// philox.h log_float on 8 lanes, op for op.
DC_AVX2 __m256 log8(__m256 u) {
  const __m256i b = _mm256_castps_si256(u);
  __m256i e = _mm256_sub_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(127));
  __m256 m = _mm256_castsi256_ps(
      _mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
  const __m256 big = _mm256_cmp_ps(m, set1(1.41421356f), _CMP_GT_OQ);
  m = _mm256_blendv_ps(m, _mm256_mul_ps(m, set1(0.5f)), big);
  e = _mm256_sub_epi32(e, _mm256_castps_si256(big));   // big lanes are all ones (-1)
  const __m256 f = _mm256_sub_ps(m, set1(1.0f));
  const __m256 z = _mm256_mul_ps(f, f);
  const __m256 zl = _mm256_fmsub_ps(f, f, z);
  __m256 p = set1(7.0376836292e-2f);
  p = fma(p, f, set1(-1.1514610310e-1f));
  p = fma(p, f, set1(1.1676998740e-1f));
  p = fma(p, f, set1(-1.2420140846e-1f));
  p = fma(p, f, set1(1.4249322787e-1f));
  p = fma(p, f, set1(-1.6668057665e-1f));
  p = fma(p, f, set1(2.0000714765e-1f));
  p = fma(p, f, set1(-2.4999993993e-1f));
  p = fma(p, f, set1(3.3333331174e-1f));
  const __m256 ef = _mm256_cvtepi32_ps(e);
  __m256 c = fma(_mm256_mul_ps(f, z), p, _mm256_mul_ps(ef, set1(-2.12194440e-4f)));
  c = fma(z, set1(-0.5f), c);
  const __m256 a = _mm256_mul_ps(ef, set1(0.693359375f));
  const __m256 s = _mm256_add_ps(a, f);
  const __m256 err = _mm256_add_ps(_mm256_sub_ps(a, s), f);
  return _mm256_add_ps(s, _mm256_add_ps(fma(zl, set1(-0.5f), err), c));
}

// philox.h sincos_float on 8 lanes (x in [0, 8)), op for op.
DC_AVX2 void sincos8(__m256 x, __m256* s_out, __m256* c_out) {
  const __m256 magic = set1(12582912.0f);
  const __m256 kf = _mm256_sub_ps(fma(x, set1(0.636619772f), magic), magic);
  const __m256i q = _mm256_cvttps_epi32(kf);
  const __m256 t1 = fma(kf, set1(-1.5707963705062866f), x);
  const __m256 m = _mm256_mul_ps(kf, set1(-4.3711395392165286e-08f));
  const __m256 rh = _mm256_sub_ps(t1, m);
  const __m256 bb = _mm256_sub_ps(rh, t1);
  __m256 rl = _mm256_add_ps(_mm256_sub_ps(t1, _mm256_sub_ps(rh, bb)),
                            _mm256_sub_ps(_mm256_xor_ps(m, set1(-0.0f)), bb));
  rl = fma(kf, set1(-5.390302953474238e-15f), rl);
  const __m256 r2 = _mm256_mul_ps(rh, rh);
  const __m256 r2l = _mm256_fmsub_ps(rh, rh, r2);
  __m256 ps = set1(2.7557319e-6f);
  ps = fma(ps, r2, set1(-1.98412698e-4f));
  ps = fma(ps, r2, set1(8.33333333e-3f));
  ps = fma(ps, r2, set1(-1.66666667e-1f));
  const __m256 sn = _mm256_add_ps(rh, fma(_mm256_mul_ps(rh, r2), ps, rl));
  __m256 pc = set1(-2.755731922e-7f);
  pc = fma(pc, r2, set1(2.48015873e-5f));
  pc = fma(pc, r2, set1(-1.38888889e-3f));
  pc = fma(pc, r2, set1(4.16666667e-2f));
  const __m256 a = fma(r2, set1(-0.5f), set1(1.0f));
  const __m256 ea = _mm256_sub_ps(_mm256_sub_ps(set1(1.0f), a), _mm256_mul_ps(set1(0.5f), r2));
  const __m256 cs = _mm256_add_ps(
      a, fma(_mm256_mul_ps(r2, r2), pc, _mm256_fnmadd_ps(rh, rl, fma(r2l, set1(-0.5f), ea))));
  // quadrant: odd swaps sin and cos; sin is negated for q = 2, 3 and cos for q = 1, 2
  const __m256 odd = _mm256_castsi256_ps(_mm256_slli_epi32(q, 31));   // blendv reads the sign bit
  const __m256 s = _mm256_blendv_ps(sn, cs, odd);
  const __m256 c = _mm256_blendv_ps(cs, sn, odd);
  const __m256i two = _mm256_set1_epi32(2);
  const __m256i sign_s = _mm256_slli_epi32(_mm256_and_si256(q, two), 30);
  const __m256i sign_c = _mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(q, _mm256_set1_epi32(1)), two), 30);
  *s_out = _mm256_xor_ps(s, _mm256_castsi256_ps(sign_s));
  *c_out = _mm256_xor_ps(c, _mm256_castsi256_ps(sign_c));
}

// Box-Muller on the words of 8 groups (lane = group), written in element order (out[4 g + slot]).
DC_AVX2 void box_muller32(__m256i w0, __m256i w1, __m256i w2, __m256i w3, float* out) {
  const __m256 two_pi = set1(6.283185307179586f);
  const __m256 r01 = _mm256_sqrt_ps(_mm256_mul_ps(set1(-2.0f), log8(uniform8(w0))));
  const __m256 r23 = _mm256_sqrt_ps(_mm256_mul_ps(set1(-2.0f), log8(uniform8(w2))));
  __m256 s01, c01, s23, c23;
  sincos8(_mm256_mul_ps(two_pi, uniform8(w1)), &s01, &c01);
  sincos8(_mm256_mul_ps(two_pi, uniform8(w3)), &s23, &c23);
  const __m256 z0 = _mm256_mul_ps(r01, c01), z1 = _mm256_mul_ps(r01, s01);
  const __m256 z2 = _mm256_mul_ps(r23, c23), z3 = _mm256_mul_ps(r23, s23);
  // lanes = groups -> element order: a 4 x 8 transpose
  const __m256 t0 = _mm256_unpacklo_ps(z0, z1), t1 = _mm256_unpackhi_ps(z0, z1);
  const __m256 t2 = _mm256_unpacklo_ps(z2, z3), t3 = _mm256_unpackhi_ps(z2, z3);
  const __m256 a0 = _mm256_shuffle_ps(t0, t2, 0x44), a1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 a2 = _mm256_shuffle_ps(t1, t3, 0x44), a3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  _mm256_storeu_ps(out, _mm256_permute2f128_ps(a0, a1, 0x20));
  _mm256_storeu_ps(out + 8, _mm256_permute2f128_ps(a2, a3, 0x20));
  _mm256_storeu_ps(out + 16, _mm256_permute2f128_ps(a0, a1, 0x31));
  _mm256_storeu_ps(out + 24, _mm256_permute2f128_ps(a2, a3, 0x31));
}

// The kBlock normals of groups g0 .. g0 + kBlock / 4 - 1 of address a, in element order. Four
// independent Philox streams of 8 lanes are interleaved: one alone is a chain of dependent
// multiplies (latency-bound); four keep the multipliers busy.
constexpr int kBlock = 128;

DC_AVX2 void normal_block(const NoiseAddress& a, uint32_t g0, float* out) {
  constexpr int NB = kBlock / 32;
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  __m256i c0[NB], c1[NB], c2[NB], c3[NB];
  for (int j = 0; j < NB; ++j) {
    c0[j] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(g0 + 8u * j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    c1[j] = _mm256_set1_epi32(static_cast<int>(a.sample));
    c2[j] = _mm256_set1_epi32(static_cast<int>(a.step));
    c3[j] = _mm256_set1_epi32(static_cast<int>(a.stream));
  }
  uint32_t k0 = a.k0, k1 = a.k1;
#pragma GCC unroll 10
  for (int r = 0; r < 10; ++r) {
    const __m256i kk0 = _mm256_set1_epi32(static_cast<int>(k0)), kk1 = _mm256_set1_epi32(static_cast<int>(k1));
#pragma GCC unroll 4
    for (int j = 0; j < NB; ++j) {
      __m256i hi0, lo0, hi1, lo1;
      mul_hilo(c0[j], m0, &hi0, &lo0);
      mul_hilo(c2[j], m1, &hi1, &lo1);
      c0[j] = _mm256_xor_si256(_mm256_xor_si256(hi1, c1[j]), kk0);
      c2[j] = _mm256_xor_si256(_mm256_xor_si256(hi0, c3[j]), kk1);
      c1[j] = lo1;
      c3[j] = lo0;
    }
    k0 += kPhiloxW0;
    k1 += kPhiloxW1;
  }
#pragma GCC unroll 4
  for (int j = 0; j < NB; ++j) box_muller32(c0[j], c1[j], c2[j], c3[j], out + 32 * j);
}

#undef DC_AVX2

}  // namespace avx2
}  // namespace diffcore

#endif
