// Argument checks shared by the CPU and CUDA implementations of the diffcore:: ops.
// Every message names the argument, so a bad call reads like a Python ValueError.
#pragma once

#include <ATen/ATen.h>
#include <c10/util/Optional.h>

#include <cstdlib>
#include <cstring>

namespace diffcore {

// An environment switch: set, non-empty and not "0".
inline bool getenv_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

inline void check_float_x(const at::Tensor& x, const char* name, c10::DeviceType dev) {
  TORCH_CHECK(x.device().type() == dev, "diffcore: ", name, " must be a ", c10::DeviceTypeName(dev),
              " tensor for this implementation; got ", x.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kDouble, "diffcore: ", name,
              " must be float32 or float64; got ", x.scalar_type());
  TORCH_CHECK(x.dim() >= 1 && x.size(0) >= 0, "diffcore: ", name, " must have a batch dimension; got a 0-d tensor");
  TORCH_CHECK(x.is_contiguous(), "diffcore: ", name, " must be contiguous; got strides ", x.strides());
}

// y: like x (same shape, dtype, device, contiguous).
inline void check_like(const at::Tensor& y, const char* name, const at::Tensor& x) {
  TORCH_CHECK(y.device() == x.device(), "diffcore: ", name, " must be on x's device ", x.device(), "; got ", y.device());
  TORCH_CHECK(y.scalar_type() == x.scalar_type(), "diffcore: ", name, " must have x's dtype ", x.scalar_type(),
              "; got ", y.scalar_type());
  TORCH_CHECK(y.sizes() == x.sizes(), "diffcore: ", name, " must have x's shape ", x.sizes(), "; got ", y.sizes());
  TORCH_CHECK(y.is_contiguous(), "diffcore: ", name, " must be contiguous; got strides ", y.strides());
}

// c: a per-sample coefficient, float64 [B] contiguous on x's device.
inline void check_coef(const at::Tensor& c, const char* name, const at::Tensor& x) {
  TORCH_CHECK(c.device() == x.device(), "diffcore: ", name, " must be on x's device ", x.device(), "; got ", c.device());
  TORCH_CHECK(c.scalar_type() == at::kDouble, "diffcore: ", name, " must be float64; got ", c.scalar_type());
  TORCH_CHECK(c.dim() == 1 && c.size(0) == x.size(0), "diffcore: ", name, " must have shape [B] = [", x.size(0),
              "]; got ", c.sizes());
  TORCH_CHECK(c.is_contiguous(), "diffcore: ", name, " must be contiguous");
}

inline void check_sample_idx(const at::Tensor& idx, int64_t B, const at::Device& dev) {
  TORCH_CHECK(idx.device() == dev, "diffcore: sample_idx must be on x's device ", dev, "; got ", idx.device());
  TORCH_CHECK(idx.scalar_type() == at::kLong, "diffcore: sample_idx must be int64; got ", idx.scalar_type());
  TORCH_CHECK(idx.dim() == 1 && idx.size(0) == B, "diffcore: sample_idx must have shape [B] = [", B, "]; got ",
              idx.sizes());
  TORCH_CHECK(idx.is_contiguous(), "diffcore: sample_idx must be contiguous");
}

inline void check_counter(int64_t step, int64_t stream) {
  TORCH_CHECK(step >= 0 && step <= 0xFFFFFFFFLL, "diffcore: step must lie in [0, 2^32); got ", step);
  TORCH_CHECK(stream >= 0 && stream <= 0xFFFFFFFFLL, "diffcore: stream must lie in [0, 2^32); got ", stream);
}

// The noise of a step op: z (like x) or an address (seed, sample_idx, step, stream).
inline void check_noise(const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& idx, int64_t step,
                        int64_t stream, const at::Tensor& x) {
  if (z.has_value()) {
    check_like(*z, "z", x);
    return;
  }
  TORCH_CHECK(idx.has_value(), "diffcore: give z (noise like x) or sample_idx (with seed, step, stream)");
  check_sample_idx(*idx, x.size(0), x.device());
  check_counter(step, stream);
}

// Elements per sample (x[b].numel()), checked to fit the generator's 32-bit group counter.
inline int64_t per_sample(const at::Tensor& x) {
  const int64_t B = x.size(0);
  const int64_t E = B ? x.numel() / B : 0;
  TORCH_CHECK(E / 4 < (int64_t(1) << 32), "diffcore: too many elements per sample (", E, ")");
  return E;
}

}  // namespace diffcore
