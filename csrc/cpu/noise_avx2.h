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

// The Box-Muller functions below work on N vectors at once, stage by stage: each polynomial
// is a chain of dependent fmas, and N independent chains side by side keep both FMA pipes busy
// where one chain would wait on each fma's latency (18% faster noise than one vector at a time).
#define DC_EACH(k) _Pragma("GCC unroll 16") for (int k = 0; k < N; ++k)

// philox.h log_float on N x 8 lanes, op for op.
template <int N>
DC_AVX2 void log8(const __m256* u, __m256* out) {
  __m256i e[N];
  __m256 f[N], z[N], zl[N], p[N];
  DC_EACH(k) {
    const __m256i b = _mm256_castps_si256(u[k]);
    e[k] = _mm256_sub_epi32(_mm256_srli_epi32(b, 23), _mm256_set1_epi32(127));
    __m256 m = _mm256_castsi256_ps(
        _mm256_or_si256(_mm256_and_si256(b, _mm256_set1_epi32(0x007FFFFF)), _mm256_set1_epi32(0x3F800000)));
    const __m256 big = _mm256_cmp_ps(m, set1(1.41421356f), _CMP_GT_OQ);
    m = _mm256_blendv_ps(m, _mm256_mul_ps(m, set1(0.5f)), big);
    e[k] = _mm256_sub_epi32(e[k], _mm256_castps_si256(big));   // big lanes are all ones (-1)
    f[k] = _mm256_sub_ps(m, set1(1.0f));
    z[k] = _mm256_mul_ps(f[k], f[k]);
    zl[k] = _mm256_fmsub_ps(f[k], f[k], z[k]);
    p[k] = set1(7.0376836292e-2f);
  }
  static constexpr float kLog[] = {-1.1514610310e-1f, 1.1676998740e-1f, -1.2420140846e-1f, 1.4249322787e-1f,
                                   -1.6668057665e-1f, 2.0000714765e-1f, -2.4999993993e-1f, 3.3333331174e-1f};
#pragma GCC unroll 8
  for (float c : kLog) DC_EACH(k) p[k] = fma(p[k], f[k], set1(c));
  DC_EACH(k) {
    const __m256 ef = _mm256_cvtepi32_ps(e[k]);
    __m256 c = fma(_mm256_mul_ps(f[k], z[k]), p[k], _mm256_mul_ps(ef, set1(-2.12194440e-4f)));
    c = fma(z[k], set1(-0.5f), c);
    const __m256 a = _mm256_mul_ps(ef, set1(0.693359375f));
    const __m256 s = _mm256_add_ps(a, f[k]);
    const __m256 err = _mm256_add_ps(_mm256_sub_ps(a, s), f[k]);
    out[k] = _mm256_add_ps(s, _mm256_add_ps(fma(zl[k], set1(-0.5f), err), c));
  }
}

