// Element-wise and row kernels on contiguous float32 data: exact (erf) GELU, softmax over rows,
// LayerNorm over rows, each forward and backward; a bias added to every row and its gradient (column sums).
//
// This header is compiled twice (kernels_baseline.cpp and kernels_avx2.cpp) into two namespaces, so one
// binary carries a portable build and an AVX2+FMA build picked at run time (no -march=native). Loops
// are plain C++ that GCC/Clang auto-vectorise at -O3; reductions use `#pragma omp simd reduction`
// (-fopenmp-simd: vectorisation hints only, no OpenMP runtime). No -ffast-math and -ffp-contract=off:
// the exact-product trick in `square_split` relies on IEEE rounding, so fused multiply-adds are
// written out explicitly (HJEPA_FMA) where the build has them. -fno-trapping-math is on: it lets the
// selects below become vector blends.
#pragma once

#include <cstddef>
#include <cstdint>
#include <cstring>

#ifndef HJEPA_KERNEL_NS
#error "define HJEPA_KERNEL_NS before including math_kernels.h"
#endif

namespace hjepa_kernels::HJEPA_KERNEL_NS {

#if defined(__FMA__)
#define HJEPA_FMA(a, b, c) __builtin_fmaf((a), (b), (c))
#else
#define HJEPA_FMA(a, b, c) ((a) * (b) + (c))
#endif

static inline float bits_to_float(int32_t i) {
  float f;
  std::memcpy(&f, &i, sizeof f);
  return f;
}

// exp(hi + lo) for hi + lo <= 88, with lo carrying the low-order part of the argument (|lo| up to ~2
// is fine). Cody-Waite reduction r = hi + lo - n ln2 with a 9-bit ln2_hi (n * ln2_hi is exact, and so
// is hi - n * ln2_hi for the arguments used here), then Cephes' degree-6 polynomial for exp(r) on
// |r| <= ln2/2 (relative error ~1e-7) and 2^n by building the exponent bits. Arguments below -87.3
// (the result would be subnormal) return 0.
static inline float exp_split(float hi, float lo) {
  const float s = hi + lo;
  const float sc = s < -87.3f ? -87.3f : (s > 88.0f ? 88.0f : s);
  // Round to nearest without a library call: adding 1.5 * 2^23 pushes the fraction bits out.
  const float n = (sc * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  float r = HJEPA_FMA(n, -0.693359375f, hi);
  r = HJEPA_FMA(n, 2.12194440e-4f, r) + lo;
  float p = 1.9875691500e-4f;
  p = HJEPA_FMA(p, r, 1.3981999507e-3f);
  p = HJEPA_FMA(p, r, 8.3334519073e-3f);
  p = HJEPA_FMA(p, r, 4.1665795894e-2f);
  p = HJEPA_FMA(p, r, 1.6666665459e-1f);
  p = HJEPA_FMA(p, r, 5.0000001201e-1f);
  const float er = HJEPA_FMA(p, r * r, r) + 1.0f;
  const float scale = bits_to_float((static_cast<int32_t>(n) + 127) << 23);
  const float out = er * scale;
  return s < -87.3f ? 0.0f : out;
}

// x * x = hi + lo exactly (Dekker's product without FMA; one fused multiply-add with it).
static inline void square_split(float x, float& hi, float& lo) {
  hi = x * x;
#if defined(__FMA__)
  lo = __builtin_fmaf(x, x, -hi);
#else
  const float c = 4097.0f * x;            // Veltkamp split into 12 + 12 significant bits
  const float xh = c - (c - x);
  const float xl = x - xh;
  lo = ((xh * xh - hi) + 2.0f * xh * xl) + xl * xl;
#endif
}

// Phi(x), the standard normal CDF.
// erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2), z = |x| / sqrt(2): the Chebyshev fit of Numerical
// Recipes' erfcc (fractional error < 1.2e-7 for all z >= 0). -z^2 = -x^2/2 is passed to exp_split as an
// exact hi + lo pair, so large |x| loses no accuracy to the rounding of x^2. Phi = erfc/2 for x < 0
// (no cancellation in the left tail), 1 - erfc/2 for x >= 0.
static inline float normal_cdf(float x) {
  const float xc = x < -20.0f ? -20.0f : (x > 20.0f ? 20.0f : x);   // NaN stays NaN
  const float ax = xc < 0.0f ? -xc : xc;
  float sq_hi, sq_lo;
  square_split(xc, sq_hi, sq_lo);
  const float h_hi = -0.5f * sq_hi, h_lo = -0.5f * sq_lo;           // -z^2, exact pair
  const float t = 1.0f / HJEPA_FMA(0.35355339059327373f, ax, 1.0f);  // 1 / (1 + z/2)
  float p = 0.17087277f;
  p = HJEPA_FMA(p, t, -0.82215223f);
  p = HJEPA_FMA(p, t, 1.48851587f);
  p = HJEPA_FMA(p, t, -1.13520398f);
  p = HJEPA_FMA(p, t, 0.27886807f);
  p = HJEPA_FMA(p, t, -0.18628806f);
  p = HJEPA_FMA(p, t, 0.09678418f);
  p = HJEPA_FMA(p, t, 0.37409196f);
  p = HJEPA_FMA(p, t, 1.00002368f);
  p = HJEPA_FMA(p, t, -1.26551223f);
  const float half_erfc = 0.5f * t * exp_split(h_hi, h_lo + p);
  return xc < 0.0f ? half_erfc : 1.0f - half_erfc;
}

// y = x * Phi(x)
static inline void gelu_forward(const float* __restrict x, float* __restrict y, size_t n) {
  for (size_t i = 0; i < n; ++i) y[i] = x[i] * normal_cdf(x[i]);
}

// dy * GELU'(x) = dy * (Phi(x) + x phi(x)), with Phi(x) = y / x recovered from the forward's output
// y = x Phi(x) (within 2 ulp of the forward's Phi; 1/2 at x = 0): one exp per element and no erfc. Where y is
// subnormal (x < -13) the recovered Phi loses bits, but there both terms are below 1e-37 anyway.
static inline float gelu_grad_at(float x, float y, float dy) {
  const float xc = x < -20.0f ? -20.0f : (x > 20.0f ? 20.0f : x);   // NaN stays NaN
  float sq_hi, sq_lo;
  square_split(xc, sq_hi, sq_lo);
  const float density = 0.3989422804014327f * exp_split(-0.5f * sq_hi, -0.5f * sq_lo);
  const float cdf = x != 0.0f ? y / x : 0.5f;
  return dy * HJEPA_FMA(x, density, cdf);
}

static inline void gelu_backward(const float* __restrict x, const float* __restrict y, const float* __restrict dy,
                                 float* __restrict dx, size_t n) {
  for (size_t i = 0; i < n; ++i) dx[i] = gelu_grad_at(x[i], y[i], dy[i]);
}

// The MLP's first Linear, after its matmul: y = act(h + b) per row (kind 0: exact GELU, 1: ReLU), one pass.
static inline void bias_act_forward(int kind, const float* h, const float* __restrict b, float* y, size_t rows,
                                    size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* hr = h + r * cols;
    float* yr = y + r * cols;
    if (kind == 0) {
      for (size_t i = 0; i < cols; ++i) {
        const float z = hr[i] + b[i];
        yr[i] = z * normal_cdf(z);
      }
    } else {
      for (size_t i = 0; i < cols; ++i) {
        const float z = hr[i] + b[i];
        yr[i] = z > 0.0f ? z : 0.0f;
      }
    }
  }
}

// dh = dy * act'(h + b) (with y = act(h + b) from the forward), db += the rows' sum of dh. dh may be dy.
static inline void bias_act_backward(int kind, const float* __restrict h, const float* __restrict b,
                                     const float* __restrict y, const float* dy, float* dh, float* __restrict db,
                                     size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* hr = h + r * cols;
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* out = dh + r * cols;
    if (kind == 0) {
      for (size_t i = 0; i < cols; ++i) out[i] = gelu_grad_at(hr[i] + b[i], yr[i], gr[i]);
    } else {
      for (size_t i = 0; i < cols; ++i) out[i] = hr[i] + b[i] > 0.0f ? gr[i] : 0.0f;
    }
    for (size_t i = 0; i < cols; ++i) db[i] += out[i];
  }
}

