// 3x3 convolution (stride 1, padding 1) by Winograd's F(2x2, 3x3) or F(4x4, 3x3) for CPU
// inference on channels_last tensors: the layer that is most of a U-Net's time on CPU. oneDNN
// has no Winograd kernels for AVX2 machines; its direct convolution does 9 multiply-adds per
// output pixel and input channel where F(2x2, 3x3) does 4 (16 per 2x2 output tile).
//
//   y = A^T [ (G g G^T) . (B^T d B) ] A  per 4x4 input tile d and 2x2 output tile,
//
// per block of up to 24 tiles on one thread (blocks in parallel; smaller blocks when there are
// fewer tiles per thread): the input tiles -> V[16][tiles][C]
// (B^T d B, channel innermost, so each of a tile's 16 elements is a contiguous row of C), 16
// GEMMs M[k] = V[k] U[k] on a 6 x 16 AVX2 register tile (U = G g G^T made once per weight by
// diffcore.winograd.transform_weight, packed in 16-column panels), then M -> y (A^T m A + bias).
// A block's V and M stay in L2 between the three steps; the transforms are adds over rows of C.
// Rounding: at most 2.4 eps32 of the output's scale |x| conv |w| + |b| measured.
//
// F(4x4, 3x3) too (36-element transforms, 6x6 input and 4x4 output tiles: 2.25 multiply-adds
// per output pixel and input channel; blocks of 12 tiles, or up to 72 for large weights),
// chosen by the packed weight's first dimension (16 or 36). Its float32 rounding is 15-25 times
// F(2x2)'s (at most 36 eps32 of the scale measured); diffcore.winograd picks it for calls with
// enough tiles (winograd.pick_tile).
//
// bfloat16 input (CPUs whose oneDNN has no bf16 convolutions, where autocast would take
// PyTorch's slow reference path): the same arithmetic on the bf16 values widened to float32,
// the output rounded to bf16 once (nearest even), as a bf16 convolution with float32
// accumulation rounds it. V, U and M stay float32.
#include <ATen/Parallel.h>
#include <torch/library.h>

#include <algorithm>
#include <vector>

#include "../common.h"
#include "half_rows.h"
#include "noise_avx2.h"
#include "pool.h"

#define DC_INLINE inline __attribute__((always_inline))