// philox.h sincos_float on N x 8 lanes (x in [0, 8)), op for op.
template <int N>
DC_AVX2 void sincos8(const __m256* x, __m256* s_out, __m256* c_out) {
  __m256 kf[N], rh[N], rl[N], r2[N], r2l[N], ps[N], pc[N];
  __m256i q[N];
  const __m256 magic = set1(12582912.0f);
  DC_EACH(k) {
    kf[k] = _mm256_sub_ps(fma(x[k], set1(0.636619772f), magic), magic);
    q[k] = _mm256_cvttps_epi32(kf[k]);
    const __m256 t1 = fma(kf[k], set1(-1.5707963705062866f), x[k]);
    const __m256 m = _mm256_mul_ps(kf[k], set1(-4.3711395392165286e-08f));
    rh[k] = _mm256_sub_ps(t1, m);
    const __m256 bb = _mm256_sub_ps(rh[k], t1);
    rl[k] = _mm256_add_ps(_mm256_sub_ps(t1, _mm256_sub_ps(rh[k], bb)),
                          _mm256_sub_ps(_mm256_xor_ps(m, set1(-0.0f)), bb));
    rl[k] = fma(kf[k], set1(-5.390302953474238e-15f), rl[k]);
    r2[k] = _mm256_mul_ps(rh[k], rh[k]);
    r2l[k] = _mm256_fmsub_ps(rh[k], rh[k], r2[k]);
    ps[k] = set1(2.7557319e-6f);
    pc[k] = set1(-2.755731922e-7f);
  }
  static constexpr float kSin[] = {-1.98412698e-4f, 8.33333333e-3f, -1.66666667e-1f};
  static constexpr float kCos[] = {2.48015873e-5f, -1.38888889e-3f, 4.16666667e-2f};
#pragma GCC unroll 3
  for (int i = 0; i < 3; ++i) DC_EACH(k) {
      ps[k] = fma(ps[k], r2[k], set1(kSin[i]));
      pc[k] = fma(pc[k], r2[k], set1(kCos[i]));
    }
  DC_EACH(k) {
    const __m256 sn = _mm256_add_ps(rh[k], fma(_mm256_mul_ps(rh[k], r2[k]), ps[k], rl[k]));
    const __m256 a = fma(r2[k], set1(-0.5f), set1(1.0f));
    const __m256 ea = _mm256_sub_ps(_mm256_sub_ps(set1(1.0f), a), _mm256_mul_ps(set1(0.5f), r2[k]));
    const __m256 cs = _mm256_add_ps(
        a, fma(_mm256_mul_ps(r2[k], r2[k]), pc[k], _mm256_fnmadd_ps(rh[k], rl[k], fma(r2l[k], set1(-0.5f), ea))));
    // quadrant: odd swaps sin and cos; sin is negated for q = 2, 3 and cos for q = 1, 2
    const __m256 odd = _mm256_castsi256_ps(_mm256_slli_epi32(q[k], 31));   // blendv reads the sign bit
    const __m256 s = _mm256_blendv_ps(sn, cs, odd);
    const __m256 c = _mm256_blendv_ps(cs, sn, odd);
    const __m256i two = _mm256_set1_epi32(2);
    const __m256i sign_s = _mm256_slli_epi32(_mm256_and_si256(q[k], two), 30);
    const __m256i sign_c = _mm256_slli_epi32(_mm256_and_si256(_mm256_add_epi32(q[k], _mm256_set1_epi32(1)), two), 30);
    s_out[k] = _mm256_xor_ps(s, _mm256_castsi256_ps(sign_s));
    c_out[k] = _mm256_xor_ps(c, _mm256_castsi256_ps(sign_c));
  }
}

