// CUDA implementations of the diffcore:: ops: the same argument checks as the CPU ones
// (csrc/common.h), then the launchers of csrc/cuda/kernels.cu on the current stream.
// Compiled only in CUDA builds (setup.py / diffcore.native add it with DIFFCORE_WITH_CUDA).
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/library.h>

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

void check_idx_cuda(const at::Tensor& idx, int64_t step, int64_t stream, int64_t numel) {
  TORCH_CHECK(idx.device().is_cuda(), "diffcore: sample_idx must be a CUDA tensor for this implementation");
  TORCH_CHECK(idx.dim() == 1, "diffcore: sample_idx must be 1-D; got shape ", idx.sizes());
  check_sample_idx(idx, idx.size(0), idx.device());
  check_counter(step, stream);
  TORCH_CHECK(numel >= 0 && numel / 4 < (int64_t(1) << 32), "diffcore: numel must lie in [0, 2^34); got ", numel);
}

at::Tensor philox_normal_cuda(int64_t seed, const at::Tensor& idx, int64_t step, int64_t stream, int64_t numel) {
  check_idx_cuda(idx, step, stream, numel);
  c10::cuda::CUDAGuard guard(idx.device());
  auto out = at::empty({idx.size(0), numel}, idx.options().dtype(at::kFloat));
  cuda::philox_normal(static_cast<uint64_t>(seed), idx.data_ptr<int64_t>(), idx.size(0), static_cast<uint32_t>(step),
                      static_cast<uint32_t>(stream), numel, out.data_ptr<float>(), stream_of(idx));
  return out;
}

at::Tensor philox_uniform_cuda(int64_t seed, const at::Tensor& idx, int64_t step, int64_t stream, int64_t numel) {
  check_idx_cuda(idx, step, stream, numel);
  c10::cuda::CUDAGuard guard(idx.device());
  auto out = at::empty({idx.size(0), numel}, idx.options().dtype(at::kDouble));
  cuda::philox_uniform(static_cast<uint64_t>(seed), idx.data_ptr<int64_t>(), idx.size(0), static_cast<uint32_t>(step),
                       static_cast<uint32_t>(stream), numel, out.data_ptr<double>(), stream_of(idx));
  return out;
}

std::tuple<at::Tensor, at::Tensor> affine_step_cuda(const at::Tensor& x, const at::Tensor& score, const at::Tensor& a,
                                                    const at::Tensor& b, const at::Tensor& sd,
                                                    const c10::optional<at::Tensor>& z, int64_t seed,
                                                    const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_float_x(x, "x", kCUDA);
  check_like(score, "score", x);
  check_coef(a, "a", x);
  check_coef(b, "b", x);
  check_coef(sd, "std", x);
  check_noise(z, idx, step, stream, x);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), mean = at::empty_like(x);
  const int64_t B = x.size(0), E = per_sample(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::affine_step", [&] {
    cuda::affine_step<scalar_t>(x.data_ptr<scalar_t>(), score.data_ptr<scalar_t>(), cp(a), cp(b), cp(sd),
                                noise_args(z, idx, seed, step, stream), out.data_ptr<scalar_t>(),
                                mean.data_ptr<scalar_t>(), B, E, stream_of(x));
  });
  return {out, mean};
}