namespace diffcore {
namespace {

// B^T d B for channels [c, c + L) of one tile: p[k] (k = 4 * row + col) points at the tile's
// input pixel rows (or a row of zeros outside the image); v[k] at the tile's rows of V.
template <int L, typename T>
DC_INLINE void input_tile(const T* const* p, float* const* v, int64_t c) {
  float d[16][L], u[16][L];
  for (int k = 0; k < 16; ++k)
    for (int l = 0; l < L; ++l) d[k][l] = p[k][c + l];
  for (int s = 0; s < 4; ++s)      // rows: B^T d
    for (int l = 0; l < L; ++l) {
      u[s][l] = d[s][l] - d[8 + s][l];
      u[4 + s][l] = d[4 + s][l] + d[8 + s][l];
      u[8 + s][l] = d[8 + s][l] - d[4 + s][l];
      u[12 + s][l] = d[4 + s][l] - d[12 + s][l];
    }
  for (int r = 0; r < 4; ++r)      // columns: (B^T d) B
    for (int l = 0; l < L; ++l) {
      const float a = u[4 * r][l], b = u[4 * r + 1][l], e = u[4 * r + 2][l], f = u[4 * r + 3][l];
      v[4 * r][c + l] = a - e;
      v[4 * r + 1][c + l] = b + e;
      v[4 * r + 2][c + l] = e - b;
      v[4 * r + 3][c + l] = b - f;
    }
}

// A^T m A + bias for channels [c, c + L) of one tile: m[k] the tile's rows of M, y[4] its
// 2x2 output pixel rows (a scratch row for pixels outside an odd-sized image).
template <int L, typename T>
DC_INLINE void output_tile(const float* const* m, T* const* y, const float* bias, int64_t c) {
  float a[4][L], b[4][L];
  for (int s = 0; s < 4; ++s)      // rows: A^T m
    for (int l = 0; l < L; ++l) {
      const float m0 = m[s][c + l], m1 = m[4 + s][c + l], m2 = m[8 + s][c + l], m3 = m[12 + s][c + l];
      a[s][l] = m0 + m1 + m2;
      b[s][l] = m1 - m2 - m3;
    }
  for (int l = 0; l < L; ++l) {    // columns: (A^T m) A
    const float z = bias ? bias[c + l] : 0.0f;
    y[0][c + l] = a[0][l] + a[1][l] + a[2][l] + z;
    y[1][c + l] = a[1][l] - a[2][l] - a[3][l] + z;
    y[2][c + l] = b[0][l] + b[1][l] + b[2][l] + z;
    y[3][c + l] = b[1][l] - b[2][l] - b[3][l] + z;
  }
}

// ---- F(4x4, 3x3): 6x6 input tiles, 36 products, 4x4 output tiles (2.25 multiply-adds per
// output pixel and input channel instead of 4). Lavin & Gray's matrices (points 0, +-1, +-2):
//   B^T d: 4d0 - 5d2 + d4, (d3 + d4) - 4(d1 + d2), (d4 - d3) + 4(d1 - d2),
//          (d4 - d2) + 2(d3 - d1), (d4 - d2) - 2(d3 - d1), 4d1 - 5d3 + d5
//   A^T m: m0 + m1 + m2 + m3 + m4, (m1 - m2) + 2(m3 - m4), (m1 + m2) + 4(m3 + m4),
//          (m1 - m2) + 8(m3 - m4) + m5
// Its float32 rounding is 15-25 times F(2x2)'s (larger coefficients, longer sums): at most 36
// eps32 of an output's scale measured, far below what rounding inputs to bf16 costs (2^-8).
template <typename V> DC_INLINE void bt6(const V* d, V* t) {   // V: float or __m256 (GCC vector)
  const V a = d[4] - d[2], b = d[3] - d[1];
  t[0] = 4.0f * d[0] - 5.0f * d[2] + d[4];
  t[1] = (d[3] + d[4]) - 4.0f * (d[1] + d[2]);
  t[2] = (d[4] - d[3]) + 4.0f * (d[1] - d[2]);
  t[3] = a + 2.0f * b;
  t[4] = a - 2.0f * b;
  t[5] = 4.0f * d[1] - 5.0f * d[3] + d[5];
}
template <typename V> DC_INLINE void at6(const V* m, V* y) {
  const V s12 = m[1] + m[2], d12 = m[1] - m[2], s34 = m[3] + m[4], d34 = m[3] - m[4];
  y[0] = s12 + s34 + m[0];
  y[1] = d12 + 2.0f * d34;
  y[2] = s12 + 4.0f * s34;
  y[3] = d12 + 8.0f * d34 + m[5];
}

template <int L, typename T>
DC_INLINE void input_tile4(const T* const* p, float* const* v, int64_t c) {
  for (int l = 0; l < L; ++l) {
    float u[6][6];
    for (int s = 0; s < 6; ++s) {       // columns of d: B^T d
      float d[6], t[6];
      for (int r = 0; r < 6; ++r) d[r] = p[6 * r + s][c + l];
      bt6(d, t);
      for (int r = 0; r < 6; ++r) u[r][s] = t[r];
    }
    for (int r = 0; r < 6; ++r) {       // rows: (B^T d) B
      float t[6];
      bt6(u[r], t);
      for (int s = 0; s < 6; ++s) v[6 * r + s][c + l] = t[s];
    }
  }
}

template <int L, typename T>
DC_INLINE void output_tile4(const float* const* m, T* const* y, const float* bias, int64_t c) {
  for (int l = 0; l < L; ++l) {
    float a[4][6];
    for (int s = 0; s < 6; ++s) {       // columns: A^T m
      float col[6], t[4];
      for (int r = 0; r < 6; ++r) col[r] = m[6 * r + s][c + l];
      at6(col, t);
      for (int i = 0; i < 4; ++i) a[i][s] = t[i];
    }
    const float z = bias ? bias[c + l] : 0.0f;
    for (int i = 0; i < 4; ++i) {       // rows: (A^T m) A
      float t[4];
      at6(a[i], t);
      for (int j = 0; j < 4; ++j) y[4 * i + j][c + l] = t[j] + z;
    }
  }
}

// one tile's channels [c, c + L) through B^T d B (into V) and A^T m A + bias (into y)
template <int R, int L, typename T> DC_INLINE void input_tile_r(const T* const* p, float* const* v, int64_t c) {
  if constexpr (R == 2) input_tile<L, T>(p, v, c); else input_tile4<L, T>(p, v, c);
}
template <int R, int L, typename T>
DC_INLINE void output_tile_r(const float* const* m, T* const* y, const float* bias, int64_t c) {
  if constexpr (R == 2) output_tile<L, T>(m, y, bias, c); else output_tile4<L, T>(m, y, bias, c);
}

constexpr int kLanes = 8;   // one AVX2 vector of float32

#ifdef DIFFCORE_HAVE_AVX2
// The same two transforms on 8 channels with AVX2 (GCC's vectorisation of the templates above
// spills the 16 x 8 tile to the stack): one output row of V at a time from the two input rows
// it needs, so that a dozen registers suffice.
#define DC_AVX2_FN inline __attribute__((always_inline, target("avx2,fma")))
using half_rows::load8;
using half_rows::store8;

template <typename T>
DC_AVX2_FN void input_tile_avx2(const T* const* p, float* const* v, int64_t c) {
  for (int r = 0; r < 4; ++r) {
    // row r of B^T d from input rows (first, second): d0 - d2, d1 + d2, d2 - d1, d1 - d3
    static constexpr int first[4] = {0, 4, 8, 4}, second[4] = {8, 8, 4, 12};
    __m256 u[4];
    for (int s = 0; s < 4; ++s) {
      const __m256 a = load8(p[first[r] + s] + c), b = load8(p[second[r] + s] + c);
      u[s] = r == 1 ? _mm256_add_ps(a, b) : _mm256_sub_ps(a, b);
    }
    _mm256_storeu_ps(v[4 * r] + c, _mm256_sub_ps(u[0], u[2]));
    _mm256_storeu_ps(v[4 * r + 1] + c, _mm256_add_ps(u[1], u[2]));
    _mm256_storeu_ps(v[4 * r + 2] + c, _mm256_sub_ps(u[2], u[1]));
    _mm256_storeu_ps(v[4 * r + 3] + c, _mm256_sub_ps(u[1], u[3]));
  }
}

template <typename T>
DC_AVX2_FN void output_tile_avx2(const float* const* m, T* const* y, const float* bias, int64_t c) {
  __m256 a[4], b[4];
  for (int s = 0; s < 4; ++s) {
    const __m256 m0 = _mm256_loadu_ps(m[s] + c), m1 = _mm256_loadu_ps(m[4 + s] + c);
    const __m256 m2 = _mm256_loadu_ps(m[8 + s] + c), m3 = _mm256_loadu_ps(m[12 + s] + c);
    a[s] = _mm256_add_ps(_mm256_add_ps(m0, m1), m2);
    b[s] = _mm256_sub_ps(_mm256_sub_ps(m1, m2), m3);
  }
  const __m256 z = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
  store8(y[0] + c, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(a[0], a[1]), a[2]), z));
  store8(y[1] + c, _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(a[1], a[2]), a[3]), z));
  store8(y[2] + c, _mm256_add_ps(_mm256_add_ps(_mm256_add_ps(b[0], b[1]), b[2]), z));
  store8(y[3] + c, _mm256_add_ps(_mm256_sub_ps(_mm256_sub_ps(b[1], b[2]), b[3]), z));
}

