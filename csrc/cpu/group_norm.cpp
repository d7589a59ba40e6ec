// CPU GroupNorm (+ per-(n, c) embedding added before the statistics) (+ SiLU) forward, for
// NCHW-contiguous ([N, C, *]) and channels_last (4-D / 5-D) inputs, in float32, float64, and
// bfloat16/float16 (stored 16-bit, computed in float32, statistics and parameters float32).
// One read for the statistics (shifted sums in double, so a large mean loses nothing), one read
// + one write for y = silu(x * scale_c + shift_c); a group's slice of an NCHW tensor stays in
// cache between the two. Parallel over (n, group) (NCHW) or n (channels_last).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <cmath>
#include <type_traits>
#include <vector>

#include "../common.h"
#include "../gmm.h"
#include "half_rows.h"
#include "noise_avx2.h"
#include "pool.h"

#if defined(_OPENMP)
#define DC_SIMD_SUM2(a, b) _Pragma("omp simd reduction(+ : a, b)")
#else
#define DC_SIMD_SUM2(a, b)
#endif

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DIFFCORE_NO_CLONES)
#define DC_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DC_CLONES
#endif

namespace diffcore {
namespace {

// always_inline: the bodies must be compiled inside each target clone below
#define DC_INLINE inline __attribute__((always_inline))

template <typename T> DC_INLINE T silu_of(T y);
template <> DC_INLINE float silu_of<float>(float y) { return y / (1.0f + fast_expf(-y)); }
template <> DC_INLINE double silu_of<double>(double y) { return y / (1.0 + std::exp(-y)); }

// sums of (x + e - shift) and its square over n values
template <typename T>
DC_INLINE void shifted_sums(const T* x, int64_t n, double e_minus_shift, double* s1, double* s2) {
  double a = 0, b = 0;
  DC_SIMD_SUM2(a, b)
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(x[i]) + e_minus_shift;
    a += v;
    b += v * v;
  }
  *s1 += a;
  *s2 += b;
}

template <typename T>
DC_INLINE void apply_row(const T* x, T* y, int64_t n, T scale, T shift, bool silu) {
  if (silu) {
    DC_SIMD for (int64_t i = 0; i < n; ++i) y[i] = silu_of<T>(x[i] * scale + shift);
  } else {
    DC_SIMD for (int64_t i = 0; i < n; ++i) y[i] = x[i] * scale + shift;
  }
}

template <typename T>
DC_INLINE void apply_row_cl(const T* x, T* y, int64_t C, const T* scale, const T* shift, bool silu) {
  if (silu) {
    DC_SIMD for (int64_t c = 0; c < C; ++c) y[c] = silu_of<T>(x[c] * scale[c] + shift[c]);
  } else {
    DC_SIMD for (int64_t c = 0; c < C; ++c) y[c] = x[c] * scale[c] + shift[c];
  }
}

#ifdef DIFFCORE_HAVE_AVX2
// silu(x * a + b) on 8 lanes with AVX2+FMA intrinsics: fast_expf's range reduction and
// polynomial (ties of the reduction round to even here; either choice is within its error), and
// an IEEE division. GCC's own vectorisation of silu_of runs at about half this speed.
#define DC_AVX2_FN inline __attribute__((always_inline, target("avx2,fma")))
DC_AVX2_FN __m256 silu8(__m256 v) {
  const __m256 t = _mm256_max_ps(_mm256_min_ps(_mm256_sub_ps(_mm256_setzero_ps(), v), _mm256_set1_ps(88.0f)),
                                 _mm256_set1_ps(-87.0f));
  const __m256 kf = _mm256_round_ps(_mm256_mul_ps(t, _mm256_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  __m256 r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(0.693359375f), t);
  r = _mm256_fnmadd_ps(kf, _mm256_set1_ps(-2.12194440e-4f), r);
  const __m256 z = _mm256_mul_ps(r, r);
  __m256 p = _mm256_set1_ps(1.9875691500e-4f);
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
  p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
  p = _mm256_add_ps(_mm256_fmadd_ps(p, z, r), _mm256_set1_ps(1.0f));
  const __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(kf), _mm256_set1_epi32(127)), 23);
  const __m256 ex = _mm256_mul_ps(p, _mm256_castsi256_ps(e));   // exp(-v)
  return _mm256_div_ps(v, _mm256_add_ps(_mm256_set1_ps(1.0f), ex));
}

__attribute__((target("avx2,fma"))) void row_f32_avx2(const float* x, float* y, int64_t n, float a, float b, bool s) {
  const __m256 va = _mm256_set1_ps(a), vb = _mm256_set1_ps(b);
  int64_t i = 0;
  if (s) {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, silu8(_mm256_fmadd_ps(_mm256_loadu_ps(x + i), va, vb)));
    for (; i < n; ++i) y[i] = silu_of<float>(x[i] * a + b);
  } else {
    for (; i + 8 <= n; i += 8) _mm256_storeu_ps(y + i, _mm256_fmadd_ps(_mm256_loadu_ps(x + i), va, vb));
    for (; i < n; ++i) y[i] = x[i] * a + b;
  }
}

