// CPU implementations of the fused sampler steps and the noise ops (diffcore::*).
// Each step is one pass over x: per-sample coefficients [B] (float64, rounded to x's
// accumulation dtype as the reference rounds them), noise from z or drawn in-op from the
// counter generator in chunks of kChunk elements (a multiple of 4: whole Philox groups).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <initializer_list>
#include <cmath>

#include "../common.h"
#include "../philox.h"
#include "half_rows.h"
#include "noise_avx2.h"
#include "pool.h"

namespace diffcore {
namespace {

constexpr int64_t kChunk = 1024;
constexpr int64_t kGrain = 32;   // chunks per task: small inputs stay on one thread

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DIFFCORE_NO_CLONES)
#define DC_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DC_CLONES
#endif

template <typename T>
inline __attribute__((always_inline)) void fill_noise_body(const NoiseAddress& a, int64_t e0, int64_t n, T* out) {
  const uint32_t g0 = static_cast<uint32_t>(e0 / 4);
  const int64_t groups = (n + 3) / 4;
  DC_SIMD for (int64_t g = 0; g < groups; ++g) {
    const Float4 q = normal4(a, g0 + static_cast<uint32_t>(g));
    out[4 * g] = static_cast<T>(q.z0);
    out[4 * g + 1] = static_cast<T>(q.z1);
    out[4 * g + 2] = static_cast<T>(q.z2);
    out[4 * g + 3] = static_cast<T>(q.z3);
  }
}

DC_CLONES void fill_noise_scalar(const NoiseAddress& a, int64_t e0, int64_t n, float* out) { fill_noise_body(a, e0, n, out); }

// The generator is the compute-heavy part of a step. With AVX2+FMA (checked at run time) it
// runs 32 Philox groups at a time (cpu/noise_avx2.h); otherwise philox.h's scalar code,
// compiled for AVX2+FMA and baseline. Both give the same floats, bit for bit.
// `out` must have room for n rounded up to a multiple of 4 (whole Philox groups).
// The arrays a fused step will stream through right after the noise of a chunk is drawn: the
// generator prefetches them, spread over its blocks, so their memory traffic overlaps the
// arithmetic instead of following it.
struct Prefetch {
  static constexpr int kMax = 6;
  const char* p[kMax];
  int count = 0;
  int64_t bytes = 0;   // per array
};

#ifdef DIFFCORE_HAVE_AVX2
constexpr int64_t kNoiseBlock = avx2::kBlock;
__attribute__((target("avx2,fma"))) void fill_noise_avx2(const NoiseAddress& a, int64_t e0, int64_t n, float* out,
                                                         const Prefetch* pf) {
  const uint32_t g0 = static_cast<uint32_t>(e0 / 4);
  const int64_t blocks = n / kNoiseBlock, full = blocks * kNoiseBlock;
  const int64_t lines = pf && blocks ? (pf->bytes + 63) / 64 : 0;
  int64_t done = 0;
  for (int64_t i = 0, bi = 1; i < full; i += kNoiseBlock, ++bi) {
    for (const int64_t upto = lines * bi / blocks; done < upto; ++done)
      for (int s = 0; s < pf->count; ++s) _mm_prefetch(pf->p[s] + 64 * done, _MM_HINT_T0);
    avx2::normal_block(a, g0 + static_cast<uint32_t>(i / 4), out + i);
  }
  // The tail group by group (the same bits): a whole block for a 2-D toy's 2 values per sample
  // would draw 64 times the normals it uses.
  if (full < n) fill_noise_scalar(a, e0 + full, n - full, out + full);
}
__attribute__((target("avx2,fma"))) void normal_lanes_avx2(const NoiseAddress& a, const uint32_t* samples, uint32_t g,
                                                           float* out) {
  avx2::normal_lanes(a, samples, g, out);
}
#else
constexpr int64_t kNoiseBlock = 4;
#endif
static_assert(kChunk % kNoiseBlock == 0, "noise blocks must tile a chunk");

inline bool simd_noise() {
#ifdef DIFFCORE_HAVE_AVX2
  static const bool on = avx2::cpu_has_avx2_fma() && !getenv_flag("DIFFCORE_SCALAR_NOISE");
  return on;
#else
  return false;
#endif
}

void fill_noise(const NoiseAddress& a, int64_t e0, int64_t n, float* out, const Prefetch* pf = nullptr) {
#ifdef DIFFCORE_HAVE_AVX2
  if (simd_noise()) return fill_noise_avx2(a, e0, n, out, pf);
#endif
  (void)pf;
  fill_noise_scalar(a, e0, n, out);
}

void fill_noise(const NoiseAddress& a, int64_t e0, int64_t n, double* out, const Prefetch* = nullptr) {
  alignas(64) float buf[kChunk];
  for (int64_t i = 0; i < n; i += kChunk) {
    const int64_t m = std::min(kChunk, n - i);
    fill_noise(a, e0 + i, m, buf);
    for (int64_t j = 0; j < m; ++j) out[i + j] = buf[j];
  }
}

struct Noise {
  const void* z = nullptr;         // noise like x, or
  const int64_t* idx = nullptr;    // the address: sample_idx, seed, step, stream
  uint64_t seed = 0;
  uint32_t step = 0, stream = 0;
};

Noise make_noise(const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& idx, int64_t seed, int64_t step,
                 int64_t stream) {
  Noise n;
  if (z.has_value()) {
    n.z = z->data_ptr();
  } else {
    n.idx = idx->data_ptr<int64_t>();
    n.seed = static_cast<uint64_t>(seed);
    n.step = static_cast<uint32_t>(step);
    n.stream = static_cast<uint32_t>(stream);
  }
  return n;
}

#ifdef DIFFCORE_HAVE_AVX2
// for_chunks for in-op noise and fewer than kNoiseBlock values per sample: the noise of
// avx2::kLanes samples at a time, one Philox group across the samples per call (lane = sample),
// so nothing is drawn that is not used. The same numbers as the per-sample blocks.
template <typename T, typename F>
void for_small_samples(int64_t B, int64_t E, const Noise& nz, F& f) {
  constexpr int64_t L = avx2::kLanes;
  at::parallel_for(0, (B + L - 1) / L, 4, [&](int64_t begin, int64_t end) {
    alignas(64) float z4[4 * L];
    alignas(64) T zbuf[L * kNoiseBlock];
    uint32_t samples[L];
    const NoiseAddress a = make_address(nz.seed, 0, nz.step, nz.stream);
    for (int64_t q = begin; q < end; ++q) {
      const int64_t b0 = q * L, nb = std::min(L, B - b0);
      for (int64_t s = 0; s < L; ++s)   // a partial last batch repeats its last sample in the spare lanes
        samples[s] = static_cast<uint32_t>(static_cast<uint64_t>(nz.idx[b0 + std::min(s, nb - 1)]));
      for (int64_t g = 0; 4 * g < E; ++g) {
        normal_lanes_avx2(a, samples, static_cast<uint32_t>(g), z4);
        const int64_t m = std::min<int64_t>(4, E - 4 * g);
        for (int64_t s = 0; s < nb; ++s)
          for (int64_t k = 0; k < m; ++k) zbuf[s * E + 4 * g + k] = static_cast<T>(z4[4 * s + k]);
      }
      for (int64_t s = 0; s < nb; ++s) f(b0 + s, 0, E, zbuf + s * E);
    }
  });
}
#endif

// f(b, e0, n, zp): elements [e0, e0 + n) of sample b with their noise zp (nullptr if no noise).
// `streams`: the arrays (laid out like x) that f reads and writes, prefetched while the noise
// of their chunk is drawn.
template <typename T, typename F>
void for_chunks(int64_t B, int64_t E, const Noise* noise, F&& f, std::initializer_list<const void*> streams = {}) {
  if (B == 0 || E == 0) return;
#ifdef DIFFCORE_HAVE_AVX2
  if (noise && !noise->z && E < kNoiseBlock && simd_noise()) return for_small_samples<T>(B, E, *noise, f);
#endif
  const int64_t per = (E + kChunk - 1) / kChunk;
  at::parallel_for(0, B * per, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) T zbuf[kChunk + 4];
    for (int64_t c = begin; c < end; ++c) {
      const int64_t b = c / per, e0 = (c % per) * kChunk, n = std::min(kChunk, E - e0);
      const T* zp = nullptr;
      if (noise && noise->z) {
        zp = static_cast<const T*>(noise->z) + b * E + e0;
      } else if (noise) {
        Prefetch pf;
        for (const void* base : streams)
          if (base != nullptr && pf.count < Prefetch::kMax) pf.p[pf.count++] = static_cast<const char*>(base) + (b * E + e0) * sizeof(T);
        pf.bytes = n * static_cast<int64_t>(sizeof(T));
        fill_noise(make_address(noise->seed, static_cast<uint64_t>(noise->idx[b]), noise->step, noise->stream), e0, n,
                   zbuf, &pf);
        zp = zbuf;
      }
      f(b, e0, n, zp);
    }
  });
}