template <typename T>
DC_AVX2_FN void input_tile4_avx2(const T* const* p, float* const* v, int64_t c) {
  __m256 u[6][6];
  for (int s = 0; s < 6; ++s) {
    __m256 d[6];
    for (int r = 0; r < 6; ++r) d[r] = load8(p[6 * r + s] + c);
    bt6(d, u[s]);             // u[s][r] = (B^T d)[r][s]
  }
  for (int r = 0; r < 6; ++r) {
    __m256 row[6], t[6];
    for (int s = 0; s < 6; ++s) row[s] = u[s][r];
    bt6(row, t);
    for (int s = 0; s < 6; ++s) _mm256_storeu_ps(v[6 * r + s] + c, t[s]);
  }
}

template <typename T>
DC_AVX2_FN void output_tile4_avx2(const float* const* m, T* const* y, const float* bias, int64_t c) {
  __m256 a[6][4];
  for (int s = 0; s < 6; ++s) {
    __m256 col[6];
    for (int r = 0; r < 6; ++r) col[r] = _mm256_loadu_ps(m[6 * r + s] + c);
    at6(col, a[s]);           // a[s][i] = (A^T m)[i][s]
  }
  const __m256 z = bias ? _mm256_loadu_ps(bias + c) : _mm256_setzero_ps();
  for (int i = 0; i < 4; ++i) {
    __m256 row[6], t[4];
    for (int s = 0; s < 6; ++s) row[s] = a[s][i];
    at6(row, t);
    for (int j = 0; j < 4; ++j) store8(y[4 * i + j] + c, _mm256_add_ps(t[j], z));
  }
}