__attribute__((target("avx2,fma"))) void row_cl_f32_avx2(const float* x, float* y, int64_t C, const float* a,
                                                         const float* b, bool s) {
  int64_t c = 0;
  for (; c + 8 <= C; c += 8) {
    const __m256 v = _mm256_fmadd_ps(_mm256_loadu_ps(x + c), _mm256_loadu_ps(a + c), _mm256_loadu_ps(b + c));
    _mm256_storeu_ps(y + c, s ? silu8(v) : v);
  }
  for (; c < C; ++c) y[c] = s ? silu_of<float>(x[c] * a[c] + b[c]) : x[c] * a[c] + b[c];
}
// shifted_sums on 16 floats per iteration: two pairs of 4-lane double accumulators.
__attribute__((target("avx2,fma"))) void sums_f32_avx2(const float* x, int64_t n, double e, double* s1,
                                                       double* s2) {
  const __m256d ve = _mm256_set1_pd(e);
  __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0, b0 = a0, b1 = a0, b2 = a0, b3 = a0;
  int64_t i = 0;
  for (; i + 16 <= n; i += 16) {
    const __m256 u = _mm256_loadu_ps(x + i), w = _mm256_loadu_ps(x + i + 8);
    const __m256d v0 = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(u)), ve);
    const __m256d v1 = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(u, 1)), ve);
    const __m256d v2 = _mm256_add_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(w)), ve);
    const __m256d v3 = _mm256_add_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(w, 1)), ve);
    a0 = _mm256_add_pd(a0, v0);
    a1 = _mm256_add_pd(a1, v1);
    a2 = _mm256_add_pd(a2, v2);
    a3 = _mm256_add_pd(a3, v3);
    b0 = _mm256_fmadd_pd(v0, v0, b0);
    b1 = _mm256_fmadd_pd(v1, v1, b1);
    b2 = _mm256_fmadd_pd(v2, v2, b2);
    b3 = _mm256_fmadd_pd(v3, v3, b3);
  }
  alignas(32) double ta[4], tb[4];
  _mm256_store_pd(ta, _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
  _mm256_store_pd(tb, _mm256_add_pd(_mm256_add_pd(b0, b1), _mm256_add_pd(b2, b3)));
  double sa = (ta[0] + ta[1]) + (ta[2] + ta[3]), sb = (tb[0] + tb[1]) + (tb[2] + tb[3]);
  for (; i < n; ++i) {
    const double v = static_cast<double>(x[i]) + e;
    sa += v;
    sb += v * v;
  }
  *s1 += sa;
  *s2 += sb;
}
#undef DC_AVX2_FN
#endif

inline bool avx2_rows() {
#ifdef DIFFCORE_HAVE_AVX2
  return avx2::cpu_has_avx2_fma();
#else
  return false;
#endif
}

DC_CLONES void sums_f32(const float* x, int64_t n, double e, double* s1, double* s2) { shifted_sums(x, n, e, s1, s2); }
void sums_f64(const double* x, int64_t n, double e, double* s1, double* s2) { shifted_sums(x, n, e, s1, s2); }
DC_CLONES void row_f32(const float* x, float* y, int64_t n, float a, float b, bool s) { apply_row(x, y, n, a, b, s); }
void row_f64(const double* x, double* y, int64_t n, double a, double b, bool s) { apply_row(x, y, n, a, b, s); }
DC_CLONES void row_cl_f32(const float* x, float* y, int64_t C, const float* a, const float* b, bool s) { apply_row_cl(x, y, C, a, b, s); }
void row_cl_f64(const double* x, double* y, int64_t C, const double* a, const double* b, bool s) { apply_row_cl(x, y, C, a, b, s); }

inline void sums(const float* x, int64_t n, double e, double* s1, double* s2) {
#ifdef DIFFCORE_HAVE_AVX2
  if (avx2_rows()) return sums_f32_avx2(x, n, e, s1, s2);
#endif
  sums_f32(x, n, e, s1, s2);
}
inline void sums(const double* x, int64_t n, double e, double* s1, double* s2) { sums_f64(x, n, e, s1, s2); }
inline void row(const float* x, float* y, int64_t n, float a, float b, bool s) {
#ifdef DIFFCORE_HAVE_AVX2
  if (avx2_rows()) return row_f32_avx2(x, y, n, a, b, s);
#endif
  row_f32(x, y, n, a, b, s);
}
inline void row(const double* x, double* y, int64_t n, double a, double b, bool s) { row_f64(x, y, n, a, b, s); }
inline void row_cl(const float* x, float* y, int64_t C, const float* a, const float* b, bool s) {
#ifdef DIFFCORE_HAVE_AVX2
  if (avx2_rows()) return row_cl_f32_avx2(x, y, C, a, b, s);
#endif
  row_cl_f32(x, y, C, a, b, s);
}
inline void row_cl(const double* x, double* y, int64_t C, const double* a, const double* b, bool s) { row_cl_f64(x, y, C, a, b, s); }

