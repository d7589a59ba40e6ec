// Argument checks of the gmm_* ops (shared by the CPU and CUDA implementations).
#pragma once

#include "common.h"
#include "gmm.h"

namespace diffcore {

inline void check_gmm_state(const at::Tensor& x, c10::DeviceType dev) {
  check_float_x(x, "x", dev);
  TORCH_CHECK(x.dim() == 2 && x.size(1) >= 1, "diffcore: x must have shape [n, D] with D >= 1; got ", x.sizes());
  TORCH_CHECK(x.size(0) < (int64_t(1) << 31), "diffcore: x has too many samples");
}

// t: x's dtype and device, contiguous, shape [rows, cols] (rows < 0: any).
inline void check_table(const at::Tensor& t, const char* name, const at::Tensor& x, int64_t rows, int64_t cols) {
  TORCH_CHECK(t.device() == x.device(), "diffcore: ", name, " must be on x's device ", x.device(), "; got ", t.device());
  TORCH_CHECK(t.scalar_type() == x.scalar_type(), "diffcore: ", name, " must have x's dtype ", x.scalar_type(), "; got ",
              t.scalar_type());
  TORCH_CHECK(t.dim() == 2 && (rows < 0 || t.size(0) == rows) && t.size(1) == cols, "diffcore: ", name,
              " must have shape [", rows < 0 ? std::string("N") : std::to_string(rows), ", ", cols, "]; got ", t.sizes());
  TORCH_CHECK(t.is_contiguous(), "diffcore: ", name, " must be contiguous");
}

inline void check_components(int64_t K) {
  TORCH_CHECK(K >= 1 && K < (int64_t(1) << 20), "diffcore: num_components must be >= 1; got ", K);
}

// gmm_pc: x [n, D], one sample index per row, cf [steps, score_coef_size(K, D)], coef [steps, 4].
inline void check_gmm_pc(const at::Tensor& x, const at::Tensor& idx, const at::Tensor& cf, const at::Tensor& coef,
                         int64_t K, int64_t corrector_steps, double snr, c10::DeviceType dev) {
  check_gmm_state(x, dev);
  check_components(K);
  const int64_t n = x.size(0), D = x.size(1);
  check_sample_idx(idx, n, x.device());
  check_table(cf, "cf", x, -1, score_coef_size(K, D));
  check_table(coef, "coef", x, cf.size(0), 4);
  TORCH_CHECK(corrector_steps >= 0, "diffcore: corrector_steps must be >= 0; got ", corrector_steps);
  TORCH_CHECK(snr > 0, "diffcore: snr must be > 0; got ", snr);
  TORCH_CHECK(cf.size(0) < (int64_t(1) << 31), "diffcore: too many steps");
}

// gmm_ode: h [1 or 2 (Heun), steps]; returns steps.
inline int64_t check_gmm_ode(const at::Tensor& x, const at::Tensor& cf, const at::Tensor& coef, const at::Tensor& h,
                             int64_t K, bool heun, c10::DeviceType dev) {
  check_gmm_state(x, dev);
  check_components(K);
  const int64_t D = x.size(1);
  TORCH_CHECK(h.dim() == 2 && h.size(0) == (heun ? 2 : 1), "diffcore: h must have shape [", heun ? 2 : 1,
              ", steps] (step sizes", heun ? ", then half step sizes" : "", "); got ", h.sizes());
  check_table(h, "h", x, heun ? 2 : 1, h.size(1));
  const int64_t steps = h.size(1);
  TORCH_CHECK(steps < (int64_t(1) << 30), "diffcore: too many steps");
  check_table(cf, "cf", x, heun ? 2 * steps : steps, score_coef_size(K, D));
  check_table(coef, "coef", x, cf.size(0), 2);
  return steps;
}

// gmm_rk45: means and vars [K, D], log_weights [K]; returns K.
inline int64_t check_gmm_rk45(const at::Tensor& x, const at::Tensor& means, const at::Tensor& vars,
                              const at::Tensor& logw, int64_t kind, double t0, double t1, double rtol, double atol,
                              int64_t max_steps, c10::DeviceType dev) {
  check_gmm_state(x, dev);
  const int64_t D = x.size(1);
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
  return K;
}

}  // namespace diffcore