// One tile's rows of C (K) channels: 8 at a time with AVX2, the tail with the scalar template.
template <int R, typename T>
__attribute__((target("avx2,fma"))) void input_rows_avx2(const T* const* p, float* const* v, int64_t C) {
  int64_t c = 0;
  for (; c + kLanes <= C; c += kLanes) {
    if constexpr (R == 2) input_tile_avx2(p, v, c); else input_tile4_avx2(p, v, c);
  }
  for (; c < C; ++c) input_tile_r<R, 1, T>(p, v, c);
}

template <int R, typename T>
__attribute__((target("avx2,fma"))) void output_rows_avx2(const float* const* m, T* const* y, const float* bias,
                                                           int64_t K) {
  int64_t c = 0;
  for (; c + kLanes <= K; c += kLanes) {
    if constexpr (R == 2) output_tile_avx2(m, y, bias, c); else output_tile4_avx2(m, y, bias, c);
  }
  for (; c < K; ++c) output_tile_r<R, 1, T>(m, y, bias, c);
}
#undef DC_AVX2_FN
#endif

struct Geometry {
  int64_t B, C, H, W, K;     // batch, input channels, height, width, output channels
  int64_t th, tw;            // tiles per column and per row
};

// F(R x R, 3x3): R = 2 or 4, input tiles of N = (R + 2)^2 pixels, R x R output tiles.
template <int R> constexpr int kAlpha = R + 2;
template <int R> constexpr int kN = (R + 2) * (R + 2);

// Tile t's input rows: pixel (R i - 1 + r, R j - 1 + s) of image b, or the zero row.
template <int R, typename T>
DC_INLINE void tile_inputs(const Geometry& g, const T* x, const T* zeros, int64_t t, const T** p) {
  const int64_t b = t / (g.th * g.tw), i = t / g.tw % g.th, j = t % g.tw;
  for (int r = 0; r < kAlpha<R>; ++r)
    for (int s = 0; s < kAlpha<R>; ++s) {
      const int64_t h = R * i - 1 + r, w = R * j - 1 + s;
      p[kAlpha<R> * r + s] = (h >= 0 && h < g.H && w >= 0 && w < g.W) ? x + ((b * g.H + h) * g.W + w) * g.C : zeros;
    }
}

