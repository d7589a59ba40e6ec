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

}  // namespace diffcore