template <typename T>
inline T coef(const at::Tensor& c, int64_t b) {
  return static_cast<T>(c.data_ptr<double>()[b]);
}

// ---- noise ------------------------------------------------------------------------------------
at::Tensor philox_normal_cpu(int64_t seed, const at::Tensor& idx, int64_t step, int64_t stream, int64_t numel) {
  check_noise_op(idx, step, stream, numel, c10::DeviceType::CPU);
  const int64_t B = idx.size(0);
  auto out = at::empty({B, numel}, idx.options().dtype(at::kFloat));
  float* o = out.data_ptr<float>();
  Noise nz = make_noise(c10::nullopt, idx, seed, step, stream);
  for_chunks<float>(B, numel, &nz, [&](int64_t b, int64_t e0, int64_t n, const float* zp) {
    std::copy(zp, zp + n, o + b * numel + e0);
  });
  return out;
}

at::Tensor philox_uniform_cpu(int64_t seed, const at::Tensor& idx, int64_t step, int64_t stream, int64_t numel) {
  check_noise_op(idx, step, stream, numel, c10::DeviceType::CPU);
  const int64_t B = idx.size(0);
  auto out = at::empty({B, numel}, idx.options().dtype(at::kDouble));
  double* o = out.data_ptr<double>();
  const int64_t* ip = idx.data_ptr<int64_t>();
  const int64_t groups = (numel + 3) / 4;
  at::parallel_for(0, B * groups, 4096, [&](int64_t begin, int64_t end) {
    for (int64_t c = begin; c < end; ++c) {
      const int64_t b = c / groups, g = c % groups;
      const Words4 w = philox_words(make_address(static_cast<uint64_t>(seed), static_cast<uint64_t>(ip[b]),
                                                 static_cast<uint64_t>(step), static_cast<uint64_t>(stream)),
                                    static_cast<uint32_t>(g));
      const uint32_t ws[4] = {w.w0, w.w1, w.w2, w.w3};
      for (int j = 0; j < 4 && 4 * g + j < numel; ++j) o[b * numel + 4 * g + j] = uniform_double(ws[j]);
    }
  });
  return out;
}