template <int R, typename T>
DC_INLINE void tile_outputs(const Geometry& g, T* y, T* sink, int64_t t, T** q) {
  const int64_t b = t / (g.th * g.tw), i = t / g.tw % g.th, j = t % g.tw;
  for (int r = 0; r < R; ++r)
    for (int s = 0; s < R; ++s) {
      const int64_t h = R * i + r, w = R * j + s;
      q[R * r + s] = (h < g.H && w < g.W) ? y + ((b * g.H + h) * g.W + w) * g.K : sink;
    }
}

// Tiles [t0, t1) into V (rows of n tiles per element: V[k][t - t0][c]).
template <int R, typename T>
void input_pass(const Geometry& g, const T* x, const T* zeros, float* V, int64_t n, int64_t t0, int64_t t1,
                bool avx2) {
  const T* p[kN<R>];
  float* v[kN<R>];
  for (int64_t t = t0; t < t1; ++t) {
    tile_inputs<R>(g, x, zeros, t, p);
    for (int k = 0; k < kN<R>; ++k) v[k] = V + (k * n + (t - t0)) * g.C;
#ifdef DIFFCORE_HAVE_AVX2
    if (avx2) {
      input_rows_avx2<R>(p, v, g.C);
      continue;
    }
#endif
    int64_t c = 0;
    for (; c + kLanes <= g.C; c += kLanes) input_tile_r<R, kLanes, T>(p, v, c);
    for (; c < g.C; ++c) input_tile_r<R, 1, T>(p, v, c);
  }
}

template <int R, typename T>
void output_pass(const Geometry& g, const float* M, int64_t n, int64_t ldm, const float* bias, T* y, T* sink,
                 int64_t t0, int64_t t1, bool avx2) {
  const float* m[kN<R>];
  T* q[R * R];
  for (int64_t t = t0; t < t1; ++t) {
    tile_outputs<R>(g, y, sink, t, q);
    for (int k = 0; k < kN<R>; ++k) m[k] = M + (k * n + (t - t0)) * ldm;
#ifdef DIFFCORE_HAVE_AVX2
    if (avx2) {
      output_rows_avx2<R>(m, q, bias, g.K);
      continue;
    }
#endif
    int64_t c = 0;
    for (; c + kLanes <= g.K; c += kLanes) output_tile_r<R, kLanes, T>(m, q, bias, c);
    for (; c < g.K; ++c) output_tile_r<R, 1, T>(m, q, bias, c);
  }
}

// ---- the 16 GEMMs: M[k] = V[k] U[k], with U packed as [K / 16][C][16] per k ----------------
// A 6 x 16 register tile: 12 accumulators, two 8-lane loads of U and six broadcasts of V per
// input channel; V's rows are read in place (row stride C), U's panel stays in L1/L2 across the
// row tiles of a block.
constexpr int kMR = 6, kNR = 16;
// Tiles per block, a multiple of kMR: V and M of a block stay in L2 (but in F(4x4)'s large
// blocks below), U[k]'s 16-column panel in
// L1 over the block's 4 row tiles (24 and 48 measured alike, 96 slower: CIFAR U-Net layers).
constexpr int64_t kBlockTiles = 24;
// F(4x4): 36 rows of V and M per tile against 16; 12 tiles measured best over the CIFAR U-Net's
// layers at batch 16 (24: up to 35% slower, 256 channels at 8x8; 6: up to 32% slower, 512 -> 256)
constexpr int64_t kBlockTiles4 = 12;
// ... until one product's packed weight U[k] (C x Kp floats) reaches 384 KB, most of a 512 KB L2:
// then it no longer stays cached from one block to the next, every block streams all 36 from
// L3, and blocks of up to 72 tiles read them 6x less often, their V and M now in L3 (ad hoc,
// interleaved, batch 16: 384 -> 256 channels at 16x16 and 512 -> 256 at 8x8 and 16x16 ran
// 1.2-1.35x faster than with 12-tile blocks, smaller weights 1.05-1.3x slower). V and M are
// held to 8 MiB per thread (72 tiles up to C + Kp = 808), so wider layers take smaller blocks.
constexpr int64_t kBlockTiles4Big = 72, kBigPanelBytes = 384 * 1024, kBigBlockBytes = 8 << 20;