static inline float row_max(const float* __restrict x, size_t n) {
  float m = x[0];
#pragma omp simd reduction(max : m)
  for (size_t i = 0; i < n; ++i) m = x[i] > m ? x[i] : m;
  return m;
}

static inline float row_sum(const float* __restrict x, size_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (size_t i = 0; i < n; ++i) s += x[i];
  return s;
}

static inline float row_dot(const float* __restrict a, const float* __restrict b, size_t n) {
  float s = 0.0f;
#pragma omp simd reduction(+ : s)
  for (size_t i = 0; i < n; ++i) s = HJEPA_FMA(a[i], b[i], s);
  return s;
}

// y = exp(x - max) / sum(exp(x - max)) along each row of `cols` elements.
static inline void softmax_forward(const float* __restrict x, float* __restrict y, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    const float m = row_max(xr, cols);
    for (size_t i = 0; i < cols; ++i) yr[i] = exp_split(xr[i] - m, 0.0f);
    const float inv = 1.0f / row_sum(yr, cols);
    for (size_t i = 0; i < cols; ++i) yr[i] *= inv;
  }
}

// dx = y * (dy - <dy, y>) along each row (y is the softmax output).
static inline void softmax_backward(const float* __restrict y, const float* __restrict dy, float* __restrict dx,
                                    size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* yr = y + r * cols;
    const float* gr = dy + r * cols;
    float* out = dx + r * cols;
    const float d = row_dot(yr, gr, cols);
    for (size_t i = 0; i < cols; ++i) out[i] = yr[i] * (gr[i] - d);
  }
}