// ---- steps ------------------------------------------------------------------------------------
std::tuple<at::Tensor, at::Tensor> affine_step_cpu(const at::Tensor& x, const at::Tensor& score, const at::Tensor& a,
                                                   const at::Tensor& b, const at::Tensor& std_,
                                                   const c10::optional<at::Tensor>& z, int64_t seed,
                                                   const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_affine_step(x, score, a, b, std_, z, idx, step, stream, c10::DeviceType::CPU);
  auto out = pooled_empty_like(x), mean = pooled_empty_like(x);
  const int64_t B = x.size(0), E = per_sample(x);
  Noise nz = make_noise(z, idx, seed, step, stream);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::affine_step", [&] {
    using T = scalar_t;
    const T* xp = x.data_ptr<T>();
    const T* sp = score.data_ptr<T>();
    T* op = out.data_ptr<T>();
    T* mp = mean.data_ptr<T>();
    for_chunks<T>(B, E, &nz, [&](int64_t s, int64_t e0, int64_t n, const T* zp) {
      const T ca = coef<T>(a, s), cb = coef<T>(b, s), cs = coef<T>(std_, s);
      const int64_t o = s * E + e0;
      DC_SIMD for (int64_t i = 0; i < n; ++i) {
        const T m = ca * xp[o + i] + cb * sp[o + i];
        mp[o + i] = m;
        op[o + i] = m + cs * zp[i];
      }
    }, {xp, sp, op, mp});
  });
  return {out, mean};
}

