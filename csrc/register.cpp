// The diffcore:: op schemas (one definition for the CPU and CUDA implementations), and the
// Python module stub that lets `import diffcore._C` load the library.
#include <Python.h>
#include <torch/library.h>

#include <string>

// The build passes -DDIFFCORE_SOURCE_HASH=<hex> (a bare token; quoting differs between build tools).
#ifndef DIFFCORE_SOURCE_HASH
#define DIFFCORE_SOURCE_HASH unknown
#endif
#define DC_STR2(x) #x
#define DC_STR(x) DC_STR2(x)

namespace diffcore {

std::string build_info() {
  std::string s = "source=" DC_STR(DIFFCORE_SOURCE_HASH);
#ifdef DIFFCORE_WITH_CUDA
  s += " cuda=1";
#else
  s += " cuda=0";
#endif
#ifdef _OPENMP
  s += " openmp=1";
#else
  s += " openmp=0";
#endif
  return s;
}

TORCH_LIBRARY(diffcore, m) {
  m.def("build_info() -> str", &build_info);
  // Counter generator (diffcore.noise): [len(sample_idx), numel] draws for one (step, stream).
  m.def("philox_normal(int seed, Tensor sample_idx, int step, int stream, int numel) -> Tensor");
  m.def("philox_uniform(int seed, Tensor sample_idx, int step, int stream, int numel) -> Tensor");
  // Fused sampler steps (diffcore.ops): coefficients are float64 [B]; noise is z (like x) or
  // drawn in-op from (seed, sample_idx, step, stream) when z is None.
  m.def("affine_step(Tensor x, Tensor score, Tensor a, Tensor b, Tensor std, Tensor? z, int seed, "
        "Tensor? sample_idx, int step, int stream) -> (Tensor, Tensor)");
  m.def("heun_step(Tensor x, Tensor score1, Tensor x_pred, Tensor score2, Tensor a, Tensor b, Tensor c, "
        "Tensor d) -> Tensor");
  m.def("ddpm_step(Tensor x, Tensor eps, Tensor sqrt_recip_abar, Tensor sqrt_recipm1_abar, Tensor coef_x0, "
        "Tensor coef_xt, Tensor log_var, Tensor? v, Tensor? log_var_max, bool clip_denoised, Tensor? z, int seed, "
        "Tensor? sample_idx, int step, int stream) -> (Tensor, Tensor, Tensor)");
  // The same step in place (x becomes x_prev; no mean or pred_x0): what a sampling loop needs.
  m.def("ddpm_step_(Tensor(a!) x, Tensor eps, Tensor sqrt_recip_abar, Tensor sqrt_recipm1_abar, Tensor coef_x0, "
        "Tensor coef_xt, Tensor log_var, Tensor? v, Tensor? log_var_max, bool clip_denoised, Tensor? z, int seed, "
        "Tensor? sample_idx, int step, int stream) -> Tensor(a!)");
  m.def("ddim_step(Tensor x, Tensor eps, Tensor abar_t, Tensor abar_prev, Tensor eta, bool clip_denoised, "
        "Tensor? z, int seed, Tensor? sample_idx, int step, int stream) -> (Tensor, Tensor)");
  m.def("langevin_step(Tensor x, Tensor score, Tensor alpha, float snr, bool batch_norm, Tensor? z, int seed, "
        "Tensor? sample_idx, int step, int stream) -> (Tensor, Tensor)");
  m.def("residual_add(Tensor skip, Tensor h, float scale) -> Tensor");
  // GroupNorm (+ emb before the statistics) (+ SiLU); also returns the per-(n, group) mean and
  // 1/std (float32, or float64 for float64 x) for the backward.
  m.def("group_norm_silu(Tensor x, int num_groups, Tensor? weight, Tensor? bias, float eps, Tensor? emb, "
        "bool silu) -> (Tensor, Tensor, Tensor)");
  // 3x3 convolution, stride 1, padding 1, by Winograd F(2x2, 3x3) or F(4x4, 3x3): x channels_last
  // float32 or bfloat16, u the packed transformed weight [16 or 36, ceil(K / 16), C, 16]
  // (diffcore.winograd.transform_weight with tile 2 or 4),
  // bias [K] or None, K = out_channels.
  m.def("conv3x3_winograd(Tensor x, Tensor u, Tensor? bias, int out_channels) -> Tensor");
  // Whole trajectories of a Gaussian mixture's exact score (see csrc/gmm.h and diffcore.native).
  m.def("gmm_pc(Tensor x, Tensor sample_idx, int seed, Tensor cf, Tensor coef, int num_components, "
        "int corrector_steps, bool predictor, float snr) -> (Tensor, Tensor)");
  m.def("gmm_ode(Tensor x, Tensor cf, Tensor coef, Tensor h, int num_components, bool heun) -> Tensor");
  m.def("gmm_rk45(Tensor x, Tensor means, Tensor vars, Tensor log_weights, int sde_kind, float p0, float p1, "
        "float t0, float t1, float rtol, float atol, float h0, int max_steps) -> (Tensor, Tensor)");
}

}  // namespace diffcore

// `import diffcore._C` (ahead-of-time build) runs this; the TORCH_LIBRARY registrations above
// run when the shared library loads. The module itself has no Python functions.
PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef def = {PyModuleDef_HEAD_INIT, "_C", "diffcore's C++/CUDA ops (torch.ops.diffcore)", -1,
                                   nullptr, nullptr, nullptr, nullptr, nullptr};
  return PyModule_Create(&def);
}