#ifdef DIFFCORE_HAVE_AVX2
__attribute__((target("avx2,fma"))) void tile_6x16_avx2(const float* a, int64_t lda, const float* b, int64_t C,
                                                         float* m, int64_t ldm) {
  __m256 c00 = _mm256_setzero_ps(), c01 = c00, c10 = c00, c11 = c00, c20 = c00, c21 = c00, c30 = c00, c31 = c00,
         c40 = c00, c41 = c00, c50 = c00, c51 = c00;
  const float *a0 = a, *a1 = a + lda, *a2 = a + 2 * lda, *a3 = a + 3 * lda, *a4 = a + 4 * lda, *a5 = a + 5 * lda;
  for (int64_t c = 0; c < C; ++c) {
    const __m256 b0 = _mm256_loadu_ps(b + c * kNR), b1 = _mm256_loadu_ps(b + c * kNR + 8);
    __m256 v = _mm256_broadcast_ss(a0 + c);
    c00 = _mm256_fmadd_ps(v, b0, c00);
    c01 = _mm256_fmadd_ps(v, b1, c01);
    v = _mm256_broadcast_ss(a1 + c);
    c10 = _mm256_fmadd_ps(v, b0, c10);
    c11 = _mm256_fmadd_ps(v, b1, c11);
    v = _mm256_broadcast_ss(a2 + c);
    c20 = _mm256_fmadd_ps(v, b0, c20);
    c21 = _mm256_fmadd_ps(v, b1, c21);
    v = _mm256_broadcast_ss(a3 + c);
    c30 = _mm256_fmadd_ps(v, b0, c30);
    c31 = _mm256_fmadd_ps(v, b1, c31);
    v = _mm256_broadcast_ss(a4 + c);
    c40 = _mm256_fmadd_ps(v, b0, c40);
    c41 = _mm256_fmadd_ps(v, b1, c41);
    v = _mm256_broadcast_ss(a5 + c);
    c50 = _mm256_fmadd_ps(v, b0, c50);
    c51 = _mm256_fmadd_ps(v, b1, c51);
  }
  _mm256_storeu_ps(m, c00);
  _mm256_storeu_ps(m + 8, c01);
  _mm256_storeu_ps(m + ldm, c10);
  _mm256_storeu_ps(m + ldm + 8, c11);
  _mm256_storeu_ps(m + 2 * ldm, c20);
  _mm256_storeu_ps(m + 2 * ldm + 8, c21);
  _mm256_storeu_ps(m + 3 * ldm, c30);
  _mm256_storeu_ps(m + 3 * ldm + 8, c31);
  _mm256_storeu_ps(m + 4 * ldm, c40);
  _mm256_storeu_ps(m + 4 * ldm + 8, c41);
  _mm256_storeu_ps(m + 5 * ldm, c50);
  _mm256_storeu_ps(m + 5 * ldm + 8, c51);
}
#endif

void tile_6x16_scalar(const float* a, int64_t lda, const float* b, int64_t C, float* m, int64_t ldm) {
  float acc[kMR][kNR] = {};
  for (int64_t c = 0; c < C; ++c)
    for (int r = 0; r < kMR; ++r)
      for (int l = 0; l < kNR; ++l) acc[r][l] += a[r * lda + c] * b[c * kNR + l];
  for (int r = 0; r < kMR; ++r)
    for (int l = 0; l < kNR; ++l) m[r * ldm + l] = acc[r][l];
}

using TileFn = void (*)(const float*, int64_t, const float*, int64_t, float*, int64_t);