at::Tensor heun_step_cpu(const at::Tensor& x, const at::Tensor& s1, const at::Tensor& xp_, const at::Tensor& s2,
                         const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, const at::Tensor& d) {
  check_heun_step(x, s1, xp_, s2, a, b, c, d, c10::DeviceType::CPU);
  auto out = pooled_empty_like(x);
  const int64_t B = x.size(0), E = per_sample(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::heun_step", [&] {
    using T = scalar_t;
    const T *xp = x.data_ptr<T>(), *p1 = s1.data_ptr<T>(), *pp = xp_.data_ptr<T>(), *p2 = s2.data_ptr<T>();
    T* op = out.data_ptr<T>();
    for_chunks<T>(B, E, nullptr, [&](int64_t s, int64_t e0, int64_t n, const T*) {
      const T ca = coef<T>(a, s), cb = coef<T>(b, s), cc = coef<T>(c, s), cd = coef<T>(d, s);
      const int64_t o = s * E + e0;
      DC_SIMD for (int64_t i = 0; i < n; ++i)
        op[o + i] = ca * xp[o + i] + cb * p1[o + i] + cc * pp[o + i] + cd * p2[o + i];
    });
  });
  return out;
}

// One DDPM step into `out` (which may be x itself); mean and px0 are written when given.
// In place with neither (ddpm_step_) the step streams two arrays instead of five: x and eps
// then stay in cache across the sampling loop, which is most of the step's time besides noise.
void ddpm_step_into(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& sra, const at::Tensor& srm1,
                    const at::Tensor& cx0, const at::Tensor& cxt, const at::Tensor& log_var,
                    const c10::optional<at::Tensor>& v, const c10::optional<at::Tensor>& log_var_max, bool clip,
                    const Noise& nz, const at::Tensor& out, const at::Tensor* mean, const at::Tensor* px0) {
  const int64_t B = x.size(0), E = per_sample(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::ddpm_step", [&] {
    using T = scalar_t;
    const T *xp = x.data_ptr<T>(), *ep = eps.data_ptr<T>();
    const T* vp = v.has_value() ? v->data_ptr<T>() : nullptr;
    T* op = out.data_ptr<T>();
    T* mp = mean ? mean->data_ptr<T>() : nullptr;
    T* x0p = px0 ? px0->data_ptr<T>() : nullptr;
    for_chunks<T>(B, E, &nz, [&](int64_t s, int64_t e0, int64_t n, const T* zp) {
      const T c1 = coef<T>(sra, s), c2 = coef<T>(srm1, s), c3 = coef<T>(cx0, s), c4 = coef<T>(cxt, s);
      const T lv = coef<T>(log_var, s);
      const int64_t o = s * E + e0;
      if (vp) {
        const T lvmax = coef<T>(*log_var_max, s);
        for (int64_t i = 0; i < n; ++i) {
          T x0 = c1 * xp[o + i] - c2 * ep[o + i];
          if (clip) x0 = std::min(std::max(x0, T(-1)), T(1));
          const T m = c3 * x0 + c4 * xp[o + i];
          const T frac = (vp[o + i] + T(1)) / T(2);
          const T l = frac * lvmax + (T(1) - frac) * lv;
          if (x0p) x0p[o + i] = x0;
          if (mp) mp[o + i] = m;
          op[o + i] = m + std::exp(T(0.5) * l) * zp[i];
        }
        return;
      }
      const T sd = std::exp(T(0.5) * lv);
      if (mp && x0p) {
        DC_SIMD for (int64_t i = 0; i < n; ++i) {
          T x0 = c1 * xp[o + i] - c2 * ep[o + i];
          if (clip) x0 = x0 < T(-1) ? T(-1) : (x0 > T(1) ? T(1) : x0);
          const T m = c3 * x0 + c4 * xp[o + i];
          x0p[o + i] = x0;
          mp[o + i] = m;
          op[o + i] = m + sd * zp[i];
        }
        return;
      }
      DC_SIMD for (int64_t i = 0; i < n; ++i) {   // out may be x: element i is read before it is written
        T x0 = c1 * xp[o + i] - c2 * ep[o + i];
        if (clip) x0 = x0 < T(-1) ? T(-1) : (x0 > T(1) ? T(1) : x0);
        op[o + i] = c3 * x0 + c4 * xp[o + i] + sd * zp[i];
      }
    }, {xp, ep, vp, op, mp, x0p});
  });
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ddpm_step_cpu(
    const at::Tensor& x, const at::Tensor& eps, const at::Tensor& sra, const at::Tensor& srm1, const at::Tensor& cx0,
    const at::Tensor& cxt, const at::Tensor& log_var, const c10::optional<at::Tensor>& v,
    const c10::optional<at::Tensor>& log_var_max, bool clip, const c10::optional<at::Tensor>& z, int64_t seed,
    const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_ddpm_step(x, eps, sra, srm1, cx0, cxt, log_var, v, log_var_max, z, idx, step, stream, c10::DeviceType::CPU);
  auto out = pooled_empty_like(x), mean = pooled_empty_like(x), px0 = pooled_empty_like(x);
  ddpm_step_into(x, eps, sra, srm1, cx0, cxt, log_var, v, log_var_max, clip, make_noise(z, idx, seed, step, stream), out,
                 &mean, &px0);
  return {out, mean, px0};
}

