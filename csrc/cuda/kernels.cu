// CUDA kernels of the diffcore:: ops. The noise (csrc/philox.h) and the Gaussian-mixture
// integrators (csrc/gmm.h) are the same __host__ __device__ code the CPU runs.
// Elementwise step kernels: one thread per Philox group (4 consecutive elements of a sample).
#include "kernels.h"

#include "../gmm.h"
#include "../philox.h"

namespace diffcore {
namespace cuda {
namespace {

constexpr int kThreads = 256;

inline unsigned blocks_for(int64_t n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// f(b, i, z): element i (flat index into x) of sample b with its noise z.
template <typename T, typename F>
__global__ void groups_kernel(int64_t B, int64_t E, NoiseArgs nz, bool with_noise, F f) {
  const int64_t G = (E + 3) / 4;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= B * G) return;
  const int64_t b = t / G, g = t % G;
  Float4 q{0.f, 0.f, 0.f, 0.f};
  if (with_noise && nz.z == nullptr)
    q = normal4(make_address(nz.seed, static_cast<uint64_t>(nz.idx[b]), nz.step, nz.stream), static_cast<uint32_t>(g));
  const float qs[4] = {q.z0, q.z1, q.z2, q.z3};
#pragma unroll
  for (int j = 0; j < 4; ++j) {
    const int64_t e = 4 * g + j;
    if (e >= E) break;
    const int64_t i = b * E + e;
    T zv = T(0);
    if (with_noise) zv = nz.z ? static_cast<const T*>(nz.z)[i] : static_cast<T>(qs[j]);
    f(b, i, zv);
  }
}

template <typename T, typename F>
void launch_groups(int64_t B, int64_t E, NoiseArgs nz, bool with_noise, F f, cudaStream_t st) {
  const int64_t total = B * ((E + 3) / 4);
  if (total == 0) return;
  groups_kernel<T><<<blocks_for(total), kThreads, 0, st>>>(B, E, nz, with_noise, f);
}

// One Philox group (elements 4g .. 4g+3 of sample b) per thread: draw(address, g, v) fills v[4].
template <typename T, typename Draw>
__global__ void counter_kernel(uint64_t seed, const int64_t* idx, int64_t B, uint32_t step, uint32_t stream,
                               int64_t numel, T* out, Draw draw) {
  const int64_t G = (numel + 3) / 4;
  const int64_t t = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (t >= B * G) return;
  const int64_t b = t / G, g = t % G;
  T v[4];
  draw(make_address(seed, static_cast<uint64_t>(idx[b]), step, stream), static_cast<uint32_t>(g), v);
  for (int j = 0; j < 4 && 4 * g + j < numel; ++j) out[b * numel + 4 * g + j] = v[j];
}

struct NormalDraw {
  __device__ void operator()(NoiseAddress a, uint32_t g, float* v) const {
    const Float4 q = normal4(a, g);
    v[0] = q.z0, v[1] = q.z1, v[2] = q.z2, v[3] = q.z3;
  }
};

struct UniformDraw {
  __device__ void operator()(NoiseAddress a, uint32_t g, double* v) const {
    const Words4 w = philox_words(a, g);
    v[0] = uniform_double(w.w0), v[1] = uniform_double(w.w1), v[2] = uniform_double(w.w2), v[3] = uniform_double(w.w3);
  }
};

// ---- step functors ----------------------------------------------------------------------------
template <typename T>
struct AffineF {
  const T *x, *s;
  const double *a, *b, *sd;
  T *out, *mean;
  int64_t E;
  __device__ void operator()(int64_t bi, int64_t i, T z) const {
    const T m = static_cast<T>(a[bi]) * x[i] + static_cast<T>(b[bi]) * s[i];
    mean[i] = m;
    out[i] = m + static_cast<T>(sd[bi]) * z;
  }
};

template <typename T>
struct HeunF {
  const T *x, *s1, *xp, *s2;
  const double *a, *b, *c, *d;
  T* out;
  __device__ void operator()(int64_t bi, int64_t i, T) const {
    out[i] = static_cast<T>(a[bi]) * x[i] + static_cast<T>(b[bi]) * s1[i] + static_cast<T>(c[bi]) * xp[i] +
             static_cast<T>(d[bi]) * s2[i];
  }
};

template <typename T>
struct DdpmF {
  const T *x, *eps, *v;
  const double *sra, *srm1, *cx0, *cxt, *lv, *lvmax;
  bool clip;
  T *out, *mean, *x0;
  __device__ void operator()(int64_t bi, int64_t i, T z) const {
    T p = static_cast<T>(sra[bi]) * x[i] - static_cast<T>(srm1[bi]) * eps[i];
    if (clip) p = p < T(-1) ? T(-1) : (p > T(1) ? T(1) : p);
    const T m = static_cast<T>(cx0[bi]) * p + static_cast<T>(cxt[bi]) * x[i];
    T l = static_cast<T>(lv[bi]);
    if (v) {
      const T frac = (v[i] + T(1)) / T(2);
      l = frac * static_cast<T>(lvmax[bi]) + (T(1) - frac) * l;
    }
    if (x0) x0[i] = p;        // null in place (ddpm_step_), where out is x
    if (mean) mean[i] = m;
    out[i] = m + exp(T(0.5) * l) * z;
  }
};

template <typename T>
struct DdimF {
  const T *x, *eps;
  const double *at, *ap, *eta;
  bool clip;
  T *out, *x0;
  __device__ void operator()(int64_t bi, int64_t i, T z) const {
    const T a = static_cast<T>(at[bi]), p = static_cast<T>(ap[bi]), e = static_cast<T>(eta[bi]);
    T q = (x[i] - sqrt(T(1) - a) * eps[i]) / sqrt(a);
    if (clip) q = q < T(-1) ? T(-1) : (q > T(1) ? T(1) : q);
    const T sd = e * sqrt((T(1) - p) / (T(1) - a) * (T(1) - a / p));
    T rest = T(1) - p - sd * sd;
    rest = sqrt(rest < T(0) ? T(0) : rest);
    x0[i] = q;
    out[i] = sqrt(p) * q + rest * eps[i] + sd * z;
  }
};

// Block-wide sums of a and b (every thread passes its partials and gets back the block's
// totals): a shared-memory tree over blockDim.x threads (a power of two, at most kThreads).
// Contains __syncthreads(): every thread of the block must call it.
__device__ void block_sum2(double& a, double& b) {
  __shared__ double sa[kThreads], sb[kThreads];
  sa[threadIdx.x] = a;
  sb[threadIdx.x] = b;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w >>= 1) {
    if (threadIdx.x < w) {
      sa[threadIdx.x] += sa[threadIdx.x + w];
      sb[threadIdx.x] += sb[threadIdx.x + w];
    }
    __syncthreads();
  }
  a = sa[0];
  b = sb[0];
}

// per-sample norms of score and z (z drawn into out when not given); one block per sample
template <typename T>
__global__ void langevin_norms(const T* score, NoiseArgs nz, T* out, double* norms, int64_t B, int64_t E) {
  const int64_t b = blockIdx.x;
  const int64_t G = (E + 3) / 4;
  double g2 = 0, z2 = 0;
  for (int64_t g = threadIdx.x; g < G; g += blockDim.x) {
    Float4 q{0.f, 0.f, 0.f, 0.f};
    if (!nz.z) q = normal4(make_address(nz.seed, static_cast<uint64_t>(nz.idx[b]), nz.step, nz.stream), static_cast<uint32_t>(g));
    const float qs[4] = {q.z0, q.z1, q.z2, q.z3};
    for (int j = 0; j < 4 && 4 * g + j < E; ++j) {
      const int64_t i = b * E + 4 * g + j;
      T zv;
      if (nz.z) {
        zv = static_cast<const T*>(nz.z)[i];
      } else {
        zv = static_cast<T>(qs[j]);
        out[i] = zv;
      }
      g2 += static_cast<double>(score[i]) * static_cast<double>(score[i]);
      z2 += static_cast<double>(zv) * static_cast<double>(zv);
    }
  }
  block_sum2(g2, z2);
  if (threadIdx.x == 0) {
    norms[b] = static_cast<double>(static_cast<T>(sqrt(g2)));
    norms[B + b] = static_cast<double>(static_cast<T>(sqrt(z2)));
  }
}

template <typename T>
__global__ void batch_mean_norms(double* norms, int64_t B) {
  double g = 0, z = 0;
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    g += norms[b];
    z += norms[B + b];
  }
  block_sum2(g, z);
  const double gm = static_cast<double>(static_cast<T>(g / B)), zm = static_cast<double>(static_cast<T>(z / B));
  __syncthreads();
  for (int64_t b = threadIdx.x; b < B; b += blockDim.x) {
    norms[b] = gm;
    norms[B + b] = zm;
  }
}

template <typename T>
struct LangevinF {
  const T *x, *s, *zsrc;
  const double *alpha, *norms;
  double snr;
  int64_t B;
  T *out, *mean;
  __device__ void operator()(int64_t bi, int64_t i, T) const {
    const T q = static_cast<T>(snr) * static_cast<T>(norms[B + bi]) / static_cast<T>(norms[bi]);
    const T step = T(2) * static_cast<T>(alpha[bi]) * (q * q);
    const T m = x[i] + step * s[i];
    const T z = zsrc[i];
    mean[i] = m;
    out[i] = m + sqrt(T(2) * step) * z;
  }
};

template <typename T>
__global__ void residual_kernel(const T* a, const T* b, T scale, T* out, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) out[i] = (a[i] + b[i]) * scale;
}