at::Tensor heun_step_cuda(const at::Tensor& x, const at::Tensor& s1, const at::Tensor& xp, const at::Tensor& s2,
                          const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, const at::Tensor& d) {
  check_float_x(x, "x", kCUDA);
  check_like(s1, "score1", x);
  check_like(xp, "x_pred", x);
  check_like(s2, "score2", x);
  check_coef(a, "a", x);
  check_coef(b, "b", x);
  check_coef(c, "c", x);
  check_coef(d, "d", x);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::heun_step", [&] {
    cuda::heun_step<scalar_t>(x.data_ptr<scalar_t>(), s1.data_ptr<scalar_t>(), xp.data_ptr<scalar_t>(),
                              s2.data_ptr<scalar_t>(), cp(a), cp(b), cp(c), cp(d), out.data_ptr<scalar_t>(), x.size(0),
                              per_sample(x), stream_of(x));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> ddpm_step_cuda(
    const at::Tensor& x, const at::Tensor& eps, const at::Tensor& sra, const at::Tensor& srm1, const at::Tensor& cx0,
    const at::Tensor& cxt, const at::Tensor& log_var, const c10::optional<at::Tensor>& v,
    const c10::optional<at::Tensor>& log_var_max, bool clip, const c10::optional<at::Tensor>& z, int64_t seed,
    const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_float_x(x, "x", kCUDA);
  check_like(eps, "eps", x);
  check_coef(sra, "sqrt_recip_abar", x);
  check_coef(srm1, "sqrt_recipm1_abar", x);
  check_coef(cx0, "coef_x0", x);
  check_coef(cxt, "coef_xt", x);
  check_coef(log_var, "log_var", x);
  TORCH_CHECK(v.has_value() == log_var_max.has_value(), "diffcore: v and log_var_max go together (learned_range)");
  if (v.has_value()) {
    check_like(*v, "v", x);
    check_coef(*log_var_max, "log_var_max", x);
  }
  check_noise(z, idx, step, stream, x);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), mean = at::empty_like(x), x0 = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::ddpm_step", [&] {
    cuda::ddpm_step<scalar_t>(x.data_ptr<scalar_t>(), eps.data_ptr<scalar_t>(), cp(sra), cp(srm1), cp(cx0), cp(cxt),
                              cp(log_var), v.has_value() ? v->data_ptr<scalar_t>() : nullptr,
                              log_var_max.has_value() ? cp(*log_var_max) : nullptr, clip,
                              noise_args(z, idx, seed, step, stream), out.data_ptr<scalar_t>(),
                              mean.data_ptr<scalar_t>(), x0.data_ptr<scalar_t>(), x.size(0), per_sample(x),
                              stream_of(x));
  });
  return {out, mean, x0};
}

std::tuple<at::Tensor, at::Tensor> ddim_step_cuda(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& abar_t,
                                                  const at::Tensor& abar_prev, const at::Tensor& eta, bool clip,
                                                  const c10::optional<at::Tensor>& z, int64_t seed,
                                                  const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream) {
  check_float_x(x, "x", kCUDA);
  check_like(eps, "eps", x);
  check_coef(abar_t, "abar_t", x);
  check_coef(abar_prev, "abar_prev", x);
  check_coef(eta, "eta", x);
  check_noise(z, idx, step, stream, x);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), x0 = at::empty_like(x);
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::ddim_step", [&] {
    cuda::ddim_step<scalar_t>(x.data_ptr<scalar_t>(), eps.data_ptr<scalar_t>(), cp(abar_t), cp(abar_prev), cp(eta),
                              clip, noise_args(z, idx, seed, step, stream), out.data_ptr<scalar_t>(),
                              x0.data_ptr<scalar_t>(), x.size(0), per_sample(x), stream_of(x));
  });
  return {out, x0};
}

std::tuple<at::Tensor, at::Tensor> langevin_step_cuda(const at::Tensor& x, const at::Tensor& score,
                                                      const at::Tensor& alpha, double snr, bool batch_norm,
                                                      const c10::optional<at::Tensor>& z, int64_t seed,
                                                      const c10::optional<at::Tensor>& idx, int64_t step,
                                                      int64_t stream) {
  check_float_x(x, "x", kCUDA);
  check_like(score, "score", x);
  check_coef(alpha, "alpha", x);
  TORCH_CHECK(snr > 0, "diffcore: snr must be > 0; got ", snr);
  check_noise(z, idx, step, stream, x);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), mean = at::empty_like(x);
  auto norms = at::empty({2 * x.size(0)}, x.options().dtype(at::kDouble));
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::langevin_step", [&] {
    cuda::langevin_step<scalar_t>(x.data_ptr<scalar_t>(), score.data_ptr<scalar_t>(), cp(alpha), snr, batch_norm,
                                  noise_args(z, idx, seed, step, stream), norms.data_ptr<double>(),
                                  out.data_ptr<scalar_t>(), mean.data_ptr<scalar_t>(), x.size(0), per_sample(x),
                                  stream_of(x));
  });
  return {out, mean};
}