at::Tensor ddpm_step_inplace_cpu(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& sra,
                                 const at::Tensor& srm1, const at::Tensor& cx0, const at::Tensor& cxt,
                                 const at::Tensor& log_var, const c10::optional<at::Tensor>& v,
                                 const c10::optional<at::Tensor>& log_var_max, bool clip,
                                 const c10::optional<at::Tensor>& z, int64_t seed, const c10::optional<at::Tensor>& idx,
                                 int64_t step, int64_t stream) {
  check_ddpm_step(x, eps, sra, srm1, cx0, cxt, log_var, v, log_var_max, z, idx, step, stream, c10::DeviceType::CPU);
  check_inplace_ddpm(x, eps, v, z);
  ddpm_step_into(x, eps, sra, srm1, cx0, cxt, log_var, v, log_var_max, clip, make_noise(z, idx, seed, step, stream), x,
                 nullptr, nullptr);
  return x;
}

std::tuple<at::Tensor, at::Tensor> ddim_step_cpu(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& abar_t,
                                                 const at::Tensor& abar_prev, const at::Tensor& eta, bool clip,
                                                 const c10::optional<at::Tensor>& z, int64_t seed,
                                                 const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_ddim_step(x, eps, abar_t, abar_prev, eta, z, idx, step, stream, c10::DeviceType::CPU);
  auto out = pooled_empty_like(x), px0 = pooled_empty_like(x);
  const int64_t B = x.size(0), E = per_sample(x);
  Noise nz = make_noise(z, idx, seed, step, stream);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::ddim_step", [&] {
    using T = scalar_t;
    const T *xp = x.data_ptr<T>(), *ep = eps.data_ptr<T>();
    T *op = out.data_ptr<T>(), *x0p = px0.data_ptr<T>();
    for_chunks<T>(B, E, &nz, [&](int64_t s, int64_t e0, int64_t n, const T* zp) {
      const T at_ = coef<T>(abar_t, s), ap = coef<T>(abar_prev, s), et = coef<T>(eta, s);
      const T sq1 = std::sqrt(T(1) - at_), sqa = std::sqrt(at_), sqp = std::sqrt(ap);
      const T sd = et * std::sqrt((T(1) - ap) / (T(1) - at_) * (T(1) - at_ / ap));
      T rest = T(1) - ap - sd * sd;
      rest = std::sqrt(rest < T(0) ? T(0) : rest);
      const int64_t o = s * E + e0;
      DC_SIMD for (int64_t i = 0; i < n; ++i) {
        T x0 = (xp[o + i] - sq1 * ep[o + i]) / sqa;
        if (clip) x0 = x0 < T(-1) ? T(-1) : (x0 > T(1) ? T(1) : x0);
        x0p[o + i] = x0;
        op[o + i] = sqp * x0 + rest * ep[o + i] + sd * zp[i];
      }
    }, {xp, ep, op, x0p});
  });
  return {out, px0};
}