// Box-Muller on the words of G x 8 groups (lane = group), written in element order
// (out[4 g + slot], 32 floats per 8 groups).
template <int G>
DC_AVX2 void box_muller(const __m256i* w0, const __m256i* w1, const __m256i* w2, const __m256i* w3, float* out) {
  constexpr int N = 2 * G;
  __m256 u[N], ang[N], r[N], s[N], c[N];
  for (int j = 0; j < G; ++j) {
    u[2 * j] = uniform8(w0[j]);
    u[2 * j + 1] = uniform8(w2[j]);
    ang[2 * j] = _mm256_mul_ps(set1(6.283185307179586f), uniform8(w1[j]));
    ang[2 * j + 1] = _mm256_mul_ps(set1(6.283185307179586f), uniform8(w3[j]));
  }
  log8<N>(u, r);
  DC_EACH(k) r[k] = _mm256_sqrt_ps(_mm256_mul_ps(set1(-2.0f), r[k]));
  sincos8<N>(ang, s, c);
  for (int j = 0; j < G; ++j) {
    const __m256 z0 = _mm256_mul_ps(r[2 * j], c[2 * j]), z1 = _mm256_mul_ps(r[2 * j], s[2 * j]);
    const __m256 z2 = _mm256_mul_ps(r[2 * j + 1], c[2 * j + 1]), z3 = _mm256_mul_ps(r[2 * j + 1], s[2 * j + 1]);
    // lanes = groups -> element order: a 4 x 8 transpose
    const __m256 t0 = _mm256_unpacklo_ps(z0, z1), t1 = _mm256_unpackhi_ps(z0, z1);
    const __m256 t2 = _mm256_unpacklo_ps(z2, z3), t3 = _mm256_unpackhi_ps(z2, z3);
    const __m256 a0 = _mm256_shuffle_ps(t0, t2, 0x44), a1 = _mm256_shuffle_ps(t0, t2, 0xEE);
    const __m256 a2 = _mm256_shuffle_ps(t1, t3, 0x44), a3 = _mm256_shuffle_ps(t1, t3, 0xEE);
    float* o = out + 32 * j;
    _mm256_storeu_ps(o, _mm256_permute2f128_ps(a0, a1, 0x20));
    _mm256_storeu_ps(o + 8, _mm256_permute2f128_ps(a2, a3, 0x20));
    _mm256_storeu_ps(o + 16, _mm256_permute2f128_ps(a0, a1, 0x31));
    _mm256_storeu_ps(o + 24, _mm256_permute2f128_ps(a2, a3, 0x31));
  }
}
#undef DC_EACH

// Philox4x32-10 on kBlock / 4 counters (lane j*8 + i: words c0[j], c1[j] lane i; the address's
// step and stream), then Box-Muller: out[4 * lane + slot]. Four independent streams of 8 lanes
// are interleaved: one alone is a chain of dependent multiplies (latency-bound); four keep
// the multipliers busy.
constexpr int kBlock = 128;
constexpr int kStreams = kBlock / 32;

DC_AVX2 void philox_normals(__m256i* c0, __m256i* c1, const NoiseAddress& a, float* out) {
  constexpr int NB = kStreams;
  const __m256i m0 = _mm256_set1_epi32(static_cast<int>(kPhiloxM0));
  const __m256i m1 = _mm256_set1_epi32(static_cast<int>(kPhiloxM1));
  __m256i c2[NB], c3[NB];
  for (int j = 0; j < NB; ++j) {
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
  // two groups of 8 at a time: four log and four sin/cos chains in flight without spilling much
  static_assert(NB % 2 == 0, "Box-Muller takes the streams in pairs");
  for (int j = 0; j < NB; j += 2) box_muller<2>(c0 + j, c1 + j, c2 + j, c3 + j, out + 32 * j);
}

// The kBlock normals of groups g0 .. g0 + kBlock / 4 - 1 of address a, in element order.
DC_AVX2 void normal_block(const NoiseAddress& a, uint32_t g0, float* out) {
  __m256i c0[kStreams], c1[kStreams];
  for (int j = 0; j < kStreams; ++j) {
    c0[j] = _mm256_add_epi32(_mm256_set1_epi32(static_cast<int>(g0 + 8u * j)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
    c1[j] = _mm256_set1_epi32(static_cast<int>(a.sample));
  }
  philox_normals(c0, c1, a, out);
}

// Group g's four normals for each of kLanes samples (a.sample is ignored): out[4 * s + slot].
// For states of a few values per sample, where a block per sample would mostly go unused.
constexpr int kLanes = kBlock / 4;

DC_AVX2 void normal_lanes(const NoiseAddress& a, const uint32_t* samples, uint32_t g, float* out) {
  __m256i c0[kStreams], c1[kStreams];
  for (int j = 0; j < kStreams; ++j) {
    c0[j] = _mm256_set1_epi32(static_cast<int>(g));
    c1[j] = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(samples + 8 * j));
  }
  philox_normals(c0, c1, a, out);
}

#undef DC_AVX2

}  // namespace avx2
}  // namespace diffcore

#endif