// ---- GroupNorm + SiLU --------------------------------------------------------------------------
template <typename T>
__global__ void gn_stats(const T* x, const T* emb, double eps, T* mean, T* rstd, int64_t C, int64_t HW, int64_t G) {
  const int64_t ng = blockIdx.x, n = ng / G, g = ng % G, Cg = C / G;
  const T* base = x + (n * C + g * Cg) * HW;
  const double shift = static_cast<double>(base[0]) + (emb ? static_cast<double>(emb[n * C + g * Cg]) : 0.0);
  double s1 = 0, s2 = 0;
  const int64_t cnt = Cg * HW;
  for (int64_t k = threadIdx.x; k < cnt; k += blockDim.x) {
    const int64_t c = g * Cg + k / HW;
    const double v = static_cast<double>(base[k]) + (emb ? static_cast<double>(emb[n * C + c]) : 0.0) - shift;
    s1 += v;
    s2 += v * v;
  }
  block_sum2(s1, s2);
  if (threadIdx.x == 0) {
    const double m = s1 / cnt;
    double var = s2 / cnt - m * m;
    var = var < 0 ? 0 : var;
    mean[ng] = static_cast<T>(m + shift);
    rstd[ng] = static_cast<T>(1.0 / sqrt(var + eps));
  }
}

