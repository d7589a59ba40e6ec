// CPU whole-trajectory integrators of a Gaussian mixture's exact score (csrc/gmm.h):
// blocks of kLanes samples per task (OpenMP through at::parallel_for), the lane loops
// vectorised; on x86-64 the float32 block kernels are compiled twice (AVX2+FMA and baseline)
// and picked at load time, so the library stays portable (float64 is the testing path).
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <vector>

#include "../gmm_checks.h"

// Python's build flags include -fwrapv, which stops GCC from vectorising the lane loops around
// philox.h's float32 Box-Muller (the integrators then run the noise one lane at a time, about
// 2x slower overall). Nothing here relies on signed overflow wrapping.
#pragma GCC optimize("no-wrapv")

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(DIFFCORE_NO_CLONES)
#define DC_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define DC_CLONES
#endif

namespace diffcore {
namespace {

template <typename T> constexpr int kLanes = 32;
template <> constexpr int kLanes<double> = 16;

// x rows [n, D] <-> lane rows (row d at buf[d * L + l]).
template <typename T>
void load_lanes(const T* x, int64_t s0, int cnt, int D, T* rows, int L) {
  for (int l = 0; l < cnt; ++l)
    for (int d = 0; d < D; ++d) rows[d * L + l] = x[(s0 + l) * D + d];
  for (int l = cnt; l < L; ++l)   // idle lanes: a harmless copy of lane 0
    for (int d = 0; d < D; ++d) rows[d * L + l] = rows[d * L];
}

template <typename T>
void store_lanes(const T* rows, int64_t s0, int cnt, int D, T* x, int L) {
  for (int l = 0; l < cnt; ++l)
    for (int d = 0; d < D; ++d) x[(s0 + l) * D + d] = rows[d * L + l];
}

DC_CLONES void pc_block_f32(const PcArgs<float>& A, const int64_t* idx, float* buf, int L) { pc_lanes(A, idx, buf, L, 0, L); }
void pc_block_f64(const PcArgs<double>& A, const int64_t* idx, double* buf, int L) { pc_lanes(A, idx, buf, L, 0, L); }
DC_CLONES void ode_block_f32(const OdeArgs<float>& A, float* buf, int L) { ode_lanes(A, buf, L, 0, L); }
void ode_block_f64(const OdeArgs<double>& A, double* buf, int L) { ode_lanes(A, buf, L, 0, L); }

void pc_block(const PcArgs<float>& A, const int64_t* idx, float* buf, int L) { pc_block_f32(A, idx, buf, L); }
void pc_block(const PcArgs<double>& A, const int64_t* idx, double* buf, int L) { pc_block_f64(A, idx, buf, L); }
void ode_block(const OdeArgs<float>& A, float* buf, int L) { ode_block_f32(A, buf, L); }
void ode_block(const OdeArgs<double>& A, double* buf, int L) { ode_block_f64(A, buf, L); }

std::tuple<at::Tensor, at::Tensor> gmm_pc_cpu(const at::Tensor& x, const at::Tensor& idx, int64_t seed,
                                              const at::Tensor& cf, const at::Tensor& coef, int64_t K,
                                              int64_t corrector_steps, bool predictor, double snr) {
  check_gmm_pc(x, idx, cf, coef, K, corrector_steps, snr, c10::DeviceType::CPU);
  const int64_t n = x.size(0), D = x.size(1);
  auto out = at::empty_like(x), mean = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_pc", [&] {
    using T = scalar_t;
    constexpr int L = kLanes<T>;
    PcArgs<T> A{cf.data_ptr<T>(), coef.data_ptr<T>(), static_cast<int>(cf.size(0)), static_cast<int>(K),
                static_cast<int>(D), static_cast<int>(corrector_steps), predictor, static_cast<T>(snr),
                static_cast<uint64_t>(seed)};
    const Rows R = make_rows(A.D, A.K);
    const int64_t blocks = (n + L - 1) / L;
    const T* xp = x.data_ptr<T>();
    const int64_t* ip = idx.data_ptr<int64_t>();
    T *op = out.data_ptr<T>(), *mp = mean.data_ptr<T>();
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> buf(static_cast<size_t>(R.total()) * L);
      int64_t lidx[L];
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t s0 = blk * L;
        const int cnt = static_cast<int>(std::min<int64_t>(L, n - s0));
        for (int l = 0; l < L; ++l) lidx[l] = ip[s0 + (l < cnt ? l : 0)];
        load_lanes(xp, s0, cnt, A.D, buf.data() + R.x() * L, L);
        load_lanes(xp, s0, cnt, A.D, buf.data() + R.xm() * L, L);
        pc_block(A, lidx, buf.data(), L);
        store_lanes(buf.data() + R.x() * L, s0, cnt, A.D, op, L);
        store_lanes(buf.data() + R.xm() * L, s0, cnt, A.D, mp, L);
      }
    });
  });
  return {out, mean};
}