// AVX2 transforms and GEMM tiles where the CPU has them; DIFFCORE_SCALAR_WINOGRAD=1 forces the
// portable code (what a CPU without AVX2 runs), so that the tests cover it on any machine.
bool avx2_winograd() {
#ifdef DIFFCORE_HAVE_AVX2
  static const bool on = avx2::cpu_has_avx2_fma() && !getenv_flag("DIFFCORE_SCALAR_WINOGRAD");
  return on;
#else
  return false;
#endif
}

// M[n x Kp] = V[n x C] U[C x Kp] for n a multiple of 6 (rows past the block's tiles are junk
// that the output pass never reads) and U packed in 16-column panels.
void gemm(TileFn f, const float* V, const float* U, float* M, int64_t n, int64_t C, int64_t Kp) {
  for (int64_t j = 0; j < Kp / kNR; ++j)
    for (int64_t i = 0; i < n; i += kMR) f(V + i * C, C, U + j * C * kNR, C, M + i * Kp + j * kNR, Kp);
}

void check_winograd(const at::Tensor& x, const at::Tensor& u, const c10::optional<at::Tensor>& bias, int64_t K) {
  TORCH_CHECK(x.device().is_cpu(), "diffcore: conv3x3_winograd: x must be a CPU tensor; got ", x.device());
  TORCH_CHECK(u.device().is_cpu(), "diffcore: conv3x3_winograd: u must be a CPU tensor; got ", u.device());
  TORCH_CHECK(x.scalar_type() == at::kFloat || x.scalar_type() == at::kBFloat16,
              "diffcore: conv3x3_winograd: x must be float32 or bfloat16; got ", x.scalar_type());
  TORCH_CHECK(u.scalar_type() == at::kFloat, "diffcore: conv3x3_winograd: u must be float32; got ", u.scalar_type());
  TORCH_CHECK(x.dim() == 4 && x.is_contiguous(at::MemoryFormat::ChannelsLast),
              "diffcore: conv3x3_winograd: x must be a 4-D channels_last tensor [B, C, H, W]; got sizes ", x.sizes(),
              " strides ", x.strides());
  TORCH_CHECK(K >= 1, "diffcore: conv3x3_winograd: out_channels must be >= 1; got ", K);
  const int64_t panels = (K + kNR - 1) / kNR;
  TORCH_CHECK(u.dim() == 4 && (u.size(0) == kN<2> || u.size(0) == kN<4>) && u.size(1) == panels &&
                  u.size(2) == x.size(1) && u.size(3) == kNR && u.is_contiguous(),
              "diffcore: conv3x3_winograd: u must be the contiguous packed weight [16 or 36, ", panels, ", ",
              x.size(1), ", 16] (diffcore.winograd.transform_weight, tile 2 or 4); got sizes ", u.sizes());
  if (bias.has_value()) {
    const auto& b = *bias;
    TORCH_CHECK(b.device().is_cpu() && (b.scalar_type() == at::kFloat || b.scalar_type() == x.scalar_type()) &&
                    b.dim() == 1 && b.size(0) == K,
                "diffcore: conv3x3_winograd: bias must be a float32 (or x's dtype) CPU [out_channels] = [", K,
                "]; got ", b.sizes(), " ", b.scalar_type(), " on ", b.device());
  }
}

// The most tiles per block (a multiple of kMR).
inline int64_t block_tiles(int R, int64_t C, int64_t Kp) {
  if (R == 2) return kBlockTiles;
  if (C * Kp * int64_t(sizeof(float)) < kBigPanelBytes) return kBlockTiles4;
  const int64_t fit = kBigBlockBytes / (kN<4> * (C + Kp) * int64_t(sizeof(float))) / kMR * kMR;
  return std::max(kBlockTiles4, std::min(kBlockTiles4Big, fit));
}