template <typename T>
__global__ void gn_apply(const T* x, const T* w, const T* b, const T* emb, const T* mean, const T* rstd, bool silu,
                         T* y, int64_t total, int64_t C, int64_t HW, int64_t G) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i >= total) return;
  const int64_t c = (i / HW) % C, n = i / (HW * C), g = c / (C / G);
  const double sc = static_cast<double>(rstd[n * G + g]) * (w ? static_cast<double>(w[c]) : 1.0);
  const double sh = (b ? static_cast<double>(b[c]) : 0.0) +
                    ((emb ? static_cast<double>(emb[n * C + c]) : 0.0) - static_cast<double>(mean[n * G + g])) * sc;
  T v = x[i] * static_cast<T>(sc) + static_cast<T>(sh);
  if (silu) v = v / (T(1) + exp(-v));
  y[i] = v;
}

// ---- Gaussian-mixture trajectories ---------------------------------------------------------------
template <typename T>
__global__ void gmm_load(const T* x, T* rows, int64_t n, int D, int row0, int row1) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= n) return;
  for (int d = 0; d < D; ++d) {
    rows[(row0 + d) * n + s] = x[s * D + d];
    if (row1 >= 0) rows[(row1 + d) * n + s] = x[s * D + d];
  }
}

template <typename T>
__global__ void gmm_store(const T* rows, T* x, int64_t n, int D, int row0) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= n) return;
  for (int d = 0; d < D; ++d) x[s * D + d] = rows[(row0 + d) * n + s];
}

template <typename T>
__global__ void gmm_pc_kernel(PcArgs<T> A, const int64_t* idx, T* rows, int64_t n) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= n) return;
  pc_lanes(A, idx, rows, static_cast<int>(n), static_cast<int>(s), static_cast<int>(s) + 1);
}

template <typename T>
__global__ void gmm_ode_kernel(OdeArgs<T> A, T* rows, int64_t n) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= n) return;
  ode_lanes(A, rows, static_cast<int>(n), static_cast<int>(s), static_cast<int>(s) + 1);
}

template <typename T>
__global__ void gmm_rk45_kernel(Rk45Args<T> A, T* rows, int64_t* nfe, int64_t n) {
  const int64_t s = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (s >= n) return;
  nfe[s] = rk45_lane(A, rows, static_cast<int>(n), static_cast<int>(s));
}