std::tuple<at::Tensor, at::Tensor> langevin_step_cpu(const at::Tensor& x, const at::Tensor& score,
                                                     const at::Tensor& alpha, double snr, bool batch_norm,
                                                     const c10::optional<at::Tensor>& z, int64_t seed,
                                                     const c10::optional<at::Tensor>& idx, int64_t step,
                                                     int64_t stream) {
  check_langevin_step(x, score, alpha, snr, z, idx, step, stream, c10::DeviceType::CPU);
  auto out = pooled_empty_like(x), mean = pooled_empty_like(x);
  const int64_t B = x.size(0), E = per_sample(x);
  if (B == 0) return {out, mean};
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::langevin_step", [&] {
    using T = scalar_t;
    const T *xp = x.data_ptr<T>(), *sp = score.data_ptr<T>();
    T *op = out.data_ptr<T>(), *mp = mean.data_ptr<T>();
    // pass 1: the noise (drawn into `out`) and both norms per sample
    std::vector<double> gn(B), zn(B);
    const T* zsrc = z.has_value() ? z->data_ptr<T>() : op;
    at::parallel_for(0, B, 1, [&](int64_t begin, int64_t end) {
      for (int64_t s = begin; s < end; ++s) {
        if (!z.has_value()) {
          const NoiseAddress addr = make_address(static_cast<uint64_t>(seed), static_cast<uint64_t>((*idx).data_ptr<int64_t>()[s]),
                                                 static_cast<uint64_t>(step), static_cast<uint64_t>(stream));
          alignas(64) T buf[kChunk + 4];
          for (int64_t e0 = 0; e0 < E; e0 += kChunk) {
            const int64_t n = std::min(kChunk, E - e0);
            fill_noise(addr, e0, n, buf);
            std::copy(buf, buf + n, op + s * E + e0);
          }
        }
        double g2 = 0, z2 = 0;
        const T* srow = sp + s * E;
        const T* zrow = zsrc + s * E;
        DC_SIMD for (int64_t i = 0; i < E; ++i) {
          g2 += static_cast<double>(srow[i]) * srow[i];
          z2 += static_cast<double>(zrow[i]) * zrow[i];
        }
        gn[s] = static_cast<double>(static_cast<T>(std::sqrt(g2)));
        zn[s] = static_cast<double>(static_cast<T>(std::sqrt(z2)));
      }
    });
    if (batch_norm) {
      double g = 0, n = 0;
      for (int64_t s = 0; s < B; ++s) { g += gn[s]; n += zn[s]; }
      const double gm = static_cast<double>(static_cast<T>(g / B)), nm = static_cast<double>(static_cast<T>(n / B));
      std::fill(gn.begin(), gn.end(), gm);
      std::fill(zn.begin(), zn.end(), nm);
    }
    // pass 2: step = 2 alpha (snr |z| / |score|)^2; x_mean = x + step score; x = x_mean + sqrt(2 step) z
    for_chunks<T>(B, E, nullptr, [&](int64_t s, int64_t e0, int64_t n, const T*) {
      const T q = static_cast<T>(snr) * static_cast<T>(zn[s]) / static_cast<T>(gn[s]);
      const T st = T(2) * coef<T>(alpha, s) * (q * q);
      const T sd = std::sqrt(T(2) * st);
      const int64_t o = s * E + e0;
      const T* zp = zsrc + o;
      DC_SIMD for (int64_t i = 0; i < n; ++i) {
        const T m = xp[o + i] + st * sp[o + i];
        mp[o + i] = m;
        op[o + i] = m + sd * zp[i];
      }
    });
  });
  return {out, mean};
}