at::Tensor residual_add_cuda(const at::Tensor& skip, const at::Tensor& h, double scale) {
  check_float_x(h, "h", kCUDA);
  check_like(skip, "skip", h);
  c10::cuda::CUDAGuard guard(h.device());
  auto out = at::empty_like(h);
  AT_DISPATCH_FLOATING_TYPES(h.scalar_type(), "diffcore::residual_add", [&] {
    cuda::residual_add<scalar_t>(skip.data_ptr<scalar_t>(), h.data_ptr<scalar_t>(), scale, out.data_ptr<scalar_t>(),
                                 h.numel(), stream_of(h));
  });
  return out;
}

void check_param(const c10::optional<at::Tensor>& p, const char* name, const at::Tensor& x, at::IntArrayRef shape) {
  if (!p.has_value()) return;
  TORCH_CHECK(p->device() == x.device(), "diffcore: ", name, " must be on x's device ", x.device(), "; got ", p->device());
  TORCH_CHECK(p->scalar_type() == x.scalar_type(), "diffcore: ", name, " must have x's dtype ", x.scalar_type(),
              "; got ", p->scalar_type());
  TORCH_CHECK(p->sizes() == shape, "diffcore: ", name, " must have shape ", shape, "; got ", p->sizes());
  TORCH_CHECK(p->is_contiguous(), "diffcore: ", name, " must be contiguous");
}

std::tuple<at::Tensor, at::Tensor, at::Tensor> group_norm_silu_cuda(const at::Tensor& x, int64_t G,
                                                                    const c10::optional<at::Tensor>& weight,
                                                                    const c10::optional<at::Tensor>& bias, double eps,
                                                                    const c10::optional<at::Tensor>& emb, bool silu) {
  TORCH_CHECK(x.device().is_cuda(), "diffcore: x must be a CUDA tensor for this implementation; got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble,
              "diffcore: x must be float32 or float64 for the native group_norm_silu; got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 2, "diffcore: x must be [N, C, *spatial]; got shape ", x.sizes());
  TORCH_CHECK(x.is_contiguous(), "diffcore: x must be contiguous (NCHW) on CUDA; got strides ", x.strides());
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(G >= 1 && C % G == 0, "diffcore: num_groups must be a positive integer dividing C = ", C, "; got ", G);
  TORCH_CHECK(eps > 0, "diffcore: eps must be > 0; got ", eps);
  check_param(weight, "weight", x, {C});
  check_param(bias, "bias", x, {C});
  check_param(emb, "emb", x, {N, C});
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
  return {y, mean, rstd};
}

std::tuple<at::Tensor, at::Tensor> gmm_pc_cuda(const at::Tensor& x, const at::Tensor& idx, int64_t seed,
                                               const at::Tensor& cf, const at::Tensor& coef, int64_t K,
                                               int64_t corrector_steps, bool predictor, double snr) {
  check_gmm_state(x, kCUDA);
  check_components(K);
  const int64_t n = x.size(0), D = x.size(1);
  check_sample_idx(idx, n, x.device());
  check_table(cf, "cf", x, -1, score_coef_size(K, D));
  check_table(coef, "coef", x, cf.size(0), 4);
  TORCH_CHECK(corrector_steps >= 0, "diffcore: corrector_steps must be >= 0; got ", corrector_steps);
  TORCH_CHECK(snr > 0, "diffcore: snr must be > 0; got ", snr);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x), mean = at::empty_like(x);
  auto scratch = at::empty({cuda::scratch_rows(static_cast<int>(D), static_cast<int>(K)) * n}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_pc", [&] {
    using T = scalar_t;
    cuda::gmm_pc<T>(x.data_ptr<T>(), idx.data_ptr<int64_t>(), static_cast<uint64_t>(seed), cf.data_ptr<T>(),
                    coef.data_ptr<T>(), static_cast<int>(cf.size(0)), static_cast<int>(K), static_cast<int>(D),
                    static_cast<int>(corrector_steps), predictor, snr, scratch.data_ptr<T>(), out.data_ptr<T>(),
                    mean.data_ptr<T>(), n, stream_of(x));
  });
  return {out, mean};
}

