// Launchers of the CUDA kernels (csrc/cuda/kernels.cu). Plain pointers and a stream, no torch
// headers: kernels.cu compiles with nvcc alone (fast, and compile-checked in the tests);
// csrc/cuda/ops_cuda.cpp checks arguments and calls these for the CUDA dispatch key.
#pragma once

#include <cuda_runtime.h>

#include <cstdint>

namespace diffcore {
namespace cuda {

struct NoiseArgs {
  const void* z;          // noise like x (x's dtype), or nullptr to draw from:
  const int64_t* idx;     // sample_idx [B] (device)
  uint64_t seed;
  uint32_t step, stream;
};

void philox_normal(uint64_t seed, const int64_t* idx, int64_t B, uint32_t step, uint32_t stream, int64_t numel,
                   float* out, cudaStream_t st);
void philox_uniform(uint64_t seed, const int64_t* idx, int64_t B, uint32_t step, uint32_t stream, int64_t numel,
                    double* out, cudaStream_t st);

template <typename T>
void affine_step(const T* x, const T* score, const double* a, const double* b, const double* sd, NoiseArgs nz,
                 T* out, T* mean, int64_t B, int64_t E, cudaStream_t st);
template <typename T>
void heun_step(const T* x, const T* s1, const T* xp, const T* s2, const double* a, const double* b, const double* c,
               const double* d, T* out, int64_t B, int64_t E, cudaStream_t st);
template <typename T>
void ddpm_step(const T* x, const T* eps, const double* sra, const double* srm1, const double* cx0, const double* cxt,
               const double* lv, const T* v, const double* lvmax, bool clip, NoiseArgs nz, T* out, T* mean, T* x0,
               int64_t B, int64_t E, cudaStream_t st);
template <typename T>
void ddim_step(const T* x, const T* eps, const double* abar_t, const double* abar_prev, const double* eta, bool clip,
               NoiseArgs nz, T* out, T* x0, int64_t B, int64_t E, cudaStream_t st);
// norms: scratch of 2 * B doubles
template <typename T>
void langevin_step(const T* x, const T* score, const double* alpha, double snr, bool batch_norm, NoiseArgs nz,
                   double* norms, T* out, T* mean, int64_t B, int64_t E, cudaStream_t st);
template <typename T>
void residual_add(const T* skip, const T* h, double scale, T* out, int64_t n, cudaStream_t st);
// NCHW-contiguous; stats: mean and rstd [N, G] in T
template <typename T>
void group_norm_silu(const T* x, const T* w, const T* b, const T* emb, double eps, bool silu, T* y, T* mean, T* rstd,
                     int64_t N, int64_t C, int64_t HW, int64_t G, cudaStream_t st);

// Gaussian-mixture trajectories: one thread per sample; scratch: rows * n values of T
// (rows = Rows::total() of csrc/gmm.h).
template <typename T>
void gmm_pc(const T* x, const int64_t* idx, uint64_t seed, const T* cf, const T* coef, int N, int K, int D,
            int corrector_steps, bool predictor, double snr, T* scratch, T* out, T* mean, int64_t n, cudaStream_t st);
template <typename T>
void gmm_ode(const T* x, const T* cf, const T* coef, const T* h, int steps, int K, int D, bool heun, T* scratch,
             T* out, int64_t n, cudaStream_t st);
template <typename T>
void gmm_rk45(const T* x, const T* means, const T* vars, const T* logw, int K, int D, int kind, double p0, double p1,
              double t0, double t1, double rtol, double atol, double h0, int64_t max_steps, T* scratch, T* out,
              int64_t* nfe, int64_t n, cudaStream_t st);

int scratch_rows(int D, int K);

}  // namespace cuda
}  // namespace diffcore