// 16-bit storage: chunks widened into float buffers in L1, (a + b) * scale in float32, rounded
// once to nearest even (what the reference's float32 arithmetic and cast give).
template <typename S> void residual_add_half(const S* a, const S* b, S* o, int64_t N, float sc) {
  at::parallel_for(0, (N + kChunk - 1) / kChunk, kGrain, [&](int64_t begin, int64_t end) {
    alignas(64) float fa[kChunk], fb[kChunk];
    for (int64_t c = begin; c < end; ++c) {
      const int64_t e0 = c * kChunk, n = std::min(kChunk, N - e0);
      half_rows::widen(a + e0, fa, n);
      half_rows::widen(b + e0, fb, n);
      DC_SIMD for (int64_t i = 0; i < n; ++i) fa[i] = (fa[i] + fb[i]) * sc;
      half_rows::narrow(fa, o + e0, n);
    }
  });
}

at::Tensor residual_add_cpu(const at::Tensor& skip, const at::Tensor& h, double scale) {
  check_residual_add(skip, h, c10::DeviceType::CPU);
  auto out = pooled_empty_like(h);
  const int64_t N = h.numel();
  if (h.scalar_type() == at::kBFloat16 || h.scalar_type() == at::kHalf) {
    AT_DISPATCH_REDUCED_FLOATING_TYPES(h.scalar_type(), "diffcore::residual_add", [&] {
      residual_add_half(skip.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), out.data_ptr<scalar_t>(), N,
                        static_cast<float>(scale));
    });
    return out;
  }
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "diffcore::residual_add", [&] {
    using T = scalar_t;
    const T *a = skip.data_ptr<T>(), *b = h.data_ptr<T>();
    T* o = out.data_ptr<T>();
    const T sc = static_cast<T>(scale);
    at::parallel_for(0, N, 32768, [&](int64_t begin, int64_t end) {
      DC_SIMD for (int64_t i = begin; i < end; ++i) o[i] = (a[i] + b[i]) * sc;
    });
  });
  return out;
}

}  // namespace

TORCH_LIBRARY_IMPL(diffcore, CPU, m) {
  m.impl("philox_normal", &philox_normal_cpu);
  m.impl("philox_uniform", &philox_uniform_cpu);
  m.impl("affine_step", &affine_step_cpu);
  m.impl("heun_step", &heun_step_cpu);
  m.impl("ddpm_step", &ddpm_step_cpu);
  m.impl("ddpm_step_", &ddpm_step_inplace_cpu);
  m.impl("ddim_step", &ddim_step_cpu);
  m.impl("langevin_step", &langevin_step_cpu);
  m.impl("residual_add", &residual_add_cpu);
}

}  // namespace diffcore