constexpr int kGmmThreads = 128;
inline unsigned gmm_blocks(int64_t n) { return static_cast<unsigned>((n + kGmmThreads - 1) / kGmmThreads); }

}  // namespace

int scratch_rows(int D, int K) { return make_rows(D, K).total(); }

void philox_normal(uint64_t seed, const int64_t* idx, int64_t B, uint32_t step, uint32_t stream, int64_t numel,
                   float* out, cudaStream_t st) {
  const int64_t total = B * ((numel + 3) / 4);
  if (total) counter_kernel<<<blocks_for(total), kThreads, 0, st>>>(seed, idx, B, step, stream, numel, out, NormalDraw{});
}

void philox_uniform(uint64_t seed, const int64_t* idx, int64_t B, uint32_t step, uint32_t stream, int64_t numel,
                    double* out, cudaStream_t st) {
  const int64_t total = B * ((numel + 3) / 4);
  if (total) counter_kernel<<<blocks_for(total), kThreads, 0, st>>>(seed, idx, B, step, stream, numel, out, UniformDraw{});
}

template <typename T>
void affine_step(const T* x, const T* score, const double* a, const double* b, const double* sd, NoiseArgs nz,
                 T* out, T* mean, int64_t B, int64_t E, cudaStream_t st) {
  launch_groups<T>(B, E, nz, true, AffineF<T>{x, score, a, b, sd, out, mean, E}, st);
}

template <typename T>
void heun_step(const T* x, const T* s1, const T* xp, const T* s2, const double* a, const double* b, const double* c,
               const double* d, T* out, int64_t B, int64_t E, cudaStream_t st) {
  launch_groups<T>(B, E, NoiseArgs{nullptr, nullptr, 0, 0, 0}, false, HeunF<T>{x, s1, xp, s2, a, b, c, d, out}, st);
}

template <typename T>
void ddpm_step(const T* x, const T* eps, const double* sra, const double* srm1, const double* cx0, const double* cxt,
               const double* lv, const T* v, const double* lvmax, bool clip, NoiseArgs nz, T* out, T* mean, T* x0,
               int64_t B, int64_t E, cudaStream_t st) {
  launch_groups<T>(B, E, nz, true, DdpmF<T>{x, eps, v, sra, srm1, cx0, cxt, lv, lvmax, clip, out, mean, x0}, st);
}

template <typename T>
void ddim_step(const T* x, const T* eps, const double* abar_t, const double* abar_prev, const double* eta, bool clip,
               NoiseArgs nz, T* out, T* x0, int64_t B, int64_t E, cudaStream_t st) {
  launch_groups<T>(B, E, nz, true, DdimF<T>{x, eps, abar_t, abar_prev, eta, clip, out, x0}, st);
}

template <typename T>
void langevin_step(const T* x, const T* score, const double* alpha, double snr, bool batch_norm, NoiseArgs nz,
                   double* norms, T* out, T* mean, int64_t B, int64_t E, cudaStream_t st) {
  if (B == 0) return;
  langevin_norms<T><<<static_cast<unsigned>(B), kThreads, 0, st>>>(score, nz, out, norms, B, E);
  if (batch_norm) batch_mean_norms<T><<<1, kThreads, 0, st>>>(norms, B);
  const T* zsrc = nz.z ? static_cast<const T*>(nz.z) : out;
  launch_groups<T>(B, E, NoiseArgs{nullptr, nullptr, 0, 0, 0}, false,
                   LangevinF<T>{x, score, zsrc, alpha, norms, snr, B, out, mean}, st);
}

template <typename T>
void residual_add(const T* skip, const T* h, double scale, T* out, int64_t n, cudaStream_t st) {
  if (n) residual_kernel<T><<<blocks_for(n), kThreads, 0, st>>>(skip, h, static_cast<T>(scale), out, n);
}

template <typename T>
void group_norm_silu(const T* x, const T* w, const T* b, const T* emb, double eps, bool silu, T* y, T* mean, T* rstd,
                     int64_t N, int64_t C, int64_t HW, int64_t G, cudaStream_t st) {
  const int64_t total = N * C * HW;
  if (total == 0) return;
  gn_stats<T><<<static_cast<unsigned>(N * G), kThreads, 0, st>>>(x, emb, eps, mean, rstd, C, HW, G);
  gn_apply<T><<<blocks_for(total), kThreads, 0, st>>>(x, w, b, emb, mean, rstd, silu, y, total, C, HW, G);
}