// ---- 16-bit storage (bfloat16, float16): each row is widened into a float buffer that stays in
// L1, run through the float32 loops above, and narrowed back rounding to nearest even (the bits
// c10's own conversions give; with AVX2 + F16C eight values at a time).
constexpr int64_t kChunk = 1024;

template <typename S> inline constexpr bool kWide = std::is_same_v<S, float> || std::is_same_v<S, double>;
template <typename S> using acc_t = std::conditional_t<kWide<S>, S, float>;

using half_rows::narrow;
using half_rows::widen;

// per-channel shifted sums of one channels_last row of C values
template <typename T>
DC_INLINE void accumulate_row(const T* row_p, int64_t C, const double* off, double* a, double* b) {
  DC_SIMD for (int64_t c = 0; c < C; ++c) {
    const double v = static_cast<double>(row_p[c]) + off[c];
    a[c] += v;
    b[c] += v * v;
  }
}

// f(in, out, offset, m) over a row of n values of storage type S: once on the row itself for
// float and double; for the 16-bit types on chunks of at most kChunk values widened into a float
// buffer (f works in place there), narrowed back into y unless y is null (a reading pass).
template <typename S, typename F> DC_INLINE void on_rows_as_float(const S* x, S* y, int64_t n, F&& f) {
  if constexpr (kWide<S>) {
    f(x, y, int64_t{0}, n);
  } else {
    float buf[kChunk];
    for (int64_t i = 0; i < n; i += kChunk) {
      const int64_t m = std::min(kChunk, n - i);
      widen(x + i, buf, m);
      f(static_cast<const float*>(buf), buf, i, m);
      if (y != nullptr) narrow(buf, y + i, m);
    }
  }
}
template <typename S> void sums_s(const S* x, int64_t n, double e, double* s1, double* s2) {
  on_rows_as_float(x, static_cast<S*>(nullptr), n, [&](const auto* v, auto*, int64_t, int64_t m) { sums(v, m, e, s1, s2); });
}
template <typename S> void row_s(const S* x, S* y, int64_t n, acc_t<S> a, acc_t<S> b, bool s) {
  on_rows_as_float(x, y, n, [&](const auto* v, auto* w, int64_t, int64_t m) { row(v, w, m, a, b, s); });
}
template <typename S> void row_cl_s(const S* x, S* y, int64_t C, const acc_t<S>* a, const acc_t<S>* b, bool s) {
  on_rows_as_float(x, y, C, [&](const auto* v, auto* w, int64_t i, int64_t m) { row_cl(v, w, m, a + i, b + i, s); });
}
template <typename S> void accumulate_row_s(const S* x, int64_t C, const double* off, double* a, double* b) {
  on_rows_as_float(x, static_cast<S*>(nullptr), C,
                   [&](const auto* v, auto*, int64_t i, int64_t m) { accumulate_row(v, m, off + i, a + i, b + i); });
}

template <typename S> DC_INLINE double as_double(S v) { return static_cast<double>(static_cast<acc_t<S>>(v)); }