// Mean and 1/sqrt(var + eps) of a row, two passes (no E[x^2] - E[x]^2 cancellation).
static inline void row_moments(const float* __restrict x, size_t n, float eps, float& mean, float& rstd) {
  mean = row_sum(x, n) / static_cast<float>(n);
  float ss = 0.0f;
#pragma omp simd reduction(+ : ss)
  for (size_t i = 0; i < n; ++i) {
    const float d = x[i] - mean;
    ss = HJEPA_FMA(d, d, ss);
  }
  rstd = 1.0f / __builtin_sqrtf(ss / static_cast<float>(n) + eps);
}

// y = (x - mean) * rstd * w + b per row; w and b both given or both null (affine-free).
static inline void layer_norm_forward(const float* __restrict x, const float* __restrict w,
                                      const float* __restrict b, float* __restrict y, size_t rows, size_t cols,
                                      float eps) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    float mean, rstd;
    row_moments(xr, cols, eps, mean, rstd);
    if (w) {
      for (size_t i = 0; i < cols; ++i) yr[i] = HJEPA_FMA((xr[i] - mean) * rstd, w[i], b[i]);
    } else {
      for (size_t i = 0; i < cols; ++i) yr[i] = (xr[i] - mean) * rstd;
    }
  }
}

// dx = rstd * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * w (dy without affine);
// dw += sum over rows of dy * xhat, db += sum over rows of dy (only when w is given). `scratch` holds
// `cols` floats (xhat of the current row).
static inline void layer_norm_backward(const float* __restrict x, const float* __restrict w,
                                       const float* __restrict dy, float* __restrict dx, float* __restrict dw,
                                       float* __restrict db, float* __restrict scratch, size_t rows, size_t cols,
                                       float eps) {
  const float inv_n = 1.0f / static_cast<float>(cols);
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    const float* gr = dy + r * cols;
    float* out = dx + r * cols;
    float mean, rstd;
    row_moments(xr, cols, eps, mean, rstd);
    float sum_g = 0.0f, sum_gx = 0.0f;
    if (w) {
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (size_t i = 0; i < cols; ++i) {
        const float xh = (xr[i] - mean) * rstd;
        const float g = gr[i] * w[i];
        scratch[i] = xh;
        sum_g += g;
        sum_gx = HJEPA_FMA(g, xh, sum_gx);
        dw[i] = HJEPA_FMA(gr[i], xh, dw[i]);
        db[i] += gr[i];
      }
      const float mg = sum_g * inv_n, mgx = sum_gx * inv_n;
      for (size_t i = 0; i < cols; ++i) out[i] = rstd * (gr[i] * w[i] - mg - scratch[i] * mgx);
    } else {
#pragma omp simd reduction(+ : sum_g, sum_gx)
      for (size_t i = 0; i < cols; ++i) {
        const float xh = (xr[i] - mean) * rstd;
        scratch[i] = xh;
        sum_g += gr[i];
        sum_gx = HJEPA_FMA(gr[i], xh, sum_gx);
      }
      const float mg = sum_g * inv_n, mgx = sum_gx * inv_n;
      for (size_t i = 0; i < cols; ++i) out[i] = rstd * (gr[i] - mg - scratch[i] * mgx);
    }
  }
}

