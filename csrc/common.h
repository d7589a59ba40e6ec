// Argument checks shared by the CPU and CUDA implementations of the diffcore:: ops.
// Every message names the argument, so a bad call reads like a Python ValueError.
#pragma once

#include <ATen/ATen.h>
#include <ATen/MemoryOverlap.h>
#include <c10/util/Optional.h>

#include <cstdlib>
#include <cstring>

namespace diffcore {

// An environment switch: set, non-empty and not "0".
inline bool getenv_flag(const char* name) {
  const char* v = std::getenv(name);
  return v != nullptr && *v != '\0' && std::strcmp(v, "0") != 0;
}

// reduced_ok: bfloat16 / float16 accepted too (ops that compute them in float32).
inline void check_float_x(const at::Tensor& x, const char* name, c10::DeviceType dev, bool reduced_ok = false) {
  TORCH_CHECK(x.device().type() == dev, "diffcore: ", name, " must be a ", c10::DeviceTypeName(dev),
              " tensor for this implementation; got ", x.device());
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || (reduced_ok && (t == at::kBFloat16 || t == at::kHalf)),
              "diffcore: ", name, " must be float32 or float64", reduced_ok ? " (or bfloat16 / float16)" : "",
              "; got ", t);
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

// ---- whole-op checks: one definition for the CPU and CUDA implementations of each op ----------

// philox_normal / philox_uniform: [len(sample_idx), numel] draws.
inline void check_noise_op(const at::Tensor& idx, int64_t step, int64_t stream, int64_t numel, c10::DeviceType dev) {
  TORCH_CHECK(idx.device().type() == dev, "diffcore: sample_idx must be a ", c10::DeviceTypeName(dev),
              " tensor for this implementation");
  TORCH_CHECK(idx.dim() == 1, "diffcore: sample_idx must be 1-D; got shape ", idx.sizes());
  check_sample_idx(idx, idx.size(0), idx.device());
  check_counter(step, stream);
  TORCH_CHECK(numel >= 0 && numel / 4 < (int64_t(1) << 32), "diffcore: numel must lie in [0, 2^34); got ", numel);
}

inline void check_affine_step(const at::Tensor& x, const at::Tensor& score, const at::Tensor& a, const at::Tensor& b,
                              const at::Tensor& std_, const c10::optional<at::Tensor>& z,
                              const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream, c10::DeviceType dev) {
  check_float_x(x, "x", dev);
  check_like(score, "score", x);
  check_coef(a, "a", x);
  check_coef(b, "b", x);
  check_coef(std_, "std", x);
  check_noise(z, idx, step, stream, x);
}

inline void check_heun_step(const at::Tensor& x, const at::Tensor& s1, const at::Tensor& x_pred, const at::Tensor& s2,
                            const at::Tensor& a, const at::Tensor& b, const at::Tensor& c, const at::Tensor& d,
                            c10::DeviceType dev) {
  check_float_x(x, "x", dev);
  check_like(s1, "score1", x);
  check_like(x_pred, "x_pred", x);
  check_like(s2, "score2", x);
  check_coef(a, "a", x);
  check_coef(b, "b", x);
  check_coef(c, "c", x);
  check_coef(d, "d", x);
}

inline void check_ddpm_step(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& sra, const at::Tensor& srm1,
                            const at::Tensor& cx0, const at::Tensor& cxt, const at::Tensor& log_var,
                            const c10::optional<at::Tensor>& v, const c10::optional<at::Tensor>& log_var_max,
                            const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& idx, int64_t step,
                            int64_t stream, c10::DeviceType dev) {
  check_float_x(x, "x", dev);
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
}

// ddpm_step_ writes x while reading eps, v and z element by element: each may be x itself but
// must not overlap it partly.
inline void check_inplace_ddpm(const at::Tensor& x, const at::Tensor& eps, const c10::optional<at::Tensor>& v,
                               const c10::optional<at::Tensor>& z) {
  const std::pair<const at::Tensor*, const char*> ins[] = {
      {&eps, "eps"}, {v.has_value() ? &*v : nullptr, "v"}, {z.has_value() ? &*z : nullptr, "z"}};
  for (const auto& [t, name] : ins)
    TORCH_CHECK(t == nullptr || at::get_overlap_status(x, *t) != at::MemOverlapStatus::Partial, "diffcore: ddpm_step_ ",
                name, " overlaps x in part (it may be x itself or separate memory)");
}

inline void check_ddim_step(const at::Tensor& x, const at::Tensor& eps, const at::Tensor& abar_t,
                            const at::Tensor& abar_prev, const at::Tensor& eta, const c10::optional<at::Tensor>& z,
                            const c10::optional<at::Tensor>& idx, int64_t step, int64_t stream, c10::DeviceType dev) {
  check_float_x(x, "x", dev);
  check_like(eps, "eps", x);
  check_coef(abar_t, "abar_t", x);
  check_coef(abar_prev, "abar_prev", x);
  check_coef(eta, "eta", x);
  check_noise(z, idx, step, stream, x);
}

inline void check_langevin_step(const at::Tensor& x, const at::Tensor& score, const at::Tensor& alpha, double snr,
                                const c10::optional<at::Tensor>& z, const c10::optional<at::Tensor>& idx,
                                int64_t step, int64_t stream, c10::DeviceType dev) {
  check_float_x(x, "x", dev);
  check_like(score, "score", x);
  check_coef(alpha, "alpha", x);
  TORCH_CHECK(snr > 0, "diffcore: snr must be > 0; got ", snr);
  check_noise(z, idx, step, stream, x);
}

// residual_add: float32 / float64 h, and on the CPU also bfloat16 / float16 (computed in float32;
// CUDA leaves the 16-bit types to Triton and the reference).
inline void check_residual_add(const at::Tensor& skip, const at::Tensor& h, c10::DeviceType dev) {
  check_float_x(h, "h", dev, dev == c10::DeviceType::CPU);
  check_like(skip, "skip", h);
}

// An optional per-channel parameter of GroupNorm: x's device, the given dtype and shape.
inline void check_param(const c10::optional<at::Tensor>& p, const char* name, const at::Tensor& x,
                        at::IntArrayRef shape, at::ScalarType dtype) {
  if (!p.has_value()) return;
  TORCH_CHECK(p->device() == x.device(), "diffcore: ", name, " must be on x's device ", x.device(), "; got ", p->device());
  TORCH_CHECK(p->scalar_type() == dtype, "diffcore: ", name, " must be ", dtype, " for x of dtype ", x.scalar_type(),
              "; got ", p->scalar_type());
  TORCH_CHECK(p->sizes() == shape, "diffcore: ", name, " must have shape ", shape, "; got ", p->sizes());
  TORCH_CHECK(p->is_contiguous(), "diffcore: ", name, " must be contiguous");
}

// The dtype of group_norm_silu's statistics and parameters (weight, bias, emb, mean, rstd):
// x's own, or float32 for bfloat16/float16 x (which only the CPU implementation accepts).
inline at::ScalarType group_norm_acc_type(at::ScalarType t) {
  return (t == at::kBFloat16 || t == at::kHalf) ? at::kFloat : t;
}

// group_norm_silu. Returns whether x is channels_last (4-D / 5-D, and not also contiguous),
// which only implementations passing allow_channels_last accept.
inline bool check_group_norm(const at::Tensor& x, int64_t G, const c10::optional<at::Tensor>& weight,
                             const c10::optional<at::Tensor>& bias, double eps, const c10::optional<at::Tensor>& emb,
                             c10::DeviceType dev, bool allow_channels_last) {
  TORCH_CHECK(x.device().type() == dev, "diffcore: x must be a ", c10::DeviceTypeName(dev),
              " tensor for this implementation; got ", x.device());
  const bool reduced_ok = dev == c10::DeviceType::CPU;   // CUDA: Triton runs the 16-bit types
  const auto t = x.scalar_type();
  TORCH_CHECK(t == at::kFloat || t == at::kDouble || (reduced_ok && (t == at::kBFloat16 || t == at::kHalf)),
              "diffcore: x must be float32 or float64", reduced_ok ? " (or bfloat16 / float16)" : "",
              " for the native group_norm_silu on ", c10::DeviceTypeName(dev), "; got ", t);
  TORCH_CHECK(x.dim() >= 2, "diffcore: x must be [N, C, *spatial]; got shape ", x.sizes());
  const int64_t N = x.size(0), C = x.size(1);
  TORCH_CHECK(G >= 1 && C % G == 0, "diffcore: num_groups must be a positive integer dividing C = ", C, "; got ", G);
  TORCH_CHECK(eps > 0, "diffcore: eps must be > 0; got ", eps);
  const auto acc = group_norm_acc_type(t);
  check_param(weight, "weight", x, {C}, acc);
  check_param(bias, "bias", x, {C}, acc);
  check_param(emb, "emb", x, {N, C}, acc);
  const bool cl = (x.dim() == 4 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast)) ||
                  (x.dim() == 5 && !x.is_contiguous() && x.is_contiguous(at::MemoryFormat::ChannelsLast3d));
  if (allow_channels_last) {
    TORCH_CHECK(x.is_contiguous() || cl, "diffcore: x must be contiguous (NCHW) or channels_last; got strides ",
                x.strides());
  } else {
    TORCH_CHECK(x.is_contiguous(), "diffcore: x must be contiguous (NCHW) on ", c10::DeviceTypeName(dev),
                "; got strides ", x.strides());
  }
  return cl && allow_channels_last;
}

}  // namespace diffcore