template <typename T>
void gmm_pc(const T* x, const int64_t* idx, uint64_t seed, const T* cf, const T* coef, int N, int K, int D,
            int corrector_steps, bool predictor, double snr, T* scratch, T* out, T* mean, int64_t n, cudaStream_t st) {
  if (n == 0) return;
  const Rows R = make_rows(D, K);
  gmm_load<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(x, scratch, n, D, R.x(), R.xm());
  PcArgs<T> A{cf, coef, N, K, D, corrector_steps, predictor, static_cast<T>(snr), seed};
  gmm_pc_kernel<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(A, idx, scratch, n);
  gmm_store<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(scratch, out, n, D, R.x());
  gmm_store<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(scratch, mean, n, D, R.xm());
}

template <typename T>
void gmm_ode(const T* x, const T* cf, const T* coef, const T* h, int steps, int K, int D, bool heun, T* scratch,
             T* out, int64_t n, cudaStream_t st) {
  if (n == 0) return;
  const Rows R = make_rows(D, K);
  gmm_load<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(x, scratch, n, D, R.x(), -1);
  OdeArgs<T> A{cf, coef, h, steps, K, D, heun};
  gmm_ode_kernel<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(A, scratch, n);
  gmm_store<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(scratch, out, n, D, R.x());
}

template <typename T>
void gmm_rk45(const T* x, const T* means, const T* vars, const T* logw, int K, int D, int kind, double p0, double p1,
              double t0, double t1, double rtol, double atol, double h0, int64_t max_steps, T* scratch, T* out,
              int64_t* nfe, int64_t n, cudaStream_t st) {
  if (n == 0) return;
  const Rows R = make_rows(D, K);
  gmm_load<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(x, scratch, n, D, R.x(), -1);
  Rk45Args<T> A{means, vars, logw, K, D, kind, p0, p1, t0, t1, rtol, atol, h0, max_steps};
  gmm_rk45_kernel<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(A, scratch, nfe, n);
  gmm_store<T><<<gmm_blocks(n), kGmmThreads, 0, st>>>(scratch, out, n, D, R.x());
}

#define DC_INSTANTIATE(T)                                                                                              \
  template void affine_step<T>(const T*, const T*, const double*, const double*, const double*, NoiseArgs, T*, T*,   \
                               int64_t, int64_t, cudaStream_t);                                                      \
  template void heun_step<T>(const T*, const T*, const T*, const T*, const double*, const double*, const double*,    \
                             const double*, T*, int64_t, int64_t, cudaStream_t);                                    \
  template void ddpm_step<T>(const T*, const T*, const double*, const double*, const double*, const double*,         \
                             const double*, const T*, const double*, bool, NoiseArgs, T*, T*, T*, int64_t, int64_t, \
                             cudaStream_t);                                                                          \
  template void ddim_step<T>(const T*, const T*, const double*, const double*, const double*, bool, NoiseArgs, T*,   \
                             T*, int64_t, int64_t, cudaStream_t);                                                    \
  template void langevin_step<T>(const T*, const T*, const double*, double, bool, NoiseArgs, double*, T*, T*,        \
                                 int64_t, int64_t, cudaStream_t);                                                    \
  template void residual_add<T>(const T*, const T*, double, T*, int64_t, cudaStream_t);                              \
  template void group_norm_silu<T>(const T*, const T*, const T*, const T*, double, bool, T*, T*, T*, int64_t,        \
                                   int64_t, int64_t, int64_t, cudaStream_t);                                         \
  template void gmm_pc<T>(const T*, const int64_t*, uint64_t, const T*, const T*, int, int, int, int, bool, double,  \
                          T*, T*, T*, int64_t, cudaStream_t);                                                        \
  template void gmm_ode<T>(const T*, const T*, const T*, const T*, int, int, int, bool, T*, T*, int64_t,            \
                           cudaStream_t);                                                                            \
  template void gmm_rk45<T>(const T*, const T*, const T*, const T*, int, int, int, double, double, double, double,   \
                            double, double, double, int64_t, T*, T*, int64_t*, int64_t, cudaStream_t);

DC_INSTANTIATE(float)
DC_INSTANTIATE(double)

}  // namespace cuda
}  // namespace diffcore