// y = x + b on each row (b has `cols` entries); y may be x itself (the primitive reuses a dead input).
static inline void bias_add(const float* x, const float* __restrict b, float* y, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    float* yr = y + r * cols;
    for (size_t i = 0; i < cols; ++i) yr[i] = xr[i] + b[i];
  }
}

// acc += the sum of the rows of x (cols entries each), rows in order.
static inline void column_sum(const float* __restrict x, float* __restrict acc, size_t rows, size_t cols) {
  for (size_t r = 0; r < rows; ++r) {
    const float* xr = x + r * cols;
    for (size_t i = 0; i < cols; ++i) acc[i] += xr[i];
  }
}

// One AdamW step on n elements (optim.adamw_update's formula): g = grad * grad_scale,
// m = b1 m + (1 - b1) g, v = b2 v + (1 - b2) g^2, p -= lr ((m / c1) / (sqrt(v / c2) + eps) + wd p). With
// keep == 0 (a skipped step) the old p, m, v are written back unchanged. s: lr, wd, c1, c2, grad_scale,
// keep, b1, b2, 1 - b1, 1 - b2, eps.
static inline void adamw(const float* __restrict p, const float* __restrict g, const float* __restrict m,
                         const float* __restrict v, float* __restrict p_out, float* __restrict m_out,
                         float* __restrict v_out, size_t n, const float* __restrict s) {
  const float lr = s[0], wd = s[1], c1 = s[2], c2 = s[3], scale = s[4], keep = s[5], b1 = s[6], b2 = s[7],
              one_b1 = s[8], one_b2 = s[9], eps = s[10];
  if (keep == 0.0f) {
    std::memcpy(p_out, p, n * sizeof(float));
    std::memcpy(m_out, m, n * sizeof(float));
    std::memcpy(v_out, v, n * sizeof(float));
    return;
  }
  for (size_t i = 0; i < n; ++i) {
    const float gi = g[i] * scale;
    const float mi = b1 * m[i] + one_b1 * gi;
    const float vi = b2 * v[i] + one_b2 * (gi * gi);
    const float update = (mi / c1) / (__builtin_sqrtf(vi / c2) + eps) + wd * p[i];
    p_out[i] = p[i] - lr * update;
    m_out[i] = mi;
    v_out[i] = vi;
  }
}

}  // namespace hjepa_kernels::HJEPA_KERNEL_NS