at::Tensor gmm_ode_cpu(const at::Tensor& x, const at::Tensor& cf, const at::Tensor& coef, const at::Tensor& h,
                       int64_t K, bool heun) {
  const int64_t steps = check_gmm_ode(x, cf, coef, h, K, heun, c10::DeviceType::CPU);
  const int64_t n = x.size(0), D = x.size(1);
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_ode", [&] {
    using T = scalar_t;
    constexpr int L = kLanes<T>;
    OdeArgs<T> A{cf.data_ptr<T>(), coef.data_ptr<T>(), h.data_ptr<T>(), static_cast<int>(steps), static_cast<int>(K),
                 static_cast<int>(D), heun};
    const Rows R = make_rows(A.D, A.K);
    const int64_t blocks = (n + L - 1) / L;
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    at::parallel_for(0, blocks, 1, [&](int64_t begin, int64_t end) {
      std::vector<T> buf(static_cast<size_t>(R.total()) * L);
      for (int64_t blk = begin; blk < end; ++blk) {
        const int64_t s0 = blk * L;
        const int cnt = static_cast<int>(std::min<int64_t>(L, n - s0));
        load_lanes(xp, s0, cnt, A.D, buf.data() + R.x() * L, L);
        ode_block(A, buf.data(), L);
        store_lanes(buf.data() + R.x() * L, s0, cnt, A.D, op, L);
      }
    });
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gmm_rk45_cpu(const at::Tensor& x, const at::Tensor& means, const at::Tensor& vars,
                                                const at::Tensor& logw, int64_t kind, double p0, double p1, double t0,
                                                double t1, double rtol, double atol, double h0, int64_t max_steps) {
  const int64_t K = check_gmm_rk45(x, means, vars, logw, kind, t0, t1, rtol, atol, max_steps, c10::DeviceType::CPU);
  const int64_t n = x.size(0), D = x.size(1);
  auto out = at::empty_like(x);
  auto nfe = at::empty({n}, x.options().dtype(at::kLong));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_rk45", [&] {
    using T = scalar_t;
    Rk45Args<T> A{means.data_ptr<T>(), vars.data_ptr<T>(), logw.data_ptr<T>(), static_cast<int>(K),
                  static_cast<int>(D), static_cast<int>(kind), p0, p1, t0, t1, rtol, atol, h0, max_steps};
    const Rows R = make_rows(A.D, A.K);
    const T* xp = x.data_ptr<T>();
    T* op = out.data_ptr<T>();
    int64_t* np_ = nfe.data_ptr<int64_t>();
    at::parallel_for(0, n, 16, [&](int64_t begin, int64_t end) {
      std::vector<T> buf(static_cast<size_t>(R.total()));
      for (int64_t s = begin; s < end; ++s) {
        for (int d = 0; d < A.D; ++d) buf[R.x() + d] = xp[s * D + d];
        np_[s] = rk45_lane(A, buf.data(), 1, 0);
        for (int d = 0; d < A.D; ++d) op[s * D + d] = buf[R.x() + d];
      }
    });
  });
  return {out, nfe};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffcore, CPU, m) {
  m.impl("gmm_pc", &gmm_pc_cpu);
  m.impl("gmm_ode", &gmm_ode_cpu);
  m.impl("gmm_rk45", &gmm_rk45_cpu);
}

}  // namespace diffcore
