// 16-bit storage (bfloat16, float16) <-> float32 for the CPU kernels that compute a 16-bit
// tensor in float32: eight values in a register (load8 / store8, for kernels compiled with
// target("avx2,fma")) and whole rows (widen / narrow, AVX2 + F16C chosen at run time, scalar
// otherwise). Narrowing rounds to nearest even and sends NaN to a quiet NaN (0x7FC0 for bf16):
// the bits c10's scalar conversions give, so a kernel's 16-bit output equals its float32 result
// cast by PyTorch (NaN payloads apart: PyTorch's vectorised cast may give another NaN).
#pragma once

#include <c10/util/BFloat16.h>
#include <c10/util/Half.h>

#include <cstdint>

#include "noise_avx2.h"

namespace diffcore {
namespace half_rows {

template <typename S> void widen_scalar(const S* x, float* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = static_cast<float>(x[i]);
}
template <typename S> void narrow_scalar(const float* x, S* y, int64_t n) {
  for (int64_t i = 0; i < n; ++i) y[i] = S(x[i]);
}

#ifdef DIFFCORE_HAVE_AVX2
#define DC_HALF8 inline __attribute__((always_inline, target("avx2,fma")))
DC_HALF8 __m256 load8(const float* p) { return _mm256_loadu_ps(p); }
DC_HALF8 __m256 load8(const c10::BFloat16* p) {   // exact: the bits shifted up
  return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(_mm_loadu_si128((const __m128i*)p)), 16));
}
DC_HALF8 void store8(float* y, __m256 v) { _mm256_storeu_ps(y, v); }
DC_HALF8 void store8(c10::BFloat16* y, __m256 v) {   // (bits + 0x7FFF + lsb) >> 16; NaN -> 0x7FC0
  const __m256i bits = _mm256_castps_si256(v);
  const __m256i lsb = _mm256_and_si256(_mm256_srli_epi32(bits, 16), _mm256_set1_epi32(1));
  __m256i r = _mm256_srli_epi32(_mm256_add_epi32(bits, _mm256_add_epi32(lsb, _mm256_set1_epi32(0x7FFF))), 16);
  r = _mm256_blendv_epi8(r, _mm256_set1_epi32(0x7FC0), _mm256_castps_si256(_mm256_cmp_ps(v, v, _CMP_UNORD_Q)));
  _mm_storeu_si128((__m128i*)y, _mm_packus_epi32(_mm256_castsi256_si128(r), _mm256_extracti128_si256(r, 1)));
}
#define DC_HALF8_F16C inline __attribute__((always_inline, target("avx2,fma,f16c")))
DC_HALF8_F16C __m256 load8(const c10::Half* p) { return _mm256_cvtph_ps(_mm_loadu_si128((const __m128i*)p)); }
DC_HALF8_F16C void store8(c10::Half* y, __m256 v) {
  _mm_storeu_si128((__m128i*)y, _mm256_cvtps_ph(v, _MM_FROUND_TO_NEAREST_INT));
}

#define DC_HALF_ROWS __attribute__((target("avx2,fma,f16c")))
template <typename S> DC_HALF_ROWS void widen_avx2(const S* x, float* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store8(y + i, load8(x + i));
  widen_scalar(x + i, y + i, n - i);
}
template <typename S> DC_HALF_ROWS void narrow_avx2(const float* x, S* y, int64_t n) {
  int64_t i = 0;
  for (; i + 8 <= n; i += 8) store8(y + i, load8(x + i));
  narrow_scalar(x + i, y + i, n - i);
}
#undef DC_HALF8
#undef DC_HALF8_F16C
#undef DC_HALF_ROWS
#endif

inline bool f16c_rows() {
#ifdef DIFFCORE_HAVE_AVX2
  static const bool ok = avx2::cpu_has_avx2_fma() && __builtin_cpu_supports("f16c");
  return ok;
#else
  return false;
#endif
}

// y[0:n] = float(x[0:n])
template <typename S> void widen(const S* x, float* y, int64_t n) {
#ifdef DIFFCORE_HAVE_AVX2
  if (f16c_rows()) return widen_avx2(x, y, n);
#endif
  widen_scalar(x, y, n);
}
// y[0:n] = S(x[0:n]), rounded to nearest even
template <typename S> void narrow(const float* x, S* y, int64_t n) {
#ifdef DIFFCORE_HAVE_AVX2
  if (f16c_rows()) return narrow_avx2(x, y, n);
#endif
  narrow_scalar(x, y, n);
}

}  // namespace half_rows
}  // namespace diffcore
