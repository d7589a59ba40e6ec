// Whole-trajectory integration of the reverse SDE / probability-flow ODE of a Gaussian
// mixture, whose noised score is exact (diffcore.closed_form.GaussianMixture):
//     x_t ~ sum_k w_k N(m mu_k, diag(m^2 v_k + s^2)),
//     score(x) = -sum_k r_k(x) (x - m mu_k) / (m^2 v_k + s^2),  r = softmax_k(log w_k + log N_k).
//
// Every routine works on "lanes": samples l in [l0, l1) of structure-of-arrays rows, element
// d of lane l at row[d * S + l]. The CPU runs blocks of lanes (S = block size, loops over l
// vectorise); CUDA runs one lane per thread with rows spanning all n samples (S = n, coalesced).
// Host and device share this code, so both follow the same arithmetic.
#pragma once

#include "philox.h"

namespace diffcore {

// ---- scalar math in T (float: vectorisable polynomial exp; double: libm) -------------------
DC_HD float fast_expf(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  const float fx = x * 1.44269504088896341f;
  const int k = static_cast<int>(fx + (fx >= 0.0f ? 0.5f : -0.5f));
  const float kf = static_cast<float>(k);
  float r = x - kf * 0.693359375f;
  r = r - kf * -2.12194440e-4f;
  const float z = r * r;
  float y = 1.9875691500E-4f;
  y = y * r + 1.3981999507E-3f;
  y = y * r + 8.3334519073E-3f;
  y = y * r + 4.1665795894E-2f;
  y = y * r + 1.6666665459E-1f;
  y = y * r + 5.0000001201E-1f;
  y = y * z + r + 1.0f;
  return y * bits_float(static_cast<uint32_t>(k + 127) << 23);
}

template <typename T> DC_HD T lane_exp(T x);
template <> DC_HD float lane_exp<float>(float x) { return fast_expf(x); }
template <> DC_HD double lane_exp<double>(double x) { return exp(x); }

template <typename T> DC_HD T lane_max(T a, T b) { return a > b ? a : b; }

// ---- coefficients ---------------------------------------------------------------------------
// Shared score coefficients of one time point (all lanes at the same t): cf[0 : KD] = m mu,
// cf[KD : 2KD] = 1 / (m^2 v + s^2), cf[2KD : 2KD + K] = log w_k - 1/2 sum_d log(2 pi var).
DC_HD int score_coef_size(int K, int D) { return 2 * K * D + K; }

// Per-row scratch of the integrators (rows of S values each).
struct Rows {
  int D, K, Dpad;
  DC_HD int x() const { return 0; }
  DC_HD int xm() const { return D; }
  DC_HD int sc() const { return 2 * D; }
  DC_HD int z() const { return 3 * D; }
  DC_HD int k(int i) const { return 3 * D + Dpad + i * D; }   // i = 0..6 (RK45 stages; Heun uses 0, 1)
  DC_HD int xi() const { return 10 * D + Dpad; }
  DC_HD int lg() const { return 11 * D + Dpad; }
  DC_HD int mx() const { return 11 * D + Dpad + K; }
  DC_HD int den() const { return mx() + 1; }
  DC_HD int lm() const { return mx() + 2; }   // per-lane m (RK45)
  DC_HD int ls() const { return mx() + 3; }   // per-lane s (RK45)
  DC_HD int total() const { return mx() + 4; }
};

DC_HD Rows make_rows(int D, int K) { return {D, K, 4 * ((D + 3) / 4)}; }

// score rows `sc` of x rows `x` at one shared time point.
template <typename T>
DC_HD void score_shared(int K, int D, const T* cf, const T* x, T* sc, T* lg, T* mx, T* den, int S, int l0, int l1) {
  const T* mu = cf;
  const T* inv = cf + K * D;
  const T* ck = cf + 2 * K * D;
  for (int k = 0; k < K; ++k) {
    T* g = lg + k * S;
    const T c = ck[k];
    DC_SIMD for (int l = l0; l < l1; ++l) g[l] = c;
    for (int d = 0; d < D; ++d) {
      const T m = mu[k * D + d], iv = inv[k * D + d];
      const T* xr = x + d * S;
      DC_SIMD for (int l = l0; l < l1; ++l) {
        const T df = xr[l] - m;
        g[l] -= T(0.5) * df * df * iv;
      }
    }
  }
  DC_SIMD for (int l = l0; l < l1; ++l) mx[l] = lg[l];
  for (int k = 1; k < K; ++k) {
    const T* g = lg + k * S;
    DC_SIMD for (int l = l0; l < l1; ++l) mx[l] = lane_max(mx[l], g[l]);
  }
  DC_SIMD for (int l = l0; l < l1; ++l) den[l] = T(0);
  for (int k = 0; k < K; ++k) {
    T* g = lg + k * S;
    DC_SIMD for (int l = l0; l < l1; ++l) {
      const T e = lane_exp<T>(g[l] - mx[l]);
      g[l] = e;
      den[l] += e;
    }
  }
  for (int d = 0; d < D; ++d) {
    T* s = sc + d * S;
    DC_SIMD for (int l = l0; l < l1; ++l) s[l] = T(0);
  }
  for (int k = 0; k < K; ++k) {
    const T* g = lg + k * S;
    for (int d = 0; d < D; ++d) {
      const T m = mu[k * D + d], iv = inv[k * D + d];
      const T* xr = x + d * S;
      T* s = sc + d * S;
      DC_SIMD for (int l = l0; l < l1; ++l) s[l] -= g[l] * ((xr[l] - m) * iv);
    }
  }
  for (int d = 0; d < D; ++d) {
    T* s = sc + d * S;
    DC_SIMD for (int l = l0; l < l1; ++l) s[l] /= den[l];
  }
}

// score rows at per-lane (m, s): gm_mu [K*D], gm_var [K*D], gm_logw [K] in T.
template <typename T>
DC_HD void score_per_lane(int K, int D, const T* gm_mu, const T* gm_var, const T* gm_logw, const T* lm,
                          const T* ls, const T* x, T* sc, T* lg, T* mx, T* den, int S, int l0, int l1) {
  const T two_pi = T(6.283185307179586476925);
  for (int k = 0; k < K; ++k) {
    T* g = lg + k * S;
    for (int l = l0; l < l1; ++l) g[l] = gm_logw[k];
    for (int d = 0; d < D; ++d) {
      const T* xr = x + d * S;
      for (int l = l0; l < l1; ++l) {
        const T var = lm[l] * lm[l] * gm_var[k * D + d] + ls[l] * ls[l];
        const T df = xr[l] - lm[l] * gm_mu[k * D + d];
        g[l] -= T(0.5) * (df * (df / var) + log(two_pi * var));
      }
    }
  }
  for (int l = l0; l < l1; ++l) mx[l] = lg[l];
  for (int k = 1; k < K; ++k)
    for (int l = l0; l < l1; ++l) mx[l] = lane_max(mx[l], lg[k * S + l]);
  for (int l = l0; l < l1; ++l) den[l] = T(0);
  for (int k = 0; k < K; ++k)
    for (int l = l0; l < l1; ++l) {
      const T e = exp(lg[k * S + l] - mx[l]);
      lg[k * S + l] = e;
      den[l] += e;
    }
  for (int d = 0; d < D; ++d)
    for (int l = l0; l < l1; ++l) sc[d * S + l] = T(0);
  for (int k = 0; k < K; ++k)
    for (int d = 0; d < D; ++d)
      for (int l = l0; l < l1; ++l) {
        const T var = lm[l] * lm[l] * gm_var[k * D + d] + ls[l] * ls[l];
        sc[d * S + l] -= lg[k * S + l] * ((x[d * S + l] - lm[l] * gm_mu[k * D + d]) / var);
      }
  for (int d = 0; d < D; ++d)
    for (int l = l0; l < l1; ++l) sc[d * S + l] /= den[l];
}

// z rows <- diffcore.noise.normal(seed, idx, step, (D,), stream) for the lanes (idx[l]: the
// lane's global sample index). z must have 4 * ceil(D / 4) rows (Rows::Dpad).
template <typename T>
DC_HD void draw_lanes(uint64_t seed, const int64_t* idx, uint32_t step, uint32_t stream, int D, T* z, int S,
                      int l0, int l1) {
  const int groups = (D + 3) / 4;
  for (int gi = 0; gi < groups; ++gi) {
    if (D - 4 * gi <= 2) {   // the last group needs one Box-Muller pair only
      DC_SIMD for (int l = l0; l < l1; ++l) {
        const Float4 q = normal2(make_address(seed, static_cast<uint64_t>(idx[l]), step, stream), static_cast<uint32_t>(gi));
        z[(4 * gi) * S + l] = static_cast<T>(q.z0);
        z[(4 * gi + 1) * S + l] = static_cast<T>(q.z1);
      }
      continue;
    }
    DC_SIMD for (int l = l0; l < l1; ++l) {
      const Float4 q = normal4(make_address(seed, static_cast<uint64_t>(idx[l]), step, stream), static_cast<uint32_t>(gi));
      // z has 4 * groups rows: the padding rows take the group's unused slots
      z[(4 * gi) * S + l] = static_cast<T>(q.z0);
      z[(4 * gi + 1) * S + l] = static_cast<T>(q.z1);
      z[(4 * gi + 2) * S + l] = static_cast<T>(q.z2);
      z[(4 * gi + 3) * S + l] = static_cast<T>(q.z3);
    }
  }
}

// ---- predictor-corrector (reverse SDE) --------------------------------------------------------
// coef row i: (a, b, std, alpha) of step i: x_mean = a x + b score, x = x_mean + std z
// (diffcore.step_coeffs.predictor) and the Langevin corrector's alpha. cf: score
// coefficients per step. Matches diffcore.samplers.pc.run with norm="per_sample".
template <typename T>
struct PcArgs {
  const T* cf;       // [N, score_coef_size]
  const T* coef;     // [N, 4]
  int N, K, D;
  int corrector_steps;
  bool predictor;
  T snr;
  uint64_t seed;
};

template <typename T>
DC_HD void pc_lanes(const PcArgs<T>& A, const int64_t* idx, T* buf, int S, int l0, int l1) {
  const Rows R = make_rows(A.D, A.K);
  const int D = A.D, cs = score_coef_size(A.K, A.D);
  T* x = buf + R.x() * S;
  T* xm = buf + R.xm() * S;
  T* sc = buf + R.sc() * S;
  T* z = buf + R.z() * S;
  T* lg = buf + R.lg() * S;
  T* mx = buf + R.mx() * S;
  T* den = buf + R.den() * S;
  for (int i = 0; i < A.N; ++i) {
    const T* cf = A.cf + static_cast<int64_t>(i) * cs;
    const T a = A.coef[4 * i], b = A.coef[4 * i + 1], sd = A.coef[4 * i + 2], alpha = A.coef[4 * i + 3];
    for (int j = 0; j < A.corrector_steps; ++j) {
      score_shared(A.K, D, cf, x, sc, lg, mx, den, S, l0, l1);
      draw_lanes(A.seed, idx, static_cast<uint32_t>(i), kStreamCorrector + static_cast<uint32_t>(j), D, z, S, l0, l1);
      DC_SIMD for (int l = l0; l < l1; ++l) { mx[l] = T(0); den[l] = T(0); }
      for (int d = 0; d < D; ++d) {
        const T* s = sc + d * S;
        const T* zz = z + d * S;
        DC_SIMD for (int l = l0; l < l1; ++l) {
          mx[l] += s[l] * s[l];
          den[l] += zz[l] * zz[l];
        }
      }
      DC_SIMD for (int l = l0; l < l1; ++l) {
        const T q = A.snr * sqrt(den[l]) / sqrt(mx[l]);
        const T step = q * q * T(2) * alpha;
        mx[l] = step;
        den[l] = sqrt(step * T(2));
      }
      for (int d = 0; d < D; ++d) {
        T* xr = x + d * S;
        T* xmr = xm + d * S;
        const T* s = sc + d * S;
        const T* zz = z + d * S;
        DC_SIMD for (int l = l0; l < l1; ++l) {
          const T v = xr[l] + mx[l] * s[l];
          xmr[l] = v;
          xr[l] = v + den[l] * zz[l];
        }
      }
    }
    if (A.predictor) {
      score_shared(A.K, D, cf, x, sc, lg, mx, den, S, l0, l1);
      draw_lanes(A.seed, idx, static_cast<uint32_t>(i), kStreamStep, D, z, S, l0, l1);
      for (int d = 0; d < D; ++d) {
        T* xr = x + d * S;
        T* xmr = xm + d * S;
        const T* s = sc + d * S;
        const T* zz = z + d * S;
        DC_SIMD for (int l = l0; l < l1; ++l) {
          const T v = a * xr[l] + b * s[l];
          xmr[l] = v;
          xr[l] = v + sd * zz[l];
        }
      }
    }
  }
}

// ---- probability-flow ODE, fixed steps ---------------------------------------------------------
// drift f(x, t_p) = c_p x - g2_p score(x, t_p) / 2; coef row p: (c, g2); Euler uses time point i
// at step i, Heun points 2i (t_i) and 2i + 1 (t_i + h_i). h: [steps].
template <typename T>
struct OdeArgs {
  const T* cf;
  const T* coef;   // [P, 2]
  const T* h;      // [steps]
  int steps, K, D;
  bool heun;
};

template <typename T>
DC_HD void drift_shared(int K, int D, const T* cf, T c, T g2, const T* xin, T* out, T* sc, T* lg, T* mx, T* den,
                        int S, int l0, int l1) {
  score_shared(K, D, cf, xin, sc, lg, mx, den, S, l0, l1);
  for (int d = 0; d < D; ++d) {
    const T* xr = xin + d * S;
    const T* s = sc + d * S;
    T* o = out + d * S;
    DC_SIMD for (int l = l0; l < l1; ++l) o[l] = c * xr[l] - g2 * s[l] * T(0.5);
  }
}

template <typename T>
DC_HD void ode_lanes(const OdeArgs<T>& A, T* buf, int S, int l0, int l1) {
  const Rows R = make_rows(A.D, A.K);
  const int D = A.D, cs = score_coef_size(A.K, A.D);
  T* x = buf + R.x() * S;
  T* sc = buf + R.sc() * S;
  T* k1 = buf + R.k(0) * S;
  T* k2 = buf + R.k(1) * S;
  T* xi = buf + R.xi() * S;
  T* lg = buf + R.lg() * S;
  T* mx = buf + R.mx() * S;
  T* den = buf + R.den() * S;
  for (int i = 0; i < A.steps; ++i) {
    const T h = A.h[i];
    const int p = A.heun ? 2 * i : i;
    drift_shared(A.K, D, A.cf + static_cast<int64_t>(p) * cs, A.coef[2 * p], A.coef[2 * p + 1], x, k1, sc, lg, mx,
                 den, S, l0, l1);
    if (!A.heun) {
      for (int d = 0; d < D; ++d) {
        T* xr = x + d * S;
        const T* k = k1 + d * S;
        DC_SIMD for (int l = l0; l < l1; ++l) xr[l] = xr[l] + h * k[l];
      }
      continue;
    }
    for (int d = 0; d < D; ++d) {
      const T* xr = x + d * S;
      const T* k = k1 + d * S;
      T* o = xi + d * S;
      DC_SIMD for (int l = l0; l < l1; ++l) o[l] = xr[l] + h * k[l];
    }
    drift_shared(A.K, D, A.cf + static_cast<int64_t>(p + 1) * cs, A.coef[2 * p + 2], A.coef[2 * p + 3], xi, k2, sc,
                 lg, mx, den, S, l0, l1);
    const T half_h = A.h[A.steps + i];   // 0.5 * h rounded as the reference rounds it
    for (int d = 0; d < D; ++d) {
      T* xr = x + d * S;
      const T* a = k1 + d * S;
      const T* b = k2 + d * S;
      DC_SIMD for (int l = l0; l < l1; ++l) xr[l] = xr[l] + half_h * (a[l] + b[l]);
    }
  }
}

// ---- probability-flow ODE, adaptive Dormand-Prince per lane ------------------------------------
// SDE kinds: 0 VE (p0 = sigma_min, p1 = sigma_max), 1 VP and 2 sub-VP (p0 = beta_min, p1 = beta_max).
DC_HD void sde_coeffs(int kind, double p0, double p1, double t, double* c, double* g2, double* m, double* s) {
  if (kind == 0) {
    const double sigma = p0 * pow(p1 / p0, t);
    *c = 0.0;
    *g2 = sigma * sigma * (2.0 * (log(p1) - log(p0)));
    *m = 1.0;
    *s = sigma;
    return;
  }
  const double beta = p0 + t * (p1 - p0);
  const double lmc = -0.25 * t * t * (p1 - p0) - 0.5 * t * p0;
  *c = -0.5 * beta;
  *m = exp(lmc);
  if (kind == 1) {
    *g2 = beta;
    *s = sqrt(-expm1(2.0 * lmc));
  } else {
    *g2 = beta * -expm1(-2.0 * p0 * t - (p1 - p0) * t * t);
    *s = -expm1(2.0 * lmc);
  }
}

template <typename T>
struct Rk45Args {
  const T* gm_mu;
  const T* gm_var;
  const T* gm_logw;
  int K, D, kind;
  double p0, p1, t0, t1, rtol, atol, h0;
  int64_t max_steps;
};

template <typename T>
DC_HD void drift_lane(const Rk45Args<T>& A, double t, const T* xin, T* out, T* buf, const Rows& R, int S, int l) {
  const double tt = static_cast<double>(static_cast<T>(t));   // the reference evaluates at t in x's time dtype
  double c, g2, m, s;
  sde_coeffs(A.kind, A.p0, A.p1, tt, &c, &g2, &m, &s);
  T* lm = buf + R.lm() * S;
  T* ls = buf + R.ls() * S;
  lm[l] = static_cast<T>(m);
  ls[l] = static_cast<T>(s);
  T* sc = buf + R.sc() * S;
  score_per_lane(A.K, A.D, A.gm_mu, A.gm_var, A.gm_logw, lm, ls, xin, sc, buf + R.lg() * S, buf + R.mx() * S,
                 buf + R.den() * S, S, l, l + 1);
  const T cT = static_cast<T>(c), gT = static_cast<T>(g2);
  for (int d = 0; d < A.D; ++d) out[d * S + l] = cT * xin[d * S + l] - gT * sc[d * S + l] * T(0.5);
}

// Returns the lane's number of drift evaluations, or -1 when it took more than max_steps steps.
template <typename T>
DC_HD int64_t rk45_lane(const Rk45Args<T>& A, T* buf, int S, int l) {
  const double C[6] = {0.0, 1.0 / 5, 3.0 / 10, 4.0 / 5, 8.0 / 9, 1.0};
  const double Am[6][5] = {{0, 0, 0, 0, 0},
                           {1.0 / 5, 0, 0, 0, 0},
                           {3.0 / 40, 9.0 / 40, 0, 0, 0},
                           {44.0 / 45, -56.0 / 15, 32.0 / 9, 0, 0},
                           {19372.0 / 6561, -25360.0 / 2187, 64448.0 / 6561, -212.0 / 729, 0},
                           {9017.0 / 3168, -355.0 / 33, 46732.0 / 5247, 49.0 / 176, -5103.0 / 18656}};
  const double Bw[6] = {35.0 / 384, 0.0, 500.0 / 1113, 125.0 / 192, -2187.0 / 6784, 11.0 / 84};
  const double Ew[7] = {71.0 / 57600, 0.0, -71.0 / 16695, 71.0 / 1920, -17253.0 / 339200, 22.0 / 525, -1.0 / 40};
  const Rows R = make_rows(A.D, A.K);
  const int D = A.D;
  T* x = buf + R.x() * S;
  T* y = buf + R.xm() * S;
  T* xi = buf + R.xi() * S;
  T* k[7];
  for (int i = 0; i < 7; ++i) k[i] = buf + R.k(i) * S;
  const double sign = A.t1 > A.t0 ? 1.0 : -1.0;
  double t = A.t0;
  double h = A.h0 > 0 ? A.h0 : fabs(A.t1 - A.t0) * 0.01;
  drift_lane(A, t, x, k[0], buf, R, S, l);
  int64_t nfe = 1, attempts = 0;
  while ((A.t1 - t) * sign > 0) {
    if (++attempts > A.max_steps) return -1;
    const double rem = (A.t1 - t) * sign;
    const bool last = h >= rem;
    const double ha = last ? rem : h;
    const T hs = static_cast<T>(ha * sign);
    for (int i = 1; i < 6; ++i) {
      for (int d = 0; d < D; ++d) {
        T acc = T(0);
        bool first = true;
        for (int j = 0; j < i; ++j) {
          if (Am[i][j] == 0.0) continue;
          const T term = static_cast<T>(Am[i][j]) * k[j][d * S + l];
          acc = first ? term : acc + term;
          first = false;
        }
        xi[d * S + l] = x[d * S + l] + hs * acc;
      }
      drift_lane(A, t + C[i] * ha * sign, xi, k[i], buf, R, S, l);
    }
    for (int d = 0; d < D; ++d) {
      T acc = T(0);
      bool first = true;
      for (int j = 0; j < 6; ++j) {
        if (Bw[j] == 0.0) continue;
        const T term = static_cast<T>(Bw[j]) * k[j][d * S + l];
        acc = first ? term : acc + term;
        first = false;
      }
      y[d * S + l] = x[d * S + l] + hs * acc;
    }
    const double t_new = last ? A.t1 : t + ha * sign;
    drift_lane(A, t_new, y, k[6], buf, R, S, l);
    nfe += 6;
    T sq = T(0);
    for (int d = 0; d < D; ++d) {
      T acc = T(0);
      bool first = true;
      for (int j = 0; j < 7; ++j) {
        if (Ew[j] == 0.0) continue;
        const T term = static_cast<T>(Ew[j]) * k[j][d * S + l];
        acc = first ? term : acc + term;
        first = false;
      }
      const T err = hs * acc;
      const T ax = x[d * S + l] < T(0) ? -x[d * S + l] : x[d * S + l];
      const T ay = y[d * S + l] < T(0) ? -y[d * S + l] : y[d * S + l];
      const T scale = static_cast<T>(A.atol) + static_cast<T>(A.rtol) * lane_max(ax, ay);
      const T q = err / scale;
      sq += q * q;
    }
    const double err_norm = static_cast<double>(sqrt(sq / static_cast<T>(D)));
    double factor;
    if (err_norm == 0.0) {
      factor = 10.0;
    } else {
      factor = 0.9 * pow(err_norm < 1e-300 ? 1e-300 : err_norm, -0.2);
      factor = factor < 0.2 ? 0.2 : (factor > 10.0 ? 10.0 : factor);
    }
    if (err_norm <= 1.0) {
      for (int d = 0; d < D; ++d) {
        x[d * S + l] = y[d * S + l];
        k[0][d * S + l] = k[6][d * S + l];
      }
      t = t_new;
    }
    h = ha * factor;
  }
  return nfe;
}

}  // namespace diffcore
