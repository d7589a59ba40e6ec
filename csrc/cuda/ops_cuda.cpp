// CUDA implementations of the diffcore:: ops: the same argument checks as the CPU ones
// (csrc/common.h), then the launchers of csrc/cuda/kernels.cu on the current stream.
// Compiled only in CUDA builds (setup.py / diffcore.native add it with DIFFCORE_WITH_CUDA).
#include <c10/cuda/CUDAException.h>
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

#include <limits>

#include "../common.h"
#include "../gmm_checks.h"
#include "kernels.h"

namespace diffcore {
namespace {

constexpr auto kCUDA = c10::DeviceType::CUDA;

cudaStream_t stream_of(const at::Tensor& t) { return c10::cuda::getCurrentCUDAStream(t.device().index()).stream(); }

cuda::NoiseArgs noise_args(const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& idx, int64_t seed,
                           int64_t step, int64_t stream) {
  if (z.has_value()) return {z->data_ptr(), nullptr, 0, 0, 0};
  return {nullptr, idx->data_ptr<int64_t>(), static_cast<uint64_t>(seed), static_cast<uint32_t>(step),
          static_cast<uint32_t>(stream)};
}

const double* cp(const at::Tensor& t) { return t.data_ptr<double>(); }

at::Tensor philox_normal_cuda(int64_t seed, const at::Tensor& idx, int64_t step, int64_t stream, int64_t numel) {
  check_noise_op(idx, step, stream, numel, kCUDA);
  c10::cuda::CUDAGuard guard(idx.device());
  auto out = at::empty({idx.size(0), numel}, idx.options().dtype(at::kFloat));
  cuda::philox_normal(static_cast<uint64_t>(seed), idx.data_ptr<int64_t>(), idx.size(0), static_cast<uint32_t>(step),
                      static_cast<uint32_t>(stream), numel, out.data_ptr<float>(), stream_of(idx));
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return out;
}

at::Tensor philox_uniform_cuda(int64_t seed, const at::Tensor& idx, int64_t step, int64_t stream, int64_t numel) {
  check_noise_op(idx, step, stream, numel, kCUDA);
  c10::cuda::CUDAGuard guard(idx.device());
  auto out = at::empty({idx.size(0), numel}, idx.options().dtype(at::kDouble));
  cuda::philox_uniform(static_cast<uint64_t>(seed), idx.data_ptr<int64_t>(), idx.size(0), static_cast<uint32_t>(step),
                       static_cast<uint32_t>(stream), numel, out.data_ptr<double>(), stream_of(idx));
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return out;
}

std::tuple<at::Tensor, at::Tensor> affine_step_cuda(const at::Tensor& x, const at::Tensor& score, const at::Tensor& a,
                                                    const at::Tensor& b, const at::Tensor& sd,
                                                    const c10::optional<at::Tensor>& z, int64_t seed,
                                                    const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_affine_step(x, score, a, b, sd, z, idx, step, stream, kCUDA);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), mean = at::empty_like(x);
  const int64_t B = x.size(0), E = per_sample(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::affine_step", [&] {
    cuda::affine_step<scalar_t>(x.data_ptr<scalar_t>(), score.data_ptr<scalar_t>(), cp(a), cp(b), cp(sd),
                                noise_args(z, idx, seed, step, stream), out.data_ptr<scalar_t>(),
                                mean.data_ptr<scalar_t>(), B, E, stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return {out, mean};
}

at::Tensor heun_step_cuda(const at::Tensor& x, const at::Tensor& s1, const at::Tensor& xp, const at::Tensor& s2,
                          const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, const at::Tensor& d) {
  check_heun_step(x, s1, xp, s2, a, b, c, d, kCUDA);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::heun_step", [&] {
    cuda::heun_step<scalar_t>(x.data_ptr<scalar_t>(), s1.data_ptr<scalar_t>(), xp.data_ptr<scalar_t>(),
                              s2.data_ptr<scalar_t>(), cp(a), cp(b), cp(c), cp(d), out.data_ptr<scalar_t>(), x.size(0),
                              per_sample(x), stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return out;
}

// One DDPM step into out (x itself for ddpm_step_); mean and x0 are written when defined.
void launch_ddpm_step(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& sra, const at::Tensor& srm1,
                      const at::Tensor& cx0, const at::Tensor& cxt, const at::Tensor& log_var,
                      const c10::optional<at::Tensor>& v, const c10::optional<at::Tensor>& log_var_max, bool clip,
                      const c10::optional<at::Tensor>& z, int64_t seed, const c10::optional<at::Tensor>& idx,
                      int64_t step, int64_t stream, const at::Tensor& out, const at::Tensor& mean,
                      const at::Tensor& x0) {
  c10::cuda::CUDAGuard guard(x.device());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::ddpm_step", [&] {
    auto opt = [](const at::Tensor& t) { return t.defined() ? t.data_ptr<scalar_t>() : nullptr; };
    cuda::ddpm_step<scalar_t>(x.data_ptr<scalar_t>(), eps.data_ptr<scalar_t>(), cp(sra), cp(srm1), cp(cx0), cp(cxt),
                              cp(log_var), v.has_value() ? v->data_ptr<scalar_t>() : nullptr,
                              log_var_max.has_value() ? cp(*log_var_max) : nullptr, clip,
                              noise_args(z, idx, seed, step, stream), out.data_ptr<scalar_t>(), opt(mean), opt(x0),
                              x.size(0), per_sample(x), stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ddpm_step_cuda(
    const at::Tensor& x, const at::Tensor& eps, const at::Tensor& sra, const at::Tensor& srm1, const at::Tensor& cx0,
    const at::Tensor& cxt, const at::Tensor& log_var, const c10::optional<at::Tensor>& v,
    const c10::optional<at::Tensor>& log_var_max, bool clip, const c10::optional<at::Tensor>& z, int64_t seed,
    const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_ddpm_step(x, eps, sra, srm1, cx0, cxt, log_var, v, log_var_max, z, idx, step, stream, kCUDA);
  auto out = at::empty_like(x), mean = at::empty_like(x), x0 = at::empty_like(x);
  launch_ddpm_step(x, eps, sra, srm1, cx0, cxt, log_var, v, log_var_max, clip, z, seed, idx, step, stream, out, mean,
                   x0);
  return {out, mean, x0};
}

at::Tensor ddpm_step_inplace_cuda(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& sra,
                                  const at::Tensor& srm1, const at::Tensor& cx0, const at::Tensor& cxt,
                                  const at::Tensor& log_var, const c10::optional<at::Tensor>& v,
                                  const c10::optional<at::Tensor>& log_var_max, bool clip,
                                  const c10::optional<at::Tensor>& z, int64_t seed,
                                  const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_ddpm_step(x, eps, sra, srm1, cx0, cxt, log_var, v, log_var_max, z, idx, step, stream, kCUDA);
  check_inplace_ddpm(x, eps, v, z);
  launch_ddpm_step(x, eps, sra, srm1, cx0, cxt, log_var, v, log_var_max, clip, z, seed, idx, step, stream, x,
                   at::Tensor(), at::Tensor());
  return x;
}

std::tuple<at::Tensor, at::Tensor> ddim_step_cuda(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& abar_t,
                                                  const at::Tensor& abar_prev, const at::Tensor& eta, bool clip,
                                                  const c10::optional<at::Tensor>& z, int64_t seed,
                                                  const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_ddim_step(x, eps, abar_t, abar_prev, eta, z, idx, step, stream, kCUDA);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), x0 = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::ddim_step", [&] {
    cuda::ddim_step<scalar_t>(x.data_ptr<scalar_t>(), eps.data_ptr<scalar_t>(), cp(abar_t), cp(abar_prev), cp(eta),
                              clip, noise_args(z, idx, seed, step, stream), out.data_ptr<scalar_t>(),
                              x0.data_ptr<scalar_t>(), x.size(0), per_sample(x), stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return {out, x0};
}

std::tuple<at::Tensor, at::Tensor> langevin_step_cuda(const at::Tensor& x, const at::Tensor& score,
                                                      const at::Tensor& alpha, double snr, bool batch_norm,
                                                      const c10::optional<at::Tensor>& z, int64_t seed,
                                                      const c10::optional<at::Tensor>& idx, int64_t step,
                                                      int64_t stream) {
  check_langevin_step(x, score, alpha, snr, z, idx, step, stream, kCUDA);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), mean = at::empty_like(x);
  auto norms = at::empty({2 * x.size(0)}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::langevin_step", [&] {
    cuda::langevin_step<scalar_t>(x.data_ptr<scalar_t>(), score.data_ptr<scalar_t>(), cp(alpha), snr, batch_norm,
                                  noise_args(z, idx, seed, step, stream), norms.data_ptr<double>(),
                                  out.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), x.size(0), per_sample(x),
                                  stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return {out, mean};
}

at::Tensor residual_add_cuda(const at::Tensor& skip, const at::Tensor& h, double scale) {
  check_residual_add(skip, h, kCUDA);
  c10::cuda::CUDAGuard guard(h.device());
  auto out = at::empty_like(h);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "diffcore::residual_add", [&] {
    cuda::residual_add<scalar_t>(skip.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), scale, out.data_ptr<scalar_t>(),
                                 h.numel(), stream_of(h));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_silu_cuda(const at::Tensor& x, int64_t G,
                                                                    const c10::optional<at::Tensor>& weight,
                                                                    const c10::optional<at::Tensor>& bias, double eps,
                                                                    const c10::optional<at::Tensor>& emb, bool silu) {
  check_group_norm(x, G, weight, bias, eps, emb, kCUDA, /*allow_channels_last=*/false);
  const int64_t N = x.size(0), C = x.size(1);
  c10::cuda::CUDAGuard guard(x.device());
  auto y = at::empty_like(x);
  auto mean = at::empty({N, G}, x.options()), rstd = at::empty({N, G}, x.options());
  const int64_t HW = N * C ? x.numel() / (N * C) : 0;
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::group_norm_silu", [&] {
    using T = scalar_t;
    cuda::group_norm_silu<T>(x.data_ptr<T>(), weight.has_value() ? weight->data_ptr<T>() : nullptr,
                             bias.has_value() ? bias->data_ptr<T>() : nullptr,
                             emb.has_value() ? emb->data_ptr<T>() : nullptr, eps, silu, y.data_ptr<T>(),
                             mean.data_ptr<T>(), rstd.data_ptr<T>(), N, C, HW, G, stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return {y, mean, rstd};
}

// The mixture integrators index their scratch (rows x n, one thread per sample) with 32-bit
// offsets on CUDA (on the CPU n is a chunk's size): refuse a batch whose scratch would overflow.
at::Tensor gmm_scratch(const at::Tensor& x, int64_t K) {
  const int64_t n = x.size(0), D = x.size(1);
  const int64_t rows = cuda::scratch_rows(static_cast<int>(D), static_cast<int>(K));
  TORCH_CHECK(rows * n <= std::numeric_limits<int32_t>::max(), "diffcore: on CUDA the mixture integrators take at most ",
              std::numeric_limits<int32_t>::max() / rows, " samples at once for D = ", D, ", K = ", K, "; got n = ", n,
              " (split the batch)");
  return at::empty({rows * n}, x.options());
}

std::tuple<at::Tensor, at::Tensor> gmm_pc_cuda(const at::Tensor& x, const at::Tensor& idx, int64_t seed,
                                               const at::Tensor& cf, const at::Tensor& coef, int64_t K,
                                               int64_t corrector_steps, bool predictor, double snr) {
  check_gmm_pc(x, idx, cf, coef, K, corrector_steps, snr, kCUDA);
  const int64_t n = x.size(0), D = x.size(1);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), mean = at::empty_like(x);
  auto scratch = gmm_scratch(x, K);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_pc", [&] {
    using T = scalar_t;
    cuda::gmm_pc<T>(x.data_ptr<T>(), idx.data_ptr<int64_t>(), static_cast<uint64_t>(seed), cf.data_ptr<T>(),
                    coef.data_ptr<T>(), static_cast<int>(cf.size(0)), static_cast<int>(K), static_cast<int>(D),
                    static_cast<int>(corrector_steps), predictor, snr, scratch.data_ptr<T>(), out.data_ptr<T>(),
                    mean.data_ptr<T>(), n, stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return {out, mean};
}

at::Tensor gmm_ode_cuda(const at::Tensor& x, const at::Tensor& cf, const at::Tensor& coef, const at::Tensor& h,
                        int64_t K, bool heun) {
  const int64_t steps = check_gmm_ode(x, cf, coef, h, K, heun, kCUDA);
  const int64_t n = x.size(0), D = x.size(1);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  auto scratch = gmm_scratch(x, K);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_ode", [&] {
    using T = scalar_t;
    cuda::gmm_ode<T>(x.data_ptr<T>(), cf.data_ptr<T>(), coef.data_ptr<T>(), h.data_ptr<T>(), static_cast<int>(steps),
                     static_cast<int>(K), static_cast<int>(D), heun, scratch.data_ptr<T>(), out.data_ptr<T>(), n,
                     stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return out;
}

std::tuple<at::Tensor, at::Tensor> gmm_rk45_cuda(const at::Tensor& x, const at::Tensor& means, const at::Tensor& vars,
                                                 const at::Tensor& logw, int64_t kind, double p0, double p1, double t0,
                                                 double t1, double rtol, double atol, double h0, int64_t max_steps) {
  const int64_t K = check_gmm_rk45(x, means, vars, logw, kind, t0, t1, rtol, atol, max_steps, kCUDA);
  const int64_t n = x.size(0), D = x.size(1);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  auto nfe = at::empty({n}, x.options().dtype(at::kLong));
  auto scratch = gmm_scratch(x, K);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_rk45", [&] {
    using T = scalar_t;
    cuda::gmm_rk45<T>(x.data_ptr<T>(), means.data_ptr<T>(), vars.data_ptr<T>(), logw.data_ptr<T>(), static_cast<int>(K),
                      static_cast<int>(D), static_cast<int>(kind), p0, p1, t0, t1, rtol, atol, h0, max_steps,
                      scratch.data_ptr<T>(), out.data_ptr<T>(), nfe.data_ptr<int64_t>(), n, stream_of(x));
  });
  C10_CUDA_KERNEL_LAUNCH_CHECK();   // a failed launch reported here, not at a later sync
  return {out, nfe};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffcore, CUDA, m) {
  m.impl("philox_normal", &philox_normal_cuda);
  m.impl("philox_uniform", &philox_uniform_cuda);
  m.impl("affine_step", &affine_step_cuda);
  m.impl("heun_step", &heun_step_cuda);
  m.impl("ddpm_step", &ddpm_step_cuda);
  m.impl("ddpm_step_", &ddpm_step_inplace_cuda);
  m.impl("ddim_step", &ddim_step_cuda);
  m.impl("langevin_step", &langevin_step_cuda);
  m.impl("residual_add", &residual_add_cuda);
  m.impl("group_norm_silu", &group_norm_silu_cuda);
  m.impl("gmm_pc", &gmm_pc_cuda);
  m.impl("gmm_ode", &gmm_ode_cuda);
  m.impl("gmm_rk45", &gmm_rk45_cuda);
}

}  // namespace diffcore