// The op for storage S; statistics, parameters and per-channel coefficients in T = acc_t<S>.
template <typename S>
void group_norm_silu_impl(const at::Tensor& x, int64_t G, const c10::optional<at::Tensor>& weight,
                          const c10::optional<at::Tensor>& bias, double eps, const c10::optional<at::Tensor>& emb,
                          bool silu, bool cl, at::Tensor& y, at::Tensor& mean_t, at::Tensor& rstd_t) {
  using T = acc_t<S>;
  const int64_t N = x.size(0), C = x.size(1);
  const int64_t HW = x.numel() / (N * C);
  const int64_t Cg = C / G;
  const S* xp = x.data_ptr<S>();
  S* yp = y.data_ptr<S>();
  const T* wp = weight.has_value() ? weight->data_ptr<T>() : nullptr;
  const T* bp = bias.has_value() ? bias->data_ptr<T>() : nullptr;
  const T* ep = emb.has_value() ? emb->data_ptr<T>() : nullptr;
  T* mp = mean_t.data_ptr<T>();
  T* rp = rstd_t.data_ptr<T>();
  const double cnt = static_cast<double>(Cg * HW);
  auto finish = [&](int64_t n, int64_t g, double s1, double s2, double shift) {
    const double m = s1 / cnt;
    double var = s2 / cnt - m * m;
    var = var < 0 ? 0 : var;
    mp[n * G + g] = static_cast<T>(m + shift);
    rp[n * G + g] = static_cast<T>(1.0 / std::sqrt(var + eps));
  };
  auto coefs = [&](int64_t n, int64_t c, T* scale, T* shift) {
    const int64_t g = c / Cg;
    const double rstd = static_cast<double>(rp[n * G + g]), mean = static_cast<double>(mp[n * G + g]);
    const double w = wp ? static_cast<double>(wp[c]) : 1.0, b = bp ? static_cast<double>(bp[c]) : 0.0;
    const double e = ep ? static_cast<double>(ep[n * C + c]) : 0.0;
    const double sc = rstd * w;
    *scale = static_cast<T>(sc);
    *shift = static_cast<T>(b + (e - mean) * sc);
  };
  if (!cl) {
    at::parallel_for(0, N * G, 1, [&](int64_t begin, int64_t end) {
      for (int64_t ng = begin; ng < end; ++ng) {
        const int64_t n = ng / G, g = ng % G;
        const S* base = xp + (n * C + g * Cg) * HW;
        const double shift = as_double(base[0]) + (ep ? static_cast<double>(ep[n * C + g * Cg]) : 0.0);
        double s1 = 0, s2 = 0;
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          const double e = ep ? static_cast<double>(ep[n * C + c]) : 0.0;
          sums_s(xp + (n * C + c) * HW, HW, e - shift, &s1, &s2);
        }
        finish(n, g, s1, s2, shift);
        for (int64_t c = g * Cg; c < (g + 1) * Cg; ++c) {
          T scale, sh;
          coefs(n, c, &scale, &sh);
          row_s(xp + (n * C + c) * HW, yp + (n * C + c) * HW, HW, scale, sh, silu);
        }
      }
    });
  } else {
    at::parallel_for(0, N, 1, [&](int64_t begin, int64_t end) {
      std::vector<double> shift(G), s1(G), s2(G), a(C), b(C), off(C);
      std::vector<T> scale(C), sh(C);
      for (int64_t n = begin; n < end; ++n) {
        const S* base = xp + n * HW * C;
        for (int64_t g = 0; g < G; ++g) {
          shift[g] = as_double(base[g * Cg]) + (ep ? static_cast<double>(ep[n * C + g * Cg]) : 0.0);
          s1[g] = s2[g] = 0;
        }
        std::fill(a.begin(), a.end(), 0.0);
        std::fill(b.begin(), b.end(), 0.0);
        // per-channel shifted sums (shift of the channel's group), rows of C values
        for (int64_t c = 0; c < C; ++c) off[c] = (ep ? static_cast<double>(ep[n * C + c]) : 0.0) - shift[c / Cg];
        for (int64_t r = 0; r < HW; ++r) accumulate_row_s(base + r * C, C, off.data(), a.data(), b.data());
        for (int64_t c = 0; c < C; ++c) {
          s1[c / Cg] += a[c];
          s2[c / Cg] += b[c];
        }
        for (int64_t g = 0; g < G; ++g) finish(n, g, s1[g], s2[g], shift[g]);
        for (int64_t c = 0; c < C; ++c) coefs(n, c, &scale[c], &sh[c]);
        for (int64_t r = 0; r < HW; ++r)
          row_cl_s(base + r * C, yp + n * HW * C + r * C, C, scale.data(), sh.data(), silu);
      }
    });
  }
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_silu_cpu(const at::Tensor& x, int64_t G,
                                                                   const c10::optional<at::Tensor>& weight,
                                                                   const c10::optional<at::Tensor>& bias, double eps,
                                                                   const c10::optional<at::Tensor>& emb, bool silu) {
  const bool cl = check_group_norm(x, G, weight, bias, eps, emb, c10::DeviceType::CPU, /*allow_channels_last=*/true);
  const int64_t N = x.size(0);
  auto y = pooled_empty_like(x);
  auto stat_opts = x.options().dtype(group_norm_acc_type(x.scalar_type()));
  auto mean_t = at::empty({N, G}, stat_opts), rstd_t = at::empty({N, G}, stat_opts);
  if (x.numel() == 0) return {y, mean_t, rstd_t};
  AT_DISPATCH_FLOATING_TYPES_AND2(at::kBFloat16, at::kHalf, x.scalar_type(), "diffcore::group_norm_silu", [&] {
    group_norm_silu_impl<scalar_t>(x, G, weight, bias, eps, emb, silu, cl, y, mean_t, rstd_t);
  });
  return {y, mean_t, rstd_t};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffcore, CPU, m) { m.impl("group_norm_silu", &group_norm_silu_cpu); }

}  // namespace diffcore