template <int R, typename T>
void winograd_run(const Geometry& g, const T* xp, const float* up, int64_t Kp, const float* bp, T* yp) {
  const int64_t T_ = g.B * g.th * g.tw;
  // each thread's tiles in blocks of equal size, at most block_tiles (fewer tiles than a block per
  // thread, as with small images at batch 1: smaller blocks, so every thread has one)
  const int64_t per_thread = (T_ + at::get_num_threads() - 1) / at::get_num_threads();
  const int64_t most = block_tiles(R, g.C, Kp), blocks_each = (per_thread + most - 1) / most;
  const int64_t Tb = std::min(most, ((per_thread + blocks_each - 1) / blocks_each + kMR - 1) / kMR * kMR);
  const int64_t blocks = (T_ + Tb - 1) / Tb;
  const std::vector<T> zeros(g.C, T(0.0f));
  const bool avx2 = avx2_winograd();
#ifdef DIFFCORE_HAVE_AVX2
  const TileFn f = avx2 ? tile_6x16_avx2 : tile_6x16_scalar;
#else
  const TileFn f = tile_6x16_scalar;
#endif
  at::parallel_for(0, blocks, 1, [&](int64_t b0, int64_t b1) {
    std::vector<float> V(kN<R> * Tb * g.C, 0.0f), M(kN<R> * Tb * Kp);
    std::vector<T> sink(g.K);
    for (int64_t blk = b0; blk < b1; ++blk) {
      const int64_t t0 = blk * Tb, t1 = std::min(T_, t0 + Tb), n = (t1 - t0 + kMR - 1) / kMR * kMR;
      input_pass<R>(g, xp, zeros.data(), V.data(), Tb, t0, t1, avx2);
      for (int k = 0; k < kN<R>; ++k)
        gemm(f, V.data() + k * Tb * g.C, up + k * Kp * g.C, M.data() + k * Tb * Kp, n, g.C, Kp);
      output_pass<R>(g, M.data(), Tb, Kp, bp, yp, sink.data(), t0, t1, avx2);
    }
  });
}

template <int R>
void winograd_dispatch(const at::Tensor& x, const float* up, int64_t Kp, const float* bp, at::Tensor& y, int64_t K) {
  const Geometry g{x.size(0), x.size(1), x.size(2), x.size(3), K, (x.size(2) + R - 1) / R, (x.size(3) + R - 1) / R};
  if (x.scalar_type() == at::kBFloat16)
    winograd_run<R>(g, x.data_ptr<c10::BFloat16>(), up, Kp, bp, y.data_ptr<c10::BFloat16>());
  else
    winograd_run<R>(g, x.data_ptr<float>(), up, Kp, bp, y.data_ptr<float>());
}

at::Tensor conv3x3_winograd_cpu(const at::Tensor& x, const at::Tensor& u, const c10::optional<at::Tensor>& bias,
                                int64_t K) {
  check_winograd(x, u, bias, K);
  const int64_t B = x.size(0), C = x.size(1), H = x.size(2), W = x.size(3);
  auto y = pooled_empty_strided({B, K, H, W}, {H * W * K, 1, W * K, K}, x.scalar_type());
  if (y.numel() == 0) return y;
  if (C == 0) return bias.has_value() ? y.copy_(bias->view({1, K, 1, 1}).expand_as(y)) : y.zero_();
  // the bias is added in float32 before the output's one rounding
  const at::Tensor b = bias.has_value() ? bias->to(at::kFloat).contiguous() : at::Tensor();
  const float* bp = b.defined() ? b.data_ptr<float>() : nullptr;
  const int64_t Kp = u.size(1) * kNR;
  if (u.size(0) == kN<2>)
    winograd_dispatch<2>(x, u.data_ptr<float>(), Kp, bp, y, K);
  else
    winograd_dispatch<4>(x, u.data_ptr<float>(), Kp, bp, y, K);
  return y;
}

}  // namespace

TORCH_LIBRARY_IMPL(diffcore, CPU, m) { m.impl("conv3x3_winograd", &conv3x3_winograd_cpu); }

}  // namespace diffcore