at::Tensor gmm_ode_cuda(const at::Tensor& x, const at::Tensor& cf, const at::Tensor& coef, const at::Tensor& h,
                        int64_t K, bool heun) {
  check_gmm_state(x, kCUDA);
  check_components(K);
  const int64_t n = x.size(0), D = x.size(1);
  TORCH_CHECK(h.dim() == 2 && h.size(0) == (heun ? 2 : 1), "diffcore: h must have shape [", heun ? 2 : 1,
              ", steps]; got ", h.sizes());
  check_table(h, "h", x, heun ? 2 : 1, h.size(1));
  const int64_t steps = h.size(1);
  check_table(cf, "cf", x, heun ? 2 * steps : steps, score_coef_size(K, D));
  check_table(coef, "coef", x, cf.size(0), 2);
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  auto scratch = at::empty({cuda::scratch_rows(static_cast<int>(D), static_cast<int>(K)) * n}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_ode", [&] {
    using T = scalar_t;
    cuda::gmm_ode<T>(x.data_ptr<T>(), cf.data_ptr<T>(), coef.data_ptr<T>(), h.data_ptr<T>(), static_cast<int>(steps),
                     static_cast<int>(K), static_cast<int>(D), heun, scratch.data_ptr<T>(), out.data_ptr<T>(), n,
                     stream_of(x));
  });
  return out;
}

std::tuple<at::Tensor, at::Tensor> gmm_rk45_cuda(const at::Tensor& x, const at::Tensor& means, const at::Tensor& vars,
                                                 const at::Tensor& logw, int64_t kind, double p0, double p1, double t0,
                                                 double t1, double rtol, double atol, double h0, int64_t max_steps) {
  check_gmm_state(x, kCUDA);
  const int64_t n = x.size(0), D = x.size(1);
  TORCH_CHECK(means.dim() == 2, "diffcore: means must have shape [K, D]; got ", means.sizes());
  const int64_t K = means.size(0);
  check_components(K);
  check_table(means, "means", x, K, D);
  check_table(vars, "vars", x, K, D);
  TORCH_CHECK(logw.dim() == 1 && logw.size(0) == K, "diffcore: log_weights must have shape [K] = [", K, "]; got ",
              logw.sizes());
  check_table(logw.reshape({1, K}), "log_weights", x, 1, K);
  TORCH_CHECK(kind >= 0 && kind <= 2, "diffcore: sde_kind must be 0 (VE), 1 (VP) or 2 (sub-VP); got ", kind);
  TORCH_CHECK(rtol > 0 && atol > 0, "diffcore: rtol and atol must be > 0; got ", rtol, ", ", atol);
  TORCH_CHECK(max_steps >= 1, "diffcore: max_steps must be >= 1; got ", max_steps);
  TORCH_CHECK(t0 != t1, "diffcore: t0 and t1 must differ");
  c10::cuda::CUDAGuard guard(x.device());
  auto out = at::empty_like(x);
  auto nfe = at::empty({n}, x.options().dtype(at::kLong));
  auto scratch = at::empty({cuda::scratch_rows(static_cast<int>(D), static_cast<int>(K)) * n}, x.options());
  AT_DISPATCH_FLOATING_TYPES(x.scalar_type(), "diffcore::gmm_rk45", [&] {
    using T = scalar_t;
    cuda::gmm_rk45<T>(x.data_ptr<T>(), means.data_ptr<T>(), vars.data_ptr<T>(), logw.data_ptr<T>(), static_cast<int>(K),
                      static_cast<int>(D), static_cast<int>(kind), p0, p1, t0, t1, rtol, atol, h0, max_steps,
                      scratch.data_ptr<T>(), out.data_ptr<T>(), nfe.data_ptr<int64_t>(), n, stream_of(x));
  });
  return {out, nfe};
}

}  // namespace

TORCH_LIBRARY_IMPL(diffcore, CUDA, m) {
  m.impl("philox_normal", &philox_normal_cuda);
  m.impl("philox_uniform", &philox_uniform_cuda);
  m.impl("affine_step", &affine_step_cuda);
  m.impl("heun_step", &heun_step_cuda);
  m.impl("ddpm_step", &ddpm_step_cuda);
  m.impl("ddim_step", &ddim_step_cuda);
  m.impl("langevin_step", &langevin_step_cuda);
  m.impl("residual_add", &residual_add_cuda);
  m.impl("group_norm_silu", &group_norm_silu_cuda);
  m.impl("gmm_pc", &gmm_pc_cuda);
  m.impl("gmm_ode", &gmm_ode_cuda);
  m.impl("gmm_rk45", &gmm_rk45_cuda);
}

}  // namespace diffcore
